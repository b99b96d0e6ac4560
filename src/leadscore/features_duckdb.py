"""The out-of-core activity aggregation: the activity log's per-lead features computed in SQL over
the files (CSV, Parquet or a folder of Parquet) by DuckDB, spilling to disk past its memory limit.

It returns exactly what `features.aggregate_activities` returns from the log in memory (same
columns, dtypes, values and point-in-time rules), so `build_table(engine="duckdb")` writes the
same table. The SQL is written once here for both DuckDB and Spark (`features_spark.py`); the
few places the dialects differ (trimming, timestamps to nanoseconds, the position key and
first/last by it) are a `Dialect`.

Two passes over small intermediate tables, one over the log:
1. `per`: one row per (lead, activity type, status) with counts per window, the youngest age,
   the latest time and the first/last touch, where status is 1 for an activity before the
   lead's as-of time, 0 for a lead not in the lead table, 2 at or after the as-of time and 3 for
   an empty or unparseable timestamp (an error, as in `data.load_activities`).
2. one row per lead with activity before its as-of time: the wide feature row.
First and last touch break ties in time by position in the file (file path, then row), as the
local engine's stable sort does.
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


def _text_column(dialect: Dialect, column: str, missing: Sequence[str], csv: bool) -> str:
    """A text column as the local engine reads it: the spec's missing values (CSV only) become
    NULL, then surrounding whitespace is trimmed."""
    raw = f"CAST({column} AS {dialect.text})"
    trimmed = dialect.trim(raw)
    values = [v for v in dict.fromkeys([*missing, ""]) if "'" not in v and "\\" not in v]
    if not csv or not values:
        return trimmed
    listed = ", ".join(f"'{v}'" for v in values)
    return f"CASE WHEN {raw} IN ({listed}) THEN NULL ELSE {trimmed} END"


def per_group_sql(
    dialect: Dialect, source: Source, spec: ActivitySpec, quote: Callable[[str], str]
) -> str:
    """Pass 1 over the log (relation `src`) joined to `leads(id, as_of_ns, i)`."""
    cols = source.columns
    text = {
        role: _text_column(dialect, quote(cols[role]), spec.missing_values, source.csv)
        for role in ("id", "type", "channel")
        if role in cols
    }
    ts_raw = quote(cols["ts"])
    if source.csv:  # missing values are empty timestamps, reported as such
        ts_raw = _text_column(dialect, ts_raw, spec.missing_values, True)
    ts = dialect.ts_ns(ts_raw, source.ts_is_text)
    channel = text.get("channel", f"CAST(NULL AS {dialect.text})")
    windows = ",\n          ".join(
        f"count(*) FILTER (WHERE age <= {int(w)}) AS w{int(w)}" for w in spec.windows
    )
    key = dialect.key("ts_ns", "f", "r")
    return f"""
WITH a AS (
    SELECT {text["id"]} AS id, {ts} AS ts_ns, {text["type"]} AS type, {channel} AS channel,
           {source.order[0]} AS f, {source.order[1]} AS r
    FROM src
), j AS (
    SELECT l.i, a.type, a.channel, a.ts_ns, a.f, a.r,
           CASE WHEN a.ts_ns IS NULL THEN 3 WHEN l.i IS NULL THEN 0
                WHEN a.ts_ns < l.as_of_ns THEN 1 ELSE 2 END AS status,
           CASE WHEN a.ts_ns < l.as_of_ns THEN (l.as_of_ns - a.ts_ns) / {DAY_NS} END AS age
    FROM a LEFT JOIN leads l ON a.id = l.id
)
SELECT i, type, status, count(*) AS n,
       {windows},
       min(age) AS min_age, max(ts_ns) AS latest,
       min({key}) AS first_key, max({key}) AS last_key,
       {dialect.first("channel", key)} AS first_touch,
       {dialect.last("channel", key)} AS last_touch
FROM j
GROUP BY i, type, status
"""


def per_lead_sql(dialect: Dialect, spec: ActivitySpec, n_types: int, channel: bool) -> str:
    """Pass 2: `per` (status 1) joined to `kinds(type, t)`, one row per lead; columns c0, c1, …
    in `feature_columns` order (aliases, not feature names: no quoting rules to share)."""
    exprs = []
    for w in spec.windows:
        exprs.append(f"CAST(sum(w{int(w)}) AS DOUBLE)")
        exprs += [
            f"CAST(coalesce(sum(w{int(w)}) FILTER (WHERE k.t = {t}), 0) AS DOUBLE)"
            for t in range(n_types)
        ]
    exprs.append("min(min_age)")
    if channel:
        exprs += [dialect.first("first_touch", "first_key"),
                  dialect.last("last_touch", "last_key")]
    listed = ",\n       ".join(f"{e} AS c{j}" for j, e in enumerate(exprs))
    return f"""
SELECT p.i AS i,
       {listed}
FROM per p LEFT JOIN kinds k ON p.type = k.type
WHERE p.status = 1
GROUP BY p.i
"""


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


def pick_types(
    counts: list[tuple[Any, Any]], spec: ActivitySpec, types: Sequence[str] | None
) -> list[str]:
    """The activity types that become features: given (a model's), or those seen before the
    as-of time at least `min_count` times, sorted (the local engine's rule)."""
    if types is not None:
        return list(types)
    return sorted(str(t) for t, n in counts if t is not None and int(n) >= spec.min_count)


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


def widen(result: pa.Table, n: int, names: list[str], channel: bool) -> pd.DataFrame:
    """Rows of leads with activity (column `i`) into full-length columns in lead order: 0 for
    counts, NaN days and no channel for a lead without activity, as `np.bincount` gives."""
    i = result.column("i").to_numpy(zero_copy_only=False).astype(np.int64)
    out: dict[str, np.ndarray] = {}
    texts = set(names[-2:]) if channel else set()
    for j, name in enumerate(names):
        column = result.column(f"c{j}")
        if name in texts:
            values = np.full(n, None, dtype=object)
            values[i] = np.asarray(column.to_pylist(), dtype=object)
        else:
            fill = np.nan if name.endswith("days_since_last") else 0.0
            values = np.full(n, fill)
            values[i] = column.to_numpy(zero_copy_only=False).astype("float64")
        out[name] = values
    return pd.DataFrame(out)


def kinds_table(types: Sequence[str]) -> pa.Table:
    """The chosen activity types and their positions (types stay data, never SQL text)."""
    return pa.table({
        "type": pa.array(list(types), pa.string()),
        "t": pa.array(np.arange(len(types), dtype=np.int64)),
    })


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
    """`features.aggregate_activities`, in DuckDB over the spec's activity files."""
    act = spec.activities
    assert act is not None
    source = describe_source(spec)
    channel = "channel" in source.columns
    with session(spill_under, memory_limit) as con:
        _register_source(con, source)
        con.register("leads", lead_table(lead_ids, as_of))
        con.execute("CREATE TEMP TABLE per AS " + per_group_sql(DUCKDB, source, act, _quote))
        statuses = dict(con.execute("SELECT status, sum(n) FROM per GROUP BY status").fetchall())
        skipped = summarise(statuses, source.file, act.timestamp)
        row = con.execute("SELECT max(latest) FROM per").fetchone()
        latest = pd.Timestamp(int(row[0]), unit="ns") if row and row[0] is not None else None
        counts = con.execute(
            "SELECT type, sum(n) FROM per WHERE status = 1 GROUP BY type"
        ).fetchall()
        chosen = pick_types(counts, act, types)
        con.register("kinds", kinds_table(chosen))
        result = con.sql(per_lead_sql(DUCKDB, act, len(chosen), channel)).to_arrow_table()
    frame = widen(result, len(lead_ids), feature_columns(act, chosen, channel), channel)
    return Aggregates(frame, chosen, skipped, latest)
