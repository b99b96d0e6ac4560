"""The model page's figures (`leadscore.modelpage`): taken from the bundle's own metadata, the
registry's history with each promotion's reason, and the last monitoring report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from leadscore import modelpage
from leadscore.scoring import ModelBundle


def test_page_numbers_equal_the_bundles_metadata(bundle: ModelBundle) -> None:
    meta = bundle.meta
    evaluation = meta["evaluation"]
    page = modelpage.gather(bundle)
    assert page.name == bundle.name and page.version == bundle.version
    assert page.missing == []
    assert page.calibration_method == bundle.calibrator.state_["method"]
    ev = page.expected_vs_actual
    assert ev is not None
    expected = meta["metrics"]["test_expected_conversions"]
    assert ev["expected_conversions"] == pytest.approx(expected)
    assert ev["actual_conversions"] == meta["metrics"]["test_actual_conversions"]
    assert ev["test_leads"] == meta["metrics"]["test_rows"]
    # calibration bins and tier rates: exactly the stored ones (NaN stored as null)
    assert page.calibration == evaluation["reliability"]
    assert len(page.calibration) == 10
    assert sum(b["leads"] for b in page.calibration) == ev["test_leads"]
    assert [r["tier"] for r in page.tier_rates] == ["A", "B", "C", "D"]
    stored = evaluation["tiers"]["test"]
    assert [r["leads"] for r in page.tier_rates] == [r["leads"] for r in stored]
    assert sum(r["leads"] for r in page.tier_rates) == ev["test_leads"]
    assert [r["word"] for r in page.tier_rates] == ["hot", "warm", "cool", "cold"]
    # the model first, then every baseline, with the same numbers the metrics logged
    names = [row["name"] for row in page.comparison]
    assert names[0] == "lightgbm" and {"scorecard", "logistic"} <= set(names)
    ours = page.comparison[0]
    assert ours["roc_auc"] == pytest.approx(meta["metrics"]["test_roc_auc"])
    scorecard = next(row for row in page.comparison if row["name"] == "scorecard")
    assert scorecard["roc_auc"] == pytest.approx(meta["metrics"]["baseline_scorecard_roc_auc"])
    assert scorecard["label"].startswith("Points scorecard")
    # tiers: cutoffs as stored, bands on the score scale
    assert [t["cutoff"] for t in page.tiers[:3]] == [meta["tiers"][t] for t in "ABC"]
    assert page.tiers[0]["score_to"] == 100 and page.tiers[-1]["score_from"] == 0
    assert page.tiers[0]["score_from"] == round(meta["tiers"]["A"] * 100)
    # the forecast verdict in plain words (no Markdown)
    assert page.forecast and "**" not in " ".join(page.forecast)
    assert page.forecast_ok in (True, False)


def test_importance_is_labelled_and_sums_to_at_most_one(bundle: ModelBundle) -> None:
    items = modelpage.importance(bundle)
    assert items
    shares = [i["share"] for i in items]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    labels = dict(zip(bundle.sources, (w.label for w in bundle.words_), strict=True))
    for item in items:
        assert item["label"] == labels[item["field"]]
        assert "_" not in item["label"]  # words, not column names


def test_version_history_carries_the_promotion_reason(trained: Any, bundle: ModelBundle) -> None:
    versions, note = modelpage.registry_versions(bundle.name, trained.settings)
    assert note == ""
    page = modelpage.gather(bundle, versions=versions)
    served = next(v for v in page.versions if v["version"] == trained.version)
    assert served["reason"]  # e.g. "no champion yet" for the first version
    assert served["reason"] == versions[[v["version"] for v in versions].index(
        trained.version)]["reason"]
    assert "champion" in served["aliases"] or served["promotion"]


def test_unregistered_model_has_a_note_not_an_error(trained: Any) -> None:
    versions, note = modelpage.registry_versions("no-such-model-xyz", trained.settings)
    assert versions == []
    assert "not in the registry" in note


def test_an_older_bundle_says_what_it_never_recorded(bundle: ModelBundle) -> None:
    meta = {k: v for k, v in bundle.meta.items() if k != "evaluation"}
    older = ModelBundle(bundle.booster, bundle.builder, bundle.calibrator, meta)
    page = modelpage.gather(older)
    assert "calibration bins" in page.missing
    assert "conversion rate per tier" in page.missing
    assert page.calibration == [] and page.tier_rates == []
    # still there: rebuilt from the metrics every version logged
    assert page.expected_vs_actual is not None
    assert page.expected_vs_actual["expected_conversions"] == pytest.approx(
        meta["metrics"]["test_expected_conversions"])
    assert {row["name"] for row in page.comparison} >= {"lightgbm", "scorecard", "logistic"}
    assert page.forecast


def test_monitor_report_read_back_and_recent_cohorts(tmp_path: Path,
                                                     bundle: ModelBundle) -> None:
    assert modelpage.read_monitor(tmp_path, bundle.name) is None
    page = modelpage.gather(bundle)
    assert f"leadscore monitor {bundle.name} --outcomes FILE" in page.monitor_note
    cohorts = [
        {"cohort": f"2026-W{w:02d}", "model_version": "1", "scored": 100, "matured": 90,
         "pending": 10, "expected": 20.5, "actual": 19 + w, "gap": 0.1, "roc_auc": 0.7,
         "ece": 0.02, "tiers": {"A": {"leads": 10, "conversion_rate": 0.5},
                                "D": {"leads": 40, "conversion_rate": 0.05}}}
        for w in range(1, 11)
    ]
    report = {"model": bundle.name, "as_of": "2026-11-01T00:00:00+00:00", "period": "week",
              "horizon_days": 30, "cohorts": cohorts, "alarms": []}
    path = modelpage.monitor_path(tmp_path, bundle.name)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(report), encoding="utf-8")
    read = modelpage.read_monitor(tmp_path, bundle.name)
    page = modelpage.gather(bundle, monitor_report=read)
    assert [c["cohort"] for c in page.cohorts] == [f"2026-W{w:02d}" for w in range(3, 11)]
    assert page.cohorts[-1]["actual"] == 29
    tiers = page.cohorts[0]["tiers"]
    assert [t["tier"] for t in tiers] == ["A", "B", "C", "D"]
    assert tiers[0]["conversion_rate"] == 0.5 and tiers[1]["conversion_rate"] is None
    assert "as of 2026-11-01" in page.monitor_note


def test_unreadable_monitor_report_is_ignored(tmp_path: Path) -> None:
    path = modelpage.monitor_path(tmp_path, "m")
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    assert modelpage.read_monitor(tmp_path, "m") is None
    path.write_text(json.dumps({"cohorts": "nope"}), encoding="utf-8")
    assert modelpage.read_monitor(tmp_path, "m") is None
