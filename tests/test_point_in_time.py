"""The training table holds nothing from after a lead's as-of time; labels follow the horizon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from leadscore.config import load_spec
from leadscore.data import ID, LABEL
from leadscore.table import build_table


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


LEADS = pd.DataFrame(
    {
        "lead_id": ["A", "B", "C", "D", "E"],
        "created_at": ["2024-01-01", "2024-01-01", "2024-01-01", "2024-03-20", "2024-01-10"],
        "source": ["web", "event", "web", "event", "referral"],
        "job_title": [
            "VP of Sales",
            "Software Engineer",
            "Chief Executive Officer",
            "Marketing Manager",
            "Sales Intern",
        ],
        "email": ["ann@acme-corp.com", "bob@gmail.com", "", "dee@globex.io", "not-an-email"],
        "phone": ["+1 555 0100", "", "+44 20 7946 0000", "", ""],
        "budget": ["yes", "", "no", "", "yes"],
        "need": ["high", "low", "", "", "high"],
    }
)
# A converts within the 30-day horizon, B after it, C never (old enough to count as a loss),
# D never but is only 12 days old at the cut-off, E converts before its as-of time (day 5 < 7)
CONVERSIONS = pd.DataFrame(
    {"lead_id": ["A", "B", "E"], "converted_at": ["2024-01-20", "2024-03-01", "2024-01-15"]}
)
ACTIVITIES = pd.DataFrame(
    {
        "lead_id": ["A", "A", "A", "B", "C", "D"],
        "timestamp": [
            "2024-01-02",
            "2024-01-05",
            "2024-01-09",
            "2024-01-03",
            "2024-01-06",
            "2024-03-21",
        ],
        "type": [
            "demo_request",
            "call_unanswered",
            "demo_request",
            "web_visit",
            "call_unanswered",
            "web_visit",
        ],
        "channel": ["web", "phone", "web", "web", "phone", "web"],
    }
)


def _spec(folder: Path, activities: pd.DataFrame = ACTIVITIES, **extra: object) -> Path:
    LEADS.to_csv(folder / "leads.csv", index=False)
    CONVERSIONS.to_csv(folder / "conversions.csv", index=False)
    activities.to_csv(folder / "activities.csv", index=False)
    spec = {
        "name": "pit",
        "leads": {"path": "leads.csv", "id": "lead_id", "created_at": "created_at"},
        "outcome": {
            "table": {"path": "conversions.csv", "id": "lead_id", "converted_at": "converted_at"},
            "horizon_days": 30,
        },
        "as_of_days": 7,
        "cutoff": "2024-04-01",
        "activities": {
            "path": "activities.csv",
            "id": "lead_id",
            "timestamp": "timestamp",
            "type": "type",
            "channel": "channel",
            "windows": [3, 7],
            "min_count": 1,
        },
        "features": {"categorical": ["source", "budget", "need"]},
        "derive": {
            "job_title": "job_title",
            "email": "email",
            "phone": "phone",
            "bant": ["budget", "need"],
        },
        "pii": ["email", "phone"],
        **extra,
    }
    return write_spec(folder / "spec.yaml", spec)


def _row(table: pd.DataFrame, lead: str) -> pd.Series:
    return table.set_index(ID).loc[lead]


def test_horizon_labels_and_exclusions(tmp_path: Path) -> None:
    table, report = build_table(load_spec(_spec(tmp_path)))
    labels = table.set_index(ID)[LABEL]
    assert labels["A"] == 1.0  # converted on day 19, within 30 days
    assert labels["B"] == 0.0  # converted on day 60: outside the horizon
    assert labels["C"] == 0.0  # never converted and older than the horizon
    assert np.isnan(labels["D"])  # 12 days old at the cut-off: may still convert
    assert "E" not in labels.index  # converted before its as-of time: never scored then
    assert report.excluded == {
        "converted before its as-of time (never scored then)": 1,
        "younger than the 30-day horizon at the cut-off": 1,
    }


def test_only_activities_before_as_of_count(tmp_path: Path) -> None:
    table, _ = build_table(load_spec(_spec(tmp_path)))
    a = _row(table, "A")  # as-of = 2024-01-08: the demo request of 01-09 is after it
    assert a["activity.demo_request.7d"] == 1
    assert a["activity.call_unanswered.7d"] == 1
    assert a["activity.demo_request.3d"] == 0  # 01-02 is 6 days before the as-of time
    assert a["activity.call_unanswered.3d"] == 1  # 01-05 is 3 days before: inside [as_of-3, as_of)
    assert a["activity.days_since_last"] == pytest.approx(3.0)
    assert a["activity.first_channel"] == "web"
    assert a["activity.last_channel"] == "phone"
    c = _row(table, "C")
    assert c["activity.web_visit.7d"] == 0 and c["activity.call_unanswered.7d"] == 1


def test_an_activity_after_as_of_changes_no_feature(tmp_path: Path) -> None:
    before, _ = build_table(load_spec(_spec(tmp_path)))
    late = pd.concat(
        [
            ACTIVITIES,
            pd.DataFrame(
                {
                    "lead_id": ["A", "C"],
                    "timestamp": ["2024-01-08", "2024-02-01"],
                    "type": ["demo_request", "web_visit"],
                    "channel": ["event", "event"],
                }
            ),
        ],
        ignore_index=True,
    )
    after, _ = build_table(load_spec(_spec(tmp_path, activities=late)), activity_types=None)
    pd.testing.assert_frame_equal(before, after)


def test_derived_fields_and_no_address_in_features(tmp_path: Path) -> None:
    from leadscore.features import builder_for

    spec = load_spec(_spec(tmp_path))
    table, _ = build_table(spec)
    builder = builder_for(spec, table)
    builder.min_level_count = 1  # five hand-made leads: keep every level
    builder.fit(table)
    names = builder.feature_names_
    assert "email" not in names and "phone" not in names
    assert {
        "job_title.seniority",
        "job_title.department",
        "email.domain",
        "phone.present",
        "bant_answered",
    } <= set(names)
    matrix = pd.DataFrame(builder.transform(table), columns=names, index=table[ID])
    levels = {f.name: f.levels for f in builder.features_}

    def level(lead: str, feature: str) -> str | None:
        code = matrix.loc[lead, feature]
        return None if np.isnan(code) else levels[feature][int(code)]

    assert level("A", "job_title.seniority") == "vp"
    assert level("A", "job_title.department") == "sales"
    assert level("C", "job_title.seniority") == "c_level"
    assert level("A", "email.domain") == "business"
    assert level("B", "email.domain") == "free"
    assert level("C", "email.domain") is None  # empty address: missing, not "invalid"
    assert matrix.loc["A", "phone.present"] == 1 and matrix.loc["B", "phone.present"] == 0
    assert matrix.loc["A", "bant_answered"] == 2 and matrix.loc["D", "bant_answered"] == 0


def test_scoring_table_keeps_every_lead_as_of_one_moment(tmp_path: Path) -> None:
    table, report = build_table(
        load_spec(_spec(tmp_path)), scoring_time=pd.Timestamp("2024-01-10")
    )
    assert sorted(table[ID]) == ["A", "B", "C", "D", "E"]
    a = _row(table, "A")
    assert a["activity.demo_request.7d"] == 1  # 01-09 counts; 01-02 is 8 days before 01-10
    assert a["activity.call_unanswered.7d"] == 1
    assert a["activity.days_since_last"] == pytest.approx(1.0)
    assert _row(table, "D")["activity.web_visit.7d"] == 0  # its visit is in March


def test_dimension_keys_are_normalised(tmp_path: Path) -> None:
    leads = pd.DataFrame(
        {
            "id": ["1", "2", "3"],
            "product": ["GTXPro", " gtx basic", "Unknown"],
            "stage": ["Won", "Lost", "Won"],
        }
    )
    products = pd.DataFrame(
        {"product": ["GTX Pro", "GTX Basic"], "price": [4821, 550], "series": ["GTX", "GTX"]}
    )
    leads.to_csv(tmp_path / "deals.csv", index=False)
    products.to_csv(tmp_path / "products.csv", index=False)
    spec = write_spec(
        tmp_path / "spec.yaml",
        {
            "name": "dims",
            "leads": {"path": "deals.csv", "id": "id"},
            "outcome": {"column": "stage", "positive": ["Won"], "negative": ["Lost"]},
            "features": {"categorical": ["product"]},
            "dimensions": [
                {
                    "name": "product",
                    "path": "products.csv",
                    "key": "product",
                    "lead_key": "product",
                    "numeric": ["price"],
                    "categorical": ["series"],
                }
            ],
        },
    )
    table, report = build_table(load_spec(spec))
    assert table["product.price"].tolist()[:2] == [4821.0, 550.0]
    assert np.isnan(table["product.price"].iloc[2])  # kept, scored as missing
    assert report.notes["unmatched_keys"] == {"product": 1}


def test_unmapped_outcome_value_is_an_error(tmp_path: Path) -> None:
    from leadscore.errors import DataError

    pd.DataFrame(
        {"id": ["1", "2", "3"], "stage": ["Won", "Lost", "Negotiation"], "x": ["a", "b", "c"]}
    ).to_csv(tmp_path / "deals.csv", index=False)
    spec = write_spec(
        tmp_path / "spec.yaml",
        {
            "name": "stages",
            "leads": {"path": "deals.csv", "id": "id"},
            "outcome": {
                "column": "stage",
                "positive": ["Won"],
                "negative": ["Lost"],
                "open": ["Prospecting"],
            },
            "features": {"categorical": ["x"]},
        },
    )
    with pytest.raises(DataError, match=r"'stage' has 1 value\(s\) mapped to none.*'Negotiation'"):
        build_table(load_spec(spec))


def test_email_domain_rule_is_the_same_on_both_paths() -> None:
    """Big batches classify domains in Arrow, single leads in Python: they must agree."""
    import random
    import string

    from leadscore.derive import email_domain_type
    from leadscore.features import FeatureBuilder

    rnd = random.Random(0)
    emails = [
        "ann@acme.com",
        "BOB@Gmail.com",
        " x@y.org ",
        "not-an-email",
        "@nolocal.com",
        "a@b",
        "a@b c.com",
        "a@@gmail.com",
        "",
        None,
        "Select",
        "z@hotmail.co.uk",
    ]
    emails += [
        "".join(rnd.choice("ab@. c" + string.ascii_letters) for _ in range(rnd.randint(0, 12)))
        for _ in range(300)
    ]
    builder = FeatureBuilder(
        derive={"email": "email"}, missing_values=["", "Select"], min_level_count=1
    ).fit(pd.DataFrame({"email": emails}))
    levels = builder.features_[0].levels
    big = builder.transform(pd.DataFrame({"email": emails}))[:, 0]
    for i, email in enumerate(emails):
        expected = (
            None if email is None or email.strip() in {"", "Select"} else email_domain_type(email)
        )
        got = None if np.isnan(big[i]) else levels[int(big[i])]
        assert got == expected, email
        small = builder.transform({"email": [email]})[0, 0]
        assert (np.isnan(small) and np.isnan(big[i])) or small == big[i]
