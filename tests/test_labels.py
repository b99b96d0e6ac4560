"""Readable names and CRM exports: labels from the spec win over prettified names, activity
features are worded, every reason carries a label and a text (scoring, batch Parquet, CSV,
XLSX), tiers carry the team's words, and the flat files hold no JSON cells."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner
from words_helpers import LABELS, TIER_WORDS, labelled_spec_path, train_labelled

from leadscore.batch import rescore
from leadscore.errors import DataError, SpecError
from leadscore.exports import flat_frame, format_for
from leadscore.labels import activity_label, field_words, points_text, prettify, reason_text
from leadscore.scoring import ModelBundle, load_bundle, score

SCORED_AT = "2026-11-30T00:00:00+00:00"


# --------------------------------------------------------------------------- words


@pytest.mark.parametrize(("name", "words"), [
    ("emp.var.rate", "Employment variation rate"),
    ("nr.employed", "Number employed"),
    ("cons.conf.idx", "Consumer confidence index"),
    ("lead_source", "Lead source"),
    ("TotalVisits", "Total visits"),
    ("Lead Source", "Lead Source"),
    ("lead_id", "Lead ID"),
])
def test_field_names_are_prettified(name: str, words: str) -> None:
    assert prettify(name) == words


@pytest.mark.parametrize(("name", "words"), [
    ("activity.call_unanswered.14d", "Unanswered calls in the last 14 days"),
    ("activity.demo_request.7d", "Demo requests in the last 7 days"),
    ("activity.total.3d", "Activities in the last 3 days"),
    ("activity.days_since_last", "Days since the last activity"),
    ("activity.days_since_last.demo_request", "Days since the last demo request"),
    ("activity.first_channel", "First-touch channel"),
    ("activity.last_channel", "Last-touch channel"),
    ("industry", None),
])
def test_activity_features_in_words(name: str, words: str | None) -> None:
    assert activity_label(name) == words


def test_reason_text_states_label_value_and_rounded_points() -> None:
    given = {"label": "Previous campaign", "values": {"success": "succeeded"}}
    assert reason_text(field_words("poutcome", None, given), "success", 18.2) == \
        "Previous campaign succeeded: +18 points"
    assert reason_text(field_words("poutcome", None, None), "failure", -7.49) == \
        "Poutcome failure: \N{MINUS SIGN}7 points"
    calls = field_words("activity.call_unanswered.14d", None, None)
    assert reason_text(calls, 3.0, -7.0) == \
        "3 unanswered calls in the last 14 days: \N{MINUS SIGN}7 points"
    assert reason_text(calls, 1.0, -1.0) == \
        "1 unanswered call in the last 14 days: \N{MINUS SIGN}1 point"
    assert reason_text(field_words("age", None, None), None, 2.0) == "Age not given: +2 points"
    assert points_text(0.44) == "+0.4 points", "below one point: one decimal, never +0"


# --------------------------------------------------------------------------- the spec


def _spec_with(synth_dir: Path, tmp_path: Path, **changes: Any) -> Path:
    path = labelled_spec_path(synth_dir, tmp_path)
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_a_label_must_name_an_input_field(synth_dir: Path, tmp_path: Path) -> None:
    from leadscore.config import load_spec

    path = _spec_with(synth_dir, tmp_path, labels={"industy": "Sector"})
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert "labels names 'industy', which is not an input field; did you mean 'industry'?" \
        in str(error.value)
    assert "\n" not in str(error.value)


def test_tier_words_name_known_tiers(synth_dir: Path, tmp_path: Path) -> None:
    from leadscore.config import load_spec

    path = _spec_with(synth_dir, tmp_path, tiers={"words": {"E": "lukewarm"}})
    with pytest.raises(SpecError, match=r"tiers.words: 'E' is not a tier \(A, B, C, D\)"):
        load_spec(path)
    same = _spec_with(synth_dir, tmp_path, tiers={"words": {"A": "warm"}})
    with pytest.raises(SpecError, match="'warm' would name two tiers"):
        load_spec(same)
    ok = _spec_with(synth_dir, tmp_path, tiers={"words": {"A": "hot lead"}},
                    labels={"activity.call_unanswered.14d": "Missed calls (14 days)"})
    assert load_spec(ok).tiers.words == {"A": "hot lead"}


# --------------------------------------------------------------------------- a labelled model


@pytest.fixture(scope="module")
def labelled(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, ModelBundle, pd.DataFrame]:
    folder, table = train_labelled(synth_dir, tmp_path_factory.mktemp("labelled"))
    return folder, load_bundle(folder), table


def _leads(table: pd.DataFrame, bundle: ModelBundle, n: int) -> pd.DataFrame:
    inputs = [c for c in bundle.inputs if c in table.columns]
    return table.head(n)[inputs].assign(lead_id=table["_id"].head(n).astype(str).to_numpy())


def test_spec_labels_win_and_activity_features_are_worded(labelled) -> None:  # type: ignore[no-untyped-def]
    _, bundle, _ = labelled
    words = bundle.meta["labels"]
    assert words["industry"]["label"] == "Sector", "the spec's label, not 'Industry'"
    assert words["budget"]["label"] == "Budget confirmed"
    assert words["country"]["label"] == "Country", "no label in the spec: prettified"
    assert words["stage_at_creation"]["label"] == "Stage at creation"
    assert words["activity.call_unanswered.14d"]["label"] == \
        "Unanswered calls in the last 14 days"
    assert words["activity.days_since_last"]["label"] == "Days since the last activity"
    assert bundle.meta["tier_words"] == {"A": "on fire", "B": "warm", "C": "cool", "D": "frozen"}


def test_reasons_carry_label_and_text(labelled) -> None:  # type: ignore[no-untyped-def]
    _, bundle, table = labelled
    out = score(bundle, _leads(table, bundle, 300), reasons=10)
    labels = {s: w.label for s, w in zip(bundle.sources, bundle.words_, strict=True)}
    seen = set()
    for reasons in out["reasons"]:
        for reason in reasons:
            assert set(reason) == {"feature", "value", "impact", "label", "text"}
            assert reason["label"] == labels[reason["feature"]]
            assert reason["text"].endswith(("points", "point"))
            seen.add(reason["feature"])
            if reason["feature"] == "industry" and reason["value"] == "software":
                assert reason["text"].startswith("Sector software and SaaS: ")
            if reason["feature"] == "activity.call_unanswered.14d" and reason["value"] == 2:
                assert reason["text"].startswith("2 unanswered calls in the last 14 days: ")
    assert "industry" in seen and any(f.startswith("activity.") for f in seen)
    words = {"A": "on fire", "B": "warm", "C": "cool", "D": "frozen"}
    assert out["tier_label"].tolist() == [words[t] for t in out["tier"]]
    assert set(out["tier"]) >= {"A", "D"}


def _no_json_cells(frame: pd.DataFrame) -> None:
    for column in frame.columns:
        for cell in frame[column].dropna():
            if isinstance(cell, str) and cell[:1] in "[{":
                with pytest.raises(ValueError):
                    json.loads(cell)


def test_csv_export_is_flat_and_parquet_keeps_structured_reasons(labelled, tmp_path: Path
                                                                  ) -> None:  # type: ignore[no-untyped-def]
    _, bundle, table = labelled
    leads = _leads(table, bundle, 400)
    src = tmp_path / "leads.parquet"
    leads.to_parquet(src, index=False)
    rescore(bundle, src, tmp_path / "out.csv", reasons=2, chunk_rows=150, scored_at=SCORED_AT)
    rescore(bundle, src, tmp_path / "out.parquet", reasons=2, chunk_rows=150,
            scored_at=SCORED_AT)
    flat = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    texts = [f"reason_{i}" for i in range(1, 5)]
    points = [f"reason_{i}_points" for i in range(1, 5)]
    assert list(flat.columns) == ["lead_id", "probability", "score", "tier", "tier_label",
                                  "percentile", *texts, *points, "warnings", "model_name",
                                  "model_version", "scored_at"]
    _no_json_cells(flat)
    structured = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert flat["lead_id"].tolist() == structured["lead_id"].tolist()
    assert flat["tier_label"].tolist() == [
        {**{"B": "warm", "C": "cool"}, **TIER_WORDS}[t] for t in structured["tier"]]
    for row, cell in zip(flat.itertuples(index=False), structured["reasons"], strict=True):
        reasons = json.loads(cell)  # Parquet: the structured list, label and text included
        assert all({"label", "text"} <= set(r) for r in reasons)
        got = dict(zip(flat.columns, row, strict=True))
        assert [got[c] for c in texts if got[c]] == [r["text"] for r in reasons]
        assert [float(got[c]) for c in points if got[c]] == [r["impact"] for r in reasons]
    assert LABELS["industry"]["label"] in " ".join(flat[texts].to_numpy().ravel())


def test_flat_frame_from_score(labelled) -> None:  # type: ignore[no-untyped-def]
    _, bundle, table = labelled
    out = score(bundle, _leads(table, bundle, 20), reasons=1)
    flat = flat_frame(out, reasons=1)
    assert {"reason_1", "reason_2", "reason_1_points", "reason_2_points", "tier_label"} <= \
        set(flat.columns) and "reasons" not in flat.columns
    assert flat["reason_1"].tolist() == [r[0]["text"] if r else None for r in out["reasons"]]


def test_format_follows_the_suffix_or_says_why_not(tmp_path: Path) -> None:
    assert format_for(tmp_path / "a.CSV") == "csv"
    assert format_for(tmp_path / "a.pq") == "parquet"
    assert format_for(tmp_path / "a.xlsx", "xlsx") == "xlsx"
    with pytest.raises(DataError, match="--format xlsx needs an output ending in .xlsx"):
        format_for(tmp_path / "a.csv", "xlsx")
    with pytest.raises(DataError, match="--format must be one of parquet, csv, xlsx"):
        format_for(tmp_path / "a.csv", "json")


def test_cli_writes_xlsx(labelled, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    openpyxl = pytest.importorskip("openpyxl")
    from leadscore.cli import app

    folder, bundle, table = labelled
    leads = _leads(table, bundle, 120)
    leads.loc[leads.index[0], "country"] = "=HYPERLINK(1)"  # text in the file, never a formula
    src = tmp_path / "leads.csv"
    leads.to_csv(src, index=False)
    out = tmp_path / "scores.xlsx"
    result = CliRunner().invoke(app, ["score", "--model", str(folder), "--input", str(src),
                                      "--output", str(out), "--reasons", "1",
                                      "--keep", "country", "--format", "xlsx"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "scores.xlsx.parquet").exists()
    summary = json.loads((tmp_path / "scores.xlsx.summary.json").read_text())
    assert summary["output"] == str(out) and summary["rows"] == 120
    sheet = openpyxl.load_workbook(out, read_only=True)["scores"]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:7] == ("lead_id", "country", "probability", "score", "tier", "tier_label",
                           "percentile")
    assert rows[0][7:11] == ("reason_1", "reason_2", "reason_1_points", "reason_2_points")
    assert len(rows) == 121 and rows[1][1] == "=HYPERLINK(1)"
    assert all(isinstance(r[7], str) and r[7].endswith(("point", "points")) for r in rows[1:]
               if r[7] is not None)


def test_value_words_match_however_yaml_reads_the_key(synth_dir: Path, tmp_path: Path) -> None:
    from leadscore.config import load_spec

    path = labelled_spec_path(synth_dir, tmp_path)
    text = path.read_text(encoding="utf-8").split("\nlabels:")[0]
    # unquoted, as people write it: YAML reads yes/no as booleans and 1.0 as a number
    path.write_text(text + "\nlabels:\n  budget: {label: Budget, values: {yes: confirmed, "
                    "no: not yet}}\n  need: {values: {1.0: one}}\n", encoding="utf-8")
    assert yaml.safe_load(path.read_text())["labels"]["budget"]["values"] == \
        {True: "confirmed", False: "not yet"}
    spec = load_spec(path)
    words = field_words("budget", None, spec.labels["budget"].model_dump())
    assert reason_text(words, "yes", 5.0) == "Budget confirmed: +5 points"
    assert reason_text(words, "no", -5.0) == "Budget not yet: \N{MINUS SIGN}5 points"
    assert spec.labels["need"].values["1"] == "one"
