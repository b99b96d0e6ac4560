"""Batch scoring's fast path (text categoricals read from Parquet as dictionaries, the compiled
trees) writes the same file as the plain path (text read as text, LightGBM alone): missing
values, blanks, unknown categories and rows that must be rejected included."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from bundle_helpers import save_small_bundle

from leadscore import compiled
from leadscore.batch import open_source, rescore
from leadscore.features import FeatureBuilder
from leadscore.scoring import load_bundle

SCORED_AT = "2026-01-01T00:00:00+00:00"
rescore_module = importlib.import_module("leadscore.batch.rescore")
sources_module = importlib.import_module("leadscore.batch.sources")
TITLES = ["VP Sales", "Head of Marketing", "Software Engineer", "CEO", "Analyst", "intern"]
CHANNELS = ["web", "event", "referral", "email", "partner"]


def make_leads(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "lead_id": [f"F{seed}-{i:06d}" for i in range(n)],
        "channel": rng.choice(CHANNELS, n),
        "job_title": rng.choice(TITLES, n),
        "visits": rng.integers(0, 30, n).astype(float),
        "budget": np.round(rng.gamma(2.0, 20.0, n), 3),
        "email": [f"p{i}@{'gmail.com' if i % 3 else 'acme.io'}" for i in range(n)],
        "phone": [None if i % 4 == 0 else f"+1555{i:07d}" for i in range(n)],
    })


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model with categorical, derived (title, email, phone) and numeric inputs."""
    leads = make_leads(3000, seed=1)
    builder = FeatureBuilder(
        categorical=["channel"], numeric=["visits", "budget"],
        derive={"job_title": "job_title", "email": "email", "phone": "phone"},
    ).fit(leads)
    x = builder.transform(leads)
    logit = -1.0 + 0.08 * leads["visits"].to_numpy() + (leads["channel"] == "referral") * 1.2 + (
        leads["job_title"].isin(["CEO", "VP Sales"])) * 0.9 - 0.01 * leads["budget"].to_numpy()
    y = (np.random.default_rng(2).random(len(leads)) < 1 / (1 + np.exp(-logit))).astype(int)
    return save_small_bundle(builder, x, y, "fast-test",
                             tmp_path_factory.mktemp("fast") / "bundle")


def messy(n: int) -> pa.Table:
    """Leads as a CRM exports them: text everywhere, blanks, padding, unknown categories,
    missing cells, and a few rows that cannot be scored (bad numbers, no id)."""
    frame = make_leads(n, seed=7).astype({"visits": object, "budget": object})
    frame["visits"] = [None if i % 11 == 0 else str(v) for i, v in enumerate(frame["visits"])]
    frame["budget"] = [str(v) for v in frame["budget"]]
    frame.loc[::9, "channel"] = None
    frame.loc[3::17, "channel"] = "  web "  # padding: the same level as "web"
    frame.loc[5::19, "channel"] = "carrier pigeon"  # never seen in training
    frame.loc[6::23, "channel"] = ""
    frame.loc[2::13, "job_title"] = None
    frame.loc[4::29, "job_title"] = "   "
    frame.loc[8::31, "job_title"] = "Chief Wizard"
    frame.loc[1::37, "email"] = "not an address"
    frame.loc[10::41, "email"] = None
    frame.loc[12::43, "phone"] = " "
    frame.loc[7::101, "budget"] = "abc"  # rejected: not a number
    frame.loc[9::103, "budget"] = "1e400"  # rejected: out of range
    frame.loc[11::107, "lead_id"] = " "  # rejected: no id
    return pa.Table.from_pandas(frame, preserve_index=False)


def test_dictionary_columns_encode_as_text_does(folder: Path) -> None:
    bundle = load_bundle(folder)
    table = messy(3000)
    # the rows batch scoring rejects (text that is no number) aside: encoding refuses them
    numbers = pa.array(make_leads(3000, seed=7)["budget"])
    table = table.set_column(table.column_names.index("budget"), "budget", numbers)
    as_dictionaries = table
    for name in ("channel", "job_title", "email", "phone"):
        index = table.column_names.index(name)
        as_dictionaries = as_dictionaries.set_column(index, name,
                                                     pc.dictionary_encode(table.column(name)))
    plain = bundle.builder.transform(table)
    fast = bundle.builder.transform(as_dictionaries)
    assert np.isnan(plain).any()
    np.testing.assert_array_equal(fast, plain)


@pytest.mark.slow
def test_fast_path_writes_the_plain_paths_file(folder: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    table = messy(12_000)
    src = tmp_path / "leads.parquet"
    pq.write_table(table, src, row_group_size=5000)
    monkeypatch.setattr(rescore_module, "COMPILE_MIN_ROWS", 0)

    fast = load_bundle(folder)
    assert open_source(src, fast).dictionary == ["channel", "job_title"]
    compiled.compile_model(fast.booster, fast.meta)  # in LEADSCORE_HOME's cache: the job finds it
    fast_summary = rescore(fast, src, tmp_path / "fast.parquet", chunk_rows=3000,
                           scored_at=SCORED_AT)
    if compiled.available() is None:
        assert fast.compiled_ is not None and fast.compiled_.checked
        assert not fast.compiled_.broken

    with monkeypatch.context() as patch:  # the plain path: text read as text, LightGBM alone
        patch.setattr(sources_module, "dictionary_columns", lambda *a, **k: [])
        plain = load_bundle(folder)
        assert open_source(src, plain).dictionary == []
        plain_summary = rescore(plain, src, tmp_path / "plain.parquet", chunk_rows=3000,
                                scored_at=SCORED_AT, compiled=False)
        assert plain.compiled_ is None

    assert (fast_summary.rows, fast_summary.scored, fast_summary.rejected) == (
        plain_summary.rows, plain_summary.scored, plain_summary.rejected)
    bad = {*range(7, 12_000, 101), *range(9, 12_000, 103), *range(11, 12_000, 107)}
    assert plain_summary.rejected == len(bad)  # not a number, out of range, no id
    got = pq.read_table(tmp_path / "fast.parquet")
    expected = pq.read_table(tmp_path / "plain.parquet")
    assert got.schema == expected.schema
    assert got.num_rows == 12_000 - plain_summary.rejected
    np.testing.assert_allclose(got.column("probability").to_numpy(),
                               expected.column("probability").to_numpy(), rtol=0, atol=1e-9)
    for column in got.column_names:
        if column != "probability":
            assert got.column(column).equals(expected.column(column)), column
    # the unknown and missing categories were scored, not rejected
    scored = set(got.column("lead_id").to_pylist())
    assert {table.column("lead_id")[i].as_py() for i in (5, 6, 8)} <= scored
    rejects = [pacsv.read_csv(tmp_path / f"{name}.parquet.rejects.csv") for name in ("fast",
                                                                                   "plain")]
    assert rejects[0].equals(rejects[1])
    summaries = [json.loads((tmp_path / f"{name}.parquet.summary.json").read_text())
                 for name in ("fast", "plain")]
    assert summaries[0]["drift"] == summaries[1]["drift"]
