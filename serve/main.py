"""Assembles the scoring API: settings, model holder, metrics, middleware, routers, error
handlers, OpenAPI, and the lifespan that loads the model (and polls for new ones)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from leadscore import __version__
from leadscore.config import Settings, get_settings
from leadscore.errors import LeadscoreError
from serve import errors
from serve.deps import ModelHolder, key_digests
from serve.observe import Metrics, ObserveMiddleware
from serve.reload import poll
from serve.routes import admin, health, metrics, model, score
from serve.schemas import request_model

log = logging.getLogger("serve")

# Worker threads scoring at once (batches beyond what routes/score.py scores inline): one per
# core. More only queue on the GIL for the Python parts of scoring and stretch the tail
# (measured when one-lead requests with 3 reasons still went to threads, at concurrency 16:
# p99 16-18 ms with 2 threads, 23-24 ms with anyio's default 40).
SCORING_THREADS = os.cpu_count() or 2


def create_app(settings: Settings | None = None, *, load_model: bool = True) -> FastAPI:
    """An app bound to `settings` (default: the environment's); the model loads in `lifespan`.

    With `LEADSCORE_RELOAD_SECONDS` > 0 a background task reloads the model whenever its
    source (registry version, or bundle checksum) changes; it stops when the server does.
    """
    current = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder: ModelHolder = app.state.holder
        app.state.score_limiter = anyio.CapacityLimiter(SCORING_THREADS)
        uri = current.resolved_model_uri()
        if load_model and holder.loaded is None:
            try:
                await run_in_threadpool(holder.load, uri, current)
            except LeadscoreError as exc:
                log.error("no model loaded from %s: %s", uri, exc)
        # Everything imported and loaded so far lives as long as the server: moved out of the
        # collector's reach, a full collection no longer walks pandas', MLflow's and the
        # model's objects (tens of ms a pass, which showed as the p99 of every route)
        gc.collect()
        gc.freeze()
        poller = None
        if load_model and current.reload_seconds > 0:
            poller = asyncio.create_task(poll(holder, uri, current, current.reload_seconds))
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            log.info("shut down")

    app = FastAPI(
        title="leadscore",
        version=__version__,
        description="Lead conversion probabilities, scores, tiers and reasons.",
        lifespan=lifespan,
    )
    app.state.settings = current
    app.state.metrics = Metrics()
    app.state.holder = ModelHolder(on_swap=app.state.metrics.model_swapped,
                                   on_refused=app.state.metrics.model_refused)
    app.state.key_digests = key_digests(current)
    app.state.openapi_model = None
    errors.install(app)
    app.add_middleware(ObserveMiddleware, metrics=app.state.metrics)
    for router in (score.router, health.router, metrics.router, model.router, admin.router):
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        """The default schema plus the lead fields of the model being served (rebuilt after a
        reload, since a new model may bring new fields)."""
        loaded = app.state.holder.loaded
        if app.openapi_schema and app.state.openapi_model is loaded:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if loaded is not None:
            body = request_model(
                loaded.lead, current.max_batch, forbid_extra=not current.ignore_unknown_fields
            ).model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(body.pop("$defs", {}))
            components["ScoreRequest"] = body
        else:
            components["ScoreRequest"] = {"type": "object", "properties": {"leads": {
                "type": "array", "items": {"type": "object"}}}, "required": ["leads"]}
        if current.api_key_list():
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
        app.openapi_schema, app.state.openapi_model = schema, loaded
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


app = create_app()
