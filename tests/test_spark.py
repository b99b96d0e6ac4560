"""Spark scores a lead exactly as the local path does (PySpark on local[2]; `leadscore[spark]`)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java (make test installs it)", allow_module_level=True)

from test_batch import make_leads, tiny, write_csv  # noqa: E402, F401

from leadscore.batch import rescore, rescore_spark, score_spark  # noqa: E402
from leadscore.scoring import load_bundle  # noqa: E402

SCORED_AT = "2026-01-01T00:00:00+00:00"


@pytest.mark.slow
def test_score_spark_equals_local(spark, trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The registered model through `models:/…@champion`, on a DataFrame of two partitions."""
    from leadscore.tracking import load_model

    leads_csv = trained.spec.resolve(trained.spec.leads.path)
    bundle = load_model(trained.uri, trained.settings)
    local = tmp_path / "local.parquet"
    rescore(bundle, leads_csv, local, reasons=2, keep=["country"], scored_at=SCORED_AT)
    frame = spark.read.option("header", True).option("multiLine", True) \
        .option("escape", '"').csv(str(leads_csv)).repartition(2)
    scored = score_spark(frame, trained.uri, reasons=2, keep=["country"],
                         settings=trained.settings, scored_at=SCORED_AT)
    got = scored.toPandas().set_index("lead_id").sort_index()
    want = pq.read_table(local).to_pandas().set_index("lead_id").sort_index()
    assert len(got) == len(want) == 4000 and got.index.equals(want.index)
    assert got["reject_reason"].isna().all()
    np.testing.assert_allclose(got["probability"], want["probability"], rtol=0, atol=1e-9)
    for column in ("score", "tier", "percentile", "reasons", "country", "model_version"):
        assert (got[column].astype(str) == want[column].astype(str)).all(), column


@pytest.mark.slow
def test_engine_spark_writes_the_same_file(spark, tiny: Path,  # noqa: F811
                                           tmp_path: Path) -> None:
    """`--engine spark` on a `;` CSV with quoted newlines and a bad cell: same output, same
    rejects, same row numbers as the local engine."""
    leads = make_leads(3000, seed=21)
    leads.loc[1234, "visits"] = "lots"
    src = write_csv(leads, tmp_path / "leads.csv", delimiter=";")
    local, remote = tmp_path / "local.csv", tmp_path / "spark.csv"
    rescore(load_bundle(tiny), src, local, keep=["note"], scored_at=SCORED_AT)
    summary = rescore_spark(str(tiny), src, remote, keep=["note"], spark=spark,
                            scored_at=SCORED_AT).as_dict()
    assert (summary["rows"], summary["scored"], summary["rejected"]) == (3000, 2999, 1)
    assert summary["absent_fields"] == []
    want = pd.read_csv(local, keep_default_na=False)
    got = pd.read_csv(remote, keep_default_na=False)
    assert got["lead_id"].tolist() == want["lead_id"].tolist()
    assert got["note"].tolist() == want["note"].tolist()
    np.testing.assert_allclose(got["probability"], want["probability"], rtol=0, atol=1e-9)
    assert (tmp_path / "spark.csv.rejects.csv").read_text() == \
        (tmp_path / "local.csv.rejects.csv").read_text()


@pytest.mark.slow
def test_engine_spark_keeps_file_order_of_a_parquet_folder(spark, tiny: Path,  # noqa: F811
                                                           tmp_path: Path) -> None:
    """Spark orders a folder's splits by size; the output keeps the files' order and row
    numbers all the same."""
    folder = tmp_path / "in"
    folder.mkdir()
    leads = make_leads(2500, seed=22)
    leads.loc[2100, "budget"] = "much"
    for i, (start, stop) in enumerate(((0, 300), (300, 2000), (2000, 2500))):
        leads.iloc[start:stop].to_parquet(folder / f"part-{i}.parquet", index=False)
    local, remote = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    rescore(load_bundle(tiny), folder, local, scored_at=SCORED_AT)
    summary = rescore_spark(str(tiny), folder, remote, spark=spark, scored_at=SCORED_AT).as_dict()
    assert (summary["rows"], summary["rejected"]) == (2500, 1)
    want, got = pq.read_table(local).to_pandas(), pq.read_table(remote).to_pandas()
    assert got["lead_id"].tolist() == want["lead_id"].tolist()
    np.testing.assert_allclose(got["probability"], want["probability"], rtol=0, atol=1e-9)
    assert pd.read_csv(tmp_path / "spark.parquet.rejects.csv")["row"].tolist() == [2101]


@pytest.mark.slow
def test_engine_spark_records_the_same_history(spark, tiny: Path,  # noqa: F811
                                               tmp_path: Path) -> None:
    """`rescore_spark(history=...)` appends what the local engine appends: same columns, same
    model=/date= layout, same probabilities and encoded features (the bad row not at all)."""
    from leadscore.store import ScoreStore

    leads = make_leads(1500, seed=23)
    leads.loc[700, "visits"] = "lots"
    src = write_csv(leads, tmp_path / "leads.csv")
    local, remote = ScoreStore(tmp_path / "local"), ScoreStore(tmp_path / "spark")
    rescore(load_bundle(tiny), src, tmp_path / "local.parquet", scored_at=SCORED_AT,
            history=local, chunk_rows=400)
    rescore_spark(str(tiny), src, tmp_path / "spark.parquet", spark=spark,
                  scored_at=SCORED_AT, history=remote)
    folders = [sorted(p.relative_to(s.root).as_posix() for p in s.root.glob("*/*"))
               for s in (local, remote)]
    assert folders[0] == folders[1] == ["model=tiny/date=2026-01-01"]
    want = local.rows("tiny").sort_by("lead_id")
    got = remote.rows("tiny").sort_by("lead_id")
    assert got.schema == want.schema and got.num_rows == want.num_rows == 1499
    assert "L000700" not in got.column("lead_id").to_pylist()
    for column in ("lead_id", "model_version", "scored_at", "score", "tier"):
        assert got.column(column).equals(want.column(column)), column
    np.testing.assert_allclose(got.column("probability").to_numpy(),
                               want.column("probability").to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.array(got.column("features").to_pylist(), dtype=float),
                                  np.array(want.column("features").to_pylist(), dtype=float))
    files = {pq.read_schema(p).names == pq.read_schema(local.files("tiny")[0]).names
             for p in remote.files("tiny")}
    assert files == {True}, "the same columns in the same order"

    # on a cluster, Spark writes the store itself: the same rows read back
    from leadscore.batch import history_frame

    frame = spark.read.option("header", True).option("multiLine", True) \
        .option("escape", '"').csv(str(src)).repartition(2)
    scored = score_spark(frame, str(tiny), scored_at=SCORED_AT, features=True)
    cluster = ScoreStore(tmp_path / "cluster")
    history_frame(scored, "tiny").write.partitionBy("model", "date").mode("append") \
        .parquet(cluster.root.resolve().as_uri())
    assert [p.relative_to(cluster.root).as_posix() for p in cluster.root.glob("*/*")] == \
        ["model=tiny/date=2026-01-01"]
    written = cluster.rows("tiny").sort_by("lead_id")
    assert written.schema == want.schema and written.num_rows == 1499
    for column in ("lead_id", "model_version", "scored_at", "score", "tier"):
        assert written.column(column).equals(want.column(column)), column
    np.testing.assert_array_equal(
        np.array(written.column("features").to_pylist(), dtype=float),
        np.array(want.column("features").to_pylist(), dtype=float))
    assert cluster.lead("tiny", "L000042").num_rows == 1
    # and Spark reads the store as it is, hive partitions as columns
    back = spark.read.parquet(cluster.root.resolve().as_uri())
    assert {"model", "date", "lead_id", "f_000"} <= set(back.columns)
    assert back.where("model = 'tiny'").count() == 1499


@pytest.mark.slow
def test_cli_engine_spark_then_history(tiny: Path, tmp_path: Path) -> None:  # noqa: F811
    """`leadscore score --engine spark` (local[2]) then `leadscore history LEAD`: the lead's
    Spark-written scoring comes back; --no-history writes none."""
    import json
    import subprocess

    leads = make_leads(300, seed=24)
    src = write_csv(leads, tmp_path / "leads.csv")
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LEADSCORE_HOME": str(home),
           "LEADSCORE_SPARK_MASTER": "local[2]", "PYSPARK_PYTHON": sys.executable}
    cli = [sys.executable, "-m", "leadscore.cli"]
    done = subprocess.run([*cli, "score", "--engine", "spark", "-i", str(src), "-o",
                           str(tmp_path / "out.parquet"), "--model", str(tiny), "--json"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = subprocess.run([*cli, "history", "L000042", "--json"], env=env,
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas().set_index("lead_id")
    (scoring,) = result["scorings"]
    assert result["model"] == "tiny" and scoring["model_version"] == "1"
    assert scoring["probability"] == pytest.approx(out.loc["L000042", "probability"], abs=1e-12)
    assert scoring["score"] == out.loc["L000042", "score"]
    assert scoring["tier"] == out.loc["L000042", "tier"]
    quiet_home = tmp_path / "quiet"
    done = subprocess.run([*cli, "score", "--engine", "spark", "-i", str(src), "-o",
                           str(tmp_path / "quiet.parquet"), "--model", str(tiny),
                           "--no-history"], env={**env, "LEADSCORE_HOME": str(quiet_home)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (quiet_home / "scores").exists()
