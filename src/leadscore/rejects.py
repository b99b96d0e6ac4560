"""The rejects file of a batch job: every row set aside, why, and where to find it in the input.

`<output>.rejects.csv` has the columns `row` (the data row's 1-based number, as `row` in the
output's numbering; empty for a malformed record, which is no data row), `line` (the line the
record starts on in the input file, header = line 1; empty for Parquet), `lead_id` (where it can
be read) and `reason`. A reason names the column, never a value: values may be PII.

Arrow numbers CSV records, not lines (a quoted value may hold line breaks), so each chunk keeps
the record numbers of its rejects and the lines are found once, when the file is assembled, by
reading the input's records up to the last rejected one with Python's `csv` module.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from leadscore.numbers import OUT_OF_RANGE

log = logging.getLogger(__name__)

REJECT_COLUMNS = ("row", "line", "lead_id", "reason")
# a chunk's rejects as kept in the parts folder: the record number, not yet the line
PART_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("record", pa.int64()),
        ("lead_id", pa.string()),
        ("reason", pa.string()),
    ]
)


@dataclass(frozen=True)
class BadRecord:
    """A CSV record with the wrong number of fields: its record number (header = 1, as Arrow
    counts), the reason, and its id when that field could be read."""

    number: int | None
    reason: str
    lead_id: str | None


def read_id(text: str, delimiter: str, position: int | None) -> str | None:
    """The id field of a malformed record's text, when the record reaches that far."""
    if position is None:
        return None
    try:
        fields = next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error:
        return None
    value = fields[position].strip() if position < len(fields) else ""
    return value or None


def rejects_table(
    rows: Sequence[int | None],
    records: Sequence[int | None],
    ids: Sequence[str | None],
    reasons: Sequence[str],
) -> pa.Table:
    """A chunk's rejects in input order (by record number, else by row)."""

    def place(i: int) -> int:
        record, row = records[i], rows[i]
        return record if record is not None else row if row is not None else 0

    order = sorted(range(len(reasons)), key=place)
    return pa.table(
        [
            pa.array([rows[i] for i in order], pa.int64()),
            pa.array([records[i] for i in order], pa.int64()),
            pa.array([ids[i] for i in order], pa.string()),
            pa.array([reasons[i] for i in order], pa.string()),
        ],
        schema=PART_SCHEMA,
    )


def count_out_of_range(rejects: pa.Table) -> int:
    """Rejected rows with a number the rule refuses (NaN, +-inf, out of range)."""
    if not rejects.num_rows:
        return 0
    hits = pc.match_substring(rejects.column("reason"), OUT_OF_RANGE)
    return int(pc.sum(hits).as_py() or 0)


class LineFinder:
    """The line each CSV record starts on, for record numbers asked in increasing order.

    Blank lines are no record (Arrow skips them too); a record whose quoted value spans lines
    moves every later record down by as many lines.
    """

    def __init__(self, path: Path, encoding: str, delimiter: str) -> None:
        self.path = path
        self._handle: IO[str] | None = None
        self._encoding = encoding
        self._delimiter = delimiter
        self._record = 0
        self._start: int | None = None
        self._broken = False

    def line_of(self, record: int | None) -> int | None:
        if record is None or self._broken:
            return None
        if self._handle is None:
            self._handle = self.path.open("r", encoding=self._encoding, newline="")
            self._reader = csv.reader(self._handle, delimiter=self._delimiter)
        while self._record < record:
            start = self._reader.line_num + 1
            try:
                fields = next(self._reader)
            except (StopIteration, csv.Error, UnicodeDecodeError):
                # past what Python's csv reads like Arrow: no line rather than a wrong one
                log.debug("%s: no line number past record %d", self.path, self._record)
                self._broken = True
                return None
            if fields:
                self._record += 1
                self._start = start
        return self._start if self._record == record else None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def write_rejects(parts: Iterable[Path], out: IO[bytes], lines: LineFinder | None) -> None:
    """The rejects file's header and rows, from the chunks' rejects in order."""
    out.write((",".join(f'"{c}"' for c in REJECT_COLUMNS) + "\n").encode())
    options = pacsv.WriteOptions(include_header=False)
    try:
        for path in parts:
            part = pq.read_table(path).cast(PART_SCHEMA)
            records = part.column("record").to_pylist()
            found = [lines.line_of(r) for r in records] if lines is not None else None
            line = pa.array(found if found is not None else [None] * len(records), pa.int64())
            table = pa.table(
                [part.column("row"), line, part.column("lead_id"), part.column("reason")],
                names=list(REJECT_COLUMNS),
            )
            pacsv.write_csv(table, out, write_options=options)
    finally:
        if lines is not None:
            lines.close()
