"""The lead board: the latest score of every lead in the score history, its trend, filters,
sorting and pages, and the words (top reasons, fields) for the few rows anyone looks at.

DuckDB reads the store's Parquet files once per change of those files (their names, sizes and
modification times) and keeps one row per lead in memory as Arrow; filtering, sorting and paging
are numpy over that table, so a page view after the first costs milliseconds, not a scan.
Reasons are recomputed only for the rows on the page, from their stored encoded features and
the version's own bundle (`history.impacts_of`): TreeSHAP for 50 rows, not for 100k.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leadscore.errors import DataError
from leadscore.history import TREND_LOOKBACK, TREND_POINTS, impacts_of
from leadscore.labels import TIERS, value_text
from leadscore.scoring import ModelBundle, top_reasons
from leadscore.store import FEATURE_PREFIX, KEPT_PREFIX, ScoreStore

log = logging.getLogger(__name__)

PER_PAGE = 50
# what a board row holds besides the kept columns, and what it may be sorted by
BASE_COLUMNS = ("lead_id", "score", "tier", "probability", "trend", "scored_at", "model_version")
TRENDS = ("rising", "steady", "falling", "unknown")
# a trend sorts by its size: the score's move since the scoring `trend_of` compares with
TREND_SORT = "move"
# kept columns with at most this many distinct values get a select; others a text box
FEW_VALUES = 40
EXPLAINED_MAX = 20_000
# a latest row's file and row number in it and the scores before it: kept beside the rows,
# never shown
_PLACE = ("_file", "_pos", *(f"_back_{i}" for i in range(1, TREND_LOOKBACK + 1)))
# a CSV cell a spreadsheet would run as a formula is written as text (a leading quote)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

BundleFor = Callable[[str], ModelBundle | None]  # a model version -> its bundle, or None


def _query(con: Any, sql: str, params: dict[str, Any]) -> pa.Table:
    """A DuckDB query's rows as an Arrow table, without the copy a DB-API cursor makes (a
    relation's `to_arrow_table` from DuckDB 1.4, `arrow` before it)."""
    relation = con.sql(sql, params=params)
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    table: pa.Table = fetch()
    return table


def _quoted(name: str) -> str:
    """A column name as a DuckDB identifier (a kept column's name is the user's)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class BoardQuery:
    """What a board view asks for; built from query parameters by the page, checked here."""

    model: str
    tiers: tuple[str, ...] = ()
    search: str = ""  # a lead id prefix
    kept: Mapping[str, str] = field(default_factory=dict)  # kept column (no prefix) -> value
    sort: str = "score"
    descending: bool = True
    page: int = 1
    per_page: int = PER_PAGE


@dataclass
class BoardPage:
    """One page of the board: its rows (dicts), how many leads the filter matched, the kept
    columns and the choices for each one's filter."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    kept_columns: list[str]
    kept_choices: dict[str, list[str] | None]  # None: too many values for a select
    table: pa.Table  # the page's rows as Arrow (with `_row`: their place in the latest table)
    model: str = ""


@dataclass
class _Latest:
    signature: tuple[tuple[str, int, int], ...]
    table: pa.Table  # one row per lead
    kept: list[str]
    choices: dict[str, list[str] | None]
    orders: dict[tuple[str, bool], np.ndarray] = field(default_factory=dict)
    # (lead id, scored at, version) -> its top raiser and lowerer: a scoring never changes, so
    # its words are computed once (bounded: cleared past EXPLAINED_MAX entries)
    explained: dict[tuple[str, Any, str], tuple[Any, Any]] = field(default_factory=dict)


class Board:
    """The latest scores of a store's models, cached per model until its files change."""

    def __init__(self, store: ScoreStore) -> None:
        self.store = store
        self._cache: dict[str, _Latest] = {}
        self._lock = threading.Lock()
        self._con: Any = None  # one in-memory DuckDB; each query on its own cursor
        self._con_lock = threading.Lock()

    def _cursor(self) -> Any:
        """A cursor of the board's DuckDB connection (made once: a connection costs ~0.1 s on
        a busy machine; a cursor is a thread's own handle on it)."""
        with self._con_lock:
            if self._con is None:
                import duckdb

                self._con = duckdb.connect()
                self._con.execute("SET threads TO 2")
        return self._con.cursor()

    # ------------------------------------------------------------------ the latest rows

    def _signature(self, files: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in files:
            try:
                stat = path.stat()
            except FileNotFoundError:  # compacted away between listing and stat: next time
                continue
            out.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(out)

    def _latest(self, model: str) -> _Latest:
        files = self.store.files(model)
        if not files:
            raise DataError(f"no score history for model {model!r} in {self.store.root}")
        signature = self._signature(files)
        with self._lock:
            cached = self._cache.get(model)
            if cached is not None and cached.signature == signature:
                return cached
            latest = None
            if cached is not None and set(cached.signature) < set(signature):
                latest = self._merged(model, cached, signature)
            if latest is None:
                latest = self._read_latest(model, signature)
            self._cache[model] = latest
            return latest

    def _kept_in(self, files: Sequence[str]) -> list[str]:
        import pyarrow.parquet as pq

        names: dict[str, None] = {}
        for path in files:
            for name in pq.read_schema(path).names:
                if name.startswith(KEPT_PREFIX):
                    names[name] = None
        return sorted(names)

    def _query_latest(self, files: Sequence[str], kept: Sequence[str],
                      first: bool = False) -> pa.Table:
        """Per lead in `files`: its latest scoring, the `TREND_LOOKBACK` scores before it
        (`_back_1`, ...), where the row lies (`_file`, `_pos`) and, with `first`, its first
        scoring's time there (`_first`). Unordered: every view sorts for itself (an ORDER BY
        lead_id here cost 40% of the read)."""
        kept_sql = "".join(f", {_quoted(k)}" for k in kept)
        earlier = ", ".join(f"lead(score, {i}) OVER w AS _back_{i}"
                            for i in range(1, TREND_LOOKBACK + 1))
        first_sql = ", min(scored_at) OVER (PARTITION BY lead_id) AS _first" if first else ""
        sql = f"""
            SELECT lead_id, model_version, scored_at, probability, score, tier{kept_sql},
                   {earlier}, filename AS _file, file_row_number AS _pos{first_sql}
            FROM read_parquet($files, union_by_name = true, hive_partitioning = false,
                              filename = true, file_row_number = true)
            WINDOW w AS (PARTITION BY lead_id ORDER BY scored_at DESC, model_version DESC)
            QUALIFY row_number() OVER w = 1
        """
        con = self._cursor()
        try:
            table = _query(con, sql, {"files": list(files)})
        finally:
            con.close()
        # where each latest row lies (file, row number): its features are read from there
        return table.set_column(table.schema.get_field_index("_file"), "_file",
                                pc.dictionary_encode(table.column("_file")))

    def _read_latest(self, model: str, signature: tuple[tuple[str, int, int], ...]) -> _Latest:
        """One row per lead: its latest scoring and the scores of the `TREND_LOOKBACK` before
        it (the trend's rule, `history.trend_of`, over the same rows)."""
        files = [s[0] for s in signature]
        kept = self._kept_in(files)
        table = self._query_latest(files, kept)
        log.info("board for %s: %d leads from %d file(s)", model, table.num_rows, len(files))
        return _finished(table, kept, signature)

    def _merged(self, model: str, cached: _Latest,
                signature: tuple[tuple[str, int, int], ...]) -> _Latest | None:
        """The cached rows with only the files added since read and merged in (an API that
        records its scores adds a small file every few seconds; a batch job, a day's). None
        when that cannot be exact: a lead scored in a new file at or before its cached latest
        scoring, or new kept columns; the store is then read again."""
        added = [s[0] for s in signature if s not in set(cached.signature)]
        kept = [KEPT_PREFIX + k for k in cached.kept]
        present = self._kept_in(added)
        if set(present) - set(kept):
            return None
        new = self._query_latest(added, present, first=True)
        for name in kept:  # a kept column the added files lack: empty for their rows
            if name not in present:
                new = new.append_column(name, pa.nulls(new.num_rows, pa.string()))
        old = cached.table
        where = pc.index_in(new.column("lead_id"), value_set=old.column("lead_id"))
        matched = where.is_valid().to_numpy(zero_copy_only=False)
        at = where.fill_null(0).to_numpy(zero_copy_only=False)[matched]
        old_when = old.column("scored_at").take(pa.array(at)).to_pylist()
        first = np.asarray(new.column("_first").to_pylist(), dtype=object)[matched]
        if any(f <= w for f, w in zip(first.tolist(), old_when, strict=True)):
            return None
        new = new.drop_columns(["_first"])
        backs = [f"_back_{i}" for i in range(1, TREND_LOOKBACK + 1)]
        # a lead's last scores: the cached ones, then the new file's, the last few kept
        old_scores = [old.column(c).take(pa.array(at)).to_pylist()
                      for c in [*reversed(backs), "score"]]
        new_rows = np.flatnonzero(matched).tolist()
        new_scores = [new.column(c).to_pylist() for c in [*reversed(backs), "score"]]
        columns = {c: new.column(c).to_pylist() for c in backs}
        for k, i in enumerate(new_rows):
            seq = [v[k] for v in old_scores if v[k] is not None]
            seq += [v[i] for v in new_scores if v[i] is not None]
            before = seq[:-1][::-1]
            for j, c in enumerate(backs):
                columns[c][i] = before[j] if j < len(before) else None
        for c in backs:
            new = new.set_column(new.schema.get_field_index(c), c, pa.array(columns[c],
                                                                             pa.int64()))
        stay = old.filter(pc.invert(pc.is_in(old.column("lead_id"),
                                             value_set=new.column("lead_id"))))
        base = stay.select(new.column_names)
        table = pa.concat_tables([base, new.cast(base.schema)])
        log.info("board for %s: %d new scoring(s) from %d added file(s) merged", model,
                 new.num_rows, len(added))
        merged = _finished(table, kept, signature)
        merged.explained = cached.explained  # a scoring's words do not change
        return merged

    def kept_columns(self, model: str) -> list[str]:
        """The kept columns (`--keep`) the model's history holds, by their own names."""
        return list(self._latest(model).kept)

    def latest(self, model: str) -> pa.Table:
        """Every lead's latest scoring (one row per lead, by lead id), with trend columns."""
        return self._latest(model).table

    # ------------------------------------------------------------------ filter, sort, page

    def _order(self, latest: _Latest, sort: str, descending: bool) -> np.ndarray:
        """Row positions sorted by `sort` (ties by lead id), cached with the table."""
        key = (sort, descending)
        order = latest.orders.get(key)
        if order is None:
            column = TREND_SORT if sort == "trend" else sort
            direction = "descending" if descending else "ascending"
            keys = [(column, direction)]
            if column == "score":  # equal scores: the higher probability first
                keys.append(("probability", direction))
            if column != "lead_id":
                keys.append(("lead_id", "ascending"))
            order = pc.sort_indices(latest.table, sort_keys=keys,
                                    null_placement="at_end").to_numpy()
            latest.orders[key] = order
        return order

    def _check(self, query: BoardQuery, latest: _Latest) -> None:
        sortable = [*BASE_COLUMNS, *latest.kept]
        column = query.sort
        if column.startswith(KEPT_PREFIX) and column[len(KEPT_PREFIX):] in latest.kept:
            column = column[len(KEPT_PREFIX):]
        if column not in sortable:
            raise DataError(f"cannot sort by {query.sort!r}: sort by one of "
                            f"{', '.join(sortable)}{_did_you_mean(query.sort, sortable)}")
        bad = [t for t in query.tiers if t not in TIERS]
        if bad:
            raise DataError(f"tier {bad[0]!r} is not a tier: {', '.join(TIERS)}")
        unknown = [k for k in query.kept if k not in latest.kept]
        if unknown:
            known = latest.kept or ["none"]
            raise DataError(f"no kept column named {unknown[0]!r} (kept columns: "
                            f"{', '.join(known)}){_did_you_mean(unknown[0], latest.kept)}")
        if query.page < 1:
            raise DataError("page must be 1 or more")

    def _sort_column(self, query: BoardQuery, latest: _Latest) -> str:
        if query.sort in latest.kept:
            return KEPT_PREFIX + query.sort
        return query.sort

    def _mask(self, query: BoardQuery, table: pa.Table) -> np.ndarray | None:
        masks = []
        if query.tiers:
            masks.append(pc.is_in(table.column("tier"), pa.array(list(query.tiers))))
        if query.search:
            masks.append(pc.starts_with(table.column("lead_id"), query.search))
        for name, value in query.kept.items():
            masks.append(pc.equal(table.column(KEPT_PREFIX + name), value))
        if not masks:
            return None
        mask = masks[0]
        for other in masks[1:]:
            mask = pc.and_(mask, other)
        return mask.fill_null(False).to_numpy(zero_copy_only=False)

    def select(self, query: BoardQuery) -> tuple[np.ndarray, _Latest]:
        """The positions of the rows the query matches, in its order."""
        latest = self._latest(query.model)
        self._check(query, latest)
        order = self._order(latest, self._sort_column(query, latest), query.descending)
        mask = self._mask(query, latest.table)
        if mask is not None:
            order = order[mask[order]]
        return order, latest

    def page(self, query: BoardQuery) -> BoardPage:
        """One page of the query's rows (reasons not included: `add_reasons`)."""
        order, latest = self.select(query)
        total = len(order)
        pages = max(1, math.ceil(total / query.per_page))
        start = (query.page - 1) * query.per_page
        positions = order[start:start + query.per_page]
        table = latest.table.take(pa.array(positions, pa.int64()))
        table = table.append_column("_row", pa.array(positions, pa.int64()))
        rows = table.drop_columns(["_row", *_PLACE]).to_pylist()
        for row in rows:
            row["kept"] = {name: row.pop(KEPT_PREFIX + name, None) for name in latest.kept}
        return BoardPage(rows, total, query.page, pages, latest.kept, latest.choices, table,
                         query.model)

    def filtered(self, query: BoardQuery) -> pa.Table:
        """Every row the query matches (no paging), in its order: what a download holds."""
        order, latest = self.select(query)
        return latest.table.take(pa.array(order, pa.int64()))

    def explain(self, page: BoardPage, bundle_for: BundleFor) -> None:
        """Give the page's rows their top raiser and lowerer (`add_reasons`), from the words
        kept for scorings already explained; the others' features are read and explained."""
        latest = self._cache.get(page.model) if page.model else None
        known = latest.explained if latest is not None else {}
        keys = [(r["lead_id"], r["scored_at"], r["model_version"]) for r in page.rows]
        missing = [i for i, key in enumerate(keys) if key not in known]
        if missing:
            sub = BoardPage([page.rows[i] for i in missing], page.total, page.page, page.pages,
                            page.kept_columns, page.kept_choices,
                            page.table.take(pa.array(missing, pa.int64())), page.model)
            add_reasons(sub, self.features(page.model, sub.table), bundle_for)
            if len(known) > EXPLAINED_MAX:
                known.clear()
            for i in missing:
                row = page.rows[i]
                if row["reasons_known"]:
                    known[keys[i]] = (row["raiser"], row["lowerer"])
        for i, key in enumerate(keys):
            if key in known:
                raiser, lowerer = known[key]
                page.rows[i].update(raiser=raiser, lowerer=lowerer, reasons_known=True)

    # ------------------------------------------------------------------ features of a few rows

    def features(self, model: str, rows: pa.Table) -> list[list[float] | None]:
        """The stored encoded features of each of `rows` (latest rows, with their `_file` and
        `_pos`), in their order; None where a row is no longer where it was (a file compacted
        since). Each file is read at those row numbers only (DuckDB skips the rest)."""
        if rows.num_rows == 0:
            return []
        ids = rows.column("lead_id").to_pylist()
        files = rows.column("_file").to_pylist()
        positions = rows.column("_pos").to_pylist()
        wanted: dict[str, list[int]] = {}
        for i, path in enumerate(files):
            wanted.setdefault(path, []).append(i)
        out: list[list[float] | None] = [None] * len(ids)
        con = self._cursor()
        try:
            for path, where in wanted.items():
                if not Path(path).is_file():
                    continue
                sql = f"""
                    SELECT file_row_number AS _pos, lead_id, COLUMNS('^{FEATURE_PREFIX}[0-9]+$')
                    FROM read_parquet($file, file_row_number = true)
                    WHERE file_row_number IN (SELECT unnest($positions))
                """
                found = _query(con, sql, {"file": path,
                                          "positions": [positions[i] for i in where]})
                names = sorted(c for c in found.column_names if c.startswith(FEATURE_PREFIX))
                matrix = np.column_stack(
                    [found.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                     for c in names]) if names else np.zeros((found.num_rows, 0))
                at = {(pos, lead): k for k, (pos, lead) in enumerate(zip(
                    found.column("_pos").to_pylist(), found.column("lead_id").to_pylist(),
                    strict=True))}
                for i in where:
                    k = at.get((positions[i], ids[i]))
                    if k is not None:
                        out[i] = matrix[k].tolist()
        finally:
            con.close()
        return out


def _finished(table: pa.Table, kept: Sequence[str],
              signature: tuple[tuple[str, int, int], ...]) -> _Latest:
    """The latest rows with their trend (`history.trend_of`'s rule over the score and the
    `_back_*` before it), the trend's size for sorting, the previous score, and the choices of
    each kept column's filter."""
    table = table.drop_columns([c for c in ("trend", TREND_SORT, "previous_score")
                                if c in table.column_names])
    score = table.column("score").to_numpy(zero_copy_only=False).astype(np.int64)
    back = [table.column(f"_back_{i}") for i in range(1, TREND_LOOKBACK + 1)]
    # the score TREND_LOOKBACK scorings back, else the first one there is
    before = back[-1]
    for column in reversed(back[:-1]):
        before = pc.coalesce(before, column)
    has_before = before.is_valid().to_numpy(zero_copy_only=False)
    move = score - before.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    trend = np.where(move >= TREND_POINTS, "rising",
                     np.where(move <= -TREND_POINTS, "falling", "steady")).astype(object)
    trend[~has_before] = "unknown"
    table = table.append_column("trend", pa.array(trend, pa.string()))
    table = table.append_column(TREND_SORT, pa.array(np.where(has_before, move, 0)))
    table = table.append_column("previous_score", back[0])
    choices: dict[str, list[str] | None] = {}
    for name in kept:
        distinct = pc.unique(table.column(name).drop_null())
        choices[name[len(KEPT_PREFIX):]] = (
            sorted(distinct.to_pylist()) if len(distinct) <= FEW_VALUES else None)
    return _Latest(signature, table, [k[len(KEPT_PREFIX):] for k in kept], choices)


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------- words for stored rows


def _input_values(bundle: ModelBundle, matrix: np.ndarray) -> list[list[Any]]:
    """Each raw input's value as the lead had it, decoded from the encoded features (the first
    feature built from it): what `top_reasons` shows for a field shown as typed."""
    features = bundle.builder.features_
    first: dict[str, int] = {}
    for j, feature in enumerate(features):
        first.setdefault(feature.source, j)
    values: list[list[Any]] = []
    for name in bundle.inputs:
        where = first.get(name)
        if where is None:
            values.append([None] * len(matrix))
            continue
        values.append([_decode(features[where], code) for code in matrix[:, where].tolist()])
    return values


def _decode(feature: Any, code: float) -> Any:
    if math.isnan(code):
        return None
    if feature.kind == "categorical":
        index = int(code)
        return feature.levels[index] if 0 <= index < len(feature.levels) else None
    return float(code)


def stored_reasons(bundle: ModelBundle, matrix: np.ndarray, probability: Sequence[float],
                   k: int) -> list[list[dict[str, Any]] | None]:
    """Each stored row's top `k` raising and lowering reasons, as scoring gives them (`label`,
    `text`, `impact` in points); None for a row the bundle does not give the stored score for
    (not the bundle that scored it)."""
    width = len(bundle.builder.features_)
    matrix = matrix[:, :width]
    impacts, points = impacts_of(bundle, matrix)
    reasons = top_reasons(bundle, impacts, _input_values(bundle, matrix), k, matrix)
    out: list[list[dict[str, Any]] | None] = []
    for row, p, found in zip(reasons, probability, points.tolist(), strict=True):
        out.append(row if abs(found - 100.0 * p) <= 1e-6 else None)
    return out


def add_reasons(page: BoardPage, features: Sequence[list[float] | None],
                bundle_for: BundleFor) -> None:
    """Give each page row its top raiser and lowerer in words (`raiser`, `lowerer`: the
    reason's text, or None; `reasons_known` False when its version's bundle cannot say)."""
    by_version: dict[str, list[int]] = {}
    for i, row in enumerate(page.rows):
        row.update(raiser=None, lowerer=None, reasons_known=False)
        if features[i] is not None:
            by_version.setdefault(row["model_version"], []).append(i)
    for version, where in by_version.items():
        bundle = bundle_for(version)
        if bundle is None:
            continue
        width = len(bundle.builder.features_)
        matrix = np.array([(features[i] or [])[:width] for i in where], dtype=np.float64)
        if matrix.shape[1] != width:
            continue
        found = stored_reasons(bundle, matrix, [page.rows[i]["probability"] for i in where], 1)
        for i, reasons in zip(where, found, strict=True):
            if reasons is None:
                continue
            row = page.rows[i]
            row["reasons_known"] = True
            row["raiser"] = next((r for r in reasons if r["impact"] > 0), None)
            row["lowerer"] = next((r for r in reasons if r["impact"] < 0), None)


def lead_fields(bundle: ModelBundle, features: Sequence[float]) -> list[dict[str, str]]:
    """The lead's fields in words, as the model saw them at that scoring: each business field's
    label and value (a category's level, a number, a derived value such as an e-mail's domain
    kind: never the address)."""
    width = len(bundle.builder.features_)
    matrix = np.asarray(features, dtype=np.float64)[None, :width]
    values = _input_values(bundle, matrix)
    features_ = bundle.builder.features_
    out = []
    for source, (how, where), words in zip(bundle.sources, bundle.display_, bundle.words_,
                                           strict=True):
        if how == "raw":
            value = values[where][0]
        else:
            value = _decode(features_[where], float(matrix[0, where]))
        out.append({"field": source, "label": words.label, "value": value_text(words, value)})
    return out


# ---------------------------------------------------------------------- download


def board_csv(table: pa.Table, tier_words: Mapping[str, str], kept: Sequence[str]
              ) -> Iterator[str]:
    """The board's rows as flat CSV text, header first, a chunk at a time: one value per cell,
    no JSON; a text cell a spreadsheet would run as a formula starts with a quote."""
    header = ["lead_id", "score", "tier", "tier_label", "probability", "trend", "previous_score",
              "scored_at", "model_version", *kept]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    names = ["lead_id", "score", "tier", "probability", "trend", "previous_score", "scored_at",
             "model_version", *[KEPT_PREFIX + k for k in kept]]
    step = 5000
    for start in range(0, table.num_rows, step):
        part = table.slice(start, step).select(names).to_pydict()
        for i in range(len(part["lead_id"])):
            when = part["scored_at"][i]
            previous = part["previous_score"][i]
            row = [
                _cell(part["lead_id"][i]), part["score"][i], part["tier"][i],
                tier_words.get(part["tier"][i], part["tier"][i]),
                repr(float(part["probability"][i])), part["trend"][i],
                "" if previous is None else previous,
                when.isoformat(timespec="seconds") if when is not None else "",
                _cell(part["model_version"][i]),
                *[_cell(part[KEPT_PREFIX + k][i]) for k in kept],
            ]
            writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    rest = buffer.getvalue()
    if rest:
        yield rest


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text
