"""Outcomes joined back: four weekly cohorts of scores, then outcomes arriving. Expected and actual
conversions match a hand computation, pending leads are never lost, an injected AUC drop and a
level shift each raise their alarm, and the CLI exits 3 with one line per alarm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from leadscore.monitor import Thresholds, monitor, read_outcomes
from leadscore.store import ScoreStore, history_rows

WEEKS = ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]
AS_OF = pd.Timestamp("2026-02-20", tz="UTC")  # weeks 1-3 matured at 30 days, week 4 pending
HORIZON = 30
N = 600


@dataclass
class World:
    scores: pd.DataFrame  # lead_id, week, scored_at, probability
    outcomes: pd.DataFrame  # lead_id, converted, converted_at (as written to the file)
    path: Path


def make_world(root: Path, store: ScoreStore, model: str, version: str, width: int,
               seed: int = 0) -> World:
    """Week 1 healthy (plus leads converting after the horizon or before their score), week 2
    outcomes unrelated to the scores (an AUC drop, same level), week 3 a level shift (1.7x the
    conversions), week 4 too young to judge."""
    rng = np.random.default_rng(seed)
    frames, outcomes = [], []
    for w, week in enumerate(WEEKS):
        scored_at = pd.Timestamp(f"{week}T10:00:00", tz="UTC")
        p = rng.beta(0.9, 2.2, N)
        ids = [f"W{w}-{i:04d}" for i in range(N)]
        if w == 1:
            y = np.zeros(N, dtype=bool)
            y[rng.choice(N, int(round(p.sum())), replace=False)] = True
        elif w == 2:
            y = rng.random(N) < np.minimum(p * 1.7, 1.0)
        else:
            y = rng.random(N) < p
        days = rng.uniform(0.5, 25, N)
        if w == 0:
            days[:20] = 45.0  # converted, but after the horizon: not within it
            y[:20] = True
            days[20:30] = -3.0  # converted before the score: no forecast, left out
            y[20:30] = True
        when = [str(scored_at + pd.Timedelta(days=float(d))) if hit else ""
                for d, hit in zip(days, y, strict=True)]
        outcomes.append(pd.DataFrame({"lead_id": ids, "converted": y.astype(int),
                                      "converted_at": when}))
        frame = pd.DataFrame({"lead_id": ids, "week": week, "scored_at": scored_at,
                              "probability": p, "converted": y, "days": days})
        frames.append(frame)
        score = np.rint(p * 100).astype(np.int64)
        tier = np.where(p > 0.5, "A", np.where(p > 0.3, "B", np.where(p > 0.15, "C", "D")))
        rows = history_rows(pa.array(ids, pa.string()), version, scored_at.to_pydatetime(),
                            p, score, tier, np.zeros((N, width)))
        store.append(model, rows, key=f"w{w}")
    path = root / "outcomes.csv"
    pd.concat(outcomes).to_csv(path, index=False)
    return World(pd.concat(frames, ignore_index=True), pd.concat(outcomes), path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, bundle: Any) -> tuple[World, ScoreStore]:
    root = tmp_path_factory.mktemp("monitor")
    store = ScoreStore(root / "scores")
    return make_world(root, store, "test-leads", bundle.version,
                      len(bundle.builder.features_)), store


def by_cohort(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["cohort"]: c for c in report["cohorts"]}


def healthy_bundle(bundle: Any, auc: float) -> Any:
    """The champion with its test AUC set to what a healthy cohort realizes."""
    import copy

    twin = copy.copy(bundle)
    twin.meta = {**bundle.meta, "metrics": {**bundle.meta.get("metrics", {}),
                                            "test_roc_auc": auc}}
    return twin


def test_expected_and_actual_match_a_hand_computation(world: tuple[World, ScoreStore],
                                                      bundle: Any) -> None:
    data, store = world
    report = monitor(store, "test-leads", read_outcomes(data.path), horizon_days=HORIZON,
                     as_of=AS_OF.to_pydatetime(), period="week")
    first = by_cohort(report)["2026-01-05"]
    week = data.scores[data.scores["week"] == "2026-01-05"]
    forecast = week[~(week["converted"] & (week["days"] < 0))]  # scored after converting: out
    hits = forecast["converted"] & (forecast["days"] > 0) & (forecast["days"] <= HORIZON)
    assert first["scored"] == first["matured"] == len(forecast) == N - 10
    assert first["expected"] == pytest.approx(round(forecast["probability"].sum(), 3))
    assert first["actual"] == int(hits.sum())
    assert first["actual"] < int(forecast["converted"].sum()), "late conversions do not count"
    assert first["roc_auc"] == pytest.approx(roc_auc_score(hits, forecast["probability"]),
                                             abs=1e-4)
    assert first["pending"] == 0
    top = forecast["probability"] > 0.5
    assert first["tiers"]["A"]["leads"] == int(top.sum())
    assert first["tiers"]["A"]["conversion_rate"] == pytest.approx(hits[top].mean(), abs=1e-4)


def test_pending_leads_are_not_counted_as_lost(world: tuple[World, ScoreStore]) -> None:
    data, store = world
    report = monitor(store, "test-leads", read_outcomes(data.path), horizon_days=HORIZON,
                     as_of=AS_OF.to_pydatetime())
    last = by_cohort(report)["2026-01-26"]
    assert last["scored"] == last["pending"] == N
    assert last["matured"] == 0 and last["actual"] == 0 and last["expected"] == 0
    assert last["roc_auc"] is None and last["ece"] is None
    assert not any("2026-01-26" in a for a in report["alarms"]), "too young to cry wolf"
    # a month later the same cohort has matured and counts
    later = monitor(store, "test-leads", read_outcomes(data.path), horizon_days=HORIZON,
                    as_of=(AS_OF + pd.Timedelta(days=10)).to_pydatetime())
    assert by_cohort(later)["2026-01-26"]["matured"] == N


def test_auc_drop_and_level_shift_each_raise_their_alarm(world: tuple[World, ScoreStore],
                                                         bundle: Any) -> None:
    data, store = world
    outcomes = read_outcomes(data.path)
    plain = monitor(store, "test-leads", outcomes, horizon_days=HORIZON,
                    as_of=AS_OF.to_pydatetime())
    healthy_auc = by_cohort(plain)["2026-01-05"]["roc_auc"]
    twin = healthy_bundle(bundle, healthy_auc)
    report = monitor(store, "test-leads", outcomes, horizon_days=HORIZON,
                     as_of=AS_OF.to_pydatetime(), bundle_for=lambda version: twin)
    alarms = report["alarms"]
    assert len(alarms) == 2, alarms
    auc, level = alarms
    assert "cohort 2026-01-12" in auc and "realized ROC AUC" in auc
    assert f"below the test AUC {healthy_auc:.3f}" in auc
    assert "cohort 2026-01-19" in level and "conversions expected" in level
    third = by_cohort(report)["2026-01-19"]
    assert third["actual"] > 1.4 * third["expected"]
    # small cohorts do not cry wolf
    quiet = monitor(store, "test-leads", outcomes, horizon_days=HORIZON,
                    as_of=AS_OF.to_pydatetime(), bundle_for=lambda version: twin,
                    thresholds=Thresholds(min_cohort=N + 1))
    assert quiet["alarms"] == []
    assert by_cohort(report)["2026-01-05"]["psi"] is not None


def test_bad_outcomes_file_is_one_line(tmp_path: Path) -> None:
    from leadscore.errors import DataError

    path = tmp_path / "o.csv"
    path.write_text("lead_id,converted,converted_at\na,1,2026-01-01\nb,maybe,\n")
    with pytest.raises(DataError, match=r"o.csv: column 'converted', row 2: expected 1/0"):
        read_outcomes(path)
    path.write_text("lead_id,converted,converted_at\na,1,\n")
    with pytest.raises(DataError, match=r"column 'converted_at', row 1: a converted lead needs"):
        read_outcomes(path)
    path.write_text("lead_id,won\na,1\n")
    with pytest.raises(DataError, match=r"outcomes need the column\(s\) \['converted', "):
        read_outcomes(path)


def test_cli_exits_3_with_one_line_per_alarm(trained: Any, bundle: Any,
                                              tmp_path: Path) -> None:
    """The scheduler's call: JSON on stdout, `alarm: ...` lines on stderr, exit 3; a report
    and an MLflow run in the `monitoring` experiment."""
    home = tmp_path / "home"
    data = make_world(tmp_path, ScoreStore(home / "scores"), "test-leads", bundle.version,
                      len(bundle.builder.features_))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LEADSCORE_HOME": str(home),
           "LEADSCORE_TRACKING_URI": trained.settings.tracking_uri}
    done = subprocess.run(
        [sys.executable, "-m", "leadscore.cli", "monitor", "test-leads", "--outcomes",
         str(data.path), "--horizon-days", str(HORIZON), "--as-of", "2026-02-20"],
        env=env, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and all(line.startswith("alarm: model test-leads version ") for line in lines)
    assert any("cohort 2026-01-12" in line and "ROC AUC" in line for line in lines)
    assert any("cohort 2026-01-19" in line and "conversions expected" in line for line in lines)
    report = json.loads(done.stdout)
    assert report["mlflow_run_id"]
    folder = home / "reports" / "monitoring" / "test-leads"
    assert "## Expected vs actual" in (folder / "monitor.md").read_text()
    for plot in ("calibration_over_time.png", "auc_over_time.png", "tier_conversion.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((folder / "monitor.json").read_text())["alarms"] == report["alarms"]

    from leadscore.tracking import configure

    configure(trained.settings)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(report["mlflow_run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "monitoring"
    assert run.data.tags["model_version"] == bundle.version
    assert run.data.tags["alarms"] == str(len(lines))

    bad = subprocess.run(
        [sys.executable, "-m", "leadscore.cli", "monitor", "test-leads", "--outcomes",
         str(tmp_path / "none.csv"), "--no-track"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'none.csv'}: no such "
                                               "outcomes file"]


# --------------------------------------------------------------------------- the spec's outcomes


def write_history(store: ScoreStore, model: str, version: str, ids: list[str],
                  scored_at: pd.Timestamp, p: np.ndarray, key: str) -> None:
    score = np.rint(p * 100).astype(np.int64)
    tier = np.where(p > 0.5, "A", np.where(p > 0.3, "B", np.where(p > 0.15, "C", "D")))
    store.append(model, history_rows(pa.array(ids, pa.string()), version,
                                     scored_at.to_pydatetime(), p, score, tier,
                                     np.zeros((len(ids), 2))), key=key)


def test_synthetic_spec_conversion_table_is_the_outcome_source(synth_dir: Path,
                                                               tmp_path: Path) -> None:
    """`--config` on a spec with a conversion table (the synthetic CRM's): the same report as
    the outcomes file written from that table, and a hand computation of one cohort."""
    from leadscore.config import load_spec
    from leadscore.monitor import outcomes_of_spec

    spec = load_spec(write_spec_file(tmp_path / "synthetic.yaml", {
        "name": "synthetic",
        "leads": {"path": str(synth_dir / "leads.csv"), "id": "lead_id",
                  "created_at": "created_at"},
        "outcome": {"table": {"path": str(synth_dir / "conversions.csv"), "id": "lead_id",
                              "converted_at": "converted_at"}, "horizon_days": 90},
        "features": {"categorical": ["industry"], "numeric": []},
        "drop": ["converted", "converted_at"], "pii": ["name", "email", "phone"],
    }))
    leads = pd.read_csv(synth_dir / "leads.csv", dtype=str, keep_default_na=False)
    conversions = pd.read_csv(synth_dir / "conversions.csv", dtype=str)
    store = ScoreStore(tmp_path / "scores")
    when = pd.Timestamp("2024-03-04T10:00:00", tz="UTC")  # a Monday
    ids = leads["lead_id"].iloc[:900].tolist()
    p = np.random.default_rng(3).uniform(0.02, 0.9, len(ids))
    write_history(store, "synthetic", "1", ids, when, p, "a")
    as_of = datetime(2024, 9, 1, tzinfo=UTC)
    report = monitor(store, "synthetic", outcomes_of_spec(spec, as_of), horizon_days=90,
                     as_of=as_of)
    # the same outcomes as a file
    path = tmp_path / "outcomes.csv"
    frame = leads[["lead_id"]].merge(conversions, on="lead_id", how="left").fillna("")
    frame.assign(converted=(frame["converted_at"] != "").astype(int)).to_csv(path, index=False)
    assert monitor(store, "synthetic", read_outcomes(path), horizon_days=90,
                   as_of=as_of) == report
    # by hand
    at = dict(zip(conversions["lead_id"], pd.to_datetime(conversions["converted_at"], utc=True),
                  strict=True))
    kept, hits = [], []
    for lead, prob in zip(ids, p, strict=True):
        converted = at.get(lead)
        if converted is not None and converted <= when:
            continue  # converted before its score: no forecast
        kept.append(prob)
        hits.append(converted is not None and converted <= when + pd.Timedelta(days=90))
    (row,) = report["cohorts"]
    assert row["cohort"] == "2024-03-04" and row["scored"] == row["matured"] == len(kept)
    assert row["expected"] == pytest.approx(round(sum(kept), 3))
    assert row["actual"] == sum(hits) > 0
    assert len(kept) < len(ids), "some leads converted before their score"


BANK_SPEC = {
    "name": "bank_like",
    "leads": {"path": "leads.csv", "file_order_is_time": True, "delimiter": ";"},
    "outcome": {"column": "y", "positive": ["yes"], "negative": ["no"], "open": ["pending"]},
    "features": {"categorical": ["job"], "numeric": ["age"]},
}


def bank_like(folder: Path, n: int = 400, seed: int = 5) -> tuple[Path, pd.DataFrame]:
    """A bank-marketing-shaped file: no id column (a lead is its row number), `;`, label `y`,
    a few leads still open."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 4.0, n)
    y = np.where(rng.random(n) < p, "yes", "no").astype(object)
    y[rng.choice(n, 25, replace=False)] = "pending"
    frame = pd.DataFrame({"age": rng.integers(18, 90, n), "job": rng.choice(["admin.", "services",
                          "retired"], n), "y": y, "p": p})
    folder.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["p"]).to_csv(folder / "leads.csv", sep=";", index=False)
    return write_spec_file(folder / "bank.yaml", BANK_SPEC), frame


def write_spec_file(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def bank_history(store: ScoreStore, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The file scored twice: version 1 in January, version 2 (sharper) in February; the
    first 20 leads only by version 1."""
    ids = [str(i) for i in range(1, len(frame) + 1)]
    v1 = frame["p"].to_numpy() * 0.8
    v2 = np.clip(frame["p"].to_numpy() * 1.1, 0, 1)
    write_history(store, "bank_like", "1", ids, pd.Timestamp("2026-01-06T08:00", tz="UTC"), v1,
                  "v1")
    write_history(store, "bank_like", "2", ids[20:], pd.Timestamp("2026-02-03T08:00", tz="UTC"),
                  v2[20:], "v2")
    return {"1": v1, "2": v2}


def test_label_column_outcomes_are_settled(tmp_path: Path) -> None:
    """A bank-like spec: the label column says whether, not when; every scoring of a decided
    lead has matured whatever the horizon, an open one is pending; hand computation."""
    from leadscore.config import load_spec
    from leadscore.monitor import LABEL, outcomes_of_spec

    spec_path, frame = bank_like(tmp_path / "bank")
    store = ScoreStore(tmp_path / "scores")
    probabilities = bank_history(store, frame)
    as_of = datetime(2026, 2, 10, tzinfo=UTC)  # a week after the second scoring
    outcomes = outcomes_of_spec(load_spec(spec_path), as_of)
    assert outcomes["lead_id"].tolist()[:3] == ["1", "2", "3"]
    assert (outcomes[LABEL].isna() == (frame["y"] == "pending")).all()
    converted = outcomes.loc[outcomes[LABEL] == 1, "converted_at"]
    assert (converted == pd.Timestamp(as_of)).all()  # no date column: the as-of time
    report = monitor(store, "bank_like", outcomes, horizon_days=90, as_of=as_of,
                     period="month")
    rows = {c["model_version"]: c for c in report["cohorts"]}
    decided = (frame["y"] != "pending").to_numpy()
    yes = (frame["y"] == "yes").to_numpy()
    for version, start in (("1", 0), ("2", 20)):
        row, mask = rows[version], decided.copy()
        mask[:start] = False
        assert row["scored"] == len(frame) - start
        assert row["matured"] == int(mask.sum())
        assert row["pending"] == int((~decided[start:]).sum())
        assert row["expected"] == pytest.approx(round(probabilities[version][mask].sum(), 3))
        assert row["actual"] == int((yes & mask).sum())
        assert row["roc_auc"] == pytest.approx(
            roc_auc_score(yes[mask], probabilities[version][mask]), abs=1e-4)
    assert rows["1"]["cohort"] == "2026-01" and rows["2"]["cohort"] == "2026-02"


def test_cli_monitor_config_writes_html_report(trained: Any, tmp_path: Path) -> None:
    """`leadscore monitor NAME --config SPEC --report DIR`: the JSON of the settled rule, exit
    3 on the level shift, and report.html with the three plots inline, the cohort numbers and
    nothing fetched from the web."""
    spec_path, frame = bank_like(tmp_path / "bank")
    home = tmp_path / "home"
    bank_history(ScoreStore(home / "scores"), frame)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LEADSCORE_HOME": str(home),
           "LEADSCORE_TRACKING_URI": trained.settings.tracking_uri}
    folder = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "leadscore.cli", "monitor", "bank_like", "--config",
         str(spec_path), "--cohort", "month", "--as-of", "2026-02-10", "--report", str(folder),
         "--no-track", "--min-cohort", "50"], env=env, capture_output=True, text=True)
    report = json.loads(done.stdout)
    yes = int((frame["y"] == "yes").sum())
    first = next(c for c in report["cohorts"] if c["model_version"] == "1")
    assert first["actual"] == yes and first["pending"] == 25
    # version 1 under-forecasts (0.8 x the truth): a calibration alarm, exit 3
    assert done.returncode == 3, done.stderr
    assert any("version 1, cohort 2026-01" in a and "conversions expected" in a
               for a in report["alarms"])
    assert "label column" in report["outcome_source"]
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.count("src='data:image/png;base64,iVBORw0KGgo") == 3
    for text in ("Expected vs actual conversions over time", "Realized ROC AUC over time",
                 "Conversion rate per tier"):
        assert text in page
    assert f"<td class='n'>{first['expected']:.1f}</td>" in page
    assert f"<td class='n'>{first['matured']}</td>" in page
    assert "http://" not in page and "https://" not in page
    assert "class='alarm'" in page
    for name in ("monitor.json", "monitor.md", "calibration_over_time.png"):
        assert (folder / name).is_file()
    neither = subprocess.run(
        [sys.executable, "-m", "leadscore.cli", "monitor", "bank_like", "--no-track"],
        env=env, capture_output=True, text=True)
    assert neither.returncode == 2
    assert neither.stderr.strip().splitlines() == [
        "error: give the outcomes as --outcomes FILE or --config SPEC.yaml (the spec's own "
        "outcome source), one of the two"]


def test_html_report_escapes_every_value() -> None:
    from leadscore.monitor_report import render

    hostile = "<script>alert('x')</script>"
    report = {"model": hostile, "as_of": "2026-02-10T00:00:00+00:00", "period": "week",
              "horizon_days": 30, "rule": "a & b", "alarms": [hostile],
              "cohorts": [{"cohort": "2026-01-05", "model_version": hostile, "scored": 10,
                           "matured": 8, "pending": 2, "expected": 3.25, "actual": 4,
                           "gap": -0.1875, "roc_auc": 0.71, "test_roc_auc": None,
                           "pr_auc": 0.5, "ece": 0.04,
                           "tiers": {t: {"leads": 2, "conversion_rate": 0.5}
                                     for t in "ABCD"},
                           "psi": {hostile: 0.3}}]}
    page = render(report, {"calibration": b"\x89PNG"})
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "a &amp; b" in page and "<td class='n'>3.2</td>" in page
