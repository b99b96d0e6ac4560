"""The Spark engine: the same checks and scoring on executors (`mapInArrow`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from leadscore.batch.checks import check_chunk, output_schema, score_chunk
from leadscore.batch.drift import Drift
from leadscore.batch.job import BatchSummary, Job, _write_atomic
from leadscore.batch.sources import Chunk, Source, _input_columns, absent_fields, open_source
from leadscore.evaluate import bin_counts
from leadscore.rejects import LineFinder, rejects_table
from leadscore.scoring import ModelBundle
from leadscore.store import FEATURE_PREFIX, ScoreStore, feature_column, history_rows, job_key

log = logging.getLogger(__name__)


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
    features: bool = False,
) -> Any:
    """Score a Spark DataFrame with the same model and the same code as the local path.

    Each partition's Arrow batches go through `check_chunk` and `score_chunk` on the executors
    (`mapInArrow`), so a lead gets the same probability here as from `leadscore score` or the
    API. Returns the local output's columns plus `reject_reason` (null when scored; rejected
    rows keep their id and null scores). With `row_numbers`, a `row` column numbers the rows
    1..n in the DataFrame's order (one extra pass to count each partition's rows; the order
    must be deterministic, as it is for files); `row_column` names a column of `df` that
    already holds them. A model whose leads have no id column numbers them this way too.
    With `features`, the encoded features each lead was scored from follow as `f_000`, ...
    (null on rejected rows): what the score history keeps (`store.history_rows`).
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
    fields += ["probability double", "score bigint", "tier string", "tier_label string",
               "percentile bigint"]
    if reasons > 0:
        fields.append("reasons string")
    fields.append("warnings string")
    fields += ["model_name string", "model_version string", "scored_at string"]
    width = len(bundle.builder.features_) if features else 0
    fields += [f"{feature_column(j)} double" for j in range(width)]
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
                model, Chunk(0, first, table, row_numbers=numbers), reasons, keep, scored_at,
                features,
            )
            first += batch.num_rows
            if not with_rows:
                out = out.drop_columns([ROW])
            yield from _as_spark_arrow(out, table.schema, kept).to_batches()

    return df.mapInArrow(run, schema)


def history_frame(scored: Any, model: str) -> Any:
    """The score store's rows of a `score_spark(..., features=True)` result, for Spark to write
    itself on a cluster: `.write.partitionBy("model", "date").mode("append").parquet(root)`
    gives the layout `leadscore history` and the monitor read (model=/date= folders, the same
    columns). The lead id is the first column (score_spark puts the model's id column there);
    rejected rows are left out; `date` is the UTC day of scored_at.

    Sets the session's `spark.sql.parquet.outputTimestampType` to TIMESTAMP_MICROS: Spark's
    default (INT96) would read back as a naive nanosecond time, not the store's UTC
    microseconds.
    """
    from pyspark.sql import functions as F  # noqa: N812

    scored.sparkSession.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    features = sorted(c for c in scored.columns if c.startswith(FEATURE_PREFIX))
    if not features:
        raise ValueError("history_frame needs score_spark(..., features=True)")
    when = F.to_timestamp(F.col("scored_at"))
    rows = scored.where(F.col(REJECT_REASON).isNull())
    return rows.select(
        F.col(f"`{rows.columns[0]}`").cast("string").alias("lead_id"),
        F.col("model_version").cast("string"),
        when.alias("scored_at"),
        F.col("probability").cast("double"),
        F.col("score").cast("bigint"),
        F.col("tier").cast("string"),
        *(F.col(c).cast("double") for c in features),
        F.lit(model).alias("model"),
        F.date_format(F.to_utc_timestamp(when, F.current_timezone()), "yyyy-MM-dd")
        .alias("date"),
    )


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
    bundle: ModelBundle, chunk: Chunk, reasons: int, keep: Sequence[str], scored_at: str,
    features: bool = False,
) -> pa.Table:
    """Scored and rejected rows of one batch in one table (`reject_reason` tells them apart),
    with `features`: the encoded features too (`f_000`, ...)."""
    checked = check_chunk(bundle, chunk)
    raw = chunk.table
    schema = output_schema(bundle, raw.schema, keep, reasons)
    if features:
        width = len(bundle.builder.features_)
        schema = pa.schema([*schema, *(pa.field(feature_column(j), pa.float64())
                                       for j in range(width))], metadata=schema.metadata)
    if checked.table.num_rows:
        scored, matrix = score_chunk(bundle, checked, raw, reasons, keep, scored_at)
        if features:
            for j in range(matrix.shape[1]):
                scored = scored.append_column(feature_column(j),
                                              pa.array(matrix[:, j], pa.float64()))
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


def _record(history: ScoreStore, bundle: ModelBundle, scored: pa.Table, scored_at: str,
            key: str, index: int) -> None:
    """Append one part's scored rows to the score store, as `rescore` does for a chunk."""
    if not scored.num_rows:
        return
    names = sorted(c for c in scored.column_names if c.startswith(FEATURE_PREFIX))
    matrix = np.column_stack([scored.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                              for c in names]) if names else np.zeros((scored.num_rows, 0))
    rows = history_rows(
        scored.column(bundle.id_column), bundle.version, scored_at,
        scored.column("probability").to_numpy(), scored.column("score").to_numpy(),
        scored.column("tier"), matrix,
    )
    history.append(bundle.name, rows, key, index)


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
    history: ScoreStore | None = None,
) -> BatchSummary:
    """`leadscore score --engine spark`: Spark reads and scores the file (`score_spark`), writes
    Parquet parts, and the driver streams them, in order, into the same single output file,
    rejects file and summary as the local engine. With `history`, each part's scores (and the
    encoded features the executors computed) are appended to the score store as the local
    engine appends them: same columns, same model=/date= layout. On a cluster, call
    `score_spark` and write with Spark instead (`history_frame`, the README)."""
    from leadscore.config import get_settings
    from leadscore.tracking import load_model, resolve_model_uri

    settings = settings or get_settings()
    model_uri = resolve_model_uri(model_uri, settings)
    bundle = load_model(model_uri, settings)
    keep = list(dict.fromkeys(keep))
    source = open_source(input_path, bundle, keep)
    schema = output_schema(bundle, source.schema, keep, reasons)
    job = Job(output_path, {"engine": "spark"}, schema, bundle.id_column)
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
        features=history is not None,
    )
    parts = job.folder / "spark"
    scored.write.mode("overwrite").parquet(parts.resolve().as_uri())
    files = sorted(parts.glob("part-*.parquet"))
    score_drift = Drift(bundle, 1)
    score_drift.features = []
    key = job_key(str(output_path.resolve()), scored_at)
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
            if history is not None:
                _record(history, bundle, good, scored_at, key, index)
            good = good.select(schema.names).cast(schema)
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
