"""Batch rescoring: every row in exactly once, bad rows set aside, resumable, chunk-size blind."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bundle_helpers import save_small_bundle
from typer.testing import CliRunner

from leadscore.batch import check_chunk, iter_chunks, open_source, rescore
from leadscore.errors import DataError
from leadscore.features import FeatureBuilder
from leadscore.scoring import ModelBundle, load_bundle, score

CHANNELS = ["web", "event", "referral", "email"]
SCORED_AT = "2026-01-01T00:00:00+00:00"


def make_leads(n: int, seed: int = 0, prefix: str = "L") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "lead_id": [f"{prefix}{i:06d}" for i in range(n)],
            "channel": rng.choice(CHANNELS, n),
            "visits": rng.integers(0, 30, n).astype(str),
            "budget": np.round(rng.gamma(2.0, 20.0, n), 2).astype(str),
            "email": [f"person{i}@{'gmail.com' if i % 3 else 'acme.io'}" for i in range(n)],
            "note": [f"call back; ask \"{i}\"\nthen email" if i % 5 == 0 else f"n{i}"
                     for i in range(n)],
        }
    )
    frame.loc[::11, "budget"] = ""
    return frame


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model with numeric inputs (the registered test model has none), in a second."""
    leads = make_leads(3000, seed=1)
    builder = FeatureBuilder(
        categorical=["channel"], numeric=["visits", "budget"], derive={"email": "email"}
    ).fit(leads)
    x = builder.transform(leads)
    logit = -1.5 + 0.08 * np.nan_to_num(x[:, 1]) + 0.9 * (leads["channel"] == "referral")
    y = (np.random.default_rng(2).random(len(leads)) < 1 / (1 + np.exp(-logit))).astype(int)
    return save_small_bundle(builder, x, y, "tiny", tmp_path_factory.mktemp("tiny") / "bundle",
                             num_leaves=7, min_data_in_leaf=20, rounds=25, profile=True)


@pytest.fixture(scope="module")
def tiny_bundle(tiny: Path) -> ModelBundle:
    return load_bundle(tiny)


def write_csv(frame: pd.DataFrame, path: Path, delimiter: str = ",") -> Path:
    frame.to_csv(path, index=False, sep=delimiter, quoting=csv.QUOTE_MINIMAL)
    return path


def run(bundle: ModelBundle, src: Path, out: Path, **kwargs: object) -> dict:
    kwargs.setdefault("scored_at", SCORED_AT)
    return rescore(bundle, src, out, **kwargs).as_dict()  # type: ignore[arg-type]


def test_every_lead_once_across_chunk_boundaries(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    leads = make_leads(1000, seed=3)
    src = write_csv(leads, tmp_path / "leads.csv")
    summary = run(tiny_bundle, src, tmp_path / "out.parquet", chunk_rows=7)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert out["lead_id"].tolist() == leads["lead_id"].tolist()
    assert out["lead_id"].is_unique
    assert summary["rows"] == summary["scored"] == 1000 and summary["chunks"] == 143
    assert not (tmp_path / "out.parquet.parts").exists(), "parts are removed once committed"
    expected = score(tiny_bundle, leads)
    np.testing.assert_allclose(out["probability"], expected["probability"], rtol=0, atol=1e-12)


def test_csv_with_semicolons_and_quoted_newlines(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    leads = make_leads(300, seed=4)
    src = write_csv(leads, tmp_path / "leads.csv", delimiter=";")
    assert "\n" in leads["note"].iloc[0] and ";" in leads["note"].iloc[0]
    run(tiny_bundle, src, tmp_path / "out.csv", keep=["note"], chunk_rows=50)
    out = pd.read_csv(tmp_path / "out.csv", dtype={"note": str}, keep_default_na=False)
    assert out["lead_id"].tolist() == leads["lead_id"].tolist()
    assert out["note"].tolist() == leads["note"].tolist(), "kept columns are copied as they were"
    assert list(out.columns) == ["lead_id", "note", "probability", "score", "tier", "tier_label",
                                 "percentile", "warnings", "model_name", "model_version",
                                 "scored_at"]
    parquet = tmp_path / "leads.parquet"
    leads.to_parquet(parquet, index=False)
    run(tiny_bundle, parquet, tmp_path / "from_parquet.parquet")
    same = pq.read_table(tmp_path / "from_parquet.parquet").to_pandas()
    np.testing.assert_allclose(out["probability"], same["probability"], rtol=0, atol=1e-12)


def test_wrong_type_in_one_chunk_goes_to_rejects(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    leads = make_leads(500, seed=5)
    leads.loc[123, "visits"] = "person123@secret.example"  # a value that must never be echoed
    leads.loc[124, "budget"] = "twelve"
    leads.loc[300, "lead_id"] = " "
    src = write_csv(leads, tmp_path / "leads.csv")
    out = tmp_path / "scores.parquet"
    summary = run(tiny_bundle, src, out, chunk_rows=100)
    assert summary["rows"] == 500 == summary["scored"] + summary["rejected"]
    assert summary["rejected"] == 3
    rejects_path = Path(summary["rejects_file"])
    text = rejects_path.read_text(encoding="utf-8")
    assert "secret" not in text and "twelve" not in text
    rejects = pd.read_csv(rejects_path)
    assert rejects["row"].tolist() == [124, 125, 301]
    assert rejects["reason"].tolist() == ["'visits' is not a number", "'budget' is not a number",
                                          "lead id is missing"]
    scored = pq.read_table(out).to_pandas()
    good = leads.drop(index=[123, 124, 300])
    assert scored["lead_id"].tolist() == good["lead_id"].tolist(), "the rest is scored"
    np.testing.assert_allclose(scored["probability"], score(tiny_bundle, good)["probability"],
                               rtol=0, atol=1e-12)


class Crash(Exception):
    pass


def test_resume_after_a_crash_gives_the_same_output(tiny_bundle: ModelBundle,
                                                    tmp_path: Path) -> None:
    leads = make_leads(1000, seed=6)
    leads.loc[555, "visits"] = "n/a?"
    src = write_csv(leads, tmp_path / "leads.csv")
    whole = tmp_path / "whole.parquet"
    expected = run(tiny_bundle, src, whole, chunk_rows=90, reasons=2)

    def crash_after_third(index: int) -> None:
        if index == 2:
            raise Crash

    out = tmp_path / "resumed.parquet"
    with pytest.raises(Crash):
        run(tiny_bundle, src, out, chunk_rows=90, reasons=2, after_chunk=crash_after_third)
    assert not out.exists(), "no half-written output is ever in place"
    checkpoint = json.loads((tmp_path / "resumed.parquet.parts" / "checkpoint.json").read_text())
    assert checkpoint["state"]["chunks_done"] == 3
    resumed = rescore(tiny_bundle, src, out, chunk_rows=90, reasons=2, resume=True).as_dict()
    assert resumed["resumed_after_chunk"] == 3 and resumed["rows_this_run"] == 1000 - 270
    assert pq.read_table(out).equals(pq.read_table(whole))
    for key in ("rows", "scored", "rejected", "chunks", "drift"):
        assert resumed[key] == expected[key], key
    assert (tmp_path / "resumed.parquet.rejects.csv").read_text() == \
        (tmp_path / "whole.parquet.rejects.csv").read_text()


def test_resume_refuses_a_changed_job(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    src = write_csv(make_leads(300, seed=7), tmp_path / "leads.csv")
    out = tmp_path / "out.csv"

    def crash(index: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        run(tiny_bundle, src, out, chunk_rows=100, after_chunk=crash)
    with pytest.raises(DataError, match="chunk_rows changed"):
        run(tiny_bundle, src, out, chunk_rows=50, resume=True)
    write_csv(make_leads(301, seed=7), src)
    with pytest.raises(DataError, match="input changed"):
        run(tiny_bundle, src, out, chunk_rows=100, resume=True)
    summary = run(tiny_bundle, src, out, chunk_rows=100)  # without resume: a fresh start
    assert summary["rows"] == 301 and summary["resumed_after_chunk"] is None


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_output_is_the_same_for_any_chunk_size(tiny_bundle: ModelBundle, tmp_path: Path,
                                                fmt: str) -> None:
    leads = make_leads(150, seed=8)
    leads.loc[40, "budget"] = "??"
    src = write_csv(leads, tmp_path / "leads.csv")
    outputs = []
    for size in (1, 7, 100_000):
        out = tmp_path / f"out{size}.{fmt}"
        summary = run(tiny_bundle, src, out, chunk_rows=size, keep=["email"], reasons=1)
        assert (summary["rows"], summary["rejected"]) == (150, 1)
        outputs.append(out.read_bytes() if fmt == "csv" else pq.read_table(out))
    assert outputs[0] == outputs[1] == outputs[2] if fmt == "csv" else \
        outputs[0].equals(outputs[1]) and outputs[1].equals(outputs[2])


def test_folder_of_parquet_and_typed_columns(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    leads = make_leads(400, seed=9)
    typed = leads.assign(visits=leads["visits"].astype(int),
                         budget=pd.to_numeric(leads["budget"], errors="coerce"))
    for i, start in enumerate((0, 150, 300)):
        typed.iloc[start:start + 150].to_parquet(folder / f"part-{i}.parquet", index=False)
    summary = run(tiny_bundle, folder, tmp_path / "out.parquet", chunk_rows=64)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert summary["rows"] == 400 and out["lead_id"].tolist() == leads["lead_id"].tolist()
    np.testing.assert_allclose(out["probability"], score(tiny_bundle, leads)["probability"],
                               rtol=0, atol=1e-12)


def test_drift_is_reported_and_warned(tiny_bundle: ModelBundle, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    same = run(tiny_bundle, write_csv(make_leads(2000, seed=10), tmp_path / "same.csv"),
               tmp_path / "same.parquet")
    assert same["drift"]["available"] and same["drift"]["drifted"] == []
    assert same["drift"]["score_psi"] < 0.1
    shifted = make_leads(2000, seed=10).assign(channel="event", visits="29")
    with caplog.at_level("WARNING", logger="leadscore.batch"):
        report = run(tiny_bundle, write_csv(shifted, tmp_path / "shifted.csv"),
                     tmp_path / "shifted.parquet")["drift"]
    assert report["feature_psi"]["channel"] > 0.2 and report["feature_psi"]["visits"] > 0.2
    assert {"channel", "visits"} <= set(report["drifted"])
    assert any("drift: PSI" in r.message and "channel" in r.getMessage() for r in caplog.records)


def test_an_absent_field_is_named_and_scored_as_blank(tiny_bundle: ModelBundle, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    leads = make_leads(600, seed=12)  # drift is measured from 500 rows
    renamed = leads.rename(columns={"budget": "Budget (EUR)"})
    with caplog.at_level("WARNING", logger="leadscore.batch"):
        summary = run(tiny_bundle, write_csv(renamed, tmp_path / "renamed.csv"),
                      tmp_path / "renamed.parquet")
    assert summary["absent_fields"] == ["budget"]
    assert summary["scored"] == 600, "no row is lost for a missing column"
    assert summary["drift"]["available"]
    assert "budget" not in summary["drift"]["drifted"], "absent is not reported as drift"
    warned = [r.getMessage() for r in caplog.records if "no column for" in r.getMessage()]
    assert len(warned) == 1 and "(budget)" in warned[0] and "1 of the model's" in warned[0]
    out = pq.read_table(tmp_path / "renamed.parquet").to_pandas()
    expected = score(tiny_bundle, leads.assign(budget=None))
    np.testing.assert_allclose(out["probability"], expected["probability"], rtol=0, atol=1e-12)
    complete = run(tiny_bundle, write_csv(leads, tmp_path / "all.csv"), tmp_path / "all.parquet")
    assert complete["absent_fields"] == []


def test_a_bundle_without_profile_reports_no_drift(tiny: Path, tmp_path: Path) -> None:
    old = load_bundle(tiny)
    old.meta.pop("profile")
    summary = run(old, write_csv(make_leads(50), tmp_path / "l.csv"), tmp_path / "o.parquet")
    assert summary["drift"]["available"] is False


def test_chunks_hold_exact_row_ranges(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    src = write_csv(make_leads(100, seed=11), tmp_path / "leads.csv")
    chunks = list(iter_chunks(open_source(src, tiny_bundle), 30))
    assert [(c.index, c.first_row, c.table.num_rows) for c in chunks] == [
        (0, 1, 30), (1, 31, 30), (2, 61, 30), (3, 91, 10)]
    checked = check_chunk(tiny_bundle, chunks[1])
    assert checked.table.column("visits").type == pa.float64()
    assert checked.rows[0] == 31


def test_cli_scores_with_a_registered_model(trained, tmp_path: Path,  # type: ignore[no-untyped-def]
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from leadscore.cli import app
    from leadscore.config import get_settings

    settings = trained.settings
    monkeypatch.setenv("LEADSCORE_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("LEADSCORE_MODELS_DIR", str(settings.models_dir))
    monkeypatch.setenv("LEADSCORE_MODEL_NAME", settings.model_name)
    get_settings.cache_clear()
    leads = trained.spec.resolve(trained.spec.leads.path)
    out = tmp_path / "scores.csv"
    try:
        result = CliRunner().invoke(app, [
            "score", "--model", trained.uri, "--input", str(leads), "--output", str(out),
            "--reasons", "2", "--chunk-rows", "1500", "--keep", "country",
        ])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "scores.csv.summary.json").read_text())
    scored = pd.read_csv(out)
    texts = [f"reason_{i}" for i in range(1, 5)]
    points = [f"reason_{i}_points" for i in range(1, 5)]
    assert list(scored.columns) == [
        "lead_id", "country", "probability", "score", "tier", "tier_label", "percentile",
        *texts, *points, "warnings", "model_name", "model_version", "scored_at"]
    assert len(scored) == summary["rows"] == 4000 and scored["lead_id"].is_unique
    assert set(scored["model_version"].astype(str)) == {trained.version}
    assert summary["drift"]["available"] and summary["drift"]["score_psi"] < 0.2
    first = scored.iloc[0]
    given = [p for p in first[points].tolist() if not pd.isna(p)]
    assert 1 <= len(given) <= 4 and first[texts].notna().sum() == len(given)
    up, down = [p for p in given if p > 0], [p for p in given if p < 0]
    assert given == up + down and len(up) <= 2 and len(down) <= 2
    assert first["reason_1"].endswith(" points") or first["reason_1"].endswith(" point")


@pytest.mark.slow
def test_kill_9_then_resume(tiny: Path, tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    """A real SIGKILL mid-job, then --resume: every row once, same output as one clean run."""
    leads = make_leads(200_000, seed=12)
    leads.loc[150_001, "visits"] = "oops"
    src = tmp_path / "leads.parquet"
    leads.to_parquet(src, index=False, row_group_size=20_000)
    out = tmp_path / "scores.parquet"
    command = [sys.executable, "-m", "leadscore.cli", "score", "--model", str(tiny),
               "--input", str(src), "--output", str(out), "--chunk-rows", "5000"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "scores.parquet.parts" / "checkpoint.json"
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.is_file():
            try:
                done = json.loads(checkpoint.read_text())["state"]["chunks_done"]
            except (json.JSONDecodeError, KeyError):
                done = 0
            if done >= 5:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the job finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists() and 5 <= done < 40
    result = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "scores.parquet.summary.json").read_text())
    assert summary["resumed_after_chunk"] >= 5
    assert summary["rows"] == 200_000 == summary["scored"] + summary["rejected"]
    ids = pq.read_table(out, columns=["lead_id"]).column("lead_id").to_pylist()
    assert len(ids) == 199_999 == len(set(ids))
    whole = tmp_path / "whole.parquet"
    scored_at = summary["scored_at"]
    rescore(tiny_bundle, src, whole, chunk_rows=5000, scored_at=scored_at)
    assert pq.read_table(out).equals(pq.read_table(whole))


def test_two_jobs_never_write_one_output(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    src = write_csv(make_leads(300, seed=12), tmp_path / "leads.csv")
    out = tmp_path / "out.parquet"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from leadscore.batch import _lock_output; "
         f"held = _lock_output(Path({str(out)!r})); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataError, match=rf"another scoring job \(pid {holder.pid}\)"):
            run(tiny_bundle, src, out)
        assert not out.exists() and not (tmp_path / "out.parquet.parts").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed job leaves no stale lock behind
        holder.wait()
    assert run(tiny_bundle, src, out)["scored"] == 300
    assert not (tmp_path / "out.parquet.lock").exists(), "the lock file goes with the job"


def test_drift_is_not_measured_below_its_minimum_rows(tiny_bundle: ModelBundle,
                                                      tmp_path: Path) -> None:
    """A handful of leads says nothing about the population: no PSI, no drift warning."""
    from leadscore.batch import DRIFT_MIN_ROWS

    shifted = make_leads(DRIFT_MIN_ROWS - 1, seed=10).assign(channel="event", visits="29")
    report = run(tiny_bundle, write_csv(shifted, tmp_path / "few.csv"),
                 tmp_path / "few.parquet")["drift"]
    assert report["available"] is False and report["drifted"] == []
    assert report["reason"] == f"fewer than {DRIFT_MIN_ROWS} rows ({DRIFT_MIN_ROWS - 1:,} sampled)"


def test_scoring_the_training_file_raises_no_drift(tmp_path: Path) -> None:
    """With a time split the test period is the latest: a field that trends over time (an
    interest rate) differs there from the training slice. Scoring the file the model was built
    from must not call that drift: the profile covers every labelled lead."""
    import yaml

    from leadscore.config import Settings, load_spec
    from leadscore.pipeline import run_training

    rng = np.random.default_rng(5)
    n = 3000
    created = pd.date_range("2024-01-01", periods=n, freq="2h")
    rate = np.linspace(1.0, 5.0, n) + rng.normal(0, 0.1, n)  # drifts over the period
    channel = rng.choice(["web", "event", "referral"], n)
    logit = -1.0 + 0.4 * (channel == "referral") - 0.2 * rate
    leads = pd.DataFrame({
        "lead_id": [f"L{i:05d}" for i in range(n)], "created_at": created.astype(str),
        "rate": rate.round(3), "channel": channel,
        "converted": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
    })
    src = write_csv(leads, tmp_path / "leads.csv")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "trend", "leads": {"path": str(src), "id": "lead_id", "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": ["channel"], "numeric": ["rate"]},
        "train": {"min_per_class": 20},
    }), encoding="utf-8")
    result = run_training(load_spec(spec_path), Settings(home=tmp_path / "home"), track=False,
                          with_report=False, baselines=False)
    report = run(result.bundle, src, tmp_path / "scored.parquet")["drift"]
    assert report["available"] and report["drifted"] == [], report
    # while the latest leads alone still differ from the whole: drift is still seen
    late = write_csv(leads.tail(800), tmp_path / "late.csv")
    assert "rate" in run(result.bundle, late, tmp_path / "late.parquet")["drift"]["drifted"]
