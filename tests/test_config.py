"""The dataset spec (YAML) and runtime settings: every mistake is one message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from leadscore.config import DatasetSpec, Settings, load_spec, project_root
from leadscore.errors import LeadscoreError, SpecError


def base_spec() -> dict:
    return {
        "name": "crm",
        "leads": {"path": "leads.csv", "id": "lead_id", "created_at": "created_at"},
        "outcome": {"column": "status", "positive": ["Won"], "negative": ["Lost"]},
        "features": {"categorical": ["source", "country"], "numeric": ["visits"]},
        "drop": ["notes"],
        "pii": ["email"],
    }


def write(tmp_path: Path, data: object, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def spec_error(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message, "a spec error is one line"
    assert str(path) in message, "a spec error names the file"
    return message


def test_valid_spec_loads_with_paths_relative_to_the_spec(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, base_spec()))
    assert isinstance(spec, DatasetSpec)
    assert spec.name == "crm"
    assert spec.feature_columns == ["source", "country", "visits"]
    assert spec.outcome.positive == ["Won"] and spec.outcome.negative == ["Lost"]
    assert spec.leads.missing_values == [""]
    assert spec.train.test_fraction == 0.2 and spec.train.min_per_class == 40
    assert spec.source == (tmp_path / "spec.yaml").resolve()
    assert spec.resolve(spec.leads.path) == (tmp_path / "leads.csv").resolve()


def test_outcome_values_are_read_as_text(tmp_path: Path) -> None:
    data = base_spec()
    data["outcome"] = {"column": "converted", "positive": [1], "negative": [0]}
    spec = load_spec(write(tmp_path, data))
    assert spec.outcome.positive == ["1"] and spec.outcome.negative == ["0"]


def test_unknown_top_level_key_suggests_the_nearest(tmp_path: Path) -> None:
    data = base_spec()
    data["feature"] = data.pop("features")
    message = spec_error(write(tmp_path, data))
    assert "feature: unknown key; did you mean 'features'?" in message


def test_unknown_nested_key_suggests_the_nearest(tmp_path: Path) -> None:
    data = base_spec()
    data["leads"]["created"] = data["leads"].pop("created_at")
    message = spec_error(write(tmp_path, data))
    assert "leads.created: unknown key; did you mean 'created_at'?" in message


def test_unknown_key_without_a_near_match_has_no_suggestion(tmp_path: Path) -> None:
    data = base_spec()
    data["zzzzzz"] = 1
    message = spec_error(write(tmp_path, data))
    assert "zzzzzz: unknown key" in message
    assert "did you mean" not in message


def test_missing_required_key(tmp_path: Path) -> None:
    data = base_spec()
    del data["outcome"]
    assert "outcome: required key is missing" in spec_error(write(tmp_path, data))


def test_missing_nested_required_key(tmp_path: Path) -> None:
    data = base_spec()
    del data["leads"]["path"]
    assert "leads.path: required key is missing" in spec_error(write(tmp_path, data))


def test_outcome_value_both_positive_and_negative(tmp_path: Path) -> None:
    data = base_spec()
    data["outcome"] = {"column": "status", "positive": ["Won", "Closed"], "negative": ["Closed"]}
    message = spec_error(write(tmp_path, data))
    assert "outcome values ['Closed'] are listed as both positive and negative" in message


def test_feature_also_listed_under_drop(tmp_path: Path) -> None:
    data = base_spec()
    data["drop"] = ["notes", "visits"]
    message = spec_error(write(tmp_path, data))
    assert "columns ['visits'] are both features and listed under drop" in message


def test_feature_also_listed_under_pii(tmp_path: Path) -> None:
    data = base_spec()
    data["pii"] = ["country"]
    message = spec_error(write(tmp_path, data))
    assert "columns ['country'] are both features and listed under pii" in message


def test_outcome_column_cannot_be_a_feature(tmp_path: Path) -> None:
    data = base_spec()
    data["features"]["categorical"].append("status")
    assert "the outcome column 'status' cannot be a feature" in spec_error(write(tmp_path, data))


def test_two_clocks_are_refused(tmp_path: Path) -> None:
    data = base_spec()
    data["leads"]["order_by"] = "lead_number"
    message = spec_error(write(tmp_path, data))
    assert "give at most one of created_at, order_by and file_order_is_time" in message


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: crm\nleads:\n  path: [unclosed\n  id: x\n", encoding="utf-8")
    message = spec_error(path)
    assert "not valid YAML (line" in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    message = spec_error(write(tmp_path, ["name", "leads"]))
    assert "expected a mapping of keys" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="spec file not found") as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, LeadscoreError) and info.value.exit_code == 2


def test_shipped_bank_marketing_spec_is_valid() -> None:
    spec = load_spec(project_root() / "configs" / "bank_marketing.yaml")
    assert spec.outcome.column == "y"
    assert "duration" in spec.drop
    assert "duration" not in spec.feature_columns
    assert spec.leads.file_order_is_time


# --------------------------------------------------------------------------- settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in ("MLFLOW_TRACKING_URI", "LEADSCORE_TRACKING_URI", "LEADSCORE_MODEL_NAME",
                "LEADSCORE_HOME"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_outputs_default_to_the_working_directory(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Never the installed package's folder: a user running leadscore from their project gets
    the store, models, reports and cache there."""
    clean_env.chdir(tmp_path)
    settings = Settings()
    assert settings.resolved_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.resolved_models_dir() == tmp_path / "models"
    assert settings.resolved_reports_dir() == tmp_path / "reports"
    assert settings.resolved_feature_cache() == tmp_path / "cache" / "features"


def test_leadscore_home_moves_every_output(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("LEADSCORE_HOME", str(tmp_path / "home"))
    settings = Settings()
    home = tmp_path / "home"
    assert settings.resolved_tracking_uri() == f"sqlite:///{home / 'mlflow.db'}"
    assert settings.resolved_models_dir() == home / "models"
    assert settings.resolved_feature_cache() == home / "cache" / "features"


def test_spec_names_its_model(tmp_path: Path) -> None:
    from leadscore.config import model_name_for

    spec = load_spec(project_root() / "configs" / "bank_marketing.yaml")
    assert spec.model_name == "lead-bank-marketing"
    assert model_name_for(spec, Settings(model_name=None)) == "lead-bank-marketing"
    assert model_name_for(spec, Settings(model_name="bank-q3")) == "bank-q3"
    with pytest.raises(SpecError, match="LEADSCORE_MODEL_NAME: 'a b' is not a usable model name"):
        model_name_for(spec, Settings(model_name="a b"))
    raw = yaml.safe_load((project_root() / "configs" / "bank_marketing.yaml").read_text())
    raw["model"] = {"name": "bank/evil"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"model\.name: String should match pattern"):
        load_spec(path)


def test_leadscore_tracking_uri_beats_the_default(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LEADSCORE_TRACKING_URI", "sqlite:////tmp/ours.db")
    assert Settings().resolved_tracking_uri() == "sqlite:////tmp/ours.db"


def test_mlflow_tracking_uri_beats_leadscore_tracking_uri(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LEADSCORE_TRACKING_URI", "sqlite:////tmp/ours.db")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert Settings().resolved_tracking_uri() == "http://127.0.0.1:5999"
    # even over a value passed in code: the team's server is one environment variable away
    assert Settings(tracking_uri="sqlite:////tmp/x.db").resolved_tracking_uri() == (
        "http://127.0.0.1:5999"
    )


def test_model_uri_defaults_to_the_champion_of_the_model_name(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("LEADSCORE_MODEL_NAME", "my-leads")
    settings = Settings()
    assert settings.resolved_model_uri() == "models:/my-leads@champion"
