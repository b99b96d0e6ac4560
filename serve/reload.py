"""Hot reload: what a model URI points at now (a fingerprint), and the optional polling loop that
reloads only when that changes. Loading itself is `ModelHolder.load` (verify, then swap)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from leadscore.config import Settings
from leadscore.errors import LeadscoreError
from leadscore.scoring import META_FILE

if TYPE_CHECKING:
    from serve.deps import ModelHolder

log = logging.getLogger("serve")


def source_fingerprint(uri: str, settings: Settings) -> str:
    """Cheap identity of what `uri` resolves to, without loading the model: the registered
    version for `models:/name@alias`, version and model checksum for a bundle folder. Other URIs
    (`runs:/…`, a pinned `models:/name/3`) are immutable and never change."""
    folder = Path(uri)
    if folder.is_dir():
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "folder:unreadable"
        # the flag too: `promote --allow-schema-change` republishes the same model with it
        allowed = "allowed" if meta.get("schema_change_allowed") else ""
        return f"folder:{meta.get('version')}:{meta.get('model_sha256')}:{allowed}"
    if uri.startswith("models:/") and "@" in uri:
        from leadscore import tracking

        tracking.configure(settings)
        info = tracking._registry_info(uri)  # the registry lookup `load_model` itself uses
        # the flag too: a version held back for its new fields is retried once it is allowed
        allowed = info.get("schema_change_allowed", "")
        return f"registry:{info['name']}:{info['version']}:{allowed}"
    return f"static:{uri}"


async def poll(holder: ModelHolder, uri: str, settings: Settings, every: float) -> None:
    """Every `every` seconds, reload when the source's fingerprint differs from the one being
    served. A refused model is not retried until its fingerprint changes again."""
    refused: str | None = None
    log.info("polling %s for a new model every %.3g s", uri, every)
    while True:
        await asyncio.sleep(every)
        try:
            current = await asyncio.to_thread(source_fingerprint, uri, settings)
        except LeadscoreError as exc:
            log.warning("reload check of %s failed: %s", uri, exc)
            continue
        except Exception as exc:  # the registry may be briefly unreachable: try again later
            log.warning("reload check of %s failed (%s)", uri, type(exc).__name__)
            continue
        loaded = holder.loaded
        if current == refused or (loaded is not None and current == loaded.fingerprint):
            continue
        serving = loaded.bundle.version if loaded is not None else None
        try:
            await asyncio.to_thread(holder.load, uri, settings)
            refused = None
        except LeadscoreError as exc:
            refused = current
            log.error("new model at %s refused, still serving version %s: %s", uri, serving, exc)
        except Exception as exc:
            refused = current
            log.error("new model at %s refused, still serving version %s (%s)", uri, serving,
                      type(exc).__name__)
