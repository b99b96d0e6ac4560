"""Champion/challenger: every training registers @challenger; @champion moves only when the new
version holds up on the same test slice; `promote` forces it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leadscore.config import DatasetSpec, Settings
from leadscore.errors import ModelError
from leadscore.pipeline import run_training

FAST = {"learning_rate": 0.1}


def test_decide_rules() -> None:
    from leadscore.tracking import decide

    assert decide({"roc_auc": 0.7, "ece": 0.2}, None) == (True, "no champion yet")
    ok, _ = decide({"roc_auc": 0.797, "ece": 0.03}, {"roc_auc": 0.80, "ece": 0.02})
    assert ok, "within the AUC tolerance and the ECE allowance"
    ok, why = decide({"roc_auc": 0.79, "ece": 0.02}, {"roc_auc": 0.80, "ece": 0.02})
    assert not ok and "ROC AUC 0.7900 is below the champion's 0.8000" in why
    ok, why = decide({"roc_auc": 0.85, "ece": 0.05}, {"roc_auc": 0.80, "ece": 0.02})
    assert not ok and "ECE 0.0500 is above" in why


WEAK = {"num_leaves": 2, "num_iterations": 2}  # same fields, far fewer trees: ~0.71 vs ~0.87


@pytest.mark.slow
def test_a_worse_challenger_does_not_take_champion(
    synth_spec: DatasetSpec, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from leadscore import tracking

    settings = Settings(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", models_dir=tmp_path / "models",
        model_name="cc-leads", feature_cache="off",
    )
    first = run_training(synth_spec, settings, params=FAST, with_report=False, baselines=False)
    assert first.promoted and first.version == "1"
    assert first.bundle_dir == tmp_path / "models" / "cc-leads"
    second = run_training(synth_spec, settings, params=WEAK, with_report=False, baselines=False)
    assert second.version == "2"
    assert not second.promoted
    assert "below the champion's" in second.promotion_reason
    assert second.champion_version == "1"
    assert second.bundle_dir is None, "a challenger's bundle lives only in the registry"
    folder = json.loads((tmp_path / "models" / "cc-leads" / "bundle.json").read_text())
    assert folder["version"] == "1", "models/<name>/ is still the champion"
    client = MlflowClient(tracking_uri=settings.resolved_tracking_uri())
    assert str(client.get_model_version_by_alias("cc-leads", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("cc-leads", "challenger").version) == "2"
    tags = client.get_model_version("cc-leads", "2").tags
    assert tags["promotion"] == "rejected" and "below" in tags["promotion_reason"]
    assert float(tags["champion_on_this_test.roc_auc"]) > second.metrics["test_roc_auc"]

    # the same weak model, with a team's looser rule (LEADSCORE_PROMOTE_AUC_TOLERANCE), gets in
    lenient = settings.model_copy(update={"promote_auc_tolerance": 0.5})
    third = run_training(synth_spec, lenient, params=WEAK, with_report=False, baselines=False)
    assert third.promoted and third.version == "3", third.promotion_reason
    assert str(client.get_model_version_by_alias("cc-leads", "champion").version) == "3"
    folder = json.loads((tmp_path / "models" / "cc-leads" / "bundle.json").read_text())
    assert folder["version"] == "3"

    # another dataset forced under the same name (LEADSCORE_MODEL_NAME) is never compared
    renamed = synth_spec.model_copy(update={"name": "synthetic-renamed"})
    fourth = run_training(renamed, lenient, params=FAST, with_report=False, baselines=False)
    assert not fourth.promoted and fourth.version == "4"
    assert f"@champion version 3 of cc-leads was trained on dataset {synth_spec.name!r}, this " \
           "version on 'synthetic-renamed': not compared, not promoted" in fourth.promotion_reason
    assert "`model: {name: ...}` in the spec" in fourth.promotion_reason
    assert str(client.get_model_version_by_alias("cc-leads", "champion").version) == "3"

    # fewer input fields: better or not, it waits for an explicit promotion
    fewer = synth_spec.model_copy(update={"drop": [*synth_spec.drop, "country"]})
    fifth = run_training(fewer, lenient, params=FAST, with_report=False, baselines=False)
    assert not fifth.promoted and fifth.version == "5"
    assert "input fields differ from @champion version 3: removed 'country'" in \
        fifth.promotion_reason
    assert "leadscore promote cc-leads 5 --allow-schema-change" in fifth.promotion_reason
    with pytest.raises(ModelError, match="pass --allow-schema-change"):
        tracking.promote("cc-leads", "5", settings)
    assert str(client.get_model_version_by_alias("cc-leads", "champion").version) == "3"
    tracking.promote("cc-leads", "5", settings, allow_schema_change=True)
    assert str(client.get_model_version_by_alias("cc-leads", "champion").version) == "5"
    assert client.get_model_version("cc-leads", "5").tags["schema_change_allowed"] == "true"

    tracking.promote("cc-leads", "1", settings, allow_schema_change=True)
    tracking.promote("cc-leads", "2", settings)
    assert str(client.get_model_version_by_alias("cc-leads", "champion").version) == "2"
    rows = {r["version"]: r for r in tracking.list_versions("cc-leads", settings)}
    assert "champion" in rows["2"]["aliases"] and rows["2"]["promotion"] == "forced"
    assert rows["1"]["metrics"]["test_roc_auc"] > rows["2"]["metrics"]["test_roc_auc"]
    assert rows["4"]["dataset"] == "synthetic-renamed" and rows["1"]["dataset"] == synth_spec.name
    folder = json.loads((tmp_path / "models" / "cc-leads" / "bundle.json").read_text())
    assert folder["version"] == "2", "promote rewrites the champion's folder"
