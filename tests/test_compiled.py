"""The compiled scoring path: the same raw scores as LightGBM (to 1e-9), a cache keyed by the
model text that is rebuilt when damaged, and a clean fallback to LightGBM when the extra or the
compiler is missing or the compiled trees disagree."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from bundle_helpers import save_small_bundle

from leadscore import compiled
from leadscore.batch import rescore
from leadscore.features import FeatureBuilder
from leadscore.scoring import load_bundle

SCORED_AT = "2026-01-01T00:00:00+00:00"
# the module (the package re-exports its function under the same name)
rescore_module = importlib.import_module("leadscore.batch.rescore")
needs_extra = pytest.mark.skipif(
    compiled.available() is not None or shutil.which(os.environ.get("CC", "gcc")) is None,
    reason="the [fast] extra (tl2cgen) or a C compiler is missing (`make test` installs gcc)")


def make_leads(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "lead_id": [f"C{i:06d}" for i in range(n)],
        "channel": rng.choice(["web", "event", "referral", "email", "partner"], n),
        "visits": rng.integers(0, 30, n).astype(float),
        "budget": np.round(rng.gamma(2.0, 20.0, n), 3),
        "email": [f"p{i}@{'gmail.com' if i % 3 else 'acme.io'}" for i in range(n)],
    })
    frame.loc[::7, "budget"] = np.nan
    frame.loc[::13, "channel"] = None
    return frame


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with categorical and numeric splits and missing values (a second to train)."""
    leads = make_leads(4000, seed=3)
    builder = FeatureBuilder(
        categorical=["channel"], numeric=["visits", "budget"], derive={"email": "email"}
    ).fit(leads)
    x = builder.transform(leads)
    logit = -1.0 + 0.07 * np.nan_to_num(x[:, 1]) - 0.01 * np.nan_to_num(x[:, 2], nan=50.0) + (
        leads["channel"] == "referral").to_numpy() * 1.1
    y = (np.random.default_rng(4).random(len(leads)) < 1 / (1 + np.exp(-logit))).astype(int)
    return save_small_bundle(builder, x, y, "compiled-test",
                             tmp_path_factory.mktemp("compiled") / "bundle")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@needs_extra
@pytest.mark.slow
@pytest.mark.parametrize("backend", compiled.BACKENDS)
def test_compiled_equals_lightgbm_and_is_cached_by_checksum(folder: Path, home: Path,
                                                            backend: str) -> None:
    if not compiled._installed(backend):
        pytest.skip(f"{backend} is not installed")
    bundle = load_bundle(folder)
    model = compiled.compile_model(bundle.booster, bundle.meta, home=home, backend=backend)
    assert model is not None and model.backend == backend
    entry = home / "cache" / "compiled" / bundle.meta["model_sha256"]
    name = compiled.OBJECT if backend == "lleaves" else compiled.LIBRARY
    assert model.library == entry / name
    manifest = json.loads((entry / compiled.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["model_sha256"] == bundle.meta["model_sha256"]
    assert manifest["backend"] == backend
    leads = make_leads(5000, seed=9)
    matrix = bundle.builder.transform(leads)
    assert np.isnan(matrix).any()  # missing values take the trees' default branches
    ours = model.margins(matrix)
    theirs = bundle.booster.predict(matrix, raw_score=True)
    assert np.max(np.abs(ours - theirs)) <= compiled.TOLERANCE
    assert model.check(matrix) and not model.broken
    if backend != compiled.preferred_backend():
        return  # a job looks in the cache for the preferred backend's entry only
    # a second job finds it in the cache: no compiler needed
    again = compiled.cached_model(bundle.booster, bundle.meta, home=home)
    assert again is not None and again.library == model.library


@needs_extra
@pytest.mark.slow
def test_a_damaged_cache_entry_is_rebuilt_not_loaded(folder: Path, home: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    bundle = load_bundle(folder)
    model = compiled.compile_model(bundle.booster, bundle.meta, home=home)
    assert model is not None
    model.library.write_bytes(b"\x7fELF not a library any more")
    with caplog.at_level(logging.WARNING, logger="leadscore.compiled"):
        assert compiled.cached_model(bundle.booster, bundle.meta, home=home) is None
    assert "stale or damaged" in caplog.text
    rebuilt = compiled.compile_model(bundle.booster, bundle.meta, home=home)
    assert rebuilt is not None
    matrix = bundle.builder.transform(make_leads(500, seed=5))
    np.testing.assert_allclose(rebuilt.margins(matrix),
                               bundle.booster.predict(matrix, raw_score=True), rtol=0, atol=1e-9)


def test_no_compiler_falls_back_to_lightgbm(folder: Path, home: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    bundle = load_bundle(folder)
    with caplog.at_level(logging.INFO, logger="leadscore.compiled"):
        model = compiled.compile_model(bundle.booster, bundle.meta, home=home,
                                       toolchain="no-such-compiler-here", backend="tl2cgen")
    assert model is None
    assert "scoring with LightGBM" in caplog.text
    assert not list((home / "cache" / "compiled").glob("*/model.so"))  # nothing half-built


def test_missing_extra_falls_back(folder: Path, home: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "available", lambda: "the [fast] extra is not installed")
    bundle = load_bundle(folder)
    assert compiled.compile_model(bundle.booster, bundle.meta, home=home) is None
    assert compiled.cached_model(bundle.booster, bundle.meta, home=home) is None


@needs_extra
def test_a_compiled_model_that_disagrees_is_dropped(folder: Path, home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = load_bundle(folder)
    matrix = bundle.builder.transform(make_leads(300, seed=6))
    model = compiled.CompiledModel(home / "absent.so", bundle.booster, "key")
    truth = bundle.booster.predict(matrix, raw_score=True)
    monkeypatch.setattr(model, "margins", lambda m: bundle.booster.predict(m, raw_score=True)
                        + 1e-6)
    out = model.predict(matrix)
    assert model.broken
    np.testing.assert_array_equal(out, truth)


@pytest.mark.slow
def test_rescore_gives_the_same_file_compiled_or_not(folder: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced fallback (extra missing) and the compiled path (when the extra is there) write the
    same probabilities, scores and tiers as LightGBM alone."""
    src = tmp_path / "leads.parquet"
    make_leads(30_000, seed=8).to_parquet(src, index=False)
    monkeypatch.setattr(rescore_module, "COMPILE_MIN_ROWS", 0)
    plain = load_bundle(folder)
    rescore(plain, src, tmp_path / "plain.parquet", chunk_rows=4000, scored_at=SCORED_AT,
            compiled=False)
    assert plain.compiled_ is None
    fast = load_bundle(folder)
    compiled.compile_model(fast.booster, fast.meta)  # in LEADSCORE_HOME's cache: the job finds it
    rescore(fast, src, tmp_path / "fast.parquet", chunk_rows=4000, scored_at=SCORED_AT)
    if compiled.available() is None:
        assert fast.compiled_ is not None and fast.compiled_.checked
        assert not fast.compiled_.broken
    with monkeypatch.context() as patch:
        patch.setattr(compiled, "available", lambda: "the [fast] extra is not installed")
        patch.setattr(rescore_module, "cached_model", lambda *a, **k: None)
        patch.setattr(rescore_module, "compiled_unavailable", compiled.available)
        fallback = load_bundle(folder)
        rescore(fallback, src, tmp_path / "fallback.parquet", chunk_rows=4000,
                scored_at=SCORED_AT)
        assert fallback.compiled_ is None
    expected = pq.read_table(tmp_path / "plain.parquet")
    for name in ("fast", "fallback"):
        got = pq.read_table(tmp_path / f"{name}.parquet")
        assert got.num_rows == 30_000
        np.testing.assert_allclose(got.column("probability").to_numpy(),
                                   expected.column("probability").to_numpy(), rtol=0, atol=1e-9)
        for column in ("lead_id", "score", "tier", "percentile"):
            assert got.column(column).equals(expected.column(column)), (name, column)
