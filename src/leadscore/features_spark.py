"""The Spark activity aggregation: `features_duckdb`'s SQL run by Spark SQL over the same files,
for activity logs past one machine. `build_table(engine="spark")` uses it; `main` is the
`spark-submit` entry point that writes the table to score (or the training table) as Parquet.

The activity log, the big table, is read and aggregated by the executors; the lead table, its
labels and dimension joins stay on the driver (one row per lead), as in the other engines.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadscore.config import DatasetSpec
from leadscore.features_duckdb import (
    SPARK,
    Aggregates,
    Source,
    collect,
    describe_source,
    kinds_for,
    lead_sql,
    lead_table,
    raw_types_sql,
)

log = logging.getLogger(__name__)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@contextmanager
def utc_session(spark: Any | None = None) -> Iterator[Any]:
    """The active SparkSession (else a new local one), its SQL time zone set to UTC while the
    aggregation runs: naive timestamps are UTC, as in the local engine."""
    from pyspark.sql import SparkSession

    session = spark or SparkSession.getActiveSession()
    if session is None:
        session = SparkSession.builder.appName("leadscore-features").getOrCreate()
    before = str(session.conf.get("spark.sql.session.timeZone") or "UTC")
    session.conf.set("spark.sql.session.timeZone", "UTC")
    try:
        yield session
    finally:
        session.conf.set("spark.sql.session.timeZone", before)


def _register_source(spark: Any, source: Source) -> None:
    """`src`: the log's columns and each row's position in the files (the tie-breaker for first
    and last touch). A CSV is read whole in one partition (quoted newlines allowed), so
    `monotonically_increasing_id` follows the file; Parquet rows carry their file and row."""
    from pyspark.sql import functions as F  # noqa: N812

    names = list(source.columns.values())
    if source.csv:
        encoding = source.encoding.lower()
        encoding = {"utf-8-sig": "UTF-8", "latin-1": "ISO-8859-1"}.get(encoding, encoding)
        frame = (
            spark.read.option("header", True).option("multiLine", True)
            .option("escape", '"').option("sep", source.delimiter)
            .option("encoding", encoding)
            .csv(str(source.file))
        )
        frame = frame.toDF(*[c.strip().lstrip("\ufeff") for c in frame.columns])
        frame = frame.select(*[F.col(_quote(c)) for c in names]).withColumn(
            "_row", F.monotonically_increasing_id()
        ).withColumn("_file", F.lit(""))
    else:
        frame = spark.read.parquet(*source.files).select(
            *[F.col(_quote(c)) for c in names],
            F.col("_metadata.file_path").alias("_file"),
            F.col("_metadata.row_index").alias("_row"),
        )
    source.order = ("_file", "_row")
    frame.createOrReplaceTempView("src")


def aggregate_activities_spark(
    spec: DatasetSpec,
    lead_ids: Sequence[str],
    as_of: np.ndarray,
    types: Sequence[str] | None = None,
    spark: Any | None = None,
) -> Aggregates:
    """`table.aggregate_activities`, in Spark SQL over the spec's activity files."""
    act = spec.activities
    assert act is not None
    source = describe_source(spec)
    with utc_session(spark) as session:
        _register_source(session, source)
        raw = [row[0] for row in session.sql(raw_types_sql(source, _quote, SPARK)).collect()]
        kinds, names = kinds_for(raw, act, source.csv, types)
        session.createDataFrame(kinds).createOrReplaceTempView("kinds")
        session.createDataFrame(lead_table(lead_ids, as_of)).createOrReplaceTempView("leads")
        result = session.sql(lead_sql(SPARK, source, act, _quote, len(names))).toArrow()
    return collect(result, len(lead_ids), act, source, names, types)


def latest_activity_spark(spec: DatasetSpec, spark: Any | None = None) -> pd.Timestamp | None:
    """The log's latest timestamp, read by Spark."""
    source = describe_source(spec)
    with utc_session(spark) as session:
        _register_source(session, source)
        ts = SPARK.ts_ns(_quote(source.columns["ts"]), source.ts_is_text)
        row = session.sql(f"SELECT max({ts}) FROM src").collect()[0][0]  # noqa: S608
    return pd.Timestamp(int(row), unit="ns") if row is not None else None


def main(argv: Sequence[str] | None = None) -> None:
    """`spark-submit …/features_spark.py --config spec.yaml --output table.parquet`: the table
    of leads to score (or, with --training, the training table), activity log aggregated by
    Spark."""
    from leadscore.errors import LeadscoreError
    from leadscore.table import build_table, export_table

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--training", action="store_true")
    parser.add_argument("--as-of", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from leadscore.config import load_spec

    try:
        spec = load_spec(args.config)
        when: Any = None if args.training else (pd.Timestamp(args.as_of) if args.as_of
                                                 else "cutoff")
        table, report = build_table(spec, scoring_time=when, engine="spark")
        path = export_table(table, spec, args.output, with_label=args.training)
    except LeadscoreError as exc:
        raise SystemExit(str(exc)) from None
    log.info("%d leads -> %s (%s)", len(table), path, report.as_dict().get("activities_skipped"))


if __name__ == "__main__":
    main()
