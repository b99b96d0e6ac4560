"""Streaming file rescoring: read a chunk, score it with the shared scoring code, write it.

Memory stays bounded by the chunk size, whatever the file's size. Output is written to a
temporary file beside the target and moved into place only when complete, so a reader never
sees half a file.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from leadscore.data import check_file, detect_delimiter, detect_encoding
from leadscore.errors import DataError
from leadscore.scoring import ModelBundle, score_arrays

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000


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


def _input_columns(bundle: ModelBundle, available: Sequence[str], keep: Sequence[str]) -> list[str]:
    missing_keep = [c for c in keep if c not in available]
    if missing_keep:
        raise DataError(f"--keep names column(s) not in the input: {missing_keep}")
    wanted = [bundle.id_column, *keep, *bundle.inputs]
    return [c for c in dict.fromkeys(wanted) if c in available]


def read_chunks(
    path: Path, bundle: ModelBundle, chunk_rows: int, keep: Sequence[str] = ()
) -> Iterator[pa.Table]:
    """Arrow tables of at most `chunk_rows` rows, typed as the model expects."""
    check_file(path)
    types = bundle.input_types()
    if path.is_dir() or path.suffix.lower() in {".parquet", ".pq"}:
        dataset = pads.dataset(str(path), format="parquet")
        columns = _input_columns(bundle, dataset.schema.names, keep)
        for batch in dataset.to_batches(columns=columns, batch_size=chunk_rows):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])
        return
    encoding = detect_encoding(path)
    delimiter = detect_delimiter(path, encoding)
    with path.open("r", encoding=encoding, newline="") as handle:
        header = next(csv.reader([handle.readline()], delimiter=delimiter), [])
    header = [h.strip() for h in header]
    columns = _input_columns(bundle, header, keep)
    column_types: dict[str, pa.DataType] = {}
    for name in columns:
        column_types[name] = pa.float64() if types.get(name) == "numeric" else pa.string()
    missing_values = bundle.builder.missing_values
    reader = pacsv.open_csv(
        str(path),
        read_options=pacsv.ReadOptions(
            encoding="utf8" if encoding.startswith("utf-8") else encoding,
            block_size=8 << 20,
        ),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=column_types,
            include_columns=columns,
            null_values=[*missing_values, ""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    try:
        for batch in reader:
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, chunk_rows)
                rest = table.slice(chunk_rows)
                pending = rest.to_batches()
                pending_rows = rest.num_rows
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot be read: {_arrow_message(exc)}") from None
    if pending_rows:
        yield pa.Table.from_batches(pending)


def _arrow_message(exc: Exception) -> str:
    """Arrow's message without the offending cell's text (it may be PII)."""
    text = str(exc).splitlines()[0]
    return text.split(": got '")[0] if ": got '" in text else text


def scores_table(bundle: ModelBundle, chunk: pa.Table, reasons: int, keep: Sequence[str],
                 scored_at: str, first_row: int = 1) -> pa.Table:
    """The output rows for one chunk: id, kept columns, then the scores."""
    result = score_arrays(bundle, chunk, reasons)
    n = chunk.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    id_col = bundle.id_column
    if id_col in chunk.column_names:
        columns[id_col] = chunk.column(id_col).cast(pa.string())
    else:
        # no id column (a spec whose lead id is the row number): number the rows as training did
        columns[id_col] = pa.array([str(first_row + i) for i in range(n)], type=pa.string())
    for name in keep:
        if name != id_col:
            columns[name] = chunk.column(name)
    columns["probability"] = pa.array(result.probability, type=pa.float64())
    columns["score"] = pa.array(result.score, type=pa.int64())
    columns["tier"] = pa.array(result.tier.tolist(), type=pa.string())
    columns["percentile"] = pa.array(result.percentile, type=pa.int64())
    if result.reasons is not None:
        columns["reasons"] = pa.array([json.dumps(r) for r in result.reasons], type=pa.string())
    columns["model_name"] = pa.array([bundle.name] * n, type=pa.string())
    columns["model_version"] = pa.array([bundle.version] * n, type=pa.string())
    columns["scored_at"] = pa.array([scored_at] * n, type=pa.string())
    return pa.table(columns)


class _Writer:
    """Parquet or CSV by the output's suffix, written to `<output>.partial` first."""

    def __init__(self, output: Path) -> None:
        suffix = output.suffix.lower()
        if suffix not in {".parquet", ".pq", ".csv"}:
            raise DataError(f"{output}: output must end in .parquet or .csv")
        self.output = output
        self.partial = output.with_name(output.name + ".partial")
        self.kind = "csv" if suffix == ".csv" else "parquet"
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            if self.kind == "parquet":
                self._writer = pq.ParquetWriter(str(self.partial), table.schema)
            else:
                self._writer = pacsv.CSVWriter(str(self.partial), table.schema)
        self._writer.write_table(table)

    def commit(self) -> None:
        if self._writer is None:
            raise DataError(f"{self.output}: nothing to write (the input has no rows)")
        self._writer.close()
        os.replace(self.partial, self.output)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.partial.unlink(missing_ok=True)


def rescore(
    bundle: ModelBundle,
    input_path: Path,
    output_path: Path,
    *,
    reasons: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: Sequence[str] = (),
) -> BatchSummary:
    """Score a CSV/Parquet file (or folder of Parquet files) into a Parquet or CSV file."""
    if chunk_rows < 1:
        raise DataError("--chunk-rows must be at least 1")
    summary = BatchSummary(
        input=str(input_path), output=str(output_path),
        model_name=bundle.name, model_version=bundle.version,
    )
    writer = _Writer(output_path)
    scored_at = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    try:
        for chunk in read_chunks(input_path, bundle, chunk_rows, keep):
            writer.write(scores_table(bundle, chunk, reasons, keep, scored_at, summary.rows + 1))
            summary.rows += chunk.num_rows
            summary.scored += chunk.num_rows
            summary.chunks += 1
            log.info("scored %d rows", summary.rows)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    summary.seconds = time.perf_counter() - start
    summary_path = output_path.with_name(output_path.name + ".summary.json")
    summary_path.write_text(json.dumps(summary.as_dict(), indent=2), encoding="utf-8")
    log.info("wrote %s: %d rows in %.1f s", output_path, summary.rows, summary.seconds)
    return summary
