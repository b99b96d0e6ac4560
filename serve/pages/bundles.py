"""Which bundle explains a stored scoring: the served one when its version matches, else the
registry's version, loaded once per server (`app.state.page_bundles`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import Request

from leadscore.scoring import ModelBundle

log = logging.getLogger("serve")

BundleFor = Callable[[str], ModelBundle | None]


def bundle_finder(request: Request, model: str) -> BundleFor:
    """A `version -> bundle or None` for `model`: None when the version cannot be loaded (a
    bundle folder served without a registry, a deleted version), said once in the log; the
    page then shows the scores without their reasons."""
    state = request.app.state
    if getattr(state, "page_bundles", None) is None:
        state.page_bundles = {}
    cache: dict[tuple[str, str], ModelBundle | None] = state.page_bundles
    settings = state.settings

    def bundle_for(version: str) -> ModelBundle | None:
        served = state.models.models.get(model)
        loaded = served.holder.loaded if served is not None else None
        if loaded is not None and loaded.bundle.version == version:
            return loaded.bundle  # type: ignore[no-any-return]
        key = (model, version)
        if key not in cache:
            found: ModelBundle | None = None
            if version.isdigit():
                from leadscore.tracking import load_model

                try:
                    found = load_model(f"models:/{model}/{version}", settings)
                except Exception as exc:  # an unreachable registry: no reasons, still a page
                    log.warning("version %s of %s cannot explain its scores (%s)", version,
                                model, type(exc).__name__)
            cache[key] = found
        return cache[key]

    return bundle_for
