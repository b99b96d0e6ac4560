"""Where a long training is: its stage, boosting round and tuning trial, told to whoever listens.

Training takes minutes on a large export; a silent terminal looks hung. The library only
announces (`stage`, `boosting_round`, `trial`); the CLI listens with a Rich progress display.
The listener is a context variable, so library callers and tests that do not listen pay one
lookup per event and nothing is threaded through every function signature.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Listener:
    """Callbacks for the three kinds of event; each may be left out."""

    on_stage: Callable[[str], None] | None = None
    on_round: Callable[[int, int], None] | None = None
    on_trial: Callable[[int, int, float | None], None] | None = None


_listener: ContextVar[Listener | None] = ContextVar("leadscore_progress", default=None)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send this block's progress events to `listener`."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def stage(name: str) -> None:
    """A new stage begins ("building features", "leak audit", "training", ...)."""
    log.debug("stage: %s", name)
    listener = _listener.get()
    if listener is not None and listener.on_stage is not None:
        listener.on_stage(name)


def trial(done: int, total: int, best: float | None) -> None:
    """A tuning trial finished (`best`: the best validation score so far)."""
    listener = _listener.get()
    if listener is not None and listener.on_trial is not None:
        listener.on_trial(done, total, best)


def round_callback(total: int) -> Callable[[Any], None] | None:
    """A LightGBM callback reporting each boosting round, or None when nobody listens (so an
    unobserved training runs exactly as before)."""
    listener = _listener.get()
    if listener is None or listener.on_round is None:
        return None
    on_round = listener.on_round

    def callback(env: Any) -> None:
        on_round(env.iteration + 1, total)

    callback.order = 40  # type: ignore[attr-defined]  # after early stopping's own check
    return callback
