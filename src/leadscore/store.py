"""The score history: every score given, as Parquet under `LEADSCORE_HOME/scores/`.

Layout (Hive-style, what DuckDB, Spark and pyarrow read as they are):
`scores/model=<name>/date=<YYYY-MM-DD>/part-<key>-<n>.parquet`, one row per lead scored:
lead_id, model_version, scored_at (UTC), probability, score, tier and `f_000`, `f_001`, ...: the
encoded features the score came from, in the version's order (read back as one `features`
list per row by `ScoreStore.rows`), then `k_<name>`: the columns a batch job was asked to
`--keep` (as text), so the lead board can show and filter them; never a column that looks like
personal data (`kept_for_history`).

Why features and not impacts: each field's impact is TreeSHAP, measured at ~2.5k rows/s against
~127k rows/s for a plain score (benchmarks/results/batch.json), so storing impacts for every
row would make a batch job ~50x slower, not the 15% the history may cost. The encoded features
are already computed; with the version's bundle they give back the very impacts of that
scoring (`impacts_of`), for the few rows anyone asks about. They are derived values (an email
is a free-mail flag, a category its code), never a lead's name, email or phone.

Two readers, each where it measured faster. DuckDB (`ScoreStore.sql`, the monitor's join of
outcomes to scores) for whole-model scans, joins and ad-hoc SQL: it reads only the columns a
query names and the hive partitions as `model` and `date` columns. pyarrow for one lead's
lookup (`ScoreStore.lead`), through each file's cached footer and a binary search of its row
groups' lead-id bounds. On the 10M-row compacted benchmark store (10 days x 1M leads; one
lead's 10 scorings, the six base columns), p50 over random leads: at load ~2 on 2 cores (30
leads) 30 ms with pyarrow, 38 ms with DuckDB given the file list, 83 ms through the hive view
with `parquet_metadata_cache`, 330 ms with a prepared parameter and no metadata cache; at load
~10 (100 leads, benchmarks/results/history.json `lookup_duckdb`) 44, 93, 143 and 173 ms.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from leadscore.errors import DataError
from leadscore.privacy import scan_column

log = logging.getLogger(__name__)

SCORES_DIR = "scores"
BASE_SCHEMA = pa.schema(
    [
        pa.field("lead_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        pa.field("probability", pa.float64()),
        pa.field("score", pa.int64()),
        pa.field("tier", pa.string()),
    ]
)
FEATURE_PREFIX = "f_"  # f_000, f_001, ...: the encoded features, in the version's order
FEATURES = "features"  # how readers get them back: one list per row
KEPT_PREFIX = "k_"  # k_<name>: a column kept by `--keep`, as text
# column names that hold a person's name or contact details whatever their values look like
# (a name has no shape the privacy scan could find)
_PERSONAL_NAME = re.compile(
    r"^(?:(?:first|last|full|given|family|contact|person|sur)[_.\- ]?)?name$"
    r"|e[_.\- ]?mail|phone|mobile|^tel(?:ephone)?$|^fax$",
    re.IGNORECASE,
)
# compacted files are sorted by lead id in row groups of this size, so a lookup of one lead
# reads the row groups whose min/max hold its id, not the whole day
COMPACT_ROW_GROUP = 8 * 1024
# a batch job's appends: LZ4 (what DuckDB, Spark 3.4+ and pyarrow read as LZ4_RAW) took 0.64 s
# per 1M rows against zstd's 1.06 s, for files ~35% larger (27.5 against 20 MiB per 1M rows);
# `compact` rewrites each day as zstd, so only the days not yet compacted are the larger ones
APPEND_CODEC = "lz4"
_FOOTERS: dict[tuple[str, int, int], _Footer] = {}  # footers of the part files already read


def feature_column(j: int) -> str:
    return f"{FEATURE_PREFIX}{j:03d}"


def history_rows(
    lead_ids: pa.Array | pa.ChunkedArray,
    version: str,
    scored_at: str | datetime,
    probability: np.ndarray,
    score: np.ndarray,
    tier: Any,
    matrix: np.ndarray,
    kept: Mapping[str, pa.Array | pa.ChunkedArray] | None = None,
) -> pa.Table:
    """The store's rows for one scored chunk (columns built in Arrow, not as Python rows).

    One float64 column per encoded feature rather than one list column: measured on 100k rows
    of 26 features, a list column took 0.35 s to write as zstd Parquet and 3.4 MB, separate
    columns (each dictionary-encoded on its own) 0.11 s and 1.6 MB; that is what keeps the
    history within the 15% a batch job may spend on it. `kept`: columns to keep beside the
    scores (name -> values; only ones `kept_for_history` allowed), stored as `k_<name>` text.
    """
    n = len(probability)
    when = scored_at if isinstance(scored_at, datetime) else datetime.fromisoformat(scored_at)
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    columns: dict[str, Any] = {
        "lead_id": pc.cast(lead_ids, pa.string()),
        "model_version": pa.repeat(pa.scalar(version, pa.string()), n),
        "scored_at": pa.repeat(pa.scalar(when, pa.timestamp("us", tz="UTC")), n),
        "probability": pa.array(probability, pa.float64()),
        "score": pa.array(score, pa.int64()),
        "tier": pc.cast(tier, pa.string())
        if isinstance(tier, pa.Array | pa.ChunkedArray)
        else pa.array(np.asarray(tier, dtype=object), pa.string()),
    }
    by_feature = np.ascontiguousarray(matrix.T, dtype=np.float64)  # one pass, then no copies
    for j in range(by_feature.shape[0] if matrix.ndim == 2 else 0):
        columns[feature_column(j)] = pa.array(by_feature[j], pa.float64())
    for name, values in (kept or {}).items():
        columns[f"{KEPT_PREFIX}{name}"] = pc.cast(values, pa.string())
    return pa.table(columns)


def kept_for_history(keep: Sequence[str], table: pa.Table, skip: Iterable[str] = ()) -> list[str]:
    """The `--keep` columns the history may hold: not `skip` (the id, the model's PII inputs),
    not one named like a person's name or contact details, not one whose values the privacy
    scan flags as e-mail addresses or phone numbers (decided once per job, on its first
    chunk). What is left out is logged by name, never by value."""
    skipped = set(skip)
    allowed = []
    for name in keep:
        if name in skipped or name not in table.column_names:
            continue
        if _PERSONAL_NAME.search(name):
            log.warning("kept column %r not stored in the score history: its name says "
                        "personal data", name)
            continue
        values = table.column(name).to_pandas()
        finding = scan_column(name, values.astype(str).where(values.notna(), None))
        if finding.flagged:
            log.warning("kept column %r not stored in the score history: %s", name,
                        finding.describe())
            continue
        allowed.append(name)
    return allowed


def with_features(table: pa.Table) -> pa.Table:
    """The f_NNN columns folded back into one `features` list per row. Files of versions with
    fewer features read as nulls past their width (only ever trailing), which are dropped."""
    names = sorted(c for c in table.column_names if c.startswith(FEATURE_PREFIX))
    base = table.drop_columns(names)
    n = table.num_rows
    if not names:
        return base.append_column(FEATURES, pa.array([[]] * n, pa.list_(pa.float64())))
    matrix = np.column_stack(
        [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in names]
    )
    valid = np.column_stack([table.column(c).is_valid().to_numpy(zero_copy_only=False)
                             for c in names])
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(matrix[valid]))
    return base.append_column(FEATURES, lists.cast(pa.list_(pa.float64())))


def job_key(*parts: str) -> str:
    """A short stable key for a job's part files: a resumed job rewrites its own parts (same
    key, same chunk numbers) instead of adding their rows a second time."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


@dataclass
class ScoreStore:
    """The history under one root folder (`LEADSCORE_HOME/scores` by default)."""

    root: Path

    @classmethod
    def of(cls, settings: Any) -> ScoreStore:
        return cls(settings.resolved_home() / SCORES_DIR)

    # ------------------------------------------------------------------ writing

    def append(self, model: str, rows: pa.Table, key: str, index: int = 0) -> list[Path]:
        """Add rows (a `history_rows` table) under their model and UTC date; each file is
        written beside its place and renamed in, so a reader never sees half a file."""
        if rows.num_rows == 0:
            return []
        missing = [f.name for f in BASE_SCHEMA if f.name not in rows.column_names]
        if missing:
            raise ValueError(f"history rows lack column(s) {missing}")
        # each row's UTC day from its timestamp's few distinct values: formatting every row's
        # timestamp took 0.39 s per 100k rows, more than writing them
        stamps = rows.column("scored_at")
        distinct = pc.unique(stamps)
        names = pc.strftime(distinct, format="%Y-%m-%d")
        unique = pc.unique(names).to_pylist()
        written = []
        for day in unique:
            part = rows
            if len(unique) > 1:
                moments = distinct.filter(pc.equal(names, day))
                part = rows.filter(pc.is_in(stamps, value_set=moments))
            folder = self.root / f"model={model}" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{key}-{index:06d}.parquet"
            tmp = folder / f".{path.name}.tmp"
            try:
                pq.write_table(part, tmp, compression=APPEND_CODEC,
                               use_dictionary=_dictionary(part),
                               write_statistics=_statistics(part))
                os.replace(tmp, path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise DataError(
                    f"{path}: cannot write the score history ({exc.strerror})"
                ) from None
            written.append(path)
        return written

    # ------------------------------------------------------------------ reading

    def models(self) -> list[str]:
        """The models with a history, by name."""
        if not self.root.is_dir():
            return []
        return sorted(p.name.split("=", 1)[1] for p in self.root.glob("model=*") if p.is_dir())

    def resolve_model(self, model: str | None) -> str:
        """`--model`, or the only model with a history; one plain line otherwise."""
        known = self.models()
        if model:
            if model not in known:
                raise DataError(
                    f"no score history for model {model!r} in {self.root} "
                    f"(models with a history: {', '.join(known) or 'none'})"
                )
            return model
        if len(known) == 1:
            return known[0]
        if not known:
            raise DataError(
                f"no score history in {self.root}: `leadscore score` records one (unless "
                "--no-history), and the API when LEADSCORE_RECORD_SCORES=1"
            )
        raise DataError(f"several models have a score history ({', '.join(known)}): choose one "
                        "with --model NAME")

    def files(self, model: str) -> list[Path]:
        return sorted((self.root / f"model={model}").glob("date=*/part-*.parquet"))

    def rows(self, model: str, lead_id: str | None = None,
             columns: Iterable[str] | None = None) -> pa.Table:
        """A model's rows (one lead's, with `lead_id`), oldest first, `features` as lists.

        A lead's rows are found through each file's row-group statistics (min/max lead id),
        so in a compacted store (files sorted by lead id) a lookup reads one row group a day.
        """
        wanted = list(columns) if columns is not None else [*BASE_SCHEMA.names, FEATURES]
        tables = []
        for path in self.files(model):
            part = _read_part(path, wanted, lead_id)
            if part is not None and part.num_rows:
                tables.append(part)
        if not tables:
            empty = pa.schema([*BASE_SCHEMA, pa.field(FEATURES, pa.list_(pa.float64()))])
            return empty.empty_table().select(wanted)
        table = pa.concat_tables(tables, promote_options="default")
        if FEATURES in wanted:
            table = with_features(table)
        if "scored_at" in table.column_names and table.num_rows:
            table = table.sort_by([("scored_at", "ascending")])
        return table.select(wanted)

    def lead(self, model: str, lead_id: str, with_features: int | None = None) -> pa.Table:
        """One lead's scorings, oldest first; one plain line when there are none.

        `with_features`: only the last that many scorings get their features (the others an
        empty list). A lead's history needs them for its last two; reading the 6 small columns
        of every day and the features of one or two days is what keeps a lookup fast.
        """
        if with_features is None:
            found = self.rows(model, lead_id)
        else:
            found = self._lead_with_last(model, lead_id, with_features)
        if found.num_rows == 0:
            raise DataError(f"lead {lead_id!r} has no scores in the history of model {model!r}")
        return found

    def _lead_with_last(self, model: str, lead_id: str, last: int) -> pa.Table:
        files = self.files(model)
        parts = []
        for i, path in enumerate(files):
            part = _read_part(path, BASE_SCHEMA.names, lead_id)
            if part is not None and part.num_rows:
                parts.append(part.select(BASE_SCHEMA.names).append_column(
                    "_file", pa.repeat(pa.scalar(i, pa.int64()), part.num_rows)))
        if not parts:
            return self.rows(model, lead_id).slice(0, 0)
        table = pa.concat_tables(parts).sort_by([("scored_at", "ascending")])
        n = table.num_rows
        wanted = {int(i) for i in table.column("_file").slice(max(0, n - last)).to_pylist()}
        features: dict[tuple[Any, str], list[float]] = {}
        for i in sorted(wanted):
            full = _read_part(files[i], [*BASE_SCHEMA.names, FEATURES], lead_id)
            assert full is not None
            full = with_features(full)
            for when, version, values in zip(full.column("scored_at").to_pylist(),
                                             full.column("model_version").to_pylist(),
                                             full.column(FEATURES).to_pylist(), strict=True):
                features[(when, version)] = values
        keys = zip(table.column("scored_at").to_pylist(),
                   table.column("model_version").to_pylist(), strict=True)
        lists = [features.get(key, []) if k >= n - last else [] for k, key in enumerate(keys)]
        return table.drop_columns(["_file"]).append_column(
            FEATURES, pa.array(lists, pa.list_(pa.float64())))

    # ------------------------------------------------------------------ DuckDB

    def columns(self, model: str) -> list[str]:
        """Every column some part file of `model` has (f_NNN widths differ by version)."""
        seen: dict[str, None] = {}
        for path in self.files(model):
            seen.update(dict.fromkeys(_footer(path).meta.schema.names))
        return list(seen)

    def scan(self, model: str) -> str:
        """The SQL table expression reading a model's part files: named one by one (a
        consistent snapshot, and faster than DuckDB's glob), hive partitions as `model` and
        `date` columns, versions of different widths unified by column name."""
        files = self.files(model)
        if not files:
            raise DataError(f"the score history of model {model!r} in {self.root} is empty")
        listed = ", ".join(_sql_text(str(p)) for p in files)
        return f"read_parquet([{listed}], hive_partitioning = true, union_by_name = true)"

    def connect(self, model: str) -> Any:
        """A DuckDB connection in UTC with a `scores` view of one model's history."""
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE VIEW scores AS SELECT * FROM {self.scan(model)}")
        return con

    def sql(self, query: str, model: str | None = None) -> pa.Table:
        """The escape hatch: any SQL over the `scores` view of one model's history (one row per
        scoring: lead_id, model_version, scored_at, probability, score, tier, f_NNN, model,
        date). For the operator at a terminal (`leadscore history sql`), never the API: DuckDB
        can read any file the user can."""
        import duckdb

        if not query.strip():
            raise DataError('history sql: give a query, e.g. "SELECT count(*) FROM scores"')
        con = self.connect(self.resolve_model(model))
        try:
            result = con.sql(query)
            if result is None:  # a statement with no result
                raise DataError("history sql: the query returns no table (use SELECT)")
            return cast(pa.Table, result.to_arrow_table())
        except duckdb.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"history sql: {first}") from None
        finally:
            con.close()

    # ------------------------------------------------------------------ upkeep

    def compact(self, model: str | None = None) -> dict[str, Any]:
        """Rewrite each day's many part files (one per chunk, or per API flush) as one file
        sorted by lead id, so a year of daily rescoring is a few hundred files whose row-group
        statistics let a lookup skip what cannot hold the lead."""
        models = [self.resolve_model(model)] if model else self.models()
        before = after = 0
        for name in models:
            for day in sorted((self.root / f"model={name}").glob("date=*")):
                parts = sorted(day.glob("part-*.parquet"))
                before += len(parts)
                if len(parts) <= 1 and all(p.name.startswith("part-compact") for p in parts):
                    after += len(parts)
                    continue
                table = pa.concat_tables((pq.read_table(p) for p in parts),
                                         promote_options="default")
                table = table.sort_by([("lead_id", "ascending"), ("scored_at", "ascending")])
                target = day / f"part-compact-{job_key(*[p.name for p in parts])}.parquet"
                tmp = day / f".{target.name}.tmp"
                pq.write_table(table, tmp, compression="zstd", row_group_size=COMPACT_ROW_GROUP,
                               use_dictionary=_dictionary(table))
                os.replace(tmp, target)
                for p in parts:
                    if p != target:
                        p.unlink()
                after += 1
        _FOOTERS.clear()
        log.info("compacted the score history: %d file(s) into %d", before, after)
        return {"models": models, "files_before": before, "files_after": after}


@dataclass(frozen=True)
class _Footer:
    """A part file's footer and its row groups' lead-id bounds (sorted in a compacted file)."""

    meta: pq.FileMetaData
    low: list[str | None]
    high: list[str | None]
    ordered: bool


def _sql_text(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _dictionary(table: pa.Table) -> list[str]:
    """Columns worth a dictionary: the repeated ones and the features (codes, counts); not the
    lead id or the probability, unique per row, where trying one cost 30% of the write time."""
    return [c for c in table.column_names if c not in ("lead_id", "probability")]


def _statistics(table: pa.Table) -> list[str]:
    """Min/max statistics where a reader uses them (a lookup by lead id, a time range); not on
    the f_NNN features, where computing them cost ~15% of an append and nothing reads them."""
    return [c for c in table.column_names if not c.startswith(FEATURE_PREFIX)]


def _footer(path: Path) -> _Footer:
    """Read once per file version: the API looks leads up all day, the files seldom change."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    found = _FOOTERS.get(key)
    if found is None:
        if len(_FOOTERS) > 4096:
            _FOOTERS.clear()
        meta = pq.read_metadata(path)
        where = meta.schema.names.index("lead_id")
        low: list[str | None] = []
        high: list[str | None] = []
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(where).statistics
            known = stats is not None and stats.has_min_max
            low.append(stats.min if known else None)
            high.append(stats.max if known else None)
        ordered = None not in low and all(
            a <= b for a, b in zip(high, low[1:], strict=False)  # type: ignore[operator]
        )
        found = _FOOTERS[key] = _Footer(meta, low, high, ordered)
    return found


def _groups(footer: _Footer, lead_id: str) -> list[int]:
    """The row groups that may hold `lead_id` (a binary search when the file is sorted)."""
    if footer.ordered:
        lo = bisect.bisect_left(cast(list[str], footer.high), lead_id)
        hi = bisect.bisect_right(cast(list[str], footer.low), lead_id)
        return list(range(lo, hi))
    return [g for g, (a, b) in enumerate(zip(footer.low, footer.high, strict=True))
            if a is None or b is None or a <= lead_id <= b]


def _read_part(path: Path, wanted: list[str], lead_id: str | None) -> pa.Table | None:
    """The wanted columns of one part file (the rows of `lead_id` only, when given)."""
    footer = _footer(path)
    names = footer.meta.schema.names
    columns = [c for c in wanted if c != FEATURES and c in names]
    if FEATURES in wanted:
        columns += [c for c in names if c.startswith(FEATURE_PREFIX)]
    groups = list(range(footer.meta.num_row_groups))
    if lead_id is not None:
        if "lead_id" not in columns:
            columns.append("lead_id")
        groups = _groups(footer, lead_id)
        if not groups:
            return None
    table = pq.ParquetFile(path, metadata=footer.meta).read_row_groups(groups, columns=columns)
    if lead_id is not None:
        table = table.filter(pc.equal(table.column("lead_id"), lead_id))
    return table
