"""`GET /`: the lead board (latest score of every lead, filters, sorting, pages) and
`GET /board.csv`: the same filter as flat CSV. The rows come from `leadscore.board`."""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from leadscore.board import PER_PAGE, Board, BoardPage, BoardQuery, board_csv
from leadscore.errors import DataError
from leadscore.labels import DEFAULT_TIER_WORDS, TIERS, prettify
from leadscore.store import KEPT_PREFIX, ScoreStore
from serve.pages.auth import PageError, require_page_user
from serve.pages.bundles import bundle_finder
from serve.pages.rendering import render

log = logging.getLogger("serve")

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_page_user)])

ARROWS = {"rising": "\u2191", "falling": "\u2193", "steady": "\u2192", "unknown": "\u00b7"}
# what the board says for a trend (the API keeps "unknown": one scoring has no trend yet)
TREND_WORDS = {"rising": "rising", "falling": "falling", "steady": "steady", "unknown": "new"}
# the board's columns: (sort key or None, heading); the kept columns follow the lowerer
COLUMNS = [("lead_id", "Lead"), ("score", "Score"), ("tier", "Tier"),
           ("probability", "Probability"), ("trend", "Trend"), (None, "Raises it most"),
           (None, "Lowers it most")]
TAIL = [("scored_at", "Scored")]


def board_of(request: Request) -> Board:
    """The app's board (one per store root: its cache lives as long as the server)."""
    return board_of_app(request.app)


def board_of_app(app: Any) -> Board:
    """`board_of` for code without a request (the warm-up at start)."""
    state = app.state
    store = ScoreStore.of(state.settings)
    board: Board | None = getattr(state, "pages_board", None)
    if board is None or board.store.root != store.root:
        board = state.pages_board = Board(store)
    return board


def warm(app: Any) -> threading.Thread:
    """Read each served model's latest scores into the board's cache on a side thread, so the
    first person to open the board after a start gets a cached page (a cold read of 100k
    leads x 3 scorings is ~0.3 s, a cached page ~20 ms: benchmarks/results/pages.json). A
    model without history, or a store that cannot be read, is left for the first request,
    which reports it."""
    board = board_of_app(app)

    def read_all() -> None:
        for name in list(app.state.models.models):
            try:
                board.latest(name)
            except Exception as exc:  # the page itself reports it when asked
                log.debug("board warm-up skipped %s: %s", name, exc)

    thread = threading.Thread(target=read_all, name="board-warm-up", daemon=True)
    thread.start()
    return thread


def choose_model(request: Request, board: Board) -> tuple[str | None, list[str]]:
    """?model=, else the default served model, else the only (or first) model with scores; and
    the choices: every served model and every model with a history."""
    served = request.app.state.models
    stored = board.store.models()
    choices = list(dict.fromkeys([*served.models, *stored]))
    asked = request.query_params.get("model")
    if asked:
        if asked not in choices:
            known = ", ".join(choices) or "none"
            raise PageError(404, f"no model named {asked!r} here (models: {known})",
                            "model_not_found")
        return asked, choices
    if served.default in stored:
        return served.default, choices
    for name in served.models:
        if name in stored:
            return name, choices
    return (stored[0] if stored else served.default), choices


def query_of(request: Request, model: str) -> BoardQuery:
    """The board query in the URL: tier (repeated), q (lead id prefix), k_<column> (a kept
    column's value), sort, dir (asc|desc), page."""
    params = request.query_params
    kept = {k[len(KEPT_PREFIX):]: v for k, v in params.multi_items()
            if k.startswith(KEPT_PREFIX) and v != ""}
    direction = params.get("dir", "")
    if direction not in ("", "asc", "desc"):
        raise PageError(400, f"dir must be asc or desc, not {direction[:40]!r}", "invalid_query")
    sort = params.get("sort") or "score"
    page = params.get("page") or "1"
    if not page.isascii() or not page.isdigit() or len(page) > 9 or int(page) < 1:
        raise PageError(400, f"page must be a whole number from 1, not {page[:40]!r}",
                        "invalid_query")
    descending = direction == "desc" if direction else sort in ("score", "probability",
                                                                "scored_at", "trend")
    return BoardQuery(model=model, tiers=tuple(t for t in params.getlist("tier") if t),
                      search=params.get("q", "").strip(), kept=kept, sort=sort,
                      descending=descending, page=int(page), per_page=PER_PAGE)


def link(request: Request, **changes: Any) -> str:
    """This board's URL with some parameters changed (None: removed); page back to 1 unless
    it is the change."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    if "page" not in changes:
        items = [(k, v) for k, v in items if k != "page"]
    for key, value in changes.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            items += [(key, str(v)) for v in value]
        else:
            items.append((key, str(value)))
    return "?" + urlencode(items) if items else "?"


def _view(request: Request, board: Board, query: BoardQuery) -> BoardPage:
    """The page's rows with their top raiser and lowerer (in a worker thread: DuckDB, TreeSHAP)."""
    page = board.page(query)
    board.explain(page, bundle_finder(request, query.model))
    return page


def _tier_words(request: Request, model: str) -> dict[str, str]:
    served = request.app.state.models.models.get(model)
    loaded = served.holder.loaded if served is not None else None
    if loaded is None:
        return dict(DEFAULT_TIER_WORDS)
    return dict(loaded.bundle.tier_words_)


@router.get("/")
async def lead_board(request: Request) -> Response:
    board = board_of(request)
    model, choices = choose_model(request, board)
    words = _tier_words(request, model) if model else dict(DEFAULT_TIER_WORDS)
    context: dict[str, Any] = {
        "model": model, "models": choices, "tiers": TIERS, "tier_words": words,
        "arrows": ARROWS, "trend_words": TREND_WORDS, "link": lambda **c: link(request, **c),
        "columns": COLUMNS,
        "tail": TAIL, "params": request.query_params, "page": None, "query": None,
        "kept_label": prettify,
    }
    if model is None or model not in board.store.models():
        return render(request, "board.html", context)
    query = query_of(request, model)
    try:
        page = await run_in_threadpool(_view, request, board, query)
    except DataError as exc:
        raise PageError(400, str(exc), "invalid_query") from None
    context.update(page=page, query=query,
                   csv_link=f"board.csv{link(request, page=None, sort=query.sort, model=model)}")
    return render(request, "board.html", context)


@router.get("/board.csv")
async def board_download(request: Request) -> Response:
    """Every row the board's filter matches, in its order, as flat CSV (one value a cell)."""
    board = board_of(request)
    model, _ = choose_model(request, board)
    if model is None or model not in board.store.models():
        raise PageError(404, "no scores recorded for this model yet", "not_found")
    query = query_of(request, model)
    try:
        table = await run_in_threadpool(board.filtered, query)
        kept = board.kept_columns(model)
    except DataError as exc:
        raise PageError(400, str(exc), "invalid_query") from None
    words = _tier_words(request, model)
    name = f"leads-{model}.csv".replace('"', "")
    return StreamingResponse(
        board_csv(table, words, kept), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"',
                 "Cache-Control": "no-store"})
