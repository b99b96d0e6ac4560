"""Helpers shared by the API tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from leadscore.config import Settings
from leadscore.scoring import META_FILE, MODEL_FILE, ModelBundle, load_bundle

CANARY = "canary.person@example.com"
API_KEY = "test-key-0123456789"


def write_version(source: Path, target: Path, version: str, keep_trees: int | None = None) -> Path:
    """A copy of a bundle relabelled `version`; with `keep_trees`, a genuinely different model
    (the first trees only), saved with its own checksum like any trained bundle."""
    import lightgbm as lgb

    bundle = load_bundle(source)
    booster = bundle.booster
    if keep_trees is not None:
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=keep_trees))
    meta = {**bundle.meta, "version": version}
    ModelBundle(booster, bundle.builder, bundle.calibrator, meta).save(target)
    return target


def corrupt(source: Path, target: Path, version: str = "corrupt") -> Path:
    """A copy whose model file no longer matches the checksum in its metadata."""
    shutil.copytree(source, target)
    meta_path = target / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["version"] = version
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with (target / MODEL_FILE).open("a", encoding="utf-8") as handle:
        handle.write("\n# tampered\n")
    return target


def serve_settings(model_uri: Path | str, **overrides: Any) -> Settings:
    """Settings for an app serving `model_uri`, nothing read from the environment."""
    values: dict[str, Any] = {"model_uri": str(model_uri), "api_keys": "", "reload_seconds": 0}
    values.update(overrides)
    return Settings(**values)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape, with the expected status (and code), never quoting the canary."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert isinstance(error["details"], list)
    if code is not None:
        assert error["code"] == code, error
    assert CANARY not in response.text
    assert "canary.person" not in response.text.lower()
    return dict(error)


def assert_no_canary(logs: pytest.LogCaptureFixture) -> None:
    """No server-side record mentions the canary (httpx logs the test client's own URLs)."""
    records = [r for r in logs.records if not r.name.startswith(("httpx", "httpcore"))]
    assert records, "expected the server to log something (at least the access line)"
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records)
    assert "canary.person" not in text.lower()


