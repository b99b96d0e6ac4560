"""A damaged model text never takes a process down, and a signed bundle cannot be edited.

LightGBM aborts (SIGABRT) or segfaults on some truncated or edited model texts; a checksum
rewritten to match let such a file through. Here such files must be refused with one plain
message, in-process (`load_bundle`) and from the command line (exit 2, one line).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from leadscore import modelcheck
from leadscore.config import get_settings
from leadscore.errors import ModelError
from leadscore.features import FeatureBuilder
from leadscore.scoring import META_FILE, MODEL_FILE, ModelBundle, load_bundle, score
from leadscore.train import Calibrator, percentile_grid, tier_cutoffs

KEY = "test-signing-key-not-a-secret"


def small_leads(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "lead_id": [f"S{i:05d}" for i in range(n)],
        "channel": rng.choice(["web", "event", "referral"], n),
        "visits": rng.integers(0, 30, n).astype(float),
    })


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unsigned bundle with 20 trees, trained in well under a second."""
    leads = small_leads(1500, seed=1)
    builder = FeatureBuilder(categorical=["channel"], numeric=["visits"]).fit(leads)
    x = builder.transform(leads)
    logit = -1.0 + 0.08 * x[:, 1] + 0.9 * (leads["channel"] == "referral")
    y = (np.random.default_rng(2).random(len(leads)) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "num_threads": 1,
              "deterministic": True}
    booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=[0]), num_boost_round=20)
    margin = booster.predict(x, raw_score=True)
    calibrator = Calibrator("platt").fit(margin, y)
    p = calibrator.transform(margin)
    meta = {"name": "small", "version": "1", "id_column": "lead_id", "tiers": tier_cutoffs(p),
            "percentiles": percentile_grid(p)}
    folder = tmp_path_factory.mktemp("small") / "bundle"
    ModelBundle(booster, builder, calibrator, meta).save(folder, signing_key="")
    return folder


@pytest.fixture
def signing(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """LEADSCORE_SIGNING_KEY set for the test, as a deployment would set it."""
    monkeypatch.setenv("LEADSCORE_SIGNING_KEY", KEY)
    get_settings.cache_clear()
    yield KEY
    get_settings.cache_clear()


def forge(source: Path, target: Path, text: bytes) -> Path:
    """A copy of a bundle whose model text is `text`, with the checksum rewritten to match (as
    a careless copy, a bad disk or a tamperer with write access would leave it)."""
    shutil.copytree(source, target)
    (target / MODEL_FILE).write_bytes(text)
    meta = json.loads((target / META_FILE).read_text(encoding="utf-8"))
    meta["model_sha256"] = hashlib.sha256(text).hexdigest()
    (target / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return target


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.6, 0.95])
def test_a_truncated_model_with_a_forged_checksum_is_refused(small: Path, tmp_path: Path,
                                                             keep: float) -> None:
    text = (small / MODEL_FILE).read_bytes()
    folder = forge(small, tmp_path / "cut", text[: int(len(text) * keep)])
    with pytest.raises(ModelError, match=r"model\.txt is damaged: ") as caught:
        load_bundle(folder)
    assert str(caught.value).startswith(f"{folder}: ")


@pytest.mark.parametrize(("old", "new", "why"), [
    (b"split_feature=1", b"split_feature=7", "splits on a feature outside 0..1"),
    (b"\nTree=3\n", b"\nTree=9\n", "its trees are not numbered 0 to 19 in order"),
    (b"end of trees", b"end of treez", "no 'end of trees' line"),
])
def test_an_edited_model_with_a_forged_checksum_is_refused(small: Path, tmp_path: Path,
                                                           old: bytes, new: bytes,
                                                           why: str) -> None:
    text = (small / MODEL_FILE).read_bytes()
    assert old in text
    folder = forge(small, tmp_path / "edited", text.replace(old, new, 1))
    with pytest.raises(ModelError, match=why):
        load_bundle(folder)


def test_a_model_that_kills_lightgbm_is_refused_by_the_child_process(small: Path) -> None:
    """Structurally whole, yet fatal to LightGBM's parser: only the child process sees it."""
    text = (small / MODEL_FILE).read_bytes().replace(b"leaf_value=", b"leaf_valuX=", 1)
    assert modelcheck.check_structure(text) is None
    verdict = modelcheck.probe_in_child(text)
    assert verdict is not None and verdict.startswith("LightGBM could not parse it")


def test_the_verdict_is_cached_per_model_text(small: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    probe = modelcheck.probe_in_child

    def counted(text: bytes) -> str | None:
        calls.append(len(text))
        return probe(text)

    monkeypatch.setattr(modelcheck, "probe_in_child", counted)
    monkeypatch.setattr(modelcheck, "_verdicts", {})
    copy = Path(shutil.copytree(small, tmp_path / "copy"))
    first, second = load_bundle(small), load_bundle(copy)  # same text, two folders
    assert len(calls) == 1
    leads = small_leads(50, seed=3)
    np.testing.assert_array_equal(score(first, leads)["probability"],
                                  score(second, leads)["probability"])


def test_score_command_refuses_a_damaged_model_with_exit_2(small: Path, tmp_path: Path) -> None:
    """Batch scoring used to die with SIGSEGV (exit 139) or SIGABRT here."""
    text = (small / MODEL_FILE).read_bytes()
    folder = forge(small, tmp_path / "cut", text[: len(text) // 2])
    leads = tmp_path / "leads.csv"
    small_leads(20).to_csv(leads, index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    done = subprocess.run(
        [sys.executable, "-m", "leadscore.cli", "score", "--model", str(folder),
         "--input", str(leads), "--output", str(tmp_path / "out.csv")],
        capture_output=True, text=True, env={**env, "PYTHONWARNINGS": "ignore"}, timeout=120,
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(f"error: {folder}: model.txt is damaged: ")
    assert not (tmp_path / "out.csv").exists()


# --------------------------------------------------------------------------- signing


def test_a_signed_bundle_loads_with_the_key_and_without_one(
    small: Path, tmp_path: Path, signing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_bundle(small, signing_key="")  # unsigned: loads only while no key is asked
    signed = bundle.save(tmp_path / "signed")
    meta = json.loads((signed / META_FILE).read_text(encoding="utf-8"))
    assert meta["signature"].startswith("hmac-sha256:") and len(meta["signature"]) == 76
    assert KEY not in (signed / META_FILE).read_text(encoding="utf-8")
    leads = small_leads(50, seed=4)
    expected = score(bundle, leads)["probability"]
    np.testing.assert_array_equal(score(load_bundle(signed), leads)["probability"], expected)
    monkeypatch.delenv("LEADSCORE_SIGNING_KEY")  # no key set: the signature is not needed
    get_settings.cache_clear()
    np.testing.assert_array_equal(score(load_bundle(signed), leads)["probability"], expected)


def test_an_unsigned_bundle_is_refused_when_a_key_is_set(small: Path, signing: str) -> None:
    with pytest.raises(ModelError, match=rf"^{small}: bundle signature missing "
                                         r"\(LEADSCORE_SIGNING_KEY is set\)$"):
        load_bundle(small)


def test_a_same_length_edit_with_an_updated_checksum_is_caught_only_by_the_signature(
    small: Path, tmp_path: Path, signing: str
) -> None:
    signed = load_bundle(small, signing_key="").save(tmp_path / "signed")
    text = (signed / MODEL_FILE).read_bytes()
    start = text.index(b"leaf_value=") + len(b"leaf_value=")
    digit = next(i for i in range(start, start + 30) if text[i : i + 1].isdigit())
    flipped = b"1" if text[digit : digit + 1] != b"1" else b"2"
    edited = text[:digit] + flipped + text[digit + 1 :]
    assert len(edited) == len(text)
    forged = tmp_path / "forged"
    shutil.copytree(signed, forged)
    (forged / MODEL_FILE).write_bytes(edited)
    meta = json.loads((forged / META_FILE).read_text(encoding="utf-8"))
    meta["model_sha256"] = hashlib.sha256(edited).hexdigest()
    (forged / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    assert load_bundle(forged, signing_key="").booster.num_trees() == 20, "checksum alone passes"
    with pytest.raises(ModelError, match=rf"^{forged}: bundle signature does not match "
                                         r"\(LEADSCORE_SIGNING_KEY is set\)$"):
        load_bundle(forged)
    with pytest.raises(ModelError, match="signature does not match"):
        load_bundle(signed, signing_key="another key")


def test_an_edit_to_the_metadata_breaks_the_signature(small: Path, tmp_path: Path,
                                                      signing: str) -> None:
    signed = load_bundle(small, signing_key="").save(tmp_path / "signed")
    meta = json.loads((signed / META_FILE).read_text(encoding="utf-8"))
    meta["tiers"]["A"] = 0.01  # everyone an A lead
    (signed / META_FILE).write_text(json.dumps(meta, indent=4), encoding="utf-8")
    with pytest.raises(ModelError, match="bundle signature does not match"):
        load_bundle(signed)
