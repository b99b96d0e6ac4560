"""Contact details in columns nobody declared never reach a bundle, MLflow, a report or a score."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from leadscore.audit import flag_personal_data
from leadscore.config import Settings, load_spec
from leadscore.features import FeatureBuilder
from leadscore.privacy import looks_like_email, looks_like_phone, scan_column
from leadscore.scoring import load_bundle, score
from leadscore.table import build_table

# the synthetic CRM's honest columns (not imported from conftest: tests/serve has its own)
SYNTH_CATEGORICAL = ["source_channel", "seniority", "industry", "company_size", "country",
                     "budget", "authority", "need", "timeline", "stage_at_creation"]

NOTE_EMAIL = "canary.notes@example.org"
NOTE_PHONE = "+44 20 7946 0999"
PII_EMAIL = "canary.pii@example.org"
PII_PHONE = "+1 555 0100 777"
PII_NAME = "Canary Quillfeather"
CANARIES = [NOTE_EMAIL, NOTE_PHONE, PII_EMAIL, PII_PHONE, PII_NAME]
# pieces a reformatted copy would still hold (JSON escaping, a phone without its "+")
FRAGMENTS = [*CANARIES, "canary.notes", "canary.pii", "7946 0999", "0100 777", "Quillfeather"]


@pytest.mark.parametrize(
    "text",
    [NOTE_EMAIL, "Write to Jane.Doe@example.co.uk.", NOTE_PHONE, "+447946095812",
     "(555) 123-4567", "555-123-4567", "555.123.4567", "01 23 45 67 89",
     "call back on 020 7946 0958 after 5"],
)
def test_contact_details_are_recognised(text: str) -> None:
    assert looks_like_email(text) or looks_like_phone(text)


@pytest.mark.parametrize(
    "text",
    ["1234567", "12345678901", "L0000001", "2024-01-05", "2024-01-05 10:30:00", "05.01.2024",
     "05/01/2024", "1 200 000", "1.234.567", "1234567.89", "$1,234,567.89", "90210",
     "90210-1234", "INV-2024-001234", "192.168.100.200", "Will revert after reading the email"],
)
def test_ids_amounts_zips_and_dates_are_not_contact_details(text: str) -> None:
    assert not looks_like_email(text) and not looks_like_phone(text)


def test_scan_flags_a_notes_column_but_not_ids_amounts_or_dates() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    notes = rng.choice(["called", "no answer", "left voicemail", ""], n).astype(object)
    notes[rng.random(n) < 0.04] = NOTE_EMAIL
    notes[rng.random(n) < 0.03] = NOTE_PHONE
    finding = scan_column("notes", pd.Series(notes))
    assert finding.flagged
    assert finding.sampled == 2000 and finding.emails > 0 and finding.phones > 0
    assert not any(f in finding.describe() for f in FRAGMENTS)
    honest = {
        "id": [f"{i:08d}" for i in range(n)],
        "amount": [f"{x:.2f}" for x in rng.uniform(1e5, 1e7, n)],
        "created": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
        "zip": [f"{z:05d}-{z % 9999:04d}" for z in rng.integers(10000, 99999, n)],
    }
    for column, values in honest.items():
        assert not scan_column(column, pd.Series(values)).flagged, column


def test_the_builder_never_stores_a_contact_level_and_redacts_the_column() -> None:
    notes = ["called"] * 10 + [NOTE_EMAIL] * 5 + [NOTE_PHONE] * 5 + ["no answer"] * 10
    frame = pd.DataFrame({"notes": notes, "region": ["north", "south"] * 15})
    builder = FeatureBuilder(categorical=["notes", "region"]).fit(frame)
    state = json.dumps(builder.to_dict())
    assert builder.features_[0].levels == ("called", "no answer")
    assert not any(f in state for f in FRAGMENTS)
    # reasons show the stored level for a redacted column, never the raw text
    assert builder.sensitive_inputs_ == {"notes"}
    assert FeatureBuilder.from_dict(json.loads(state)).sensitive_inputs_ == {"notes"}
    assert np.isnan(builder.transform(frame.iloc[10:11])[0, 0])


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def canary_leads(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic leads with canaries: in the declared PII columns, and in a `notes` column
    (undeclared, offered as a feature) whose other values tell converters apart."""
    folder = tmp_path_factory.mktemp("canary-data")
    leads = pd.read_csv(synth_dir / "leads.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(11)
    n = len(leads)
    converted = (leads["converted"] == "1").to_numpy()
    notes = np.where(
        rng.random(n) < np.where(converted, 0.6, 0.3), "asked for pricing", "no answer"
    ).astype(object)
    notes[rng.random(n) < 0.06] = NOTE_EMAIL
    notes[rng.random(n) < 0.04] = NOTE_PHONE
    leads["notes"] = notes
    marked = rng.random(n) < 0.05
    leads.loc[marked, "email"] = PII_EMAIL
    leads.loc[marked, "phone"] = PII_PHONE
    leads.loc[marked, "name"] = PII_NAME
    leads.to_csv(folder / "leads.csv", index=False)
    return folder / "leads.csv"


def _spec(leads_csv: Path, folder: Path, **extra: object):  # type: ignore[no-untyped-def]
    data = {
        "name": "canary",
        "leads": {"path": str(leads_csv), "id": "lead_id", "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": [*SYNTH_CATEGORICAL, "notes"]},
        "derive": {"email": "email", "phone": "phone"},
        "drop": ["converted_at", "job_title"],
        "pii": ["name", "email", "phone"],
        "train": {"min_per_class": 20},
        **extra,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_spec(path)


def _leaks(root: Path) -> list[str]:
    """Every file under root that holds a canary (the SQLite store read as bytes)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        content = path.read_bytes()
        if any(f.encode() in content for f in FRAGMENTS):
            found.append(str(path.relative_to(root)))
    return found


def test_the_scan_names_the_column_and_how_to_declare_it(
    canary_leads: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from leadscore.audit import LeakReport

    spec = _spec(canary_leads, tmp_path)
    table, _ = build_table(spec)
    report = LeakReport()
    with caplog.at_level(logging.WARNING, logger="leadscore.audit"):
        assert flag_personal_data(table, spec, report) == ["notes"]
    assert report.dropped == ["notes"]
    counts = report.personal_data["notes"]
    assert counts["sampled"] == 2000 and counts["emails"] > 60 and counts["phones"] > 40
    assert report.flagged["notes"][0].startswith("personal data: ")
    [line] = [r.getMessage() for r in caplog.records if r.name == "leadscore.audit"]
    assert "column 'notes' dropped from the features" in line
    assert f"declare it under pii: (not features) in {spec.source}" in line
    assert "leak_audit.keep" in line
    assert not any(f in line or f in json.dumps(report.as_dict()) for f in FRAGMENTS)


@pytest.mark.slow
def test_no_canary_reaches_the_bundle_mlflow_reports_or_scores(
    canary_leads: Path, tmp_path: Path
) -> None:
    from leadscore.batch import rescore
    from leadscore.pipeline import run_training
    from leadscore.tracking import load_model

    root = tmp_path / "out"
    settings = Settings(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        home=root,
        model_name="canary-leads",
        feature_cache="off",
    )
    result = run_training(_spec(canary_leads, tmp_path), settings)
    bundle = load_model(result.model_uri or "", settings)
    leads = pd.read_csv(canary_leads, dtype=str, keep_default_na=False)
    score(bundle, leads, reasons=20).to_json(root / "scores.json", orient="records")
    rescore(bundle, canary_leads, root / "batch.parquet", reasons=20)
    assert (root / "mlflow.db").is_file() and any((root / "mlartifacts").rglob("bundle.json"))
    assert result.report_dir is not None and result.report_dir.is_relative_to(root)
    assert _leaks(root) == []
    # the notes column was refused, and the leak report (logged with the run) says so by counts
    assert "notes" in result.leak.dropped and "notes" not in bundle.builder.inputs_
    [logged] = list((root / "mlartifacts").rglob("leak_report.json"))
    assert json.loads(logged.read_text())["personal_data"]["notes"]["emails"] > 0
    assert result.bundle.meta["leak_audit"]["flagged"]["notes"][0].startswith("personal data")


@pytest.mark.slow
def test_a_kept_column_stores_no_contact_level_and_shows_none_in_reasons(
    canary_leads: Path, tmp_path: Path
) -> None:
    from leadscore.pipeline import run_training

    spec = _spec(canary_leads, tmp_path, leak_audit={"keep": ["notes"]})
    settings = Settings(home=tmp_path, feature_cache="off")
    result = run_training(spec, settings, track=False, bundle_out=tmp_path / "bundle")
    assert result.report_dir is not None and result.report_dir.is_relative_to(tmp_path)
    assert result.leak.kept == ["notes"] and "notes" in result.bundle.builder.inputs_
    assert "auc" in result.leak.checked["notes"]  # kept, so audited for leaks like any feature
    notes = next(f for f in result.bundle.builder.features_ if f.name == "notes")
    assert notes.levels == ("asked for pricing", "no answer")
    bundle = load_bundle(result.bundle_dir)
    leads = pd.read_csv(canary_leads, dtype=str, keep_default_na=False)
    marked = leads[leads["notes"].isin([NOTE_EMAIL, NOTE_PHONE])].head(200)
    scored = score(bundle, marked, reasons=20)
    scored.to_json(tmp_path / "scores.json", orient="records")
    shown = [r["value"] for row in scored["reasons"] for r in row if r["feature"] == "notes"]
    assert shown and set(shown) == {None}
    assert _leaks(tmp_path) == []  # bundle, report (model card, baselines), scores


def test_switching_the_leak_audit_off_does_not_switch_off_the_scan(
    canary_leads: Path, tmp_path: Path
) -> None:
    from leadscore.audit import audit_leaks

    spec = _spec(canary_leads, tmp_path, leak_audit={"enabled": False})
    table, _ = build_table(spec)
    report = audit_leaks(table, spec, np.arange(len(table)))
    assert report.dropped == ["notes"] and report.checked == {}
