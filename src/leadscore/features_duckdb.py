"""The out-of-core activity aggregation: the activity log's per-lead features computed in SQL over
the files (CSV, Parquet or a folder of Parquet) by DuckDB, spilling to disk past its memory limit.

It returns exactly what `table.aggregate_activities` returns from the log in memory (same
columns, dtypes, values and point-in-time rules), so `build_table(engine="duckdb")` writes the
same table. The SQL is written once here for both DuckDB and Spark (`features_spark.py`); the
few places the dialects differ (trimming, timestamps to nanoseconds, the position key and
first/last by it) are a `Dialect`.

One pass over the log, after a scan of its distinct type values: each activity is joined to
its lead and to its type's code, given a status (1 before the lead's as-of time, 0 for a lead
not in the lead table, 2 at or after the as-of time, 3 for an empty or unparseable timestamp,
an error as in `data.load_activities`), and aggregated into one row per lead: counts per type
and window, the youngest age, the latest time, the first and last touch. First and last touch
break ties in time by position (file, then row), as the local engine's stable sort does.
Types and channels are trimmed with the local engine's own Arrow function on the distinct
values; ids are matched raw first and trimmed (ASCII whitespace) only when they match no lead.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from leadscore.config import ActivitySpec, DatasetSpec
from leadscore.data import check_file, detect_delimiter, detect_encoding, require_columns
from leadscore.errors import DataError

log = logging.getLogger(__name__)

DAY_NS = "86400e9"  # a double literal in both dialects: age in days = (as_of - ts) ns / this
# what Arrow's utf8_trim_whitespace removes, in the ASCII range (the local engine trims ids,
# types and channels with it)
_WHITESPACE = (32, 9, 10, 11, 12, 13)


@dataclass(frozen=True)
class Dialect:
    """What DuckDB and Spark SQL spell differently; everything else in the SQL is shared."""

    name: str
    trim: Callable[[str], str]
    ts_ns: Callable[[str, bool], str]  # (column expression, is text) -> BIGINT nanoseconds
    # (time ns, file, row) -> one orderable key: a row's position in the log by time, ties by
    # position in the files
    key: Callable[[str, str, str], str]
    first: Callable[[str, str], str]  # (value, key) -> the value at the smallest key, even NULL
    last: Callable[[str, str], str]  # (value, key) -> the value at the largest key, even NULL
    text: str  # the string type's name in CAST


def _chars() -> str:
    return " || ".join(f"chr({c})" for c in _WHITESPACE)


DUCKDB = Dialect(
    name="duckdb",
    trim=lambda e: f"trim({e}, {_chars()})",
    ts_ns=lambda e, text: (
        f"epoch_ns(try_cast({'trim(' + e + ')' if text else e} AS TIMESTAMP_NS))"
    ),
    # one 128-bit integer: ts * 2^64 + file * 2^40 + row (fixed width: aggregates stay fast)
    key=lambda t, f, r: (
        f"(CAST({t} AS HUGEINT) * 18446744073709551616 + CAST({f} AS HUGEINT) * 1099511627776"
        f" + CAST({r} AS HUGEINT))"
    ),
    first=lambda v, k: f"arg_min_null({v}, {k})",
    last=lambda v, k: f"arg_max_null({v}, {k})",
    text="VARCHAR",
)

SPARK = Dialect(
    name="spark",
    trim=lambda e: f"trim(BOTH {_chars()} FROM {e})",
    # Spark keeps microseconds: the nanosecond count is exact for any time it can hold
    ts_ns=lambda e, text: (
        f"unix_micros(try_cast({'trim(' + e + ')' if text else e} AS TIMESTAMP)) * 1000"
    ),
    key=lambda t, f, r: f"named_struct('t', {t}, 'f', {f}, 'r', {r})",
    first=lambda v, k: f"min_by(named_struct('c', {v}), {k}).c",
    last=lambda v, k: f"max_by(named_struct('c', {v}), {k}).c",
    text="STRING",
)


@dataclass
class Source:
    """The activity log as the SQL sees it: a relation named `src` with these columns."""

    file: Path
    columns: dict[str, str]  # role (id, ts, type, channel) -> column name in the file
    ts_is_text: bool
    csv: bool
    order: tuple[str, str] = ("0", "0")  # (file, row) expressions: position in the log
    files: list[str] = field(default_factory=list)  # the files, in the local engine's order
    encoding: str = "utf-8"  # CSV only
    delimiter: str = ","  # CSV only


@dataclass
class Aggregates:
    """What `aggregate_activities` returns, plus the log's latest timestamp (for the cut-off)."""

    frame: pd.DataFrame
    types: list[str]
    skipped: dict[str, int]
    latest: pd.Timestamp | None


def describe_source(spec: DatasetSpec) -> Source:
    """Check the activity file as `data.load_activities` does (exists, columns present), without
    reading its rows."""
    act = spec.activities
    assert act is not None
    file = spec.resolve(act.path)
    check_file(file)
    columns = {"id": act.id, "ts": act.timestamp, "type": act.type}
    if act.channel:
        columns["channel"] = act.channel
    if file.is_dir() or file.suffix.lower() in {".parquet", ".pq"}:
        try:
            dataset = pads.dataset(str(file), format="parquet")
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(
                f"{file}: not a readable Parquet file or folder of Parquet files "
                f"({type(exc).__name__})"
            ) from None
        require_columns(file, dataset.schema.names, columns.values())
        ts_type = dataset.schema.field(act.timestamp).type
        files = list(dataset.files)
        if not files:
            raise DataError(f"{file}: holds no Parquet files")
        return Source(file, columns, not pa.types.is_timestamp(ts_type), csv=False, files=files)
    encoding = act.encoding or detect_encoding(file)
    delimiter = act.delimiter or detect_delimiter(file, encoding)
    with file.open("r", encoding=encoding, newline="") as handle:
        first = next(csv.reader([handle.readline()], delimiter=delimiter), [])
    header = [h.strip() for h in first]
    require_columns(file, header, columns.values())
    return Source(file, columns, ts_is_text=True, csv=True, files=[str(file)],
                  encoding=encoding, delimiter=delimiter)


def _missing_sql(expr: str, missing: Sequence[str]) -> str:
    """NULL for the spec's missing-value markers beyond the empty cell (CSV only; empty cells
    are NULL already in both readers)."""
    values = [v for v in dict.fromkeys(missing) if v and "'" not in v and "\\" not in v]
    if not values:
        return expr
    listed = ", ".join(f"'{v}'" for v in values)
    return f"CASE WHEN {expr} IN ({listed}) THEN NULL ELSE {expr} END"


def raw_types_sql(source: Source, quote: Callable[[str], str], dialect: Dialect) -> str:
    """Pass 0: the distinct raw type values (a low-cardinality column; normalised in Python
    with the local engine's own trim)."""
    return f"SELECT DISTINCT CAST({quote(source.columns['type'])} AS {dialect.text}) FROM src"


def lead_sql(
    dialect: Dialect,
    source: Source,
    spec: ActivitySpec,
    quote: Callable[[str], str],
    n_kinds: int,
) -> str:
    """Pass 1, the one pass over the log (`src`) joined to `leads(id, as_of_ns, i)` and to
    `kinds(raw, t)` (raw type value -> type code): one row per lead (plus one for ids not in
    the lead table, `i` NULL) with every count, as plain-named columns.

    Per-row work is kept to what the numbers need: the raw id is matched first and trimmed only
    when it matches no lead (lead ids are trimmed already); types and channels are trimmed
    after aggregation, on a few values."""
    cols = source.columns
    raw_id = f"CAST({quote(cols['id'])} AS {dialect.text})"
    if source.csv:
        raw_id = _missing_sql(raw_id, spec.missing_values)
    ts_raw = quote(cols["ts"])
    if source.csv:  # missing values are empty timestamps, reported as such
        ts_raw = _missing_sql(ts_raw, spec.missing_values)
    ts = dialect.ts_ns(ts_raw, source.ts_is_text)
    channel = (f"CAST({quote(cols['channel'])} AS {dialect.text})" if "channel" in cols
               else f"CAST(NULL AS {dialect.text})")
    raw_type = f"CAST({quote(cols['type'])} AS {dialect.text})"
    key = dialect.key("ts_ns", "f", "r")
    before = f"CASE WHEN status = 1 THEN {key} END"
    aggs = [
        "count(*) FILTER (WHERE status = 0) AS n_unknown",
        "count(*) FILTER (WHERE status = 2) AS n_after",
        "count(*) FILTER (WHERE status = 3) AS n_bad",
        "max(ts_ns) AS latest",
        "min(age) AS min_age",
        f"{dialect.first('channel', before)} AS first_touch",
        f"{dialect.last('channel', before)} AS last_touch",
    ]
    aggs += [f"count(*) FILTER (WHERE t = {t} AND age IS NOT NULL) AS n_t{t}"
             for t in range(n_kinds)]
    for w in spec.windows:
        aggs.append(f"count(*) FILTER (WHERE age <= {int(w)}) AS w{int(w)}_total")
        aggs += [f"count(*) FILTER (WHERE t = {t} AND age <= {int(w)}) AS w{int(w)}_t{t}"
                 for t in range(n_kinds)]
    listed = ",\n       ".join(aggs)
    return f"""
WITH a AS (
    SELECT {raw_id} AS id, {ts} AS ts_ns, {raw_type} AS type, {channel} AS channel,
           {source.order[0]} AS f, {source.order[1]} AS r
    FROM src
), j AS (
    SELECT coalesce(l0.i, l1.i) AS i, k.t, a.channel, a.ts_ns, a.f, a.r,
           coalesce(l0.as_of_ns, l1.as_of_ns) AS as_of_ns
    FROM a
    LEFT JOIN leads l0 ON a.id = l0.id
    LEFT JOIN leads l1 ON (CASE WHEN l0.i IS NULL THEN {dialect.trim("a.id")} END) = l1.id
    LEFT JOIN kinds k ON a.type = k.raw
), s AS (
    SELECT i, t, channel, ts_ns, f, r,
           CASE WHEN ts_ns IS NULL THEN 3 WHEN i IS NULL THEN 0
                WHEN ts_ns < as_of_ns THEN 1 ELSE 2 END AS status,
           CASE WHEN ts_ns < as_of_ns THEN (as_of_ns - ts_ns) / {DAY_NS} END AS age
    FROM j
)
SELECT i,
       {listed}
FROM s
GROUP BY i
"""


def kinds_for(raw: Sequence[Any], spec: ActivitySpec, csv: bool,
              types: Sequence[str] | None) -> tuple[pa.Table, list[str]]:
    """Raw type values -> codes of their normalised type (the local engine's missing values
    and trim, on the distinct values), and the normalised types in code order. With `types`
    (a model's), only those."""
    values = pa.array([None if v is None else str(v) for v in raw], pa.string())
    normal = _normalise(values, spec, csv).to_pylist()
    names = sorted({v for v in normal if v is not None}) if types is None else list(types)
    code = {name: t for t, name in enumerate(names)}
    pairs = [(r, code[v]) for r, v in zip(values.to_pylist(), normal, strict=True)
             if r is not None and v in code]
    return pa.table({
        "raw": pa.array([r for r, _ in pairs], pa.string()),
        "t": pa.array([t for _, t in pairs], pa.int64()),
    }), names


def _normalise(values: pa.Array, spec: ActivitySpec, csv: bool) -> pa.Array:
    """`data.load_activities`' reading of a text cell: missing markers (CSV) are NULL, then
    `utf8_trim_whitespace`."""
    import pyarrow.compute as pc

    if csv:
        missing = pa.array([v for v in spec.missing_values if v], pa.string())
        if len(missing):
            values = pc.if_else(pc.is_in(values, value_set=missing), pa.scalar(None, pa.string()),
                                values)
    return pc.utf8_trim_whitespace(values)


def collect(result: pa.Table, n: int, spec: ActivitySpec, source: Source, names: list[str],
            types: Sequence[str] | None) -> Aggregates:
    """Pass 1's rows into `Aggregates`: the left-out counts, the latest time, the chosen types
    (`min_count` before the as-of time, unless given) and the feature frame in lead order."""
    import pyarrow.compute as pc

    def total(column: str) -> int:
        return int(pc.sum(result.column(column)).as_py() or 0)

    statuses = {0: total("n_unknown"), 2: total("n_after"), 3: total("n_bad")}
    skipped = summarise(statuses, source.file, spec.timestamp)
    latest_ns = pc.max(result.column("latest")).as_py()
    latest = pd.Timestamp(int(latest_ns), unit="ns") if latest_ns is not None else None
    if types is None:
        chosen = [name for t, name in enumerate(names) if total(f"n_t{t}") >= spec.min_count]
    else:
        chosen = list(types)
    code = {name: t for t, name in enumerate(names)}
    rows = result.filter(pc.is_valid(result.column("i")))
    i = rows.column("i").to_numpy(zero_copy_only=False).astype(np.int64)
    channel = "channel" in source.columns
    out: dict[str, np.ndarray] = {}

    def counts(column: str | None) -> np.ndarray:
        values = np.zeros(n)
        if column is not None:
            values[i] = rows.column(column).to_numpy(zero_copy_only=False).astype("float64")
        return values

    for name, (w, kind) in zip(feature_columns(spec, chosen, False)[:-1], _count_plan(
            spec, chosen), strict=True):
        if kind is None:
            out[name] = counts(f"w{w}_total")
        else:
            out[name] = counts(f"w{w}_t{code[kind]}" if kind in code else None)
    since = np.full(n, np.nan)
    since[i] = rows.column("min_age").to_numpy(zero_copy_only=False).astype("float64")
    out[feature_columns(spec, [], False)[-1]] = since
    frame = pd.DataFrame(out)
    if channel:
        for name, column in zip(feature_columns(spec, [], True)[-2:],
                                ("first_touch", "last_touch"), strict=True):
            touch = _normalise(rows.column(column).combine_chunks(), spec, source.csv)
            values = np.full(n, None, dtype=object)
            values[i] = np.asarray(touch.to_pylist(), dtype=object)
            frame[name] = values
    return Aggregates(frame, chosen, skipped, latest)


def _count_plan(spec: ActivitySpec, types: Sequence[str]) -> list[tuple[int, str | None]]:
    """(window, type or None for the total) in `feature_columns` order."""
    plan: list[tuple[int, str | None]] = []
    for w in spec.windows:
        plan.append((int(w), None))
        plan += [(int(w), kind) for kind in types]
    return plan


def feature_columns(spec: ActivitySpec, types: Sequence[str], channel: bool) -> list[str]:
    """The local engine's column order: per window the total then each type; days since last;
    first and last channel."""
    from leadscore.features import ACTIVITY_PREFIX, CHANNEL_COLUMNS, activity_count_column

    names = []
    for w in spec.windows:
        names.append(f"{ACTIVITY_PREFIX}total.{w}d")
        names += [activity_count_column(kind, w) for kind in types]
    names.append(f"{ACTIVITY_PREFIX}days_since_last")
    if channel:
        names += list(CHANNEL_COLUMNS)
    return names


def summarise(statuses: dict[int, int], file: Path, column: str) -> dict[str, int]:
    """Counts of activities left out, as the local engine reports them; bad timestamps fail."""
    if statuses.get(3):
        raise DataError(
            f"{file}: column {column!r} has {statuses[3]} empty or unparseable timestamp(s) "
            "(the duckdb and spark engines read ISO 8601 times; the local engine reads more "
            "formats)"
        )
    return {
        "activities for leads not in the lead table": int(statuses.get(0, 0)),
        "activities at or after the lead's as-of time": int(statuses.get(2, 0)),
    }


def lead_table(lead_ids: Sequence[str], as_of: np.ndarray) -> pa.Table:
    """The leads the SQL joins to: id, as-of time in nanoseconds, position."""
    return pa.table({
        "id": pa.array(list(lead_ids), pa.string()),
        "as_of_ns": pa.array(np.asarray(as_of).astype("datetime64[ns]").astype(np.int64)),
        "i": pa.array(np.arange(len(lead_ids), dtype=np.int64)),
    })


# --------------------------------------------------------------------------- DuckDB


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(spill: Path, memory_limit: str | None = None) -> Any:
    """A DuckDB connection on every core that spills into `spill` past `memory_limit` (default
    LEADSCORE_DUCKDB_MEMORY, else 2GB)."""
    import duckdb

    limit = memory_limit or os.environ.get("LEADSCORE_DUCKDB_MEMORY") or "2GB"
    con = duckdb.connect(config={
        "memory_limit": limit,
        "temp_directory": str(spill),
        "threads": os.cpu_count() or 1,
        "preserve_insertion_order": True,  # a CSV's row numbers follow the file
    })
    con.execute("SET TimeZone = 'UTC'")
    return con


@contextmanager
def session(spill_under: Path | None = None, memory_limit: str | None = None) -> Iterator[Any]:
    """A connection with its own spill folder (under `spill_under`, else the system's temp),
    removed with it."""
    if spill_under is not None:
        spill_under.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="leadscore-duckdb-", dir=spill_under) as spill:
        con = connect(Path(spill), memory_limit)
        try:
            yield con
        finally:
            con.close()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _register_source(con: Any, source: Source) -> None:
    """`src`: the log's columns read straight from the files (nothing loaded up front). A view
    takes no parameters, so paths and options are quoted literals."""
    wanted = ", ".join(_quote(c) for c in source.columns.values())
    if source.csv:
        encoding = "utf-8" if source.encoding.lower().startswith("utf-8") else "latin-1"
        reader = (
            f"read_csv({_literal(str(source.file))}, header = true, all_varchar = true, "
            f"delim = {_literal(source.delimiter)}, quote = '\"', escape = '\"', "
            f"encoding = {_literal(encoding)})"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW src AS SELECT {wanted}, "
            f"row_number() OVER () AS _row FROM {reader}"
        )
        source.order = ("0", "_row")
    else:
        files = "[" + ", ".join(_literal(f) for f in source.files) + "]"
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW src AS SELECT {wanted}, file_index AS _file, "
            f"file_row_number AS _row FROM read_parquet({files}, filename = true, "
            "file_row_number = true, union_by_name = true)"
        )
        source.order = ("_file", "_row")


def latest_activity(spec: DatasetSpec, spill_under: Path | None = None) -> pd.Timestamp | None:
    """The log's latest timestamp (the data's cut-off when the spec sets none), in one scan."""
    source = describe_source(spec)
    with session(spill_under) as con:
        _register_source(con, source)
        ts = DUCKDB.ts_ns(_quote(source.columns["ts"]), source.ts_is_text)
        row = con.execute(f"SELECT max({ts}) FROM src").fetchone()  # noqa: S608
    return pd.Timestamp(int(row[0]), unit="ns") if row and row[0] is not None else None


def aggregate_activities_duckdb(
    spec: DatasetSpec,
    lead_ids: Sequence[str],
    as_of: np.ndarray,
    types: Sequence[str] | None = None,
    *,
    spill_under: Path | None = None,
    memory_limit: str | None = None,
) -> Aggregates:
    """`table.aggregate_activities`, in DuckDB over the spec's activity files."""
    act = spec.activities
    assert act is not None
    source = describe_source(spec)
    with session(spill_under, memory_limit) as con:
        _register_source(con, source)
        raw = [row[0] for row in con.execute(raw_types_sql(source, _quote, DUCKDB)).fetchall()]
        kinds, names = kinds_for(raw, act, source.csv, types)
        con.register("kinds", kinds)
        con.register("leads", lead_table(lead_ids, as_of))
        result = con.sql(lead_sql(DUCKDB, source, act, _quote, len(names))).to_arrow_table()
    return collect(result, len(lead_ids), act, source, names, types)
