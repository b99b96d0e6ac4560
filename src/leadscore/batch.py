"""Batch rescoring of files: stream chunks through the shared scoring code into one output file.

Memory is bounded by the chunk size, whatever the input's size. Each completed chunk is kept as
a part file beside a small JSON checkpoint, so a job killed at any point continues from its
last completed chunk (`resume=True`); the output is assembled at `<output>.partial` and moved
into place only when complete. Rows that fail validation go to `<output>.rejects.csv` (row
number, line in the input, id and reason, never a value: `rejects.py`), and the summary accounts
for every row read. File faults are one plain line (`faults.py`).
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from leadscore.data import check_file, detect_delimiter, detect_encoding
from leadscore.errors import DataError
from leadscore.evaluate import PSI_WARNING, bin_counts, population_stability
from leadscore.exports import FlatCsvWriter, bundle_metadata
from leadscore.faults import Fault, fault, plainly, refuse_overwriting_input, remove_quietly
from leadscore.numbers import OUT_OF_RANGE, to_numbers
from leadscore.ranges import bound_reason, outside_bounds
from leadscore.rejects import (
    BadRecord,
    LineFinder,
    count_out_of_range,
    read_id,
    rejects_table,
    write_rejects,
)
from leadscore.scoring import ModelBundle, score_arrays

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
CHECKPOINT_VERSION = 1
CSV_BLOCK_BYTES = 4 << 20
# drift is profiled on every row of a small input and on every 10th row (by row number, so the
# same rows whatever the chunk size) of a large one: PSI needs thousands of rows, not millions
DRIFT_STRIDE = 10
DRIFT_ALL_ROWS_UP_TO = 200_000
LOG_EVERY_S = 10.0
# Parts are kept until the output is complete. As uncompressed Arrow they took 6-10x the
# output's room (every row repeats the model name, version and time); as zstd Parquet (dictionary
# and run-length encoded, then compressed) they take about its size or less.
PART_FORMAT = "parquet-zstd"


@dataclass
class BatchSummary:
    input: str
    output: str
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    seconds: float = 0.0
    model_name: str = ""
    model_version: str = ""
    chunks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_job(
        cls, input_path: Any, output_path: Any, state: dict[str, Any], seconds: float,
        bundle: ModelBundle, chunks: int,
    ) -> BatchSummary:
        """The summary of a finished job from its checkpoint state (local and Spark alike)."""
        return cls(
            input=str(input_path),
            output=str(output_path),
            rows=int(state["rows"]),
            scored=int(state["scored"]),
            rejected=int(state["rejected"]),
            seconds=seconds,
            model_name=bundle.name,
            model_version=bundle.version,
            chunks=chunks,
        )

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "rows": self.rows,
            "scored": self.scored,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "chunks": self.chunks,
            **self.extra,
        }


# --------------------------------------------------------------------------- reading


@dataclass
class Source:
    """An input file (or folder of Parquet files) and what identifies its current content."""

    path: Path
    kind: str  # "csv" | "parquet"
    columns: list[str]
    schema: pa.Schema
    fingerprint: dict[str, Any]
    total_rows: int | None
    total_bytes: int
    files: list[str] = field(default_factory=list)
    encoding: str = "utf-8"
    delimiter: str = ","
    id_position: int | None = None  # the id's place in a CSV header (read from bad records)


def _stat(path: Path) -> list[Any]:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def open_source(path: Path, bundle: ModelBundle, keep: Sequence[str] = ()) -> Source:
    """Inspect an input: the columns to read (id, `keep`, model inputs) and its fingerprint."""
    check_file(path)
    resolved = path.resolve()
    if path.is_dir() or path.suffix.lower() in {".parquet", ".pq"}:
        if path.is_dir():
            files = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in {".parquet", ".pq"}
                and not p.name.startswith((".", "_"))
            )
        else:
            files = [str(path)]
        try:
            dataset = pads.dataset(files, format="parquet")
            total = dataset.count_rows()
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(
                f"{path}: not a readable Parquet file ({type(exc).__name__})"
            ) from None
        columns = _input_columns(bundle, dataset.schema.names, keep)
        schema = pa.schema([dataset.schema.field(c) for c in columns])
        stats = [_stat(Path(f)) for f in files]
        fingerprint = {"path": str(resolved), "files": stats}
        size = sum(s[1] for s in stats)
        return Source(path, "parquet", columns, schema, fingerprint, total, size, files)
    encoding = detect_encoding(path)
    delimiter = detect_delimiter(path, encoding)
    header = _header(path, encoding, delimiter)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path}: column name(s) {dupes} appear more than once in the header")
    columns = _input_columns(bundle, header, keep)
    schema = pa.schema([(c, pa.string()) for c in columns])
    size, mtime = _stat(path)[1:]
    fingerprint = {"path": str(resolved), "size": size, "mtime_ns": mtime}
    id_position = header.index(bundle.id_column) if bundle.id_column in header else None
    return Source(
        path, "csv", columns, schema, fingerprint, None, size, [str(path)], encoding, delimiter,
        id_position,
    )


def _input_columns(
    bundle: ModelBundle, available: Sequence[str], keep: Sequence[str]
) -> list[str]:
    missing_keep = [c for c in keep if c not in available]
    if missing_keep:
        raise DataError(f"--keep names column(s) not in the input: {missing_keep}")
    wanted = [bundle.id_column, *keep, *bundle.inputs]
    columns = [c for c in dict.fromkeys(wanted) if c in available]
    if not any(c in available for c in bundle.inputs):
        raise DataError(
            f"the input has none of the input columns of model {bundle.name} version "
            f"{bundle.version} (expected some of {bundle.inputs[:8]}"
            f"{' ...' if len(bundle.inputs) > 8 else ''}): is it another dataset's model "
            "(choose one with --model NAME), or raw exports that need `leadscore features` "
            "first?"
        )
    absent = absent_fields(bundle, available)
    if absent:
        # a CRM export often leaves a field out, so this scores (every lead as if the field
        # were blank), but a renamed column must not pass unnoticed as mere "drift"
        log.warning(
            "the input has no column for %d of the model's %d fields (%s): every lead is "
            "scored as if they were blank; rename the column(s) if they are there under "
            "another name",
            len(absent),
            len(bundle.inputs),
            ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""),
        )
    return columns


def absent_fields(bundle: ModelBundle, available: Sequence[str]) -> list[str]:
    """The model's input fields the input has no column for."""
    present = set(available)
    return [name for name in bundle.inputs if name != bundle.id_column and name not in present]


@dataclass
class Chunk:
    """Rows [first_row, first_row + n) of the input (1-based data rows), as read; or the rows
    numbered `row_numbers` (Spark, where a partition's rows come with their numbers)."""

    index: int
    first_row: int
    table: pa.Table
    malformed: list[BadRecord] = field(default_factory=list)
    bytes_read: int = 0
    row_numbers: np.ndarray | None = None
    # CSV only: how many malformed records come before this chunk's first row, and the record
    # numbers of those that may come among or after its rows (what turns a row into a record)
    skipped_before: int = 0
    skipped: list[int] | None = None

    def records(self, rows: Sequence[int]) -> list[int | None]:
        """The CSV record numbers (header = 1) of data rows of this chunk (None: not CSV)."""
        if self.skipped is None:
            return [None] * len(rows)
        out: list[int | None] = []
        for row in rows:
            record = int(row) + 1 + self.skipped_before
            for number in self.skipped:
                if number <= record:
                    record += 1
                else:
                    break
            out.append(record)
        return out


def _raw_batches(
    source: Source, tracker: list[BadRecord]
) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Record batches in file order, with the bytes read so far; malformed CSV records (wrong
    number of fields) are skipped and described in `tracker`."""
    if source.kind == "parquet":
        # file by file, batch by batch: no scanner read-ahead holding a large part of the file
        done = 0
        for name in source.files:
            yield from ((batch, done) for batch in _parquet_batches(name, source))
            done += os.path.getsize(name)
        return

    def on_invalid(row: Any) -> str:
        # the record's text may hold PII: only its shape, number and id are kept
        number = row.number if isinstance(row.number, int) and row.number > 0 else None
        reason = (
            f"malformed record: {row.actual_columns} fields where the header has "
            f"{row.expected_columns}"
        )
        lead_id = read_id(row.text or "", source.delimiter, source.id_position)
        tracker.append(BadRecord(number, reason, lead_id))
        return "skip"

    header = _header(source.path, source.encoding, source.delimiter)
    stream = pa.OSFile(str(source.path), "r")
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                encoding="utf8" if source.encoding.startswith("utf-8") else source.encoding,
                block_size=CSV_BLOCK_BYTES,
                column_names=header,
                skip_rows=1,
                use_threads=False,  # deterministic: malformed records belong to the batch read
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=source.delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in source.columns},
                include_columns=source.columns,
                # only an empty cell is null, as in training and the API: Arrow's default
                # markers ("NA", "null", "NaN", ...) would pass a "NaN" in a numeric column
                # as missing, and a category "NA" as no category
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            yield batch, stream.tell()
    except pa.ArrowInvalid as exc:
        raise DataError(f"{source.path}: cannot be read: {_arrow_message(exc)}") from None
    except OSError as exc:
        raise fault(source.path, "read it", exc, resumable=False) from None
    finally:
        stream.close()


def _parquet_batches(name: str, source: Source) -> Iterator[pa.RecordBatch]:
    """One Parquet file's batches; a corrupt page stops the job with one line naming the file
    (a part of a folder, maybe), never a traceback from the reading thread."""
    # pre_buffer keeps every row group's buffers it has read: memory grows with the file
    with plainly(name, "read it as Parquet", resumable=False), pq.ParquetFile(
        name, pre_buffer=False
    ) as parquet:
        for batch in parquet.iter_batches(batch_size=64 * 1024, columns=source.columns):
            if batch.schema != source.schema:
                batch = batch.select(source.columns).cast(source.schema)
            yield batch


def _header(path: Path, encoding: str, delimiter: str) -> list[str]:
    with path.open("r", encoding=encoding, newline="") as handle:
        line = handle.readline()
    return [h.strip() for h in next(csv.reader([line], delimiter=delimiter), [])]


def iter_chunks(source: Source, chunk_rows: int) -> Iterator[Chunk]:
    """Chunks of exactly `chunk_rows` rows (the last may be shorter), whatever the file's blocks:
    chunk k always holds the same rows, which is what lets a job resume at chunk k. A malformed
    CSV record goes with the chunk whose rows it sits among (or just before)."""
    tracker: list[BadRecord] = []
    skipped = _Skipped(source.kind == "csv")
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    index = 0
    first_row = 1
    bytes_read = 0
    for batch, bytes_read in _raw_batches(source, tracker):
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending, schema=pending[0].schema)
            chunk = Chunk(index, first_row, table.slice(0, chunk_rows), bytes_read=bytes_read)
            yield skipped.assign(chunk, tracker, first_row + chunk_rows)
            index += 1
            first_row += chunk_rows
            rest = table.slice(chunk_rows)
            pending = [b for b in rest.to_batches() if b.num_rows]
            pending_rows = rest.num_rows
    if pending_rows or tracker or skipped.ahead or index == 0:
        if pending:
            table = pa.Table.from_batches(pending, schema=pending[0].schema)
        else:
            table = source.schema.empty_table()
        chunk = Chunk(index, first_row, table, bytes_read=source.total_bytes)
        yield skipped.assign(chunk, tracker, None)


class _Skipped:
    """Malformed CSV records seen so far: how many come before the current chunk (a count) and
    those not yet given to a chunk. Memory stays bounded by the chunk, not the file."""

    def __init__(self, csv: bool) -> None:
        self.csv = csv
        self.before = 0
        self.ahead: list[BadRecord] = []

    def assign(self, chunk: Chunk, tracker: list[BadRecord], next_row: int | None) -> Chunk:
        """Give `chunk` the malformed records before data row `next_row` (all: the last)."""
        self.ahead += tracker
        tracker.clear()
        if self.csv:
            chunk.skipped_before = self.before
            chunk.skipped = [bad.number for bad in self.ahead if bad.number is not None]
        # record numbers up to next_row + before come before that row (header = record 1)
        while self.ahead and (
            next_row is None
            or self.ahead[0].number is None
            or self.ahead[0].number <= next_row + self.before
        ):
            bad = self.ahead.pop(0)
            chunk.malformed.append(bad)
            self.before += bad.number is not None
        return chunk


def read_chunks(
    path: Path, bundle: ModelBundle, chunk_rows: int, keep: Sequence[str] = ()
) -> Iterator[pa.Table]:
    """Arrow tables of at most `chunk_rows` rows, as read (CSV cells as text)."""
    for chunk in iter_chunks(open_source(path, bundle, keep), chunk_rows):
        if chunk.table.num_rows:
            yield chunk.table


def _arrow_message(exc: Exception) -> str:
    """Arrow's message without the offending cell's text (it may be PII)."""
    text = str(exc).splitlines()[0]
    return text.split(": got '")[0] if ": got '" in text else text


# --------------------------------------------------------------------------- validation


@dataclass
class Checked:
    """A chunk's rows that can be scored, their row numbers and positions in the chunk, and the
    rejected rows (with their positions)."""

    table: pa.Table
    rows: np.ndarray
    rejects: pa.Table
    kept: np.ndarray | None = None  # None: every row
    rejected_at: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def raw_rows(self, raw: pa.Table) -> pa.Table:
        """The chunk as read, for the rows that are scored (`keep` columns are copied from it)."""
        return raw if self.kept is None else raw.take(pa.array(self.kept))


def check_chunk(bundle: ModelBundle, chunk: Chunk) -> Checked:
    """Convert the model's numeric inputs and set aside the rows that cannot be scored."""
    table = chunk.table
    n = table.num_rows
    rows = (
        chunk.row_numbers
        if chunk.row_numbers is not None
        else np.arange(chunk.first_row, chunk.first_row + n, dtype=np.int64)
    )
    problems: dict[int, list[str]] = {}
    id_col = bundle.id_column
    ids: pa.Array | None = None
    if id_col in table.column_names:
        ids = pc.cast(table.column(id_col).combine_chunks(), pa.string())
        trimmed = pc.utf8_trim_whitespace(ids)
        blank = pc.fill_null(pc.equal(trimmed, ""), True)
        for blank_pos in np.flatnonzero(blank.to_numpy(zero_copy_only=False)).tolist():
            problems.setdefault(blank_pos, []).append("lead id is missing")
    kinds = bundle.input_types()
    missing = bundle.builder.missing_values
    for name in table.column_names:
        if kinds.get(name) != "numeric":
            continue
        numbers, bad, refused = to_numbers(table.column(name), name, missing)
        table = table.set_column(table.column_names.index(name), name, numbers)
        for bad_pos in bad.tolist():
            problems.setdefault(bad_pos, []).append(f"{name!r} is not a number")
        for refused_pos in refused.tolist():
            problems.setdefault(refused_pos, []).append(f"{name!r} {OUT_OF_RANGE}")
        if name in bundle.bounds_:  # the spec's hard limits: outside them is no lead to score
            low, high = bundle.bounds_[name]
            values = numbers.to_numpy(zero_copy_only=False)  # null -> NaN, never outside
            for far_pos in np.flatnonzero(outside_bounds(values, low, high)).tolist():
                problems.setdefault(far_pos, []).append(bound_reason(name, low, high))
    reasons = [bad.reason for bad in chunk.malformed]
    reject_rows: list[int | None] = [None] * len(reasons)
    reject_records = [bad.number for bad in chunk.malformed]
    reject_ids = [bad.lead_id for bad in chunk.malformed]
    kept: np.ndarray | None = None
    rejected_at = np.zeros(0, dtype=np.int64)
    if problems:
        positions = sorted(problems)
        keep = np.ones(n, dtype=bool)
        keep[positions] = False
        id_values = ids.take(pa.array(positions)).to_pylist() if ids is not None else None
        reject_records += chunk.records([int(rows[where]) for where in positions])
        for i, where in enumerate(positions):
            reject_rows.append(int(rows[where]))
            reject_ids.append(id_values[i] if id_values is not None else str(rows[where]))
            reasons.append("; ".join(problems[where]))
        table = table.filter(pa.array(keep))
        rows = rows[keep]
        kept = np.flatnonzero(keep)
        rejected_at = np.asarray(positions, dtype=np.int64)
    rejects = rejects_table(reject_rows, reject_records, reject_ids, reasons)
    return Checked(table, rows, rejects, kept, rejected_at)


# --------------------------------------------------------------------------- scoring


def output_schema(
    bundle: ModelBundle, source_schema: pa.Schema, keep: Sequence[str], reasons: int
) -> pa.Schema:
    fields = [pa.field(bundle.id_column, pa.string())]
    fields += [source_schema.field(name) for name in keep if name != bundle.id_column]
    fields += [
        pa.field("probability", pa.float64()),
        pa.field("score", pa.int64()),
        pa.field("tier", pa.string()),
        pa.field("percentile", pa.int64()),
    ]
    if reasons > 0:
        fields.append(pa.field("reasons", pa.string()))
    fields.append(pa.field("warnings", pa.string()))  # JSON list, "[]" when none
    fields += [pa.field(c, pa.string()) for c in ("model_name", "model_version", "scored_at")]
    return pa.schema(fields, metadata=bundle_metadata(bundle, reasons))


def scores_table(
    bundle: ModelBundle,
    checked: Checked,
    raw: pa.Table,
    reasons: int,
    keep: Sequence[str],
    scored_at: str,
) -> pa.Table:
    """The output rows for a checked chunk's scorable rows: id, kept columns, then the scores.

    The rows' 1-based numbers in the input are the id when the model's spec has no id column;
    `raw` is the chunk as read, whose `keep` columns are copied as they were.
    """
    chunk, rows, raw = checked.table, checked.rows, checked.raw_rows(raw)
    n = chunk.num_rows
    result = score_arrays(bundle, chunk, reasons)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    id_col = bundle.id_column
    if id_col in chunk.column_names:
        columns[id_col] = pc.cast(chunk.column(id_col), pa.string())
    else:
        # no id column (a spec whose lead id is the row number): number the rows as training did
        columns[id_col] = pc.cast(pa.array(rows), pa.string())
    for name in keep:
        if name != id_col:
            columns[name] = raw.column(name)
    columns["probability"] = pa.array(result.probability, type=pa.float64())
    columns["score"] = pa.array(result.score, type=pa.int64())
    columns["tier"] = pa.array(result.tier, type=pa.string())
    columns["percentile"] = pa.array(result.percentile, type=pa.int64())
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    if result.reasons is not None:
        columns["reasons"] = pa.array([dumps(r) for r in result.reasons], type=pa.string())
    if any(result.warnings):
        texts = [dumps(w) if w else "[]" for w in result.warnings]
        columns["warnings"] = pa.array(texts, type=pa.string())
    else:
        columns["warnings"] = pa.repeat(pa.scalar("[]", pa.string()), n)
    # constants: repeated in Arrow, not built as Python lists
    columns["model_name"] = pa.repeat(pa.scalar(bundle.name, pa.string()), n)
    columns["model_version"] = pa.repeat(pa.scalar(bundle.version, pa.string()), n)
    columns["scored_at"] = pa.repeat(pa.scalar(scored_at, pa.string()), n)
    return pa.table(columns)


# --------------------------------------------------------------------------- drift


# below this many sampled rows PSI measures the sample's noise, not the population: with ten
# bins, 100 leads drawn from the training distribution itself score PSI ~0.1 and often > 0.2
DRIFT_MIN_ROWS = 500


class Drift:
    """The scored input's counts in the training profile's bins (`evaluate.feature_profile`)."""

    def __init__(self, bundle: ModelBundle, stride: int) -> None:
        self.profile = bundle.meta.get("profile") or {}
        self.stride = stride
        features = self.profile.get("features", {})
        self.features = [f.name for f in bundle.builder.features_ if f.name in features]
        self.index = [j for j, f in enumerate(bundle.builder.features_) if f.name in features]
        self.counts: dict[str, np.ndarray] = {
            name: np.zeros(len(features[name]["proportions"]), np.int64) for name in self.features
        }
        score = self.profile.get("score")
        self.score = np.zeros(len(score["proportions"]), np.int64) if score else None
        self.sampled = 0

    @property
    def enabled(self) -> bool:
        return bool(self.profile)

    def counts_for(
        self, bundle: ModelBundle, table: pa.Table, rows: np.ndarray, probability: np.ndarray
    ) -> dict[str, list[int]]:
        """One chunk's bin counts (added to the totals by `add`, once the chunk is written)."""
        if not self.enabled or len(rows) == 0:
            return {}
        out: dict[str, list[int]] = {}
        if self.score is not None:
            out["score"] = bin_counts(self.profile["score"], probability).tolist()
        positions = np.flatnonzero((rows - 1) % self.stride == 0)
        if len(positions) and self.features:
            sample = table if len(positions) == len(rows) else table.take(pa.array(positions))
            matrix = bundle.builder.transform(sample)
            for name, j in zip(self.features, self.index, strict=True):
                out[name] = bin_counts(self.profile["features"][name], matrix[:, j]).tolist()
        out["_sampled"] = [len(positions)]
        return out

    def add(self, counts: dict[str, list[int]]) -> None:
        for name, values in counts.items():
            if name == "_sampled":
                self.sampled += values[0]
            elif name == "score" and self.score is not None:
                self.score += np.asarray(values, dtype=np.int64)
            elif name in self.counts:
                self.counts[name] += np.asarray(values, dtype=np.int64)

    def state(self) -> dict[str, Any]:
        return {
            "sampled": self.sampled,
            "score": self.score.tolist() if self.score is not None else None,
            "features": {k: v.tolist() for k, v in self.counts.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.sampled = int(state.get("sampled", 0))
        if state.get("score") is not None and self.score is not None:
            self.score = np.asarray(state["score"], dtype=np.int64)
        for name, values in state.get("features", {}).items():
            if name in self.counts:
                self.counts[name] = np.asarray(values, dtype=np.int64)

    def report(self) -> dict[str, Any]:
        if not self.enabled:
            return {
                "available": False,
                "reason": "the model bundle has no training profile (trained before drift "
                "checks existed); retrain to get one",
            }
        if self.sampled < DRIFT_MIN_ROWS:
            return {
                "available": False,
                "reason": f"fewer than {DRIFT_MIN_ROWS} rows ({self.sampled:,} sampled)",
                "sampled_rows": self.sampled,
                "min_rows": DRIFT_MIN_ROWS,
                "drifted": [],
            }
        psi = {
            name: round(
                population_stability(
                    self.profile["features"][name]["proportions"], self.counts[name]
                ),
                4,
            )
            for name in self.features
        }
        score_psi = None
        if self.score is not None:
            score_psi = round(
                population_stability(self.profile["score"]["proportions"], self.score), 4
            )
        flagged = sorted((k for k, v in psi.items() if v > PSI_WARNING), key=lambda k: -psi[k])
        if score_psi is not None and score_psi > PSI_WARNING:
            flagged.insert(0, "score")
        return {
            "available": True,
            "threshold": PSI_WARNING,
            "sampled_rows": self.sampled,
            "training_rows": self.profile.get("rows"),
            "score_psi": score_psi,
            "feature_psi": psi,
            "drifted": flagged,
        }


# --------------------------------------------------------------------------- output


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with plainly(path, "write"):
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    except BaseException:
        remove_quietly([tmp])
        raise


class _Final:
    """The output file, assembled at `<output>.partial` from the parts, in order."""

    def __init__(self, output: Path, schema: pa.Schema, kind: str) -> None:
        self.output = output
        self.partial = output.with_name(output.name + ".partial")
        self.kind = kind
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        try:
            with plainly(self.partial, "write"):
                self.partial.unlink(missing_ok=True)
                if kind == "parquet":
                    self._writer = pq.ParquetWriter(
                        str(self.partial), schema, compression="snappy"
                    )
                else:
                    self._writer = FlatCsvWriter(self.partial, schema)
        except BaseException:
            remove_quietly([self.partial])
            raise

    def write(self, table: pa.Table) -> None:
        if table.num_rows and self._writer is not None:
            with plainly(self.partial, "write"):
                self._writer.write_table(table)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with plainly(self.partial, "write"):
                writer.close()  # a Parquet footer: a full disk can still show here

    def abort(self) -> None:
        """Drop the half-written output; a second fault while closing it must not hide the
        first."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
        except (OSError, pa.ArrowException):
            log.debug("closing %s after a fault", self.partial, exc_info=True)
        finally:
            remove_quietly([self.partial])


class Job:
    """The parts folder, its checkpoint, and the output assembled from the parts.

    `<output>.parts/` holds `part-NNNNNN.parquet` (the chunk's output rows),
    `rejects-NNNNNN.parquet` (its rejected rows) and `checkpoint.json`: what the job reads (the
    input's fingerprint, model, chunk size, options) and how far it got. A part is renamed into
    place before the checkpoint counts it, so a kill at any instant leaves every counted part
    complete.
    """

    def __init__(self, output: Path, identity: dict[str, Any], schema: pa.Schema) -> None:
        suffix = output.suffix.lower()
        if suffix not in {".parquet", ".pq", ".csv"}:
            raise DataError(f"{output}: output must end in .parquet or .csv")
        self.output = output
        self.kind = "csv" if suffix == ".csv" else "parquet"
        self.folder = output.with_name(output.name + ".parts")
        self.checkpoint_path = self.folder / "checkpoint.json"
        self.identity = {**identity, "format": self.kind, "parts": PART_FORMAT}
        self.schema = schema
        self.state: dict[str, Any] = {"chunks_done": 0, "rows": 0, "scored": 0, "rejected": 0}
        self.final: _Final | None = None
        self._lock: IO[str] | None = None

    def writes(self) -> list[Path]:
        """Every file the job may create or replace beside the output (its parts folder aside)."""
        name = self.output.name
        suffixes = ("", ".partial", ".rejects.csv", ".rejects.csv.partial", ".summary.json",
                    ".summary.json.tmp", ".lock")
        return [self.output.with_name(name + suffix) for suffix in suffixes]

    def refuse_overwriting(self, source: Source) -> None:
        """Stop before anything is written when the job would destroy its own input."""
        refuse_overwriting_input(source.path, source.files, self.writes(), self.folder)

    def _part(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.parquet"

    def _rejects(self, index: int) -> Path:
        return self.folder / f"rejects-{index:06d}.parquet"

    def prepare(self, resume: bool) -> dict[str, Any] | None:
        """Start afresh, or (resume) return the saved state when it is this same job."""
        with plainly(self.output.parent, "create the output's folder"):
            self.output.parent.mkdir(parents=True, exist_ok=True)
        with plainly(self.output, "write"):
            self._lock = _lock_output(self.output)
        try:
            return self._restore(resume)
        except BaseException:
            self._unlock()
            raise

    def _restore(self, resume: bool) -> dict[str, Any] | None:
        saved = None
        if resume and self.checkpoint_path.is_file():
            saved = json.loads(self.checkpoint_path.read_text(encoding="utf-8"))
            before = saved.get("identity", {})
            changed = [k for k in self.identity if before.get(k) != self.identity[k]]
            if changed:
                raise DataError(
                    f"{self.checkpoint_path}: cannot resume: {', '.join(changed)} changed since "
                    "the interrupted run; run again without --resume to start over"
                )
            done = int(saved["state"]["chunks_done"])
            absent = [i for i in range(done) if not self._part(i).is_file()]
            if absent:
                raise DataError(
                    f"{self.folder}: cannot resume: part file(s) for chunk(s) {absent[:5]} are "
                    "missing; run again without --resume to start over"
                )
            self.state = saved["state"]
        elif resume:
            log.info("no checkpoint at %s: starting from the first chunk", self.checkpoint_path)
        if saved is None:
            if not resume and self.checkpoint_path.is_file():
                log.warning(
                    "starting %s over: an interrupted run's parts are discarded (pass "
                    "--resume to continue such a run instead)",
                    self.output,
                )
            shutil.rmtree(self.folder, ignore_errors=True)
        with plainly(self.folder, "create the parts folder"):
            self.folder.mkdir(parents=True, exist_ok=True)
        return saved

    def open_final(self) -> None:
        """Start `<output>.partial` and copy the parts already done into it."""
        self.final = _Final(self.output, self.schema, self.kind)
        for index in range(int(self.state["chunks_done"])):
            part = self._part(index)
            with plainly(part, "read a completed chunk", resumable=False):
                table = pq.read_table(part, memory_map=True).cast(self.schema)
            self.final.write(table)

    def add(
        self,
        index: int,
        table: pa.Table,
        rejects: pa.Table,
        rows_in: int,
        extra_state: dict[str, Any],
    ) -> None:
        """Keep one completed chunk: part file, rejects, checkpoint, then the output."""
        assert self.final is not None
        if index != self.state["chunks_done"]:
            raise RuntimeError(f"chunk {index} arrived out of order")
        part = self._part(index)
        tmp = part.with_name(part.name + ".tmp")
        reject_path = self._rejects(index)
        reject_tmp = reject_path.with_name(reject_path.name + ".tmp")
        try:
            with plainly(tmp, "write"):
                pq.write_table(table, str(tmp), compression="zstd")
                os.replace(tmp, part)
            if rejects.num_rows:
                with plainly(reject_tmp, "write"):
                    pq.write_table(rejects, str(reject_tmp), compression="zstd")
                    os.replace(reject_tmp, reject_path)
        except BaseException:
            remove_quietly([tmp, reject_tmp])
            raise
        self.state = {
            **self.state,
            **extra_state,
            "chunks_done": index + 1,
            "rows": self.state["rows"] + rows_in,
            "scored": self.state["scored"] + table.num_rows,
            "rejected": self.state["rejected"] + rejects.num_rows,
            "warned": self.state.get("warned", 0) + _warned(table),
            "rejected_out_of_range": self.state.get("rejected_out_of_range", 0)
            + count_out_of_range(rejects),
        }
        _write_atomic(
            self.checkpoint_path,
            json.dumps(
                {"version": CHECKPOINT_VERSION, "identity": self.identity, "state": self.state}
            ),
        )
        self.final.write(table)

    def commit(self, lines: LineFinder | None = None) -> Path | None:
        """Move the output (and the rejects file, with each CSV record's line found by
        `lines`) into place; remove the parts."""
        assert self.final is not None
        self.final.close()
        rejects_path = self.output.with_name(self.output.name + ".rejects.csv")
        if self.state["rejected"]:
            tmp = rejects_path.with_name(rejects_path.name + ".partial")
            try:
                done = range(int(self.state["chunks_done"]))
                parts = [self._rejects(i) for i in done if self._rejects(i).is_file()]
                with plainly(tmp, "write"), tmp.open("wb") as out:
                    write_rejects(parts, out, lines)
                with plainly(rejects_path, "write"):
                    os.replace(tmp, rejects_path)
            except BaseException:
                remove_quietly([tmp])
                raise
        else:
            rejects_path.unlink(missing_ok=True)
        with plainly(self.output, "write"):
            os.replace(self.final.partial, self.output)
        shutil.rmtree(self.folder, ignore_errors=True)
        self._unlock()
        return rejects_path if self.state["rejected"] else None

    def abort(self, keep_parts: bool = True) -> None:
        """Stop without committing: the parts and checkpoint stay for `--resume` (unless
        `keep_parts` is false, or no chunk was completed: then nothing is left behind)."""
        try:
            if self.final is not None:
                self.final.abort()
            if not keep_parts or not self.checkpoint_path.is_file():
                shutil.rmtree(self.folder, ignore_errors=True)
        finally:
            self._unlock()

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock_path = Path(lock.name)
            lock_path.unlink(missing_ok=True)  # while still held: no other job is mid-write
            lock.close()  # closing the descriptor releases the lock


def _warned(table: pa.Table) -> int:
    """Scored rows whose `warnings` list is not empty (a value far outside training)."""
    if "warnings" not in table.column_names or not table.num_rows:
        return 0
    return int(pc.sum(pc.not_equal(table.column("warnings"), "[]")).as_py() or 0)


def _lock_output(output: Path) -> IO[str]:
    """An exclusive lock on `<output>.lock`, held for the job's life: two jobs writing the same
    output would interleave parts and checkpoints. `flock` belongs to the open descriptor, so
    a killed job (even `kill -9`) never leaves a stale lock behind, and `--resume` just works."""
    path = output.with_name(output.name + ".lock")
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataError(
            f"{output}: another scoring job ({holder}) is writing this output; wait for it to "
            "finish or choose another --output"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


# --------------------------------------------------------------------------- progress


class Progress:
    """A Rich progress bar (rows/s, ETA) on a terminal; a log line every few seconds otherwise."""

    def __init__(self, source: Source, done_rows: int, console: Console | None) -> None:
        self.total_rows = source.total_rows
        self.total_bytes = source.total_bytes
        self.start = time.perf_counter()
        self.start_rows = done_rows
        self.last_log = self.start
        self._bar: Any = None
        if console is not None and console.is_terminal:
            from rich.progress import (
                BarColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("scoring"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rows]:>12,} rows"),
                TextColumn("{task.fields[rate]:>9,.0f} rows/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            total = self.total_rows if self.total_rows is not None else self.total_bytes
            self._task = self._bar.add_task("score", total=total or None, rows=done_rows, rate=0.0)
            self._bar.start()

    def update(self, rows: int, bytes_read: int) -> None:
        now = time.perf_counter()
        rate = (rows - self.start_rows) / max(now - self.start, 1e-9)
        done = rows if self.total_rows is not None else bytes_read
        total = self.total_rows if self.total_rows is not None else self.total_bytes
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rows=rows, rate=rate)
            return
        if now - self.last_log >= LOG_EVERY_S:
            self.last_log = now
            share = done / total if total else 0.0
            start = self.start_rows if self.total_rows is not None else 0
            speed = (done - start) / max(now - self.start, 1e-9)
            eta = (total - done) / speed if total and speed > 0 else float("nan")
            log.info(
                "scored %s rows (%.0f%%) at %s rows/s, ETA %.0f s",
                f"{rows:,}",
                100 * share,
                f"{rate:,.0f}",
                eta,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------- the job


_DONE = object()


def _prefetch(items: Iterator[Any], depth: int, stop: threading.Event) -> Iterator[Any]:
    """Run an iterator in a thread, `depth` items ahead (reading overlaps scoring)."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    thread = threading.Thread(target=produce, name="leadscore-read", daemon=True)
    thread.start()
    while True:
        item = slots.get()
        if item is _DONE:
            break
        if isinstance(item, BaseException):
            raise item
        yield item


class _Writer:
    """A thread that keeps completed chunks (part, checkpoint, output) while the next is scored."""

    def __init__(
        self,
        job: Job,
        on_done: Callable[[dict[str, list[int]]], dict[str, Any]],
        on_kept: Callable[[int], None],
    ) -> None:
        self.job = job
        self.on_done = on_done
        self.on_kept = on_kept
        self.slots: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="leadscore-write", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self.job.open_final()
            while True:
                item = self.slots.get()
                if item is _DONE:
                    return
                index, table, rejects, rows_in, counts, bytes_read = item
                self.job.add(index, table, rejects, rows_in, self.on_done(counts))
                self.on_kept(bytes_read)
        except BaseException as exc:
            self.error = exc
            # keep draining so the producer never blocks on a full queue
            while self.slots.get() is not _DONE:
                pass

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.slots.put(item)

    def finish(self) -> None:
        self.slots.put(_DONE)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _drift_stride(source: Source) -> int:
    if source.total_rows is not None:
        return 1 if source.total_rows <= DRIFT_ALL_ROWS_UP_TO else DRIFT_STRIDE
    return 1 if source.total_bytes <= DRIFT_ALL_ROWS_UP_TO * 100 else DRIFT_STRIDE


def rescore(
    bundle: ModelBundle,
    input_path: Path,
    output_path: Path,
    *,
    reasons: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: Sequence[str] = (),
    resume: bool = False,
    console: Console | None = None,
    scored_at: str | None = None,
    after_chunk: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Score a CSV/Parquet file (or folder of Parquet files) into a Parquet or CSV file.

    With `resume`, a job interrupted before (killed, Ctrl-C, a crash) continues after its last
    completed chunk when the input, model, chunk size and options are unchanged; the output is
    the same as an uninterrupted run's (`scored_at` included). `console`: a terminal to draw a
    progress bar on. `after_chunk(index)` is called once each chunk is kept (tests use it).
    """
    if chunk_rows < 1:
        raise DataError("--chunk-rows must be at least 1")
    if reasons < 0:
        raise DataError("--reasons must be 0 or more")
    keep = list(dict.fromkeys(keep))
    source = open_source(input_path, bundle, keep)
    schema = output_schema(bundle, source.schema, keep, reasons)
    identity = {
        "input": source.fingerprint,
        "model": {
            "name": bundle.name,
            "version": bundle.version,
            "sha256": bundle.meta.get("model_sha256"),
        },
        "chunk_rows": chunk_rows,
        "reasons": reasons,
        "keep": keep,
    }
    job = Job(output_path, identity, schema)
    job.refuse_overwriting(source)
    saved = job.prepare(resume)
    drift = Drift(bundle, _drift_stride(source))
    if saved is not None:
        scored_at = saved["state"]["scored_at"]
        drift.restore(saved["state"].get("drift", {}))
        log.info(
            "resuming %s after chunk %d (%s rows done)",
            output_path,
            saved["state"]["chunks_done"],
            f"{saved['state']['rows']:,}",
        )
    scored_at = scored_at or datetime.now(UTC).isoformat(timespec="seconds")
    skip = int(job.state["chunks_done"])
    rows_before = int(job.state["rows"])
    progress = Progress(source, rows_before, console)

    def on_done(counts: dict[str, list[int]]) -> dict[str, Any]:
        drift.add(counts)
        return {"scored_at": scored_at, "drift": drift.state()}

    def on_kept(bytes_read: int) -> None:
        progress.update(int(job.state["rows"]), bytes_read)
        if after_chunk is not None:
            after_chunk(int(job.state["chunks_done"]) - 1)

    writer = _Writer(job, on_done, on_kept)
    stop = threading.Event()
    start = time.perf_counter()
    writer.start()
    try:
        for chunk in _prefetch(_checked(iter_chunks(source, chunk_rows), bundle, skip), 2, stop):
            checked, raw = chunk
            if checked.table.num_rows:
                table = scores_table(bundle, checked, raw.table, reasons, keep, scored_at)
                counts = drift.counts_for(
                    bundle, checked.table, checked.rows, table.column("probability").to_numpy()
                )
            else:
                table, counts = schema.empty_table(), {}
            writer.put(
                (
                    raw.index,
                    table.cast(schema),
                    checked.rejects,
                    raw.table.num_rows + len(raw.malformed),
                    counts,
                    raw.bytes_read,
                )
            )
        writer.finish()
        lines = LineFinder(source.path, source.encoding, source.delimiter)
        rejects_path = job.commit(lines if source.kind == "csv" else None)
    except BaseException as exc:
        stop.set()
        if writer.thread.is_alive():
            try:
                writer.finish()
            except BaseException:  # the first error is the one to report
                log.debug("writer stopped with an error", exc_info=True)
        job.abort(keep_parts=not isinstance(exc, Fault) or exc.resumable)
        if job.checkpoint_path.is_file():
            done = int(job.state["chunks_done"])
            hint = f"{done} completed chunk(s) kept: run again with --resume to continue"
            if isinstance(exc, Fault):  # the fault's one line says it, no second line
                raise Fault(f"{exc}; {hint} once that is fixed", resumable=True) from None
            log.warning("stopped; %s from there", hint)
        raise
    finally:
        progress.close()
    seconds = time.perf_counter() - start
    state = job.state
    summary = BatchSummary.of_job(
        input_path, output_path, state, seconds, bundle, int(state["chunks_done"])
    )
    assert summary.rows == summary.scored + summary.rejected
    rows_now = summary.rows - rows_before
    report = drift.report()
    absent = absent_fields(bundle, source.columns)
    if report.get("drifted"):  # an absent field was already named as such, not as drift
        report["drifted"] = [name for name in report["drifted"] if name not in absent]
    summary.extra = {
        "rows_per_s": round(rows_now / seconds, 1) if seconds > 0 else 0.0,
        "rows_this_run": rows_now,
        "resumed_after_chunk": skip if saved is not None else None,
        "rejects_file": str(rejects_path) if rejects_path else None,
        # rows refused for NaN, +-inf or a number out of range (the API's rule), a share of
        # `rejected`
        "rejected_out_of_range": int(state.get("rejected_out_of_range", 0)),
        "scored_at": scored_at,
        "chunk_rows": chunk_rows,
        "reasons": reasons,
        "absent_fields": absent,
        "range_warnings": int(state.get("warned", 0)),  # scored leads far outside training
        "drift": report,
    }
    for name in report.get("drifted", []):
        value = report["score_psi"] if name == "score" else report["feature_psi"][name]
        log.warning(
            "drift: PSI %.2f for %s (above %.1f): the input differs from the training data",
            value,
            name,
            PSI_WARNING,
        )
    if summary.rejected:
        log.warning("%s row(s) rejected; see %s", f"{summary.rejected:,}", rejects_path)
    if state.get("warned"):
        log.warning("%s lead(s) scored with a value far outside the training range (see the "
                    "warnings column)", f"{state['warned']:,}")
    if summary.rows == 0:
        log.warning("%s has no rows: wrote an empty %s", input_path, output_path)
    summary_path = output_path.with_name(output_path.name + ".summary.json")
    _write_atomic(summary_path, json.dumps(summary.as_dict(), indent=2))
    log.info(
        "wrote %s: %s rows (%s scored, %s rejected) in %.1f s",
        output_path,
        f"{summary.rows:,}",
        f"{summary.scored:,}",
        f"{summary.rejected:,}",
        seconds,
    )
    return summary


def _checked(
    chunks: Iterator[Chunk], bundle: ModelBundle, skip: int
) -> Iterator[tuple[Checked, Chunk]]:
    """Validation runs in the reading thread; chunks already done are read past, not scored."""
    for chunk in chunks:
        if chunk.index < skip:
            continue
        yield check_chunk(bundle, chunk), chunk


# --------------------------------------------------------------------------- Spark

REJECT_REASON = "reject_reason"
ROW = "row"
_SPARK_TYPES = {"probability": "double", "score": "bigint", "percentile": "bigint"}
_EXECUTOR_BUNDLES: dict[str, ModelBundle] = {}


def _bundle_payload(model_uri: str, settings: Any = None) -> dict[str, Any]:
    """The bundle's files (a few MB of text and JSON) and registry name/version, shipped to the
    executors with the task: they need no access to the tracking server or the driver's disk."""
    from leadscore.config import get_settings
    from leadscore.tracking import resolve_model, resolve_model_uri

    settings = settings or get_settings()
    model_uri = resolve_model_uri(model_uri, settings)  # a bare name: its @champion
    bundle_dir, info = resolve_model(model_uri, settings)
    files = {p.name: p.read_bytes() for p in bundle_dir.iterdir() if p.is_file()}
    meta = json.loads(files["bundle.json"])
    return {"files": files, "sha256": meta.get("model_sha256"), "info": info, "uri": model_uri}


def _executor_bundle(payload: dict[str, Any]) -> ModelBundle:
    """Load the shipped bundle once per Python worker (checksum verified by `load_bundle`)."""
    key = str(payload["sha256"])
    if key not in _EXECUTOR_BUNDLES:
        import tempfile

        from leadscore.scoring import load_bundle

        with tempfile.TemporaryDirectory(prefix="leadscore-bundle-") as tmp:
            for name, data in payload["files"].items():
                Path(tmp, name).write_bytes(data)
            bundle = load_bundle(tmp)
        info = payload["info"]
        if info:
            bundle.meta["name"], bundle.meta["version"] = info["name"], info["version"]
        bundle.meta["uri"] = payload["uri"]
        _EXECUTOR_BUNDLES[key] = bundle
    return _EXECUTOR_BUNDLES[key]


def score_spark(
    df: Any,
    model_uri: str,
    *,
    reasons: int = 0,
    keep: Sequence[str] = (),
    settings: Any = None,
    scored_at: str | None = None,
    row_numbers: bool = False,
    row_column: str | None = None,
) -> Any:
    """Score a Spark DataFrame with the same model and the same code as the local path.

    Each partition's Arrow batches go through `check_chunk` and `scores_table` on the executors
    (`mapInArrow`), so a lead gets the same probability here as from `leadscore score` or the
    API. Returns the local output's columns plus `reject_reason` (null when scored; rejected
    rows keep their id and null scores). With `row_numbers`, a `row` column numbers the rows
    1..n in the DataFrame's order (one extra pass to count each partition's rows; the order
    must be deterministic, as it is for files); `row_column` names a column of `df` that
    already holds them. A model whose leads have no id column numbers them this way too.
    """
    from pyspark.sql.types import StructType

    payload = _bundle_payload(model_uri, settings)
    bundle = _executor_bundle(payload)
    keep = list(dict.fromkeys(keep))
    available = df.columns
    columns = _input_columns(bundle, available, keep)
    by_name = {f.name: f for f in df.schema.fields}
    numbered = row_numbers or row_column is not None or bundle.id_column not in columns
    # plain names on the way in: Spark reads a dot in a column name as a struct field
    selected = [df[f"`{c}`"].alias(f"_c{i}") for i, c in enumerate(columns)]
    if row_column is not None:
        selected.append(df[f"`{row_column}`"].cast("bigint").alias("_row"))
    df = df.select(*selected)
    scored_at = scored_at or datetime.now(UTC).isoformat(timespec="seconds")
    id_col = bundle.id_column
    fields = [f"`{id_col}` string"]
    fields += [f"`{c}` {by_name[c].dataType.simpleString()}" for c in keep if c != id_col]
    fields += ["probability double", "score bigint", "tier string", "percentile bigint"]
    if reasons > 0:
        fields.append("reasons string")
    fields.append("warnings string")
    fields += ["model_name string", "model_version string", "scored_at string"]
    with_rows = row_numbers or row_column is not None
    if with_rows:
        fields.append(f"{ROW} bigint")
    fields.append(f"{REJECT_REASON} string")
    schema = StructType.fromDDL(", ".join(fields))
    kept = [c for c in keep if c != id_col]
    offsets: list[int] = []
    if numbered and row_column is None:
        offsets = _partition_offsets(df)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        model = _executor_bundle(payload)
        context = TaskContext.get()
        first = offsets[context.partitionId()] + 1 if offsets and context else 1
        for batch in batches:
            table = pa.Table.from_batches([batch])
            numbers = None
            if row_column is not None:
                numbers = table.column("_row").to_numpy(zero_copy_only=False).astype(np.int64)
                table = table.drop_columns(["_row"])
            table = table.rename_columns(columns)
            out = _score_rows(
                model, Chunk(0, first, table, row_numbers=numbers), reasons, keep, scored_at
            )
            first += batch.num_rows
            if not with_rows:
                out = out.drop_columns([ROW])
            yield from _as_spark_arrow(out, table.schema, kept).to_batches()

    return df.mapInArrow(run, schema)


def _partition_offsets(df: Any) -> list[int]:
    """Rows before each partition, counted in the JVM (no Python rows on the way)."""
    from pyspark.sql import functions as F  # noqa: N812

    counts = df.groupBy(F.spark_partition_id().alias("p")).count().collect()
    sizes = dict.fromkeys(range(df.rdd.getNumPartitions()), 0)
    sizes.update({int(r["p"]): int(r["count"]) for r in counts})
    offsets, total = [], 0
    for p in sorted(sizes):
        offsets.append(total)
        total += sizes[p]
    return offsets


def _score_rows(
    bundle: ModelBundle, chunk: Chunk, reasons: int, keep: Sequence[str], scored_at: str
) -> pa.Table:
    """Scored and rejected rows of one batch in one table (`reject_reason` tells them apart)."""
    checked = check_chunk(bundle, chunk)
    raw = chunk.table
    schema = output_schema(bundle, raw.schema, keep, reasons)
    if checked.table.num_rows:
        scored = scores_table(bundle, checked, raw, reasons, keep, scored_at)
    else:
        scored = schema.empty_table()
    scored = scored.append_column(ROW, pa.array(checked.rows, pa.int64()))
    scored = scored.append_column(REJECT_REASON, pa.nulls(scored.num_rows, pa.string()))
    rejected = checked.rejects.filter(pc.is_valid(checked.rejects.column("row")))
    if rejected.num_rows:
        positions = pa.array(checked.rejected_at)
        columns: dict[str, Any] = {}
        for f in scored.schema:
            if f.name == bundle.id_column:
                columns[f.name] = rejected.column("lead_id")
            elif f.name in keep:
                columns[f.name] = raw.column(f.name).take(positions)
            elif f.name == ROW:
                columns[f.name] = rejected.column("row")
            elif f.name == REJECT_REASON:
                columns[f.name] = rejected.column("reason")
            else:
                columns[f.name] = pa.nulls(rejected.num_rows, f.type)
        scored = pa.concat_tables([scored, pa.table(columns, schema=scored.schema)])
    return scored


def _as_spark_arrow(table: pa.Table, like: pa.Schema, kept: Sequence[str]) -> pa.Table:
    """Kept columns as Spark sent them; strings as large or not as Spark's batches hold them."""
    large = any(pa.types.is_large_string(f.type) for f in like)
    target = pa.large_string() if large else pa.string()
    fields = []
    for f in table.schema:
        if f.name in kept:
            fields.append(pa.field(f.name, like.field(f.name).type))
        elif pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            fields.append(pa.field(f.name, target))
        else:
            fields.append(f)
    return table.cast(pa.schema(fields))


def spark_session(app_name: str = "leadscore") -> Any:
    """The active Spark session, or a new one (`LEADSCORE_SPARK_MASTER`, default local[*])."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    master = os.environ.get("LEADSCORE_SPARK_MASTER", "local[*]")
    builder = SparkSession.builder.master(master).appName(app_name)
    if master.startswith("local"):
        # the workers must import leadscore: run them on this interpreter (this virtualenv)
        import sys

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.ui.enabled", "false")
    return builder.getOrCreate()


def read_spark(spark: Any, source: Source) -> Any:
    """A file read by Spark as the local path reads it: CSV cells as text, quoted newlines.

    Parquet files are read one by one, each row numbered from its place in the file
    (`_metadata.row_index`) after the rows of the files before it, and put end to end, so row
    numbers and order are the file order's whatever the partitioning (a `_row` column).
    """
    if source.kind == "parquet":
        from pyspark.sql import functions as F  # noqa: N812

        frames, offset = [], 0
        for name in source.files:
            frame = spark.read.parquet(name)
            frames.append(
                frame.withColumn("_row", F.col("_metadata.row_index") + F.lit(offset + 1))
            )
            offset += pq.read_metadata(name).num_rows
        union = frames[0]
        for frame in frames[1:]:
            union = union.unionByName(frame, allowMissingColumns=True)
        return union
    return (
        spark.read.option("header", True)
        .option("sep", source.delimiter)
        .option("multiLine", True)
        .option("quote", '"')
        .option("escape", '"')
        .option("encoding", "UTF-8" if source.encoding.startswith("utf-8") else source.encoding)
        .option("ignoreLeadingWhiteSpace", False)
        .option("ignoreTrailingWhiteSpace", False)
        .option("inferSchema", False)
        .option("mode", "PERMISSIVE")
        .csv(str(source.path))
    )


def rescore_spark(
    model_uri: str,
    input_path: Path,
    output_path: Path,
    *,
    settings: Any = None,
    reasons: int = 0,
    keep: Sequence[str] = (),
    spark: Any = None,
    scored_at: str | None = None,
) -> BatchSummary:
    """`leadscore score --engine spark`: Spark reads and scores the file (`score_spark`), writes
    Parquet parts, and the driver streams them, in order, into the same single output file,
    rejects file and summary as the local engine. On a cluster, call `score_spark` and write
    with Spark instead (see the README)."""
    from leadscore.config import get_settings
    from leadscore.tracking import load_model, resolve_model_uri

    settings = settings or get_settings()
    model_uri = resolve_model_uri(model_uri, settings)
    bundle = load_model(model_uri, settings)
    keep = list(dict.fromkeys(keep))
    source = open_source(input_path, bundle, keep)
    schema = output_schema(bundle, source.schema, keep, reasons)
    job = Job(output_path, {"engine": "spark"}, schema)
    job.refuse_overwriting(source)
    job.prepare(resume=False)
    scored_at = scored_at or datetime.now(UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    spark = spark or spark_session()
    # a CSV read with multiLine is one partition, so counting rows per partition numbers them
    frame = read_spark(spark, source)
    numbered = "_row" in frame.columns
    scored = score_spark(
        frame,
        model_uri,
        reasons=reasons,
        keep=keep,
        settings=settings,
        scored_at=scored_at,
        row_numbers=not numbered,
        row_column="_row" if numbered else None,
    )
    parts = job.folder / "spark"
    scored.write.mode("overwrite").parquet(parts.resolve().as_uri())
    files = sorted(parts.glob("part-*.parquet"))
    score_drift = Drift(bundle, 1)
    score_drift.features = []
    try:
        job.open_final()
        for index, path in enumerate(files):
            table = pq.read_table(path)
            bad = pc.is_valid(table.column(REJECT_REASON))
            good = table.filter(pc.invert(bad))
            rejected = table.filter(bad)
            rows = rejected.column(ROW).to_pylist()
            rejects = rejects_table(
                rows,
                # Spark reads a malformed CSV record as a row (PERMISSIVE): row r is record r + 1
                [r + 1 for r in rows] if source.kind == "csv" else [None] * len(rows),
                pc.cast(rejected.column(bundle.id_column), pa.string()).to_pylist(),
                rejected.column(REJECT_REASON).to_pylist(),
            )
            good = good.drop_columns([ROW, REJECT_REASON]).cast(schema)
            counts = (
                {
                    "score": bin_counts(
                        score_drift.profile["score"], good.column("probability").to_numpy()
                    ).tolist()
                }
                if score_drift.score is not None
                else {}
            )
            score_drift.add(counts)
            job.add(index, good, rejects, table.num_rows, {"scored_at": scored_at})
        lines = LineFinder(source.path, source.encoding, source.delimiter)
        rejects_path = job.commit(lines if source.kind == "csv" else None)
    except BaseException:
        job.abort()
        shutil.rmtree(job.folder, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    state = job.state
    summary = BatchSummary.of_job(input_path, output_path, state, seconds, bundle, len(files))
    report = score_drift.report()
    if report.get("available"):
        report["feature_psi"] = {}
        report["note"] = "the spark engine checks the score's drift only"
    summary.extra = {
        "engine": "spark",
        "rejects_file": str(rejects_path) if rejects_path else None,
        "rejected_out_of_range": int(state.get("rejected_out_of_range", 0)),
        "scored_at": scored_at,
        "reasons": reasons,
        "absent_fields": absent_fields(bundle, source.columns),
        "range_warnings": int(state.get("warned", 0)),
        "drift": report,
    }
    summary_path = output_path.with_name(output_path.name + ".summary.json")
    _write_atomic(summary_path, json.dumps(summary.as_dict(), indent=2))
    log.info("wrote %s with Spark: %s rows in %.1f s", output_path, f"{summary.rows:,}", seconds)
    return summary
