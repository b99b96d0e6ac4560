"""The evaluation report: tables that add up, plots and a model card on disk, and no lead's
values anywhere in it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.config import DatasetSpec, Settings
from leadscore.evaluate import decile_table, f1_optimal_threshold, reliability_table
from leadscore.pipeline import run_training


def test_deciles_cover_every_lead_and_gains_reach_one() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(float)
    rows = decile_table(y, p)
    assert [r["decile"] for r in rows] == list(range(1, 11))
    assert sum(r["leads"] for r in rows) == 1000
    assert rows[-1]["cumulative_gain"] == pytest.approx(1.0)
    assert rows[0]["lift"] > 1.5 > rows[-1]["lift"]


def test_f1_threshold_and_reliability_on_a_known_case() -> None:
    y = np.array([0, 0, 0, 1, 1, 1], dtype=float)
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    best = f1_optimal_threshold(y, p)
    assert best["f1"] == pytest.approx(1.0) and best["threshold"] == pytest.approx(0.7)
    bins = reliability_table(y, p)
    assert sum(b["leads"] for b in bins) == 6
    assert bins[9]["observed"] == 1.0 and bins[1]["observed"] == 0.0


@pytest.fixture(scope="module")
def report_dir(synth_spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    settings = Settings(models_dir=root / "models", model_name="report-test", feature_cache="off")
    result = run_training(synth_spec, settings, track=False, params={"learning_rate": 0.1})
    assert result.report_dir is not None
    return result.report_dir


def test_report_folder_holds_plots_card_and_numbers(report_dir: Path) -> None:
    for name in ("roc", "pr", "calibration", "gains", "importance"):
        png = report_dir / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    card = (report_dir / "model_card.md").read_text(encoding="utf-8")
    for heading in ("## Test slice", "## Tiers", "## Lift and gains by decile",
                    "## Top fields by gain"):
        assert heading in card
    assert "| **lightgbm** |" in card and "| scorecard |" in card and "| hist_gb |" in card
    assert (report_dir / "model_card.html").read_text(encoding="utf-8").count("<table>") >= 4
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    assert set(report["baselines"]) == {"scorecard", "logistic", "hist_gb"}
    assert report["split"]["kind"] == "time"
    assert report["tiers"]["descending_valid"]
    assert len(report["deciles"]) == 10 and len(report["reliability"]) == 10


def test_report_holds_no_lead_values(report_dir: Path, synth_leads: pd.DataFrame) -> None:
    text = "\n".join(
        p.read_text(encoding="utf-8") for p in report_dir.iterdir() if p.suffix != ".png"
    )
    for column in ("email", "phone", "name", "lead_id"):
        values = [v for v in synth_leads[column].head(300) if isinstance(v, str) and len(v) > 5]
        leaked = [v for v in values if v in text]
        assert not leaked, f"{column} values in the report"


def test_card_opens_with_expected_vs_actual(report_dir: Path) -> None:
    card = (report_dir / "model_card.md").read_text(encoding="utf-8")
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    ev = report["expected_vs_actual"]
    opening = card.split("\n\n")[1] if card.startswith("# ") else card.split("\n\n")[2]
    assert f"expected **{ev['expected_conversions']:,.0f}** conversions" in opening
    assert f"**{ev['actual_conversions']:,.0f}** happened" in opening
    assert "can be used as a forecast" in opening or "sum the probabilities" in opening


def _report(expected: float, actual: float, *, valid_rate: float, test_rate: float,
            calibration: str = "platt") -> dict:
    return {"expected_vs_actual": {"expected_conversions": expected,
                                   "actual_conversions": actual, "test_leads": 5000,
                                   "valid_rate": valid_rate, "test_rate": test_rate},
            "split": {"rows_test": 5000}, "model": {"calibration": calibration}}


def test_forecast_verdict_in_plain_words() -> None:
    from leadscore.report import forecast_verdict

    good = " ".join(forecast_verdict(_report(505, 500, valid_rate=0.1, test_rate=0.1)))
    assert "expected **505** conversions; **500** happened" in good
    assert "**can be used as a forecast** (+1%" in good and "Lead by lead" not in good
    # the demo's case: the total holds, but each lead's probability is off
    mixed = _report(2380, 2540, valid_rate=0.3, test_rate=0.31, calibration="none")
    mixed["test"] = {"ece": 0.086}
    text = " ".join(forecast_verdict(mixed))
    assert "can be used as a forecast** (-6%" in text
    assert "off by 0.086 on average (ECE; calibration: none)" in text
    # the demo's case: conversion rose on the later leads and nothing recalibrated
    off = " ".join(forecast_verdict(_report(420, 600, valid_rate=0.08, test_rate=0.12,
                                            calibration="none")))
    assert "**Do not sum the probabilities as a forecast**: they under-predict by 30%" in off
    assert "conversion moved from 8.0% on the validation leads to 12.0%" in off
    assert "calibration: none" in off and "What to do: retrain" in off
    # a small slice: 12 expected, 17 happened is chance, not a miscount
    small = " ".join(forecast_verdict(_report(12, 17, valid_rate=0.1, test_rate=0.1)))
    assert "can be used as a forecast" in small
