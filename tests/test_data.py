"""Reading raw lead tables: every failure is a DataError naming the file, the column and the rows,
and never a value from the data (it may be an email address)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from leadscore.config import DatasetSpec, load_spec, project_root
from leadscore.data import ID, LABEL, ROW, TIME, check_ready, load_leads
from leadscore.errors import DataError

CANARY = "canary.7f3a9@example.com"

HEADER = "lead_id,created_at,source,country,visits,status,email"
ROWS = [
    "L1,2024-01-02 09:00,web,FR,3,Won,a@x.com",
    "L2,2024-01-03 10:30,event,DE,0,Lost,b@x.com",
    "L3,2024-01-04,web,FR,1,Lost,c@x.com",
    "L4,2024-01-05T12:00:00Z,referral,ES,7,Won,d@x.com",
    "L5,2024-01-06,web,,2,Open,e@x.com",
    "L6,2024-01-07,event,FR,,Lost,f@x.com",
]


def spec_dict(path: Path, **changes: object) -> dict:
    spec: dict = {
        "name": "crm",
        "leads": {"path": str(path), "id": "lead_id", "created_at": "created_at"},
        "outcome": {
            "column": "status", "positive": ["Won"], "negative": ["Lost"], "open": ["Open"]
        },
        "features": {"categorical": ["source", "country"], "numeric": ["visits"]},
        "pii": ["email"],
        "train": {"min_per_class": 1},
    }
    spec.update(changes)
    return spec


def make(
    tmp_path: Path,
    lines: list[str] | None = None,
    *,
    header: str = HEADER,
    sep: str = ",",
    encoding: str = "utf-8",
    name: str = "leads.csv",
    **changes: object,
) -> tuple[DatasetSpec, Path]:
    """Write a lead file and a spec for it; returns the loaded spec and the file's path."""
    path = tmp_path / name
    text = "\n".join([header, *(ROWS if lines is None else lines)]) + "\n"
    path.write_bytes(text.replace(",", sep).encode(encoding))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict(path, **changes)), encoding="utf-8")
    return load_spec(spec_path), path


def data_error(spec: DatasetSpec) -> str:
    with pytest.raises(DataError) as info:
        load_leads(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_comma_file_loads_typed_and_labelled(tmp_path: Path) -> None:
    spec, _ = make(tmp_path)
    leads, report = load_leads(spec)
    assert list(leads[ID]) == ["L1", "L2", "L3", "L4", "L5", "L6"]
    assert list(leads[ROW]) == [1, 2, 3, 4, 5, 6]
    assert leads["visits"].dtype == np.float64
    assert leads["visits"].iloc[3] == 7.0 and np.isnan(leads["visits"].iloc[5])
    assert leads[TIME].iloc[0] == pd.Timestamp("2024-01-02 09:00")
    assert leads[TIME].iloc[3] == pd.Timestamp("2024-01-05 12:00")  # UTC, made naive
    assert "email" not in leads.columns, "PII columns are not carried into the leads stage"
    assert report.rows_read == 6


def test_semicolon_delimiter_is_detected(tmp_path: Path) -> None:
    spec, _ = make(tmp_path, sep=";")
    leads, _ = load_leads(spec)
    assert len(leads) == 6
    assert list(leads["source"])[:4] == ["web", "event", "web", "referral"]


def test_utf8_with_bom(tmp_path: Path) -> None:
    lines = ["L1,2024-01-02,café,FR,3,Won,a@x.com", *ROWS[1:]]
    spec, path = make(tmp_path, lines, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    leads, _ = load_leads(spec)
    assert leads[ID].iloc[0] == "L1", "the BOM must not stick to the first header"
    assert leads["source"].iloc[0] == "café"


def test_latin1_keeps_the_accented_category(tmp_path: Path) -> None:
    lines = ["L1,2024-01-02,café,FR,3,Won,a@x.com", *ROWS[1:]]
    spec, path = make(tmp_path, lines, encoding="latin-1", sep=";")
    assert b"caf\xe9" in path.read_bytes()
    leads, _ = load_leads(spec)
    assert leads["source"].iloc[0] == "café"


def test_missing_file(tmp_path: Path) -> None:
    spec, path = make(tmp_path)
    path.unlink()
    message = data_error(spec)
    assert message == f"{path}: file not found"


def test_empty_file(tmp_path: Path) -> None:
    spec, path = make(tmp_path)
    path.write_bytes(b"")
    assert data_error(spec) == f"{path}: file is empty"


def test_header_only_file(tmp_path: Path) -> None:
    spec, path = make(tmp_path, [])
    message = data_error(spec)
    assert message == f"{path}: has a header but no data rows"


def test_spec_column_missing_from_the_file_suggests_the_nearest(tmp_path: Path) -> None:
    spec, path = make(
        tmp_path, features={"categorical": ["sourse", "country"], "numeric": ["visits"]}
    )
    message = data_error(spec)
    assert str(path) in message
    assert "column(s) not in the file: 'sourse' (did you mean 'source'?)" in message


def test_duplicate_ids_are_counted_with_their_lines(tmp_path: Path) -> None:
    lines = [ROWS[0], ROWS[1], ROWS[0].replace("Won", "Lost"), ROWS[2], ROWS[1]]
    spec, _ = make(tmp_path, lines)
    message = data_error(spec)
    # L1 on lines 2 and 4, L2 on lines 3 and 6 (the header is line 1): two extra copies
    assert "id column 'lead_id' has 2 duplicate value(s) (line(s) 2, 3, 4, 6)" in message


def test_non_numeric_value_names_column_and_line_but_not_the_value(tmp_path: Path) -> None:
    lines = [*ROWS[:2], f"L3,2024-01-04,web,FR,{CANARY},Lost,c@x.com", *ROWS[3:]]
    spec, _ = make(tmp_path, lines)
    message = data_error(spec)
    assert (
        "column 'visits' should be numeric but 1 value(s) are not numbers (line(s) 4)"
    ) in message
    assert CANARY not in message
    assert "canary" not in message


@pytest.mark.parametrize(
    ("cells", "shape"),
    [
        (['"$2,400.00"', "$35", '"€ 1.250,50"'], "currency amounts"),
        (["12%", "7.5 %", "100%"], "percentages"),
        (['"2,500"', '"12,000,000"', '"3,400.25"'], "thousands separators"),
        (['"0,25"', '"12,75"', '"3,0"'], "decimal comma"),
        (["lots", "a few", "many"], "list it under features.categorical"),
    ],
)
def test_non_numeric_values_get_a_hint_from_their_shape(tmp_path: Path, cells: list[str],
                                                         shape: str) -> None:
    def with_visits(row: str, cell: str) -> str:
        parts = row.split(",")
        parts[4] = cell
        return ",".join(parts)

    lines = [ROWS[0], *(with_visits(r, c) for r, c in zip(ROWS[1:4], cells, strict=True)),
             *ROWS[4:]]
    spec, _ = make(tmp_path, lines)
    message = data_error(spec)
    assert "column 'visits' should be numeric but 3 value(s)" in message
    assert shape in message
    for cell in cells:
        assert cell.strip('"') not in message, "the message describes, never quotes"


def test_unparseable_timestamp(tmp_path: Path) -> None:
    lines = [*ROWS[:4], "L5,sometime in may,web,,2,Open,e@x.com", ROWS[5]]
    spec, _ = make(tmp_path, lines)
    message = data_error(spec)
    assert "column 'created_at' has 1 empty or unparseable timestamp(s) (line(s) 6)" in message
    assert "sometime" not in message


def test_future_timestamp(tmp_path: Path) -> None:
    lines = [ROWS[0], "L2,2999-01-01,event,DE,0,Lost,b@x.com", *ROWS[2:]]
    spec, _ = make(tmp_path, lines)
    message = data_error(spec)
    assert "column 'created_at' has 1 timestamp(s) in the future (line(s) 3)" in message


def test_all_empty_feature_column(tmp_path: Path) -> None:
    lines = [",".join(row.split(",")[:3] + ["", *row.split(",")[4:]]) for row in ROWS]
    spec, _ = make(tmp_path, lines)
    message = data_error(spec)
    assert "feature column(s) ['country'] are empty on every row" in message


def test_outcome_positive_negative_and_open(tmp_path: Path) -> None:
    spec, _ = make(tmp_path)
    leads, report = load_leads(spec)
    labels = dict(zip(leads[ID], leads[LABEL], strict=True))
    assert labels["L1"] == 1.0 and labels["L4"] == 1.0
    assert labels["L2"] == 0.0 and labels["L3"] == 0.0 and labels["L6"] == 0.0
    assert np.isnan(labels["L5"]), "an open lead is kept, unlabelled"
    assert len(leads) == 6
    assert (report.labelled, report.positives, report.open) == (5, 2, 1)
    assert report.as_dict()["unusable"] == {"open outcome (scorable, not trained on)": 1}


def test_outcome_without_negative_list_counts_the_rest_as_lost(tmp_path: Path) -> None:
    spec, _ = make(tmp_path, outcome={"column": "status", "positive": ["Won"]})
    leads, report = load_leads(spec)
    assert list(leads[LABEL]) == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert report.open == 0


def test_outcome_that_never_converts(tmp_path: Path) -> None:
    spec, _ = make(
        tmp_path, outcome={"column": "status", "positive": ["Converted"], "negative": []}
    )
    message = data_error(spec)
    assert "outcome column 'status' never holds a positive value ['Converted']" in message


def test_missing_values_become_missing(tmp_path: Path) -> None:
    lines = [
        "L1,2024-01-02,Select,FR,3,Won,a@x.com",
        "L2,2024-01-03, Select ,DE,Select,Lost,b@x.com",
        *ROWS[2:],
    ]
    spec, _ = make(tmp_path, lines)
    with pytest.raises(DataError, match="'visits' should be numeric"):
        load_leads(spec)  # without the spec saying so, "Select" is not a number

    leads_spec = dict(spec_dict(tmp_path / "leads.csv")["leads"], missing_values=["", "Select"])
    spec, _ = make(tmp_path, lines, leads=leads_spec)
    leads, _ = load_leads(spec)
    assert pd.isna(leads["source"].iloc[0]) and pd.isna(leads["source"].iloc[1])
    assert np.isnan(leads["visits"].iloc[1])
    assert pd.isna(leads["country"].iloc[4]), "the empty string is still missing"
    assert leads["source"].iloc[2] == "web"


def test_readiness_check_reports_the_counts(tmp_path: Path) -> None:
    spec, path = make(tmp_path, train={"min_per_class": 3})
    leads, report = load_leads(spec)
    with pytest.raises(DataError) as info:
        check_ready(leads, spec, report.file)
    message = str(info.value)
    assert message.startswith(str(path))
    assert (
        "column 'status' has 2 converted and 3 not-converted labelled leads; "
        "training needs at least 3 of each (train.min_per_class in the spec)"
    ) in message


def test_readiness_check_passes_with_enough_of_each(tmp_path: Path) -> None:
    spec, _ = make(tmp_path, train={"min_per_class": 2})
    leads, report = load_leads(spec)
    check_ready(leads, spec, report.file)  # no error


@pytest.fixture(scope="module")
def bank() -> tuple[DatasetSpec, pd.DataFrame, object]:
    spec = load_spec(project_root() / "configs" / "bank_marketing.yaml")
    leads, report = load_leads(spec)
    return spec, leads, report


def test_bank_marketing_loads_the_committed_file(bank: tuple) -> None:
    spec, leads, report = bank
    assert spec.resolve(spec.leads.path) == (
        project_root() / "data" / "raw" / "bank_marketing" / "bank-additional-full.csv"
    )
    assert len(leads) == 41_188
    assert report.rows_read == 41_188
    assert report.positives == 4_640
    assert report.labelled == 41_188 and report.open == 0
    assert int((leads[LABEL] == 1).sum()) == 4_640


def test_bank_marketing_drops_duration(bank: tuple) -> None:
    spec, leads, _ = bank
    assert "duration" not in spec.feature_columns
    assert "duration" not in leads.columns
    assert "age" in spec.feature_columns and leads["age"].dtype == np.float64
    # no id column: the lead id is the row number; file order is time
    assert list(leads[ID].iloc[:3]) == ["1", "2", "3"]
    assert leads[TIME].is_monotonic_increasing
