"""The synthetic CRM: reproducible, internally consistent, and with the outcome directions the
model tests rely on (a demo request helps, an unanswered call hurts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore import synth
from leadscore.config import load_spec, project_root
from leadscore.data import ID, TIME, load_activities, load_conversions, load_leads

AS_OF_DAYS = 14
LEAD_COLUMNS = [
    "lead_id", "created_at", "name", "email", "phone", "source_channel", "job_title",
    "seniority", "industry", "company_size", "country", "budget", "authority", "need",
    "timeline", "stage_at_creation", "converted", "converted_at",
]  # fmt: skip


@pytest.fixture(scope="module")
def data() -> synth.SynthData:
    """20k leads: enough for the base rate to be within a point or two of the target."""
    return synth.generate(20_000, seed=11, as_of_days=AS_OF_DAYS)


@pytest.fixture(scope="module")
def small() -> synth.SynthData:
    return synth.generate(1_500, seed=3)


def early_counts(data: synth.SynthData, kind: str) -> pd.Series:
    """Per lead, how many `kind` activities fell in the first AS_OF_DAYS (what the logit saw)."""
    acts = data.activities
    lead = acts["lead_id"].cat.codes.to_numpy()
    created = data.leads["created_at"].to_numpy()[lead]
    early = (acts["timestamp"].to_numpy() < created + np.timedelta64(AS_OF_DAYS, "D")) & (
        acts["type"].to_numpy() == kind
    )
    return pd.Series(np.bincount(lead[early], minlength=len(data.leads)))


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_frames() -> None:
    first, second = synth.generate(1_000, seed=5), synth.generate(1_000, seed=5)
    for table in ("leads", "activities", "conversions", "truth"):
        pd.testing.assert_frame_equal(getattr(first, table), getattr(second, table))


def test_different_seed_gives_different_frames(small: synth.SynthData) -> None:
    other = synth.generate(len(small.leads), seed=4)
    assert not small.leads.equals(other.leads)
    assert not np.allclose(small.truth["p_true"], other.truth["p_true"])
    assert len(small.activities) != len(other.activities)


@pytest.mark.parametrize(
    "kwargs", [{"n_leads": 0}, {"n_leads": 10, "days": 0}, {"n_leads": 10, "as_of_days": 0}]
)
def test_rejects_impossible_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        synth.generate(**kwargs)


# --------------------------------------------------------------------------- the leads table


def test_leads_columns_ids_and_clock(data: synth.SynthData) -> None:
    leads = data.leads
    assert list(leads.columns) == LEAD_COLUMNS
    assert leads["lead_id"].is_unique
    assert leads["lead_id"].str.fullmatch(r"L\d{7}").all()
    assert leads["lead_id"].iloc[0] == "L0000001"
    assert leads["created_at"].is_monotonic_increasing
    start = pd.Timestamp("2024-01-01")
    assert leads["created_at"].min() >= start
    assert leads["created_at"].max() < start + pd.Timedelta(days=540)
    assert (leads["created_at"].dt.microsecond == 0).all()
    assert leads["created_at"].dt.second.nunique() == 60  # random times, not midnight


def test_categorical_domains(data: synth.SynthData) -> None:
    leads = data.leads
    allowed = {
        "source_channel": {
            "direct", "organic_search", "paid_search", "social", "email", "referral",
            "referral_programme", "event", "cold_outbound",
        },
        "seniority": {"intern", "individual", "manager", "director", "vp", "c_level"},
        "company_size": {"1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+"},
        "budget": {"yes", "no", "unknown"},
        "authority": {"yes", "no"},
        "need": {"low", "medium", "high"},
        "timeline": {"now", "this_quarter", "this_year", "none"},
        "stage_at_creation": {"subscriber", "lead", "mql", "sql"},
    }  # fmt: skip
    for column, values in allowed.items():
        assert set(leads[column].dropna().unique()) == values, column
    assert 8 <= leads["industry"].nunique() <= 10
    assert 10 <= leads["country"].nunique() <= 15
    assert leads["country"].value_counts(normalize=True).iloc[0] > 0.3  # skewed


def test_seniority_follows_job_title(data: synth.SynthData) -> None:
    per_title = data.leads.groupby("job_title", observed=True)["seniority"].nunique()
    assert (per_title == 1).all()
    titles = set(data.leads["job_title"])
    assert {"VP of Sales", "Marketing Manager", "Software Engineer", "CTO"} <= titles


def test_missing_shares_look_like_a_crm(data: synth.SynthData) -> None:
    missing = data.leads.isna().mean()
    assert 0.07 < missing["email"] < 0.13
    assert 0.26 < missing["phone"] < 0.34
    for column in ("budget", "authority", "need", "timeline"):
        assert 0.28 < missing[column] < 0.55, column
    for column in ("lead_id", "created_at", "name", "source_channel", "job_title", "country"):
        assert missing[column] == 0, column


def test_emails_mix_business_and_free_mail(data: synth.SynthData) -> None:
    domains = data.leads["email"].dropna().str.split("@").str[1]
    free = domains.isin(["gmail.com", "yahoo.com", "hotmail.com", "outlook.com"])
    assert 0.1 < free.mean() < 0.5
    assert domains[~free].nunique() > 100
    assert data.leads["phone"].dropna().str.fullmatch(r"\+\d{1,3} 555 \d{4} \d{3}").all()


# --------------------------------------------------------------------------- outcome


def test_base_rate_near_a_quarter_and_stable(data: synth.SynthData) -> None:
    converted = data.leads["converted"]
    assert set(converted.unique()) == {0, 1}
    assert 0.22 <= converted.mean() <= 0.28
    halves = np.array_split(converted.to_numpy(), 2)  # leads are in time order
    assert abs(halves[0].mean() - halves[1].mean()) < 0.03


def test_p_true_is_a_probability_matching_the_observed_rate(data: synth.SynthData) -> None:
    truth = data.truth
    assert truth["lead_id"].equals(data.leads["lead_id"])
    p = truth["p_true"]
    assert ((p > 0) & (p < 1)).all()
    assert abs(p.mean() - data.leads["converted"].mean()) < 0.015
    # informative: converters had clearly higher true probabilities
    by_outcome = p.groupby(data.leads["converted"]).mean()
    assert by_outcome[1] - by_outcome[0] > 0.25


def test_converted_at_iff_converted_and_conversions_match(data: synth.SynthData) -> None:
    leads = data.leads
    converted = leads["converted"] == 1
    assert (leads["converted_at"].notna() == converted).all()
    assert (leads.loc[converted, "converted_at"] > leads.loc[converted, "created_at"]).all()
    expected = leads.loc[converted, ["lead_id", "converted_at"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(data.conversions, expected)
    delay = leads.loc[converted, "converted_at"] - leads.loc[converted, "created_at"]
    early = (delay < pd.Timedelta(days=AS_OF_DAYS)).mean()
    assert 0.02 < early < 0.09  # ~5% convert inside the as-of window


@pytest.mark.parametrize("kind", ["demo_request", "free_trial_start"])
def test_good_early_activity_raises_p_true(data: synth.SynthData, kind: str) -> None:
    did = early_counts(data, kind) > 0
    p = data.truth["p_true"]
    assert did.sum() > 100
    assert p[did].mean() > p[~did].mean() + 0.15


def test_unanswered_calls_lower_p_true(data: synth.SynthData) -> None:
    unanswered = early_counts(data, "call_unanswered") > 0
    p = data.truth["p_true"]
    assert p[unanswered].mean() < p[~unanswered].mean()


# --------------------------------------------------------------------------- activities


def test_activities_belong_to_leads_and_follow_creation(data: synth.SynthData) -> None:
    acts, leads = data.activities, data.leads
    assert list(acts.columns) == ["lead_id", "timestamp", "type", "channel"]
    assert acts["lead_id"].isin(leads["lead_id"]).all()
    assert 15 <= len(acts) / len(leads) <= 25
    created = acts["lead_id"].map(leads.set_index("lead_id")["created_at"])
    after = acts["timestamp"] - created
    assert (after >= pd.Timedelta(0)).all()
    assert (after < pd.Timedelta(days=61)).all()
    # a decaying rate: the first two weeks are busier than the last two of the horizon
    assert (after < pd.Timedelta(days=14)).sum() > 3 * (after >= pd.Timedelta(days=46)).sum()
    codes = acts["lead_id"].cat.codes.to_numpy()
    assert (np.diff(codes) >= 0).all()
    assert set(acts["type"].unique()) == {
        "web_visit", "pricing_page_view", "form_fill", "email_open", "email_click",
        "demo_request", "free_trial_start", "call_answered", "call_unanswered",
    }  # fmt: skip
    assert set(acts["channel"].unique()) <= {"web", "email", "phone", "event"}


def test_activity_after_conversion_is_thinner(data: synth.SynthData) -> None:
    leads = data.leads.set_index("lead_id")
    acts = data.activities
    converted_at = acts["lead_id"].map(leads["converted_at"])
    created = acts["lead_id"].map(leads["created_at"])
    late = acts["timestamp"] - created >= pd.Timedelta(days=AS_OF_DAYS)
    converter = converted_at.notna()
    assert (acts["timestamp"] > converted_at).any()  # customers still show up, just less
    # converters are busier early on, but their late activity (mostly after converting) is
    # thinned, so it is a smaller share of their early activity than for everyone else
    ratio_converters = (late & converter).sum() / (~late & converter).sum()
    ratio_others = (late & ~converter).sum() / (~late & ~converter).sum()
    assert ratio_converters < 0.85 * ratio_others


# --------------------------------------------------------------------------- writing


def test_write_csv_round_trips(small: synth.SynthData, tmp_path: Path) -> None:
    paths = synth.write(small, tmp_path / "out", fmt="csv")
    assert {table: path.name for table, path in paths.items()} == {
        "leads": "leads.csv",
        "activities": "activities.csv",
        "conversions": "conversions.csv",
        "truth": "truth.csv",
    }
    for table, path in paths.items():
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert len(frame) == len(getattr(small, table)), table
    leads = pd.read_csv(paths["leads"], dtype=str, keep_default_na=False)
    assert list(leads.columns) == LEAD_COLUMNS
    assert leads["lead_id"].tolist() == small.leads["lead_id"].tolist()
    assert leads["created_at"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").all()
    assert (pd.to_datetime(leads["created_at"]) == small.leads["created_at"]).all()
    assert ((leads["email"] == "") == small.leads["email"].isna()).all()
    assert ((leads["converted_at"] == "") == (leads["converted"] == "0")).all()
    assert (leads["job_title"] == small.leads["job_title"]).all()  # commas survive quoting
    truth = pd.read_csv(paths["truth"])
    np.testing.assert_allclose(truth["p_true"], small.truth["p_true"], rtol=1e-12)
    acts = pd.read_csv(paths["activities"], parse_dates=["timestamp"])
    assert (acts["timestamp"] == small.activities["timestamp"]).all()


def test_write_parquet_round_trips(small: synth.SynthData, tmp_path: Path) -> None:
    paths = synth.write(small, tmp_path, fmt="parquet")
    assert sorted(path.name for path in paths.values()) == [
        "activities.parquet", "conversions.parquet", "leads.parquet", "truth.parquet",
    ]  # fmt: skip
    for table, path in paths.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), getattr(small, table))


# --------------------------------------------------------------------------- the dataset spec


def test_synthetic_spec_loads_and_reads_written_tables(
    small: synth.SynthData, tmp_path: Path
) -> None:
    """The real spec, copied next to freshly written data, reads every table it names."""
    source = project_root() / "configs" / "synthetic.yaml"
    spec = load_spec(source)
    assert spec.resolve(spec.leads.path) == project_root() / "data" / "synthetic" / "leads.csv"
    columns = set(small.leads.columns)
    assert set(spec.feature_columns) <= columns
    assert set(spec.drop) | set(spec.pii) <= columns
    assert "converted_at" in spec.drop and spec.derive.job_title == "job_title"
    assert spec.activities is not None and spec.outcome.table is not None

    synth.write(small, tmp_path / "data" / "synthetic", fmt="csv")
    (tmp_path / "configs").mkdir()
    copy = tmp_path / "configs" / "synthetic.yaml"
    shutil.copy(source, copy)
    spec = load_spec(copy)
    leads, report = load_leads(spec)
    assert report.rows_read == len(leads) == len(small.leads)
    assert leads[ID].tolist() == small.leads["lead_id"].tolist()
    assert (leads[TIME].to_numpy() == small.leads["created_at"].to_numpy()).all()
    if spec.outcome.column is not None:
        assert report.positives == int(small.leads["converted"].sum())
    if spec.outcome.table is not None:
        conversions = load_conversions(spec)
        assert set(conversions[ID]) == set(small.conversions["lead_id"])
    if spec.activities is not None:
        assert load_activities(spec).num_rows == len(small.activities)
