"""The leak audit finds a planted post-outcome column unaided and keeps honest strong features."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from leadscore.audit import audit_leaks, single_feature_auc
from leadscore.config import load_spec
from leadscore.table import build_table
from leadscore.train import split_leads


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def planted(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic leads plus two columns a sales team fills in after talking to the lead."""
    folder = tmp_path_factory.mktemp("planted")
    leads = pd.read_csv(synth_dir / "leads.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(3)
    converted = leads["converted"] == "1"
    # the rep's verdict after the call: right 93% of the time
    verdict = np.where(converted ^ (rng.random(len(leads)) < 0.07), "hot - will buy", "cold")
    leads["rep_verdict"] = verdict
    # a follow-up note typed mostly for the leads that bought
    filled = np.where(converted, rng.random(len(leads)) < 0.8, rng.random(len(leads)) < 0.15)
    leads["followup_note"] = np.where(filled, "called back", "")
    leads.to_csv(folder / "leads.csv", index=False)
    spec = {
        "name": "planted",
        "leads": {"path": "leads.csv", "id": "lead_id", "created_at": "created_at"},
        "outcome": {
            "table": {
                "path": str(synth_dir / "conversions.csv"),
                "id": "lead_id",
                "converted_at": "converted_at",
            },
            "horizon_days": 120,
        },
        "as_of_days": 14,
        "activities": {
            "path": str(synth_dir / "activities.csv"),
            "id": "lead_id",
            "timestamp": "timestamp",
            "type": "type",
            "channel": "channel",
            "windows": [7, 14],
        },
        "features": {
            "categorical": [
                "source_channel",
                "stage_at_creation",
                "budget",
                "need",
                "rep_verdict",
                "followup_note",
            ]
        },
        "drop": ["converted", "converted_at", "seniority"],
        "pii": ["name", "email", "phone"],
    }
    return write_spec(folder / "spec.yaml", spec)


def _audit(spec_path: Path):  # type: ignore[no-untyped-def]
    spec = load_spec(spec_path)
    table, _ = build_table(spec)
    split = split_leads(table, spec)
    return audit_leaks(table, spec, np.concatenate([split.train, split.valid]))


def test_planted_columns_are_flagged_and_honest_ones_kept(planted: Path) -> None:
    report = _audit(planted)
    assert set(report.dropped) == {"rep_verdict", "followup_note"}
    assert "AUC" in report.flagged["rep_verdict"][0]
    assert "filled in for" in report.flagged["followup_note"][0]
    # the demo request count is the strongest honest signal; it must survive
    assert report.checked["activity.demo_request.14d"]["auc"] > 0.55
    assert "activity.demo_request.14d" not in report.flagged


def test_spec_can_keep_a_flagged_column(planted: Path, tmp_path: Path) -> None:

    data = yaml.safe_load(planted.read_text())
    data["leads"]["path"] = str(planted.parent / "leads.csv")
    data["leak_audit"] = {"keep": ["followup_note"]}
    report = _audit(write_spec(tmp_path / "spec.yaml", data))
    assert report.kept == ["followup_note"]
    assert report.dropped == ["rep_verdict"]


def test_training_drops_flagged_columns_and_logs_the_report(planted: Path, tmp_path: Path) -> None:
    from leadscore.config import Settings
    from leadscore.pipeline import run_training

    settings = Settings(models_dir=tmp_path / "models", feature_cache="off")
    result = run_training(load_spec(planted), settings, track=False)
    assert set(result.leak.dropped) == {"rep_verdict", "followup_note"}
    assert "rep_verdict" not in result.bundle.builder.feature_names_
    assert result.bundle.meta["leak_audit"]["dropped"] == result.leak.dropped
    # an honest model, not the rep's verdict: well below the planted column's own AUC
    assert result.metrics["test_roc_auc"] < 0.92


def test_a_close_date_after_the_scoring_moment_is_flagged(tmp_path: Path) -> None:
    n = 200
    rng = np.random.default_rng(0)
    created = pd.date_range("2024-01-01", periods=n, freq="D")
    won = rng.random(n) < 0.5
    pd.DataFrame(
        {
            "id": [f"D{i}" for i in range(n)],
            "engaged": created.strftime("%Y-%m-%d"),
            "closed": (created + pd.to_timedelta(rng.integers(20, 90, n), unit="D")).strftime(
                "%Y-%m-%d"
            ),
            "region": rng.choice(["north", "south"], n),
            "stage": np.where(won, "Won", "Lost"),
        }
    ).to_csv(tmp_path / "deals.csv", index=False)
    spec = write_spec(
        tmp_path / "spec.yaml",
        {
            "name": "closing",
            "leads": {"path": "deals.csv", "id": "id", "created_at": "engaged"},
            "outcome": {"column": "stage", "positive": ["Won"], "negative": ["Lost"]},
            "features": {"categorical": ["region", "closed"]},
        },
    )
    report = _audit(spec)
    assert report.dropped == ["closed"]
    assert "after the lead's scoring moment" in report.flagged["closed"][0]


def test_single_feature_auc_does_not_reward_memorising_ids() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.3).astype(float)
    unique_codes = np.arange(2000, dtype=float)  # a category per lead, like an id
    assert single_feature_auc(unique_codes, y, categorical=True) < 0.6
    assert single_feature_auc(y * 2 + rng.random(2000), y, categorical=False) > 0.99


@pytest.fixture(scope="module")
def late_sales(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic leads under a 30-day horizon, plus two columns typed in after a sale that came
    too late to count: both labelled classes look alike, only eventual conversion tells."""
    folder = tmp_path_factory.mktemp("late")
    leads = pd.read_csv(synth_dir / "leads.csv", dtype=str, keep_default_na=False)
    created = pd.to_datetime(leads["created_at"])
    waited = pd.to_datetime(leads["converted_at"].replace("", None)) - created
    late = (waited > pd.Timedelta(days=30)).to_numpy()  # converted, but labelled 0
    # a contract reference for the 12 earliest of them (training rows), nobody else
    first = np.flatnonzero(late)[np.argsort(created.to_numpy()[late], kind="stable")[:12]]
    leads["contract_ref"] = ""
    leads.loc[first, "contract_ref"] = "signed"
    # an invoice flag for most of them
    rng = np.random.default_rng(5)
    leads["invoice_sent"] = np.where(late & (rng.random(len(leads)) < 0.7), "yes", "")
    leads.to_csv(folder / "leads.csv", index=False)
    spec = {
        "name": "late_sales",
        "leads": {"path": "leads.csv", "id": "lead_id", "created_at": "created_at"},
        "outcome": {
            "table": {
                "path": str(synth_dir / "conversions.csv"),
                "id": "lead_id",
                "converted_at": "converted_at",
            },
            "horizon_days": 30,
        },
        "as_of_days": 14,
        "features": {
            "categorical": [
                "source_channel", "stage_at_creation", "budget", "need", "contract_ref",
                "invoice_sent",
            ]
        },
        "drop": ["converted", "converted_at", "seniority"],
        "pii": ["name", "email", "phone"],
    }
    return write_spec(folder / "spec.yaml", spec)


def test_a_sparse_column_filled_only_for_eventual_customers_is_flagged(late_sales: Path) -> None:
    report = _audit(late_sales)
    assert set(report.dropped) == {"contract_ref", "invoice_sent"}
    # the horizon label alone cannot see it: no labelled converter has it
    assert report.checked["contract_ref"]["fill_converted"] == 0.0
    [reason] = report.flagged["contract_ref"]
    assert re.fullmatch(
        r"filled for 12 of \d+ leads that eventually converted and 0 of \d+ others: "
        r"post-outcome data",
        reason,
    ), reason
    [reason] = report.flagged["invoice_sent"]
    assert "of leads that eventually converted" in reason and "post-outcome" in reason
    assert report.checked["invoice_sent"]["fill_never_converted"] == 0.0


def test_lone_aucs_from_a_sample_still_flag_the_planted_leak(planted: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import leadscore.audit as audit_module

    monkeypatch.setattr(audit_module, "AUC_MAX_ROWS", 500)
    report = _audit(planted)
    assert set(report.dropped) == {"rep_verdict", "followup_note"}
    assert "AUC" in report.flagged["rep_verdict"][0]
