"""The score history: synthetic leads scored on three dates by two model versions; one lead's
scorings, trend and why its score changed (impacts adding up to the change), resume without
double rows, compaction, and the CLI's `history` / `--no-history`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_batch import make_leads, write_csv  # noqa: F401

from leadscore.batch import rescore
from leadscore.errors import DataError
from leadscore.evaluate import feature_profile
from leadscore.features import FeatureBuilder
from leadscore.history import TREND_RULE, lead_history, trend_of
from leadscore.scoring import ModelBundle, load_bundle, score
from leadscore.store import ScoreStore
from leadscore.train import Calibrator, percentile_grid, tier_cutoffs

DATES = ["2026-01-05T09:00:00+00:00", "2026-01-12T09:00:00+00:00", "2026-01-19T09:00:00+00:00"]
LEAD = "L000004"


def make_version(folder: Path, version: str, seed: int, rounds: int) -> ModelBundle:
    """A small model named `hist` (numeric and categorical inputs, an email-derived field)."""
    leads = make_leads(3000, seed=seed)
    builder = FeatureBuilder(
        categorical=["channel"], numeric=["visits", "budget"], derive={"email": "email"}
    ).fit(leads)
    x = builder.transform(leads)
    logit = (-1.5 + 0.08 * np.nan_to_num(x[:, 1]) + 0.9 * (leads["channel"] == "referral")
             + 0.01 * np.nan_to_num(x[:, 2]))
    y = (np.random.default_rng(seed + 1).random(len(leads)) < 1 / (1 + np.exp(-logit))).astype(
        int
    )
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "deterministic": True,
              "num_threads": 1, "min_data_in_leaf": 20, "seed": seed}
    data = lgb.Dataset(x, y, categorical_feature=builder.categorical_indices_)
    booster = lgb.train(params, data, num_boost_round=rounds)
    margin = booster.predict(x, raw_score=True)
    calibrator = Calibrator("platt").fit(margin, y)
    p = calibrator.transform(margin)
    meta = {"name": "hist", "version": version, "id_column": "lead_id",
            "tiers": tier_cutoffs(p), "percentiles": percentile_grid(p),
            "profile": feature_profile(builder.features_, x, p)}
    ModelBundle(booster, builder, calibrator, meta).save(folder)
    return load_bundle(folder)


@dataclass
class Scored:
    store: ScoreStore
    versions: dict[str, ModelBundle]
    frames: list[pd.DataFrame]  # the leads as scored on each date
    outputs: list[Path]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Scored:
    """200 leads scored on three dates: v1, v1 (the lead's data changed), v2 (the model and one
    field changed)."""
    root = tmp_path_factory.mktemp("history")
    versions = {"1": make_version(root / "v1", "1", 1, 25),
                "2": make_version(root / "v2", "2", 11, 40)}
    first = make_leads(200, seed=5)
    first.loc[first["lead_id"] == LEAD, ["channel", "visits", "budget"]] = ["web", "2", "10"]
    second = first.copy()
    second.loc[second["lead_id"] == LEAD, ["channel", "visits"]] = ["referral", "25"]
    third = second.copy()
    third.loc[third["lead_id"] == LEAD, "budget"] = "120"
    store = ScoreStore(root / "scores")
    outputs = []
    for i, (frame, version) in enumerate(zip([first, second, third], ["1", "1", "2"],
                                             strict=True)):
        src = write_csv(frame, root / f"leads{i}.csv")
        out = root / f"out{i}.parquet"
        rescore(versions[version], src, out, scored_at=DATES[i], history=store, chunk_rows=64)
        outputs.append(out)
    return Scored(store, versions, [first, second, third], outputs)


def test_three_scorings_with_trend_and_why_it_changed(scored: Scored) -> None:
    result = lead_history(scored.store, None, LEAD, scored.versions.__getitem__)
    scorings = result["scorings"]
    assert [s["scored_at"] for s in scorings] == DATES
    assert [s["model_version"] for s in scorings] == ["1", "1", "2"]
    # the history holds what the output files said
    for s, out in zip(scorings, scored.outputs, strict=True):
        row = pq.read_table(out).to_pandas().set_index("lead_id").loc[LEAD]
        assert (s["probability"], s["score"], s["tier"]) == (
            row["probability"], row["score"], row["tier"])
    scores = [s["score"] for s in scorings]
    assert scores[1] - scores[0] >= 5, "channel=referral and more visits raise it"
    move = scores[2] - scores[0]
    expected = "rising" if move >= 5 else "falling" if move <= -5 else "steady"
    assert result["trend"] == expected and result["trend_rule"] == TREND_RULE

    why = result["why_changed"]
    assert why["available"] and why["score_change"] == scores[2] - scores[1]
    parts = [d["change"] for d in why["data"]] + [m["change"] for m in why["model"]]
    total = round(sum(parts) + why["baseline_change"] + why["rounding"], 2)
    assert total == why["score_change"], "the parts add up exactly to the score change"
    # only the budget changed in the lead's data; the rest moved with the new version
    assert [d["field"] for d in why["data"]] == ["budget"]
    assert {m["field"] for m in why["model"]} <= {"channel", "visits", "email"}
    assert why["model"], "a new version moves the fields that stayed"


def test_same_version_change_is_all_data_and_matches_reasons(scored: Scored) -> None:
    """Between the first two scorings (one version), every part is the lead's data, and each
    field's change is the difference of the impacts `--reasons` reports at scoring time."""
    from leadscore.history import why_changed

    rows = scored.store.lead("hist", LEAD).to_pylist()
    for row in rows:
        row["scored_at"] = row["scored_at"].isoformat()
    why = why_changed(rows[0], rows[1], scored.versions.__getitem__)
    assert why["model"] == [] and why["baseline_change"] == 0
    reasons = [
        {r["feature"]: r["impact"] for r in score(scored.versions["1"], frame[
            frame["lead_id"] == LEAD], reasons=10)["reasons"].iloc[0]}
        for frame in scored.frames[:2]
    ]
    for item in why["data"]:
        f = item["field"]
        assert item["change"] == pytest.approx(
            reasons[1].get(f, 0.0) - reasons[0].get(f, 0.0), abs=0.03)
    total = sum(d["change"] for d in why["data"]) + why["rounding"]
    assert round(total, 2) == why["score_change"]


def test_trend_rule() -> None:
    assert trend_of([40]) == "unknown"
    assert trend_of([40, 44]) == "steady"
    assert trend_of([40, 45]) == "rising"
    assert trend_of([60, 10, 50, 56]) == "rising", "compares with two scorings back (10 -> 56)"
    assert trend_of([60, 58, 54]) == "falling"


def test_store_layout_and_unknown_lead(scored: Scored) -> None:
    days = sorted(p.name for p in (scored.store.root / "model=hist").iterdir())
    assert days == ["date=2026-01-05", "date=2026-01-12", "date=2026-01-19"]
    assert len(list((scored.store.root / "model=hist" / "date=2026-01-05").glob("*.parquet"))) == 4
    rows = scored.store.rows("hist")
    assert rows.num_rows == 600
    assert set(rows.schema.names) >= {"lead_id", "model_version", "scored_at", "probability",
                                      "score", "tier", "features"}
    with pytest.raises(DataError, match="lead 'nobody' has no scores in the history of model"):
        lead_history(scored.store, "hist", "nobody")
    with pytest.raises(DataError, match="no score history for model 'other'"):
        lead_history(scored.store, "other", LEAD)


def test_resume_rewrites_rather_than_duplicates(scored: Scored, tmp_path: Path) -> None:
    store = ScoreStore(tmp_path / "scores")
    bundle = scored.versions["1"]
    src = write_csv(scored.frames[0], tmp_path / "leads.csv")
    out = tmp_path / "out.parquet"

    def stop_after_two(index: int) -> None:
        if index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rescore(bundle, src, out, scored_at=DATES[0], history=store, chunk_rows=50,
                after_chunk=stop_after_two)
    rescore(bundle, src, out, scored_at=DATES[0], history=store, chunk_rows=50, resume=True)
    rows = store.rows("hist")
    assert rows.num_rows == 200 and len(set(rows.column("lead_id").to_pylist())) == 200


def test_compact_keeps_every_row(scored: Scored, tmp_path: Path) -> None:
    import shutil

    store = ScoreStore(tmp_path / "scores")
    shutil.copytree(scored.store.root, store.root)
    before = store.rows("hist").sort_by([("scored_at", "ascending"), ("lead_id", "ascending")])
    report = store.compact()
    assert report["files_before"] == 12 and report["files_after"] == 3
    after = store.rows("hist").sort_by([("scored_at", "ascending"), ("lead_id", "ascending")])
    assert after.drop_columns(["features"]).equals(before.drop_columns(["features"]))
    np.testing.assert_array_equal(  # NaN (a blank budget) equal to NaN
        np.array(after.column("features").to_pylist(), dtype=float),
        np.array(before.column("features").to_pylist(), dtype=float))
    assert store.compact()["files_after"] == 3, "compacting again changes nothing"


def test_cli_history_and_no_history(scored: Scored, tmp_path: Path) -> None:
    """`leadscore score --no-history` writes no history; `leadscore history` reads one (a
    bundle folder's version is not in the registry: the change is not explained, it says so)."""
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LEADSCORE_HOME": str(home)}
    src = write_csv(scored.frames[0], tmp_path / "leads.csv")
    bundle_dir = tmp_path / "bundle"
    scored.versions["1"].save(bundle_dir)
    cli = [sys.executable, "-m", "leadscore.cli"]
    done = subprocess.run([*cli, "score", "-i", str(src), "-o", str(tmp_path / "a.parquet"),
                           "--model", str(bundle_dir), "--no-history"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (home / "scores").exists()
    for out in ("b.parquet", "c.parquet"):
        done = subprocess.run([*cli, "score", "-i", str(src), "-o", str(tmp_path / out),
                               "--model", str(bundle_dir)], env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
    shown = subprocess.run([*cli, "history", LEAD, "--json"], env=env, capture_output=True,
                           text=True)
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    assert result["model"] == "hist" and len(result["scorings"]) == 2
    assert result["trend"] == "steady"
    assert result["why_changed"]["available"] is False
    assert "models:/hist/1: not found in the registry" in result["why_changed"]["reason"]
    missing = subprocess.run([*cli, "history", "nobody"], env=env, capture_output=True,
                             text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "error: lead 'nobody' has no scores in the history of model 'hist'"]
    compacted = subprocess.run([*cli, "history", "compact"], env=env, capture_output=True,
                               text=True)
    assert compacted.returncode == 0 and json.loads(compacted.stdout)["files_after"] == 1


def test_lookup_by_row_group_statistics_finds_every_lead(scored: Scored, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Compacted into row groups of 16 rows, a lead's lookup (row groups chosen by their lead-id
    bounds, a binary search in a sorted file) finds exactly what a full scan finds; `history`
    reads the features of the last two scorings only."""
    import shutil

    from leadscore import store as store_module

    monkeypatch.setattr(store_module, "COMPACT_ROW_GROUP", 16)
    store = ScoreStore(tmp_path / "scores")
    shutil.copytree(scored.store.root, store.root)
    store.compact()
    assert pq.read_metadata(store.files("hist")[0]).num_row_groups == 13
    everything = store.rows("hist").to_pandas()
    for lead_id in [*everything["lead_id"].unique()[::7], LEAD]:
        found = store.lead("hist", lead_id).to_pandas()
        expected = everything[everything["lead_id"] == lead_id].reset_index(drop=True)
        assert found[["scored_at", "probability"]].equals(expected[["scored_at", "probability"]])
    last_two = store.lead("hist", LEAD, with_features=2).column("features").to_pylist()
    full = store.lead("hist", LEAD).column("features").to_pylist()
    assert last_two[0] == [] and last_two[1:] == full[1:]


def test_sql_over_the_scores_view(scored: Scored) -> None:
    """`ScoreStore.sql`: DuckDB over one model's Parquet, hive partitions as `model` and `date`
    columns; the counts and sums are the ones pyarrow reads; a bad query is one plain line."""
    table = scored.store.sql(
        "SELECT date, model_version, count(*) AS n, sum(probability) AS p, model FROM scores "
        "GROUP BY ALL ORDER BY date")
    rows = table.to_pylist()
    assert [(str(r["date"]), r["model_version"], r["n"], r["model"]) for r in rows] == [
        ("2026-01-05", "1", 200, "hist"), ("2026-01-12", "1", 200, "hist"),
        ("2026-01-19", "2", 200, "hist")]
    every = scored.store.rows("hist").to_pandas()
    every["day"] = every["scored_at"].dt.strftime("%Y-%m-%d")
    sums = every.groupby("day")["probability"].sum().tolist()
    assert [r["p"] for r in rows] == pytest.approx(sums, rel=1e-12)
    latest = scored.store.sql(
        f"SELECT score FROM scores WHERE lead_id = '{LEAD}' ORDER BY scored_at DESC LIMIT 1")
    assert latest.column("score").to_pylist() == [scored.store.lead("hist", LEAD)
                                                  .column("score")[-1].as_py()]
    with pytest.raises(DataError, match=r'^history sql: Binder Error: .*"nope"'):
        scored.store.sql("SELECT nope FROM scores")
    with pytest.raises(DataError, match="history sql: give a query"):
        scored.store.sql("  ")
    with pytest.raises(DataError, match="no score history for model 'other'"):
        scored.store.sql("SELECT 1", model="other")


def test_cli_history_sql(scored: Scored, tmp_path: Path) -> None:
    """`leadscore history sql "..."`: a table for people, --json and --csv for programs; a
    value that looks like Rich markup is printed as it is."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(scored.store.root, home / "scores")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LEADSCORE_HOME": str(home),
           "COLUMNS": "200"}
    cli = [sys.executable, "-m", "leadscore.cli", "history", "sql"]
    query = ("SELECT tier, count(*) AS n, '[bold]x' AS t FROM scores WHERE date = "
             "'2026-01-19' GROUP BY tier ORDER BY tier")
    want = scored.store.rows("hist").to_pandas()
    want = want[want["model_version"] == "2"]["tier"].value_counts().sort_index()
    shown = subprocess.run([*cli, query], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "[bold]x" in shown.stdout and "tier" in shown.stdout
    as_json = subprocess.run([*cli, query, "--json"], env=env, capture_output=True, text=True)
    assert {r["tier"]: r["n"] for r in json.loads(as_json.stdout)} == want.to_dict()
    as_csv = subprocess.run([*cli, query, "--csv"], env=env, capture_output=True, text=True)
    frame = pd.read_csv(io.StringIO(as_csv.stdout))
    assert frame.set_index("tier")["n"].to_dict() == want.to_dict()
    bad = subprocess.run([*cli, "SELECT nope FROM scores"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: history sql: Binder Error")
