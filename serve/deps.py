"""Shared dependencies: settings, the model holder, and API-key auth, as `Annotated` aliases."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import TypeAdapter

from leadscore.config import Settings, get_settings
from leadscore.errors import ModelError
from leadscore.scoring import ModelBundle, score_records
from serve.errors import ApiError
from serve.schemas import lead_model

log = logging.getLogger("serve")


@dataclass(frozen=True)
class Loaded:
    """A model and the validators generated from it: swapped together, read as one snapshot."""

    bundle: ModelBundle
    lead: type[Any]
    leads: TypeAdapter[list[dict[str, Any]]]
    fingerprint: str = ""  # what the model source looked like when this was loaded
    loaded_at: float = 0.0


def prepare(bundle: ModelBundle, settings: Settings, fingerprint: str = "") -> Loaded:
    """Validators for `bundle`, after a smoke prediction proves the model can score a lead."""
    try:
        scores, _ = score_records(bundle, [{}], reasons=1)
    except Exception as exc:  # a model that cannot score one empty lead must not serve
        raise ModelError(f"model failed its smoke prediction ({type(exc).__name__})") from None
    if not all(0.0 <= p <= 1.0 and math.isfinite(p) for p in scores.probability):
        raise ModelError("model failed its smoke prediction (probability outside 0..1)")
    lead = lead_model(bundle, forbid_extra=not settings.ignore_unknown_fields)
    adapter: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[lead])  # type: ignore[valid-type]
    return Loaded(bundle, lead, adapter, fingerprint, time.time())


SwapHook = Callable[[Loaded | None, Loaded], None]


def version_in(fingerprint: str) -> str | None:
    """The version a source fingerprint names (`registry:name:3:...`, `folder:3:sha`), if any:
    known even when the model itself turns out unloadable."""
    parts = fingerprint.split(":")
    if parts[0] == "registry" and len(parts) > 2:
        return parts[2]
    if parts[0] == "folder" and len(parts) > 1 and parts[1] not in ("None", "unreadable"):
        return parts[1]
    return None


def schema_hold(
    current: Loaded | None, bundle: ModelBundle, uri: str, settings: Settings
) -> str | None:
    """Why `bundle` must not replace the served model yet, or None. Callers send the served
    version's fields: a version that takes other fields (added, removed or retyped) is served
    only once it was promoted with `--allow-schema-change` (a registry tag, or the flag in a
    bundle folder's metadata)."""
    from leadscore.promotion import schema_change

    if current is None:
        return None
    served = current.bundle
    change = schema_change(served.input_types(), bundle.input_types())
    if not change:
        return None
    if bundle.meta.get("schema_change_allowed") or _allowed_in_registry(uri, bundle, settings):
        return None
    return (
        f"version {bundle.version} takes other input fields than the served version "
        f"{served.version} ({change.describe()}): held back until promoted with "
        f"leadscore promote {bundle.name} {bundle.version} --allow-schema-change"
    )


def _allowed_in_registry(uri: str, bundle: ModelBundle, settings: Settings) -> bool:
    if not uri.startswith("models:/"):
        return False
    from leadscore import tracking

    return tracking.schema_change_allowed(bundle.name, bundle.version, settings)


class ModelHolder:
    """Holds the serving model. A request takes one snapshot and finishes on it, so a reload
    (an atomic reference swap) never changes the model under an in-flight request."""

    def __init__(self, on_swap: SwapHook | None = None,
                 on_refused: Callable[[], None] | None = None, name: str = "") -> None:
        self.name = name  # the registered model this holder serves (its key in the app)
        self.loaded: Loaded | None = None
        self.last_error: str | None = None
        # a version the source points at that is held back, and why (e.g. a schema change)
        self.pending: dict[str, str] | None = None
        self.offered: str | None = None  # the version the last load attempt found, if known
        self._lock = threading.Lock()  # one reload at a time; readers never wait
        self._on_swap = on_swap
        self._on_refused = on_refused

    def snapshot(self) -> Loaded:
        loaded = self.loaded
        if loaded is None:
            raise ApiError(503, "model_not_loaded", "no model is loaded yet",
                           [{"reason": self.last_error or "starting"}])
        return loaded

    def load(self, uri: str, settings: Settings) -> Loaded:
        """Load, verify (checksum in `load_bundle`, smoke prediction here), then swap.

        Anything short of a verified model raises `ModelError` and leaves the old one serving.
        """
        from leadscore.tracking import load_model
        from serve.reload import source_fingerprint

        with self._lock:
            try:
                try:
                    fingerprint = source_fingerprint(uri, settings)
                    self.offered = version_in(fingerprint)
                    bundle = load_model(uri, settings)
                    held = schema_hold(self.loaded, bundle, uri, settings)
                    if held is not None:
                        self.pending = {"version": bundle.version, "reason": held}
                        raise ModelError(held)
                    loaded = prepare(bundle, settings, fingerprint)
                except ModelError:
                    raise
                except Exception as exc:  # whatever breaks, the old model keeps serving
                    kind = type(exc).__name__
                    raise ModelError(f"{uri}: model cannot be loaded ({kind})") from None
            except ModelError as exc:
                self.last_error = str(exc)
                if self._on_refused is not None:
                    self._on_refused()
                raise
            previous, self.loaded = self.loaded, loaded
            self.last_error = None
            self.pending = None
            if self._on_swap is not None:
                self._on_swap(previous, loaded)
        log.info("serving %s version %s", loaded.bundle.name, loaded.bundle.version)
        return loaded


# Dependencies are `async def` on purpose: they only read attributes, and FastAPI runs a plain
# `def` dependency in the thread pool, a thread hop per dependency per request.


async def get_models(request: Request) -> Any:
    return request.app.state.models  # serve.models.ModelSet (that module imports this one)


async def settings_dep(request: Request) -> Settings:
    settings: Settings = getattr(request.app.state, "settings", None) or get_settings()
    return settings


SettingsDep = Annotated[Settings, Depends(settings_dep)]
ModelsDep = Annotated[Any, Depends(get_models)]


def key_digests(settings: Settings, admin: bool = False) -> list[bytes]:
    """SHA-256 of each configured key: compared digest to digest, every comparison takes the
    same time whatever the length or content of what a caller sent. `admin`: the keys for
    /v1/admin/* (`LEADSCORE_ADMIN_KEYS`, else the API keys)."""
    keys = (settings.admin_key_list() or settings.api_key_list()) if admin else \
        settings.api_key_list()
    return [hashlib.sha256(key.encode()).digest() for key in keys]


# Wrong keys a client address may send in a window before the API and the sign-in form answer
# 429: a person mistyping never reaches it, a script guessing keys is slowed to a few a minute.
MAX_FAILURES = 10
FAILURE_WINDOW_SECONDS = 60.0


class KeyThrottle:
    """Recent wrong keys per client address, from the API and the pages' sign-in alike (memory
    only, per process). Behind a proxy every reader shares the proxy's address: the limit then
    counts them together."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW_SECONDS):
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> int:
        """How many of the client's failures are still in the window (older ones dropped; an
        address with none left is forgotten, so the lock-free check below stays the usual
        path)."""
        times = self._failures.get(client)
        if times is None:
            return 0
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            del self._failures[client]
        return len(times)

    def wait_seconds(self, client: str) -> int:
        """0 when the client may try; else the seconds until its oldest failure expires."""
        if not self._failures:  # the usual case, checked on every API request: no lock
            return 0
        now = time.monotonic()
        with self._lock:
            if self._recent(client, now) < self.limit:
                return 0
            oldest = self._failures[client][0]
            return max(1, int(self.window - (now - oldest)) + 1)

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 10_000:  # many addresses: drop those no longer counting
                for other in list(self._failures):
                    self._recent(other, now)
            self._recent(client, now)
            self._failures.setdefault(client, deque()).append(now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def key_throttle(request: Request) -> KeyThrottle:
    """The app's one throttle (`serve.main.create_app` makes it)."""
    throttle: KeyThrottle = request.app.state.key_throttle
    return throttle


def client_address(request: Request) -> str:
    return request.client.host if request.client else "-"


async def require_key(request: Request) -> None:
    """`Authorization: Bearer <key>` or `X-API-Key: <key>`, checked in constant time against
    every configured key. No keys configured: open. Keys are never logged."""
    check_key(request)


async def require_admin_key(request: Request) -> None:
    """The admin routes: `LEADSCORE_ADMIN_KEYS` when set (a scoring key is not enough to swap
    the model under every caller), else the API keys."""
    check_key(request, admin=True)


class RequestHead:
    """What auth and the scoring route need from a request's headers, read in one pass over the
    raw header list: Starlette's `request.headers` builds a `Headers` object and each `.get`
    scans the list again (~10 µs a request together, a tenth of a one-lead request)."""

    __slots__ = ("content_length", "content_type", "keys")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.content_type: bytes | None = None
        self.content_length: bytes | None = None
        self.keys: list[bytes] = []  # the API keys offered, as sent
        for name, value in headers:
            if name == b"content-type":
                if self.content_type is None:
                    self.content_type = value
            elif name == b"content-length":
                if self.content_length is None:
                    self.content_length = value
            elif name == b"authorization":
                if value[:7].lower() == b"bearer ":
                    self.keys.append(value[7:].strip())
            elif name == b"x-api-key":
                self.keys.append(value.strip())


def check_key(request: Request, admin: bool = False) -> None:
    """401 unless the request offers a configured key; 429 while its address is throttled."""
    state = request.app.state
    digests: list[bytes] = state.admin_key_digests if admin else state.key_digests
    if digests:
        authorize(request, digests, state.key_throttle, RequestHead(request.scope["headers"]).keys,
                  admin and bool(state.settings.admin_key_list()))


def authorize(request: Request, digests: list[bytes], throttle: KeyThrottle,
              offered: list[bytes], admin: bool = False) -> None:
    """`check_key` once the configured digests and the offered keys are in hand (the scoring
    route reads the keys in the same pass over the headers as everything else it needs)."""
    client = request.scope.get("client")
    address = client[0] if client else "-"
    wait = throttle.wait_seconds(address)
    if wait:
        raise ApiError(429, "too_many_wrong_keys", f"too many wrong keys from this address: "
                       f"wait {wait} seconds", headers={"Retry-After": str(wait)})
    matched = False
    for candidate in offered:
        if candidate:
            supplied = hashlib.sha256(candidate).digest()
            for digest in digests:
                matched |= hmac.compare_digest(supplied, digest)
    if not matched:
        if any(offered):
            throttle.failed(address)
        kind = "admin key (LEADSCORE_ADMIN_KEYS)" if admin else "API key"
        raise ApiError(401, "unauthorized", f"missing or invalid {kind}: send "
                       "'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                       headers={"WWW-Authenticate": 'Bearer realm="leadscore"'})


Authorized = Annotated[None, Depends(require_key)]
AdminAuthorized = Annotated[None, Depends(require_admin_key)]


@dataclass(frozen=True)
class Scoring:
    """What the scoring route needs from the app, gathered once (`serve.main`'s lifespan)."""

    models: Any  # serve.models.ModelSet
    settings: Settings
    metrics: Any
    limiter: Any  # anyio.CapacityLimiter: how many worker threads score at once
    key_digests: list[bytes]
    key_throttle: KeyThrottle

    @classmethod
    def of(cls, state: Any) -> Scoring:
        return cls(state.models, state.settings, state.metrics, state.score_limiter,
                   state.key_digests, state.key_throttle)


def scoring_context(request: Request, offered: list[bytes] | None = None) -> Scoring:
    """The caller is authorised (else 401), and the app's holder, settings and metrics.

    Called directly by the scoring route rather than through `Depends`: each FastAPI
    dependency costs ~15 µs a request, a real share of a single-lead request. `offered`: the
    keys, when the route read them with its other headers.
    """
    state = request.app.state
    context: Scoring | None = getattr(state, "scoring", None)
    if context is None:  # an app whose lifespan has not run (some tests)
        context = Scoring.of(state)
    if context.key_digests:
        if offered is None:
            offered = RequestHead(request.scope["headers"]).keys
        authorize(request, context.key_digests, context.key_throttle, offered)
    return context
