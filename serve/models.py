"""The models one server holds: which registered models to serve, where each one's champion
comes from, and which answers `POST /v1/score` (the default). Each has its own `ModelHolder`, so
one model's reload never touches another's."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from leadscore.config import Settings
from leadscore.scoring import META_FILE
from serve.deps import Loaded, ModelHolder
from serve.errors import ApiError

log = logging.getLogger("serve")


@dataclass(frozen=True)
class Plan:
    """What to serve: (name, uri) pairs in order, and the default model's name (if any)."""

    models: list[tuple[str, str]]
    default: str | None
    note: str = ""  # why nothing is served, when nothing is


def plan_models(settings: Settings) -> Plan:
    """`LEADSCORE_MODELS` (names, each served at its @champion), else `LEADSCORE_MODEL_URI`
    (one model, any URI or bundle folder), else `LEADSCORE_MODEL_NAME`, else every registered
    model that has a @champion. The default is `LEADSCORE_DEFAULT_MODEL`, else
    `LEADSCORE_MODEL_NAME`, else the only model served."""
    names = settings.served_model_names()
    if names:
        pairs = [(name, f"models:/{name}@champion") for name in dict.fromkeys(names)]
    elif settings.model_uri:
        pairs = [(name_of(settings.model_uri), settings.model_uri)]
    elif settings.model_name:
        pairs = [(settings.model_name, f"models:/{settings.model_name}@champion")]
    else:
        from leadscore import tracking

        try:
            found = tracking.champion_names(settings)
        except Exception as exc:  # an unreachable registry: start, answer 503, say why
            return Plan([], None, f"the registry cannot be read ({type(exc).__name__})")
        pairs = [(name, f"models:/{name}@champion") for name in found]
        if not pairs:
            where = settings.resolved_tracking_uri()
            return Plan([], None, f"no registered model has a @champion at {where}")
    served = [name for name, _ in pairs]
    default = settings.default_model or (
        settings.model_name if settings.model_name in served else None
    )
    if default is None and len(served) == 1:
        default = served[0]
    if default is not None and default not in served:
        log.warning("LEADSCORE_DEFAULT_MODEL %r is not among the served models %s",
                    default, served)
        default = None
    return Plan(pairs, default)


def name_of(uri: str) -> str:
    """The model name behind a URI: `models:/NAME@alias` or `models:/NAME/3`, a bundle folder's
    recorded name (else the folder's own name)."""
    if uri.startswith("models:/"):
        rest = uri.removeprefix("models:/")
        return rest.split("@", 1)[0].split("/", 1)[0]
    folder = Path(uri)
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        return str(meta.get("name") or folder.name)
    except (OSError, ValueError):
        return folder.name or uri


@dataclass
class Served:
    name: str
    uri: str
    holder: ModelHolder


class ModelSet:
    """name -> served model, and the default. Built once at start-up; lookups are dict reads."""

    def __init__(self, plan: Plan, make_holder: Callable[[str], ModelHolder]) -> None:
        self.models: dict[str, Served] = {
            name: Served(name, uri, make_holder(name)) for name, uri in plan.models
        }
        self.default = plan.default
        self.note = plan.note

    def get(self, name: str) -> Served:
        served = self.models.get(name)
        if served is None:
            known = ", ".join(self.models) or "none"
            raise ApiError(404, "model_not_found",
                           f"no model named {name!r} is served here (served: {known})",
                           [{"model": name}])
        return served

    def default_served(self) -> Served:
        if self.default is not None:
            return self.models[self.default]
        if not self.models:
            raise ApiError(503, "model_not_loaded", "no model is loaded yet",
                           [{"reason": self.note or "starting"}])
        raise ApiError(404, "no_default_model",
                       f"{len(self.models)} models are served ({', '.join(self.models)}): "
                       "score with POST /v1/models/{name}/score, or set "
                       "LEADSCORE_DEFAULT_MODEL", [{"models": list(self.models)}])

    def snapshot(self, name: str | None) -> Loaded:
        served = self.default_served() if name is None else self.get(name)
        return served.holder.snapshot()
