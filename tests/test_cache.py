"""The training-table cache: Parquet and JSON under LEADSCORE_HOME/cache/features, never a
pickle, never personal data; a damaged or planted entry is rebuilt, never trusted."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest
import yaml

from leadscore.config import Settings, load_spec
from leadscore.data import LABEL
from leadscore.pipeline import cached_build, clear_cache

CANARY_EMAIL = "canary.person@acme-canary.com"
CANARY_PHONE = "+44 20 7946 0958"


class _Boom:
    """Unpickling this writes a marker file: proof that a planted pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "pwned"))  # type: ignore[return-value]


@pytest.fixture
def canary_spec(synth_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    leads = pd.read_csv(synth_dir / "leads.csv", dtype=str, keep_default_na=False)
    leads.loc[:50, "email"] = CANARY_EMAIL
    leads.loc[:50, "phone"] = CANARY_PHONE
    path = tmp_path / "leads.csv"
    leads.to_csv(path, index=False)
    # (not imported from conftest: tests/serve has a conftest module of its own)
    spec = {
        "name": "cache_test",
        "leads": {"path": str(path), "id": "lead_id", "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": ["source_channel", "industry", "budget", "need"]},
        "derive": {"email": "email", "phone": "phone"},
        "drop": ["converted_at", "job_title"],
        "pii": ["name", "email", "phone"],
        "train": {"min_per_class": 20},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return load_spec(tmp_path / "spec.yaml")


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_cache_holds_parquet_and_json_without_personal_data(canary_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home")
    built, report = cached_build(canary_spec, settings)
    cache = tmp_path / "home" / "cache" / "features"
    files = _files(cache)
    assert sorted(p.suffix for p in files) == [".json", ".parquet"]
    for path in files:
        data = path.read_bytes()
        assert CANARY_EMAIL.encode() not in data and b"acme-canary" not in data.replace(
            b"x@acme-canary.com", b"")
        assert CANARY_PHONE.encode() not in data
        assert not data.startswith(b"\x80"), "no pickle protocol header"
    assert "name" not in built.columns, "a pii column that derives nothing is dropped"
    # a derived source keeps what the derivation needs, and only that
    assert set(built["email"].head(51)) == {"x@acme-canary.com"}
    assert set(built["phone"].head(51)) == {"present"}
    again, report_again = cached_build(canary_spec, settings)  # answered from the cache
    pd.testing.assert_frame_equal(again, built)
    assert report_again.as_dict() == report.as_dict()


def test_cached_and_fresh_tables_are_equal(canary_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Training sees the same scrubbed table whether the cache answered or not."""
    fresh, _ = cached_build(canary_spec, Settings(feature_cache="off"))
    settings = Settings(home=tmp_path / "home")
    cached_build(canary_spec, settings)
    cached, _ = cached_build(canary_spec, settings)
    pd.testing.assert_frame_equal(cached, fresh)
    assert LABEL in cached and cached[LABEL].notna().sum() > 100


def test_a_planted_pickle_is_never_loaded(canary_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home")
    built, _ = cached_build(canary_spec, settings)
    cache = tmp_path / "home" / "cache" / "features"
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps(_Boom(marker))
    for entry in cache.glob("*.parquet"):
        entry.write_bytes(payload)  # where the next build looks first
    (cache / "table.pkl").write_bytes(payload)
    (cache / "table.joblib").write_bytes(payload)
    again, _ = cached_build(canary_spec, settings)
    assert not marker.exists()
    pd.testing.assert_frame_equal(again, built)


def test_clear_cache(canary_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home")
    cached_build(canary_spec, settings)
    assert clear_cache(settings) == 2
    assert not (tmp_path / "home" / "cache" / "features").exists()
    assert clear_cache(settings) == 0
