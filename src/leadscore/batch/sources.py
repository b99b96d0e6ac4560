"""Reading an input file in fixed chunks: which columns, its fingerprint, malformed CSV
records set aside with their numbers (never their text)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from leadscore.data import check_file, detect_delimiter, detect_encoding
from leadscore.errors import DataError
from leadscore.faults import fault, plainly
from leadscore.rejects import BadRecord, read_id
from leadscore.scoring import ModelBundle

log = logging.getLogger(__name__)


CSV_BLOCK_BYTES = 4 << 20


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
    # Parquet: the text columns read as Arrow dictionaries (`dictionary_columns`), and the
    # schema of the batches as read (`schema` stays the file's: kept columns keep their type)
    dictionary: list[str] = field(default_factory=list)
    read_schema: pa.Schema | None = None


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
        dictionary = dictionary_columns(bundle, schema, keep)
        read_schema = pa.schema([
            pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name in dictionary else f
            for f in schema
        ])
        return Source(path, "parquet", columns, schema, fingerprint, total, size, files,
                      dictionary=dictionary, read_schema=read_schema)
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


def dictionary_columns(bundle: ModelBundle, schema: pa.Schema, keep: Sequence[str]) -> list[str]:
    """The text columns a Parquet input is read as dictionaries: the model's categorical fields
    and the job titles its text derivations read. Their few distinct values are decoded once
    per page (no string per row), and the encoding looks each one up once (`FeatureBuilder`
    takes codes through the indices). Not the id or a kept column (copied to the output as
    read), and not a text read for its presence or an address's domain (nearly all distinct)."""
    wanted: set[str] = set()
    for feature in bundle.builder.features_:
        if feature.derive in (None, "seniority", "department") and feature.kind == "categorical":
            wanted.update(feature.inputs if feature.derive else (feature.source,))
    wanted -= {bundle.id_column, *keep}
    return [f.name for f in schema if f.name in wanted
            and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]


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
    schema = source.read_schema or source.schema
    with plainly(name, "read it as Parquet", resumable=False), pq.ParquetFile(
        name, pre_buffer=False, read_dictionary=source.dictionary or None
    ) as parquet:
        for batch in parquet.iter_batches(batch_size=64 * 1024, columns=source.columns):
            if batch.schema != schema:
                batch = batch.select(source.columns).cast(schema)
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
            table = (source.read_schema or source.schema).empty_table()
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

