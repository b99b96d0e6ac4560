"""The score history: every score given, as Parquet under `LEADSCORE_HOME/scores/`.

Layout (Hive-style, what DuckDB, Spark and pyarrow read as they are):
`scores/model=<name>/date=<YYYY-MM-DD>/part-<key>-<n>.parquet`, one row per lead scored:
lead_id, model_version, scored_at (UTC), probability, score, tier and `features`, the encoded
feature vector the score came from.

Why features and not impacts: each field's impact is TreeSHAP, measured at ~2.5k rows/s against
~127k rows/s for a plain score (benchmarks/results/batch.json), so storing impacts for every
row would make a batch job ~50x slower, not the 15% the history may cost. The encoded features
are already computed; with the version's bundle they give back the very impacts of that
scoring (`impacts_of`), for the few rows anyone asks about. They are derived values (an email
is a free-mail flag, a category its code), never a lead's name, email or phone.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from leadscore.errors import DataError

log = logging.getLogger(__name__)

SCORES_DIR = "scores"
ROWS_SCHEMA = pa.schema(
    [
        pa.field("lead_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        pa.field("probability", pa.float64()),
        pa.field("score", pa.int64()),
        pa.field("tier", pa.string()),
        pa.field("features", pa.list_(pa.float64())),
    ]
)
PARTITIONING = pads.partitioning(
    pa.schema([("model", pa.string()), ("date", pa.string())]), flavor="hive"
)
# compacted files are sorted by lead id in row groups of this size, so a lookup of one lead
# reads the row groups whose min/max hold its id, not the whole day
COMPACT_ROW_GROUP = 64 * 1024


def history_rows(
    lead_ids: pa.Array | pa.ChunkedArray,
    version: str,
    scored_at: str | datetime,
    probability: np.ndarray,
    score: np.ndarray,
    tier: Any,
    matrix: np.ndarray,
) -> pa.Table:
    """The store's rows for one scored chunk (columns built in Arrow, not as Python rows)."""
    n = len(probability)
    when = scored_at if isinstance(scored_at, datetime) else datetime.fromisoformat(scored_at)
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float64).ravel())
    width = matrix.shape[1] if matrix.ndim == 2 else 0
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)[: n + 1])
    return pa.table(
        {
            "lead_id": pc.cast(lead_ids, pa.string()),
            "model_version": pa.repeat(pa.scalar(version, pa.string()), n),
            "scored_at": pa.repeat(pa.scalar(when, pa.timestamp("us", tz="UTC")), n),
            "probability": pa.array(probability, pa.float64()),
            "score": pa.array(score, pa.int64()),
            "tier": pc.cast(tier, pa.string())
            if isinstance(tier, pa.Array | pa.ChunkedArray)
            else pa.array(np.asarray(tier, dtype=object), pa.string()),
            "features": pa.ListArray.from_arrays(offsets, flat),
        },
        schema=ROWS_SCHEMA,
    )


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
        rows = rows.cast(ROWS_SCHEMA)
        days = pc.strftime(rows.column("scored_at"), format="%Y-%m-%d")
        unique = pc.unique(days).to_pylist()
        written = []
        for day in unique:
            part = rows.filter(pc.equal(days, day)) if len(unique) > 1 else rows
            folder = self.root / f"model={model}" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{key}-{index:06d}.parquet"
            tmp = folder / f".{path.name}.tmp"
            try:
                pq.write_table(part, tmp, compression="zstd")
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

    def _dataset(self, model: str) -> pads.Dataset:
        folder = self.root / f"model={model}"
        files = sorted(str(p) for p in folder.rglob("part-*.parquet"))
        return pads.dataset(
            files, schema=ROWS_SCHEMA, format="parquet", partitioning=PARTITIONING,
            partition_base_dir=str(self.root),
        )

    def rows(self, model: str, lead_id: str | None = None,
             columns: Iterable[str] | None = None) -> pa.Table:
        """A model's rows (one lead's, with `lead_id`), oldest first."""
        dataset = self._dataset(model)
        where = pc.field("lead_id") == lead_id if lead_id is not None else None
        table = dataset.to_table(
            columns=list(columns) if columns is not None else None, filter=where
        )
        if "scored_at" in table.column_names and table.num_rows:
            table = table.sort_by([("scored_at", "ascending")])
        return table

    def lead(self, model: str, lead_id: str) -> pa.Table:
        """One lead's scorings, oldest first; one plain line when there are none."""
        found = self.rows(model, lead_id)
        if found.num_rows == 0:
            raise DataError(f"lead {lead_id!r} has no scores in the history of model {model!r}")
        return found

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
                table = pa.concat_tables(pq.read_table(p).cast(ROWS_SCHEMA) for p in parts)
                table = table.sort_by([("lead_id", "ascending"), ("scored_at", "ascending")])
                target = day / f"part-compact-{job_key(*[p.name for p in parts])}.parquet"
                tmp = day / f".{target.name}.tmp"
                pq.write_table(table, tmp, compression="zstd", row_group_size=COMPACT_ROW_GROUP)
                os.replace(tmp, target)
                for p in parts:
                    if p != target:
                        p.unlink()
                after += 1
        log.info("compacted the score history: %d file(s) into %d", before, after)
        return {"models": models, "files_before": before, "files_after": after}
