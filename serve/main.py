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
from leadscore.store import ScoreStore
from serve import errors, pages
from serve.deps import KeyThrottle, ModelHolder, Scoring, key_digests
from serve.examples import add_examples
from serve.models import ModelSet, Plan, plan_models
from serve.observe import Metrics, ObserveMiddleware
from serve.recorder import ScoreRecorder
from serve.reload import poll
from serve.routes import admin, docs, health, history, metrics, model, score
from serve.schemas import request_model

log = logging.getLogger("serve")

# Worker threads scoring at once (batches beyond what routes/score.py scores inline): one per
# core. More only queue on the GIL for the Python parts of scoring and stretch the tail
# (measured when one-lead requests with 3 reasons still went to threads, at concurrency 16:
# p99 16-18 ms with 2 threads, 23-24 ms with anyio's default 40).
SCORING_THREADS = os.cpu_count() or 2


def create_app(settings: Settings | None = None, *, load_model: bool = True) -> FastAPI:
    """An app bound to `settings` (default: the environment's); the models load in `lifespan`.

    Which models: see `serve.models.plan_models`. With `LEADSCORE_RELOAD_SECONDS` > 0 a
    background task per model reloads it whenever its source (registry version, or bundle
    checksum) changes, independently of the others; they stop when the server does.
    """
    current = settings or get_settings()

    def make_holder(name: str) -> ModelHolder:
        metrics: Metrics = app.state.metrics
        return ModelHolder(on_swap=metrics.model_swapped,
                           on_refused=lambda: metrics.model_refused(name), name=name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.score_limiter = anyio.CapacityLimiter(SCORING_THREADS)
        plan = Plan([], None, "model loading is off")
        if load_model:
            plan = await run_in_threadpool(plan_models, current)
        models = ModelSet(plan, make_holder)
        app.state.models = models
        # what the scoring route reads on every request, gathered once
        app.state.scoring = Scoring.of(app.state)
        for served in models.models.values():
            try:
                await run_in_threadpool(served.holder.load, served.uri, current)
            except LeadscoreError as exc:
                log.error("model %s not loaded from %s: %s", served.name, served.uri, exc)
        if not models.models:
            log.error("no model to serve: %s", plan.note)
        elif len(models.models) > 1:
            log.info("serving %s; POST /v1/score uses %s", ", ".join(models.models),
                     models.default or "none (set LEADSCORE_DEFAULT_MODEL)")
        if models.models:
            pages.board.warm(app)  # the lead board's first page served from its cache
        # Everything imported and loaded so far lives as long as the server: moved out of the
        # collector's reach, a full collection no longer walks pandas', MLflow's and the
        # model's objects (tens of ms a pass, which showed as the p99 of every route)
        gc.collect()
        gc.freeze()
        recorder = None
        if current.record_scores:
            recorder = ScoreRecorder(ScoreStore.of(current), current.record_flush_seconds)
            recorder.start()
            app.state.recorder = recorder
            log.info("recording scores in %s", recorder.store.root)
        pollers = []
        if load_model and current.reload_seconds > 0:
            pollers = [
                asyncio.create_task(poll(served.holder, served.uri, current,
                                         current.reload_seconds))
                for served in models.models.values()
            ]
        try:
            yield
        finally:
            for poller in pollers:
                poller.cancel()
            for poller in pollers:
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            if recorder is not None:
                app.state.recorder = None
                await run_in_threadpool(recorder.stop)
                log.info("recorded %d score(s) in the history", recorder.recorded)
            log.info("shut down")

    app = FastAPI(
        title="leadscore",
        version=__version__,
        description="Lead conversion probabilities, scores, tiers and reasons.",
        lifespan=lifespan,
        docs_url=None,  # served from the package's own files: serve/routes/docs.py
        redoc_url=None,
    )
    app.state.settings = current
    app.state.metrics = Metrics()
    app.state.models = ModelSet(Plan([], None, "starting"), make_holder)
    app.state.key_digests = key_digests(current)
    app.state.admin_key_digests = key_digests(current, admin=True)
    app.state.key_throttle = KeyThrottle()  # wrong keys per client address (API and sign-in)
    app.state.openapi_model = None
    app.state.recorder = None  # a ScoreRecorder when LEADSCORE_RECORD_SCORES=1
    app.state.history_bundles = {}  # (model, version) -> bundle, for explaining a history
    errors.install(app)
    app.add_middleware(ObserveMiddleware, metrics=app.state.metrics)
    # The scoring routes go first in the app's own list rather than behind `include_router`:
    # every request is matched against the list in order, and each route passed over (the
    # OpenAPI route, an included router's layer) cost a one-lead request ~10 µs (api.py)
    app.router.routes[0:0] = score.router.routes  # (include_router below marks the change)
    for router in (health.router, metrics.router, model.router, admin.router, docs.router,
                   history.router):
        app.include_router(router)
    app.mount(docs.STATIC_PATH, docs.static_files(), name="static")
    pages.install(app)  # the pages for people: sign-in, lead board, lead page (serve/pages/)

    def openapi() -> dict[str, Any]:
        """The default schema plus the lead fields of the model being served (rebuilt after a
        reload, since a new model may bring new fields)."""
        models: ModelSet = app.state.models
        default = models.models.get(models.default) if models.default else None
        loaded = default.holder.loaded if default is not None else None
        served = {name: s.holder.loaded for name, s in models.models.items()}
        key = (loaded, tuple(served.items()))
        if app.openapi_schema and app.state.openapi_model == key:
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
        any_request = {"type": "object", "properties": {"leads": {
            "type": "array", "items": {"type": "object"}, "minItems": 1,
            "maxItems": current.max_batch}}, "required": ["leads"],
            "description": "Leads with the named model's fields (GET /v1/models/{name})."}
        components["AnyScoreRequest"] = any_request
        if loaded is None:
            components["ScoreRequest"] = any_request
        add_examples(schema, loaded.bundle if loaded is not None else None)
        per_model_paths(schema, {n: m for n, m in served.items() if m is not None}, current)
        if current.api_key_list():
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
        app.openapi_schema, app.state.openapi_model = schema, key
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def per_model_paths(schema: dict[str, Any], served: dict[str, Any], settings: Settings) -> None:
    """`POST /v1/models/{name}/score` written out once per served model, each with that model's
    own lead fields, examples and levels: one template path could only promise "some object",
    and a client (or a schema-driven test) could not know which fields a name takes."""
    import copy

    from serve.examples import example_lead, example_results

    paths: dict[str, Any] = schema.get("paths", {})
    template = paths.get("/v1/models/{name}/score", {}).get("post")
    if template is None or not served:
        return
    components = schema["components"]["schemas"]
    del paths["/v1/models/{name}/score"]
    for name, loaded in served.items():
        body = request_model(
            loaded.lead, settings.max_batch, forbid_extra=not settings.ignore_unknown_fields
        ).model_json_schema(ref_template=f"#/components/schemas/{{model}}_{name}")
        for part, definition in body.pop("$defs", {}).items():
            components[f"{part}_{name}"] = definition
        components[f"ScoreRequest_{name}"] = body
        operation = copy.deepcopy(template)
        operation["operationId"] = f"{template.get('operationId', 'score_model')}_{name}"
        operation["summary"] = f"Score leads with {name}"
        operation["parameters"] = [p for p in operation.get("parameters", [])
                                   if p.get("name") != "name"]
        content = operation["requestBody"]["content"]["application/json"]
        content["schema"] = {"$ref": f"#/components/schemas/ScoreRequest_{name}"}
        lead = example_lead(loaded.bundle)
        content["example"] = {"leads": [lead]}
        answer = example_results(loaded.bundle, lead)
        if answer is not None:
            response = operation["responses"].setdefault("200", {}).setdefault("content", {})
            response.setdefault("application/json", {})["example"] = answer
        paths[f"/v1/models/{name}/score"] = {"post": operation}


app = create_app()
