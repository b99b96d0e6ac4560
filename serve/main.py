"""Assembles the scoring API: settings, model holder, routers, error handlers, OpenAPI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from leadscore import __version__
from leadscore.config import Settings, get_settings
from leadscore.errors import LeadscoreError
from serve import errors
from serve.deps import ModelHolder
from serve.routes import admin, health, model, score
from serve.schemas import request_model

log = logging.getLogger("serve")


def create_app(settings: Settings | None = None, *, load_model: bool = True) -> FastAPI:
    """An app bound to `settings` (tests pass their own); the model loads in `lifespan`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        current = app.state.settings or get_settings()
        if load_model and app.state.holder.loaded is None:
            uri = current.resolved_model_uri()
            try:
                await run_in_threadpool(app.state.holder.load, uri, current)
            except LeadscoreError as exc:
                log.error("no model loaded from %s: %s", uri, exc)
        yield

    app = FastAPI(
        title="leadscore",
        version=__version__,
        description="Lead conversion probabilities, scores, tiers and reasons.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.holder = ModelHolder()
    errors.install(app)
    for router in (health.router, model.router, score.router, admin.router):
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        """The default schema plus the lead fields of the model being served."""
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        loaded = app.state.holder.loaded
        current = app.state.settings or get_settings()
        if loaded is not None:
            body = request_model(loaded.lead, current.max_batch).model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(body.pop("$defs", {}))
            components["ScoreRequest"] = body
        else:
            components["ScoreRequest"] = {"type": "object", "properties": {"leads": {
                "type": "array", "items": {"type": "object"}}}, "required": ["leads"]}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


app = create_app()
