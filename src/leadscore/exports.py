"""Score files a CRM imports: flat columns (`reason_1` … `reason_K`, `reason_1_points` …), no
JSON cells, as CSV (written while a batch job runs) or XLSX (written from its finished Parquet).

Parquet keeps the structured reasons (a JSON list of {feature, value, impact, label, text} per
lead); the flat files carry each reason's text and points, and the tier's word.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from leadscore.errors import DataError
from leadscore.labels import tier_words

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "xlsx")
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".xlsx": "xlsx"}
# written by the batch job into its output schema, so a writer that only sees the schema knows
# how many reason columns to make and which word each tier has
REASONS_KEY = b"leadscore.reasons"
TIER_WORDS_KEY = b"leadscore.tier_words"
XLSX_MAX_ROWS = 1_048_576 - 1  # one sheet's rows, less the header
XLSX_INSTALL = "writing .xlsx needs openpyxl: pip install 'leadscore[xlsx]'"
# characters an XLSX cell cannot hold (openpyxl refuses them rather than writing a bad file)
_ILLEGAL_XLSX = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def format_for(output: Path, requested: str | None = None) -> str:
    """The output format: `requested` (checked against the suffix), else from the suffix."""
    by_suffix = SUFFIXES.get(output.suffix.lower())
    if requested is None:
        if by_suffix is None:
            raise DataError(
                f"{output}: output must end in .parquet, .csv or .xlsx (or give --format)"
            )
        return by_suffix
    chosen = requested.lower()
    if chosen not in FORMATS:
        raise DataError(f"--format must be one of {', '.join(FORMATS)}, not {requested!r}")
    if by_suffix != chosen:
        raise DataError(f"{output}: --format {chosen} needs an output ending in .{chosen}")
    return chosen


def schema_metadata(reasons: int, words: Mapping[str, str] | None) -> dict[bytes, bytes]:
    """What a flat writer needs beside the columns: reasons asked for (k; up to 2k a lead) and
    the tier words. Stored in the output schema (and so in the Parquet file's footer)."""
    return {REASONS_KEY: str(int(reasons)).encode(),
            TIER_WORDS_KEY: json.dumps(tier_words(words)).encode()}


def bundle_metadata(bundle: Any, reasons: int) -> dict[bytes, bytes]:
    """`schema_metadata` for a model bundle (its tier words)."""
    return schema_metadata(reasons, getattr(bundle, "tier_words_", None))


def _reason_slots(schema: pa.Schema, fallback: int | None = None) -> int:
    """Reason columns: 2k (k raisers, k lowerers) when the schema says k, else `fallback`."""
    if "reasons" not in schema.names:
        return 0
    meta = schema.metadata or {}
    if REASONS_KEY in meta:
        return 2 * int(meta[REASONS_KEY])
    if fallback is None:
        raise DataError("the scores have a reasons column but do not say how many reasons")
    return fallback


def _words(schema: pa.Schema) -> dict[str, str]:
    raw = (schema.metadata or {}).get(TIER_WORDS_KEY)
    return tier_words(json.loads(raw) if raw else None)


def flat_schema(schema: pa.Schema, slots: int | None = None) -> pa.Schema:
    """The flat columns for a scores schema: `reasons` becomes `reason_1` … `reason_K` (text)
    and `reason_1_points` … (numbers); a `tier_label` follows `tier`; `warnings` is text."""
    k = _reason_slots(schema, slots) if slots is None else slots
    fields: list[pa.Field] = []
    for f in schema:
        if f.name == "reasons":
            fields += [pa.field(f"reason_{i}", pa.string()) for i in range(1, k + 1)]
            fields += [pa.field(f"reason_{i}_points", pa.float64()) for i in range(1, k + 1)]
        elif f.name == "warnings":
            fields.append(pa.field("warnings", pa.string()))
        else:
            fields.append(pa.field(f.name, f.type))
        if f.name == "tier" and "tier_label" not in schema.names:
            fields.append(pa.field("tier_label", pa.string()))
    return pa.schema(fields)


def _as_list(cell: Any) -> list[Any]:
    """A reasons or warnings cell: a JSON text (batch Parquet/CSV) or a list (a DataFrame)."""
    if cell is None:
        return []
    if isinstance(cell, str):
        return list(json.loads(cell)) if cell else []
    return list(cell)


def flatten(table: pa.Table, schema: pa.Schema | None = None, slots: int | None = None
            ) -> pa.Table:
    """`table` (scores as batch writes them) in flat columns. `schema` carries the reason count
    and tier words (default: the table's own); `slots` overrides the number of reason columns.
    """
    like = schema if schema is not None else table.schema
    flat = flat_schema(like, slots)
    k = sum(1 for name in flat.names if re.fullmatch(r"reason_\d+", name))
    words = _words(like)
    columns: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name)
        if name == "reasons":
            cells = [_as_list(c) for c in column.to_pylist()]
            for i in range(k):
                columns[f"reason_{i + 1}"] = pa.array(
                    [_reason_text(r[i]) if i < len(r) else None for r in cells], pa.string())
            for i in range(k):
                columns[f"reason_{i + 1}_points"] = pa.array(
                    [float(r[i]["impact"]) if i < len(r) else None for r in cells], pa.float64())
        elif name == "warnings":
            texts = ["; ".join(str(w) for w in _as_list(c)) for c in column.to_pylist()]
            columns[name] = pa.array(texts, pa.string())
        else:
            columns[name] = column
        if name == "tier" and "tier_label" not in table.column_names:
            tiers = column.to_pylist()
            columns["tier_label"] = pa.array(
                [None if t is None else words.get(t, t) for t in tiers], pa.string())
    return pa.table(columns).select(flat.names).cast(flat)


def _reason_text(reason: Mapping[str, Any]) -> str:
    """A reason's one-line text; older outputs without one get `feature value: impact`."""
    text = reason.get("text")
    if text:
        return str(text)
    return f"{reason.get('feature')} {reason.get('value')}: {reason.get('impact')}"


def flat_frame(scores: Any, reasons: int | None = None,
               words: Mapping[str, str] | None = None) -> Any:
    """A `scoring.score` DataFrame in flat columns (for a notebook's CSV/XLSX export): 2 ×
    `reasons` reason columns (default: as many as the longest list), tier `words` (default:
    hot, warm, cool, cold) when the frame has no `tier_label` yet."""
    import pandas as pd

    table = pa.Table.from_pandas(
        scores.assign(**{c: scores[c].map(json.dumps) for c in ("reasons", "warnings")
                         if c in scores.columns}),
        preserve_index=False,
    )
    longest = max((len(r) for r in scores["reasons"]), default=0) if "reasons" in scores else 0
    slots = 2 * reasons if reasons is not None else longest
    schema = table.schema.with_metadata(schema_metadata(max(slots // 2, 0), words))
    out: pd.DataFrame = flatten(table, schema, slots).to_pandas()
    return out


class FlatCsvWriter(pacsv.CSVWriter):
    """pyarrow's CSV writer taking scores tables in the batch output's schema and writing them
    in flat columns (the reason count and tier words come from that schema's metadata)."""

    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        self.scores_schema = schema
        super().__init__(str(path), flat_schema(schema))

    def write_table(self, table: pa.Table, max_chunk_size: int | None = None) -> None:
        super().write_table(flatten(table, self.scores_schema), max_chunk_size)


# --------------------------------------------------------------------------- xlsx


def _parquet_slots(source: pq.ParquetFile) -> int:
    """Reason columns for a Parquet file without our metadata: the longest reasons list."""
    longest = 0
    for batch in source.iter_batches(batch_size=65_536, columns=["reasons"]):
        for cell in batch.column(0).to_pylist():
            longest = max(longest, len(_as_list(cell)))
    return longest


def write_xlsx(source: Path, output: Path, batch_rows: int = 65_536) -> Path:
    """Stream a finished scores Parquet file into an XLSX sheet in flat columns, a batch at a
    time (openpyxl's write-only mode keeps only the current row), then move it into place."""
    try:
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell
    except ImportError:
        raise DataError(XLSX_INSTALL) from None
    parquet = pq.ParquetFile(source)
    rows = parquet.metadata.num_rows
    if rows > XLSX_MAX_ROWS:
        raise DataError(
            f"{output}: {rows} leads do not fit one XLSX sheet (at most {XLSX_MAX_ROWS}); "
            "write .csv or .parquet instead"
        )
    schema = parquet.schema_arrow
    slots = None
    if "reasons" in schema.names and REASONS_KEY not in (schema.metadata or {}):
        slots = _parquet_slots(parquet)
    flat = flat_schema(schema, slots)
    partial = output.with_name(output.name + ".partial")
    book = Workbook(write_only=True)
    sheet = book.create_sheet("scores")
    sheet.append(flat.names)

    def cell(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = _ILLEGAL_XLSX.sub("", value)
        if text.startswith("="):  # text, never a formula, whatever a kept column holds
            out = WriteOnlyCell(sheet, value=text)
            out.data_type = "s"
            return out
        return text

    try:
        for batch in parquet.iter_batches(batch_size=batch_rows):
            table = flatten(pa.Table.from_batches([batch], schema=schema), schema, slots)
            for row in _rows(table):
                sheet.append([cell(v) for v in row])
        book.save(str(partial))
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    log.info("wrote %d leads to %s", rows, output)
    return output


def _rows(table: pa.Table) -> Iterator[Sequence[Any]]:
    columns = [column.to_pylist() for column in table.columns]
    return zip(*columns, strict=True)
