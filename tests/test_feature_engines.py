"""The duckdb and spark feature engines build exactly the local engine's table (columns, dtypes,
values, report) on the synthetic CRM, edge cases added; a wrong engine name is one plain line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_point_in_time import write_spec
from typer.testing import CliRunner

from leadscore import cli, synth
from leadscore.config import get_settings, load_spec
from leadscore.data import ID
from leadscore.errors import DataError, LeadscoreError, SpecError
from leadscore.feature_engines import check_engine
from leadscore.table import build_table

AS_OF_DAYS = 14
SPEC = {
    "name": "engines",
    "leads": {"path": "leads.csv", "id": "lead_id", "created_at": "created_at"},
    "outcome": {
        "table": {"path": "conversions.csv", "id": "lead_id", "converted_at": "converted_at"},
        "horizon_days": 90,
    },
    "as_of_days": AS_OF_DAYS,
    "activities": {
        "path": "activities.csv",
        "id": "lead_id",
        "timestamp": "timestamp",
        "type": "type",
        "channel": "channel",
        "windows": [7, 14],
        "min_count": 20,
    },
    "features": {"categorical": ["source_channel", "industry", "country"]},
    "derive": {"job_title": "job_title", "email": "email"},
    "pii": ["name", "email", "phone"],
}


def _iso(stamps: pd.Series) -> pd.Series:
    return pd.to_datetime(stamps).dt.strftime("%Y-%m-%dT%H:%M:%S")


def _edge_cases(leads: pd.DataFrame, log: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The synthetic log plus the rows that tell engines apart, appended out of order (so the
    local engine sorts, and ties in time are broken by position in the file)."""
    created = pd.to_datetime(leads.set_index("lead_id")["created_at"])
    ids = leads["lead_id"].tolist()
    silent = ids[100:160]  # leads left with no activity at all
    tied = ids[200]  # ties in time: first and last touch decided by file order
    log = log[~log["lead_id"].isin([*silent, tied])]
    as_of = {lead: created[lead] + pd.Timedelta(days=AS_OF_DAYS) for lead in ids}
    rows: list[tuple[str, pd.Timestamp, str, str]] = []
    for lead in ids[:30]:
        rows.append((lead, as_of[lead], "demo_request", "web"))  # at the as-of time: left out
        rows.append((lead, as_of[lead] + pd.Timedelta(hours=1), "demo_request", "web"))  # after
        rows.append((lead, as_of[lead] - pd.Timedelta(days=7), "email_open", "email"))  # age 7.0
        rows.append((lead, created[lead], "email_open", "email"))  # age 14.0: inside 14d
    t1 = created[tied] + pd.Timedelta(days=1)
    t2 = created[tied] + pd.Timedelta(days=3)
    rows += [(tied, t2, "page_view", "phone"), (tied, t1, "page_view", "web"),
             (tied, t1, "page_view", "email"), (tied, t2, "page_view", "event")]
    for k, lead in enumerate(ids[300:330]):  # a new type, common enough to become a feature
        rows.append((lead, created[lead] + pd.Timedelta(hours=k + 1), "webinar_attended", ""))
    for lead in ids[400:403]:  # a rare unknown type: counted in totals only
        rows.append((lead, created[lead] + pd.Timedelta(hours=2), "fax_sent", "other"))
    extra = pd.DataFrame(rows, columns=["lead_id", "timestamp", "type", "channel"])
    extra["timestamp"] = _iso(extra["timestamp"])
    odd = pd.DataFrame(
        [
            (ids[500], "", "", "web"),  # missing timestamp: replaced below
            (ids[501], "", "email_open", ""),  # missing channel (first touch may be None)
            ("", "", "page_view", "web"),  # missing lead id
            ("NOT-A-LEAD", "", "page_view", "web"),  # a lead not in the lead table
            (f"  {ids[502]} ", "", " email_open ", " web "),  # surrounding spaces
        ],
        columns=["lead_id", "timestamp", "type", "channel"],
    )
    odd["timestamp"] = _iso(pd.Series([created[ids[500]] + pd.Timedelta(hours=5)] * len(odd)))
    odd.loc[1, "timestamp"] = _iso(pd.Series([created[ids[501]] - pd.Timedelta(hours=1)]))[0]
    log = log.assign(timestamp=_iso(log["timestamp"]))
    return pd.concat([log, extra, odd], ignore_index=True), silent


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 synthetic leads; the activity log as a CSV and as a folder of three Parquet files."""
    folder = tmp_path_factory.mktemp("engines")
    data = synth.generate(1500, seed=11)
    synth.write(data, folder, fmt="csv")
    leads = pd.read_csv(folder / "leads.csv", dtype=str, keep_default_na=False)
    log = data.activities.astype({"lead_id": str, "type": str, "channel": str})
    log, _ = _edge_cases(leads, log)
    log.to_csv(folder / "activities.csv", index=False)
    parts = folder / "activities"
    parts.mkdir()
    typed = log.assign(timestamp=pd.to_datetime(log["timestamp"]))
    for k, chunk in enumerate(np.array_split(np.arange(len(typed)), 3)):
        typed.iloc[chunk].to_parquet(parts / f"part-{k}.parquet", index=False)
    write_spec(folder / "spec.yaml", SPEC)
    parquet = {**SPEC, "activities": {**SPEC["activities"], "path": "activities"}}
    write_spec(folder / "spec-parquet.yaml", parquet)
    return folder


def _same(spec_path: Path, engine: str, **kwargs: object) -> pd.DataFrame:
    spec = load_spec(spec_path)
    want, want_report = build_table(spec, engine="local", **kwargs)  # type: ignore[arg-type]
    got, got_report = build_table(spec, engine=engine, **kwargs)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.equals(want.dtypes)
    assert got_report.as_dict() == want_report.as_dict()
    return want


def test_duckdb_training_table_equals_local(crm: Path) -> None:
    table = _same(crm / "spec.yaml", "duckdb")
    by_id = table.set_index(ID)
    assert "activity.webinar_attended.14d" in table.columns  # 30 before their as-of times
    assert "activity.fax_sent.14d" not in table.columns  # 3 < min_count
    ids = pd.read_csv(crm / "leads.csv", dtype=str)["lead_id"]
    silent = [i for i in ids[100:160] if i in by_id.index]
    assert silent and (by_id.loc[silent, "activity.total.14d"] == 0).all()
    assert by_id.loc[silent, "activity.days_since_last"].isna().all()


def test_duckdb_edge_rows_follow_the_local_rules(crm: Path) -> None:
    """The rules the equality above holds the engines to, spelled out on hand-made rows."""
    spec = load_spec(crm / "spec.yaml")
    table, report = build_table(spec, engine="duckdb", scoring_time=None)
    by_id = table.set_index(ID)
    ids = pd.read_csv(crm / "leads.csv", dtype=str)["lead_id"]
    tied = by_id.loc[ids[200]]
    assert tied["activity.first_channel"] == "web"  # first of the two at t1 in the file
    assert tied["activity.last_channel"] == "event"  # last of the two at t2 in the file
    assert tied["activity.total.14d"] == 4
    skipped = report.notes["activities_skipped"]
    assert skipped["activities for leads not in the lead table"] == 2  # "" and NOT-A-LEAD
    assert skipped["activities at or after the lead's as-of time"] > 60  # ours and synth's


def test_duckdb_parquet_folder_and_scoring_tables(crm: Path) -> None:
    _same(crm / "spec-parquet.yaml", "duckdb")
    _same(crm / "spec-parquet.yaml", "duckdb", scoring_time="cutoff")
    _same(crm / "spec.yaml", "duckdb", scoring_time=pd.Timestamp("2024-09-01"),
          activity_types=["demo_request", "no_such_type", "webinar_attended"])


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8-sig"])
def test_duckdb_reads_a_european_excel_export(crm: Path, tmp_path: Path, encoding: str) -> None:
    """`;`-separated, Latin-1 (or UTF-8 with a byte-order mark), a type with an accent."""
    for name in ("leads.csv", "conversions.csv"):
        shutil.copy(crm / name, tmp_path / name)
    log = pd.read_csv(crm / "activities.csv", dtype=str, keep_default_na=False)
    log.loc[log["type"] == "form_fill", "type"] = "réunion"
    log.to_csv(tmp_path / "activities.csv", index=False, sep=";", encoding=encoding)
    table = _same(write_spec(tmp_path / "spec.yaml", SPEC), "duckdb")
    assert "activity.réunion.7d" in table.columns


def test_duckdb_bad_timestamp_is_one_plain_error(crm: Path, tmp_path: Path) -> None:
    for name in ("leads.csv", "conversions.csv"):
        shutil.copy(crm / name, tmp_path / name)
    log = pd.read_csv(crm / "activities.csv", dtype=str, keep_default_na=False)
    log.loc[5, "timestamp"] = "yesterday"
    log.loc[9, "timestamp"] = ""
    log.to_csv(tmp_path / "activities.csv", index=False)
    spec = load_spec(write_spec(tmp_path / "spec.yaml", SPEC))
    with pytest.raises(DataError, match=r"activities.csv: column 'timestamp' has 2 empty or "
                                        r"unparseable timestamp\(s\)"):
        build_table(spec, engine="duckdb")


def test_wrong_engine_name_is_one_plain_line(crm: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LeadscoreError, match="did you mean 'duckdb'"):
        check_engine("duckb")
    runner = CliRunner()
    for command in ("features", "train"):
        args = [command, "-c", str(crm / "spec.yaml"), "--engine", "duckb"]
        if command == "features":
            args += ["-o", str(tmp_path / "out.parquet")]
        result = runner.invoke(cli.app, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines == ["error: --engine 'duckb' is not a feature engine: choose local, duckdb "
                         "or spark (did you mean 'duckdb'?)"]
    assert not (tmp_path / "out.parquet").exists()
    monkeypatch.setenv("LEADSCORE_FEATURE_ENGINE", "polars")
    get_settings.cache_clear()
    try:
        with pytest.raises(LeadscoreError, match="LEADSCORE_FEATURE_ENGINE 'polars'"):
            build_table(load_spec(crm / "spec.yaml"))
    finally:
        get_settings.cache_clear()
    bad = {**SPEC, "features": {"engine": "polars"}}
    with pytest.raises(SpecError, match="engine"):
        load_spec(write_spec(tmp_path / "bad.yaml", bad))


def test_engine_from_the_spec_and_the_cli(crm: Path, tmp_path: Path) -> None:
    """`features: {engine: duckdb}` in the spec picks the engine; the CLI writes the same file
    either way."""
    spec_path = write_spec(tmp_path / "spec.yaml", {
        **SPEC, "features": {**SPEC["features"], "engine": "duckdb"},
        "leads": {**SPEC["leads"], "path": str(crm / "leads.csv")},
        "outcome": {**SPEC["outcome"], "table": {
            **SPEC["outcome"]["table"], "path": str(crm / "conversions.csv")}},
        "activities": {**SPEC["activities"], "path": str(crm / "activities.csv")},
    })
    runner = CliRunner()
    outputs = {}
    for engine in ("local", None):
        out = tmp_path / f"{engine}.parquet"
        args = ["features", "-c", str(spec_path), "-o", str(out), "--training"]
        result = runner.invoke(cli.app, args + (["--engine", engine] if engine else []))
        assert result.exit_code == 0, result.output
        outputs[engine] = pd.read_parquet(out)
    pd.testing.assert_frame_equal(outputs[None], outputs["local"], check_exact=True)


# --------------------------------------------------------------------------- Spark


@pytest.mark.slow
def test_spark_equals_local(spark, crm: Path) -> None:  # type: ignore[no-untyped-def]
    """local[2]: the training table from the CSV log, the table to score from the Parquet
    folder (as of the data's cut-off), each exactly the local engine's."""
    _same(crm / "spec.yaml", "spark")
    _same(crm / "spec-parquet.yaml", "spark", scoring_time="cutoff")
