"""A chunk's checks (what can be scored, what is rejected and why) and its output rows."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leadscore.batch.sources import Chunk
from leadscore.exports import bundle_metadata
from leadscore.numbers import OUT_OF_RANGE, to_numbers
from leadscore.ranges import bound_reason, outside_bounds
from leadscore.rejects import rejects_table
from leadscore.scoring import ModelBundle, score_arrays

log = logging.getLogger(__name__)


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
        pa.field("tier_label", pa.string()),  # the tier's word (hot, warm...), as CSV and API give
        pa.field("percentile", pa.int64()),
    ]
    if reasons > 0:
        fields.append(pa.field("reasons", pa.string()))
    fields.append(pa.field("warnings", pa.string()))  # JSON list, "[]" when none
    fields += [pa.field(c, pa.string()) for c in ("model_name", "model_version", "scored_at")]
    return pa.schema(fields, metadata=bundle_metadata(bundle, reasons))


def score_chunk(
    bundle: ModelBundle,
    checked: Checked,
    raw: pa.Table,
    reasons: int,
    keep: Sequence[str],
    scored_at: str,
) -> tuple[pa.Table, np.ndarray]:
    """The output rows for a checked chunk's scorable rows (id, kept columns, then the scores)
    and the encoded features they were scored from (what the score history keeps).

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
    tier = pa.array(result.tier, type=pa.string())
    columns["tier"] = tier
    # a word per tier, not per row: the few distinct tiers are labelled, then taken by index
    encoded = tier.dictionary_encode()
    words = pa.array(bundle.tier_labels(encoded.dictionary.to_pylist()), type=pa.string())
    columns["tier_label"] = pc.take(words, encoded.indices)
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
    assert result.matrix is not None
    return pa.table(columns), result.matrix


def scores_table(
    bundle: ModelBundle,
    checked: Checked,
    raw: pa.Table,
    reasons: int,
    keep: Sequence[str],
    scored_at: str,
) -> pa.Table:
    """The output rows for a checked chunk's scorable rows (`score_chunk` without features)."""
    return score_chunk(bundle, checked, raw, reasons, keep, scored_at)[0]

