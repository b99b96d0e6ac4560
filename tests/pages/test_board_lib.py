"""`leadscore.board` without a server: one latest row per lead with the history's trend, the
cache following the store's files, filters and their errors, reasons from stored features equal
to those given at scoring time, kept columns without personal data, flat CSV, chance words."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pages_helpers import HTML_ID, LEADS, MODEL, make_leads

from leadscore.batch import rescore
from leadscore.board import Board, BoardQuery, add_reasons, board_csv
from leadscore.errors import DataError
from leadscore.history import trend_of
from leadscore.labels import chance_text
from leadscore.scoring import ModelBundle
from leadscore.store import ScoreStore, kept_for_history


@pytest.fixture(scope="module")
def board(scored_home: tuple[Path, Path, ModelBundle, ScoreStore]) -> Board:
    return Board(scored_home[3])


def test_latest_row_per_lead_with_the_history_trend(board: Board) -> None:
    latest = board.latest(MODEL)
    assert latest.num_rows == LEADS and len(set(latest.column("lead_id").to_pylist())) == LEADS
    every = board.store.rows(MODEL, columns=["lead_id", "scored_at", "score"]).to_pylist()
    by_lead: dict[str, list[int]] = {}
    for row in sorted(every, key=lambda r: r["scored_at"]):
        by_lead.setdefault(row["lead_id"], []).append(row["score"])
    for row in latest.to_pylist():
        scores = by_lead[row["lead_id"]]
        assert row["score"] == scores[-1] and row["previous_score"] == scores[-2]
        assert row["trend"] == trend_of(scores)
    assert {r["trend"] for r in latest.to_pylist()} >= {"rising", "steady"}


def test_cache_follows_the_store_files(board: Board, tmp_path: Path) -> None:
    import shutil

    store = ScoreStore(tmp_path / "scores")
    shutil.copytree(board.store.root, store.root)
    mine = Board(store)
    first = mine.latest(MODEL)
    assert mine.latest(MODEL) is first, "unchanged files: the cached table"
    row = first.slice(0, 1).to_pylist()[0]
    extra = pa.table({
        "lead_id": ["NEW1"], "model_version": ["1"],
        "scored_at": pa.array([row["scored_at"]], pa.timestamp("us", tz="UTC")),
        "probability": [0.5], "score": [50], "tier": ["B"]})
    folder = next((store.root / f"model={MODEL}").glob("date=*"))
    pq.write_table(extra, folder / "part-extra-000000.parquet")
    again = mine.latest(MODEL)
    assert again is not first and again.num_rows == first.num_rows + 1


def test_filters_sort_and_pages(board: Board) -> None:
    page = board.page(BoardQuery(MODEL, tiers=("A",), sort="probability", descending=False))
    assert page.total == sum(1 for t in board.latest(MODEL).column("tier").to_pylist()
                             if t == "A")
    probabilities = [r["probability"] for r in page.rows]
    assert probabilities == sorted(probabilities) and {r["tier"] for r in page.rows} == {"A"}
    north = board.page(BoardQuery(MODEL, kept={"region": "north"}, per_page=500))
    assert north.rows and {r["kept"]["region"] for r in north.rows} == {"north"}
    assert board.page(BoardQuery(MODEL, search="<scr")).rows[0]["lead_id"] == HTML_ID
    second = board.page(BoardQuery(MODEL, page=2))
    first = board.page(BoardQuery(MODEL, page=1))
    assert second.pages == 3 and first.rows[-1]["score"] >= second.rows[0]["score"]
    assert not {r["lead_id"] for r in first.rows} & {r["lead_id"] for r in second.rows}


def test_query_errors_name_what_is_wrong(board: Board) -> None:
    with pytest.raises(DataError, match=r"cannot sort by 'scroe'.*did you mean 'score'"):
        board.page(BoardQuery(MODEL, sort="scroe"))
    with pytest.raises(DataError, match=r"no kept column named 'regoin'.*did you mean 'region'"):
        board.page(BoardQuery(MODEL, kept={"regoin": "x"}))
    with pytest.raises(DataError, match="no score history for model 'other'"):
        board.page(BoardQuery("other"))


def test_reasons_from_stored_features_equal_scoring_time(
        scored_home: tuple[Path, Path, ModelBundle, ScoreStore], tmp_path: Path) -> None:
    bundle = scored_home[2]
    frame = make_leads(60, seed=21)
    src = tmp_path / "leads.csv"
    frame.to_csv(src, index=False)
    store = ScoreStore(tmp_path / "scores")
    rescore(bundle, src, tmp_path / "out.parquet", reasons=3, history=store,
            scored_at="2026-02-01T00:00:00+00:00")
    given = {r["lead_id"]: json.loads(r["reasons"])
             for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    mine = Board(store)
    page = mine.page(BoardQuery(MODEL, per_page=60))
    add_reasons(page, mine.features(MODEL, page.table), lambda version: bundle)
    checked = 0
    for row in page.rows:
        assert row["reasons_known"]
        up = [r for r in given[row["lead_id"]] if r["impact"] > 0]
        down = [r for r in given[row["lead_id"]] if r["impact"] < 0]
        assert (row["raiser"]["text"] if row["raiser"] else None) == (
            up[0]["text"] if up else None)
        assert (row["lowerer"]["text"] if row["lowerer"] else None) == (
            down[0]["text"] if down else None)
        checked += 1
    assert checked == 60
    # a bundle that did not give these scores explains nothing rather than something wrong
    other = mine.page(BoardQuery(MODEL, per_page=5))
    from pages_helpers import make_bundle

    stranger = make_bundle(tmp_path / "other", seed=7)
    add_reasons(other, mine.features(MODEL, other.table), lambda version: stranger)
    assert not any(r["reasons_known"] for r in other.rows)


def test_kept_columns_without_personal_data() -> None:
    n = 50
    table = pa.table({
        "lead_id": [f"L{i}" for i in range(n)], "region": ["north"] * n,
        "contact": [f"p{i}@example.com" for i in range(n)],
        "mobile": ["n/a"] * n, "first_name": ["Ann"] * n, "company_name": ["Acme"] * n,
        "notes": [f"call +44 20 7946 {1000 + i}" for i in range(n)],
        "email": ["x"] * n,
    })
    keep = ["lead_id", "region", "contact", "mobile", "first_name", "company_name", "notes",
            "email"]
    assert kept_for_history(keep, table, skip={"lead_id", "email"}) == ["region",
                                                                         "company_name"]


def test_csv_cells_are_flat_and_never_formulas() -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 1, 1, tzinfo=UTC)
    table = pa.table({
        "lead_id": ["=HYPERLINK(\"x\")", "L2"], "score": [90, 10], "tier": ["A", "D"],
        "probability": [0.9, 0.1], "trend": ["rising", "unknown"], "previous_score": [80, None],
        "scored_at": pa.array([when, when], pa.timestamp("us", tz="UTC")),
        "model_version": ["1", "1"], "k_region": ["+north", None]})
    text = "".join(board_csv(table, {"A": "hot", "D": "cold"}, ["region"]))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["lead_id"] == "'=HYPERLINK(\"x\")" and rows[0]["region"] == "'+north"
    assert rows[0]["tier_label"] == "hot" and rows[1]["previous_score"] == ""
    assert float(rows[0]["probability"]) == 0.9 and rows[1]["region"] == ""


def test_chance_in_words() -> None:
    assert chance_text(0.33) == "about 1 in 3 leads like this one convert"
    assert chance_text(0.083) == "about 1 in 12 leads like this one convert"
    assert chance_text(0.004) == "about 1 in 250 leads like this one convert"
    assert chance_text(0.7) == "about 7 in 10 leads like this one convert"
    assert chance_text(0.0) == "fewer than 1 in 1,000 leads like this one convert"
    assert chance_text(0.99).startswith("almost every lead like this one converts")
    assert chance_text(0.5) == "about 5 in 10 leads like this one convert"


def test_explained_rows_are_kept_until_the_store_changes(
        scored_home: tuple[Path, Path, ModelBundle, ScoreStore], tmp_path: Path) -> None:
    import shutil

    store = ScoreStore(tmp_path / "scores")
    shutil.copytree(scored_home[3].root, store.root)
    mine = Board(store)
    asked: list[str] = []

    def bundle_for(version: str) -> ModelBundle:
        asked.append(version)
        return scored_home[2]

    first = mine.page(BoardQuery(MODEL))
    mine.explain(first, bundle_for)
    assert asked == ["1"] and all(r["reasons_known"] for r in first.rows)
    again = mine.page(BoardQuery(MODEL))
    mine.explain(again, bundle_for)
    assert asked == ["1"], "the same scorings: their words from memory"
    assert [r["raiser"] for r in again.rows] == [r["raiser"] for r in first.rows]
    for path in store.files(MODEL)[:1]:
        path.touch()
        import os

        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    mine.explain(mine.page(BoardQuery(MODEL)), bundle_for)
    assert asked == ["1", "1"], "a changed store: explained again"


def _comparable(table: pa.Table) -> list[dict]:
    columns = ["lead_id", "model_version", "scored_at", "probability", "score", "tier",
               "k_region", "trend", "move", "previous_score"]
    return table.select(columns).sort_by("lead_id").to_pylist()


def test_added_files_are_merged_exactly(
        scored_home: tuple[Path, Path, ModelBundle, ScoreStore], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Files added since the board read the store (an API's flushes, a new day's batch) are
    merged into the cached rows; the result equals a fresh read. A file holding a scoring
    older than a lead's latest makes the board read everything again, still exact."""
    import logging
    import shutil
    from datetime import timedelta

    from leadscore.store import history_rows

    store = ScoreStore(tmp_path / "scores")
    shutil.copytree(scored_home[3].root, store.root)
    mine = Board(store)
    before = mine.latest(MODEL)
    row = before.slice(0, 1).to_pylist()[0]
    later = row["scored_at"] + timedelta(days=3)
    ids = ["L00003", "L00004", "NEWLEAD"]

    def append(when, scores: list[int], key: str) -> None:  # type: ignore[no-untyped-def]
        n = len(scores)
        rows = history_rows(pa.array(ids[:n]), "1", when, np.asarray(scores) / 100.0,
                            np.asarray(scores), pa.array(["B"] * n), np.zeros((n, 4)),
                            {"region": pa.array(["west"] * n)})
        store.append(MODEL, rows, key)

    caplog.set_level(logging.INFO, logger="leadscore.board")
    append(later, [99, 1, 50], "flush1")
    append(later + timedelta(seconds=2), [98], "flush2")
    merged = mine.latest(MODEL)
    assert "merged" in caplog.text
    assert _comparable(merged) == _comparable(Board(store).latest(MODEL))
    by_id = {r["lead_id"]: r for r in merged.to_pylist()}
    assert by_id["L00003"]["score"] == 98 and by_id["L00003"]["previous_score"] == 99
    assert by_id["NEWLEAD"]["trend"] == "unknown"
    caplog.clear()
    append(row["scored_at"] - timedelta(days=30), [10], "backfill")
    again = mine.latest(MODEL)
    assert "merged" not in caplog.text, "an older scoring: everything read again"
    assert _comparable(again) == _comparable(Board(store).latest(MODEL))


def test_history_chart_marks_model_versions() -> None:
    from serve.pages.lead import history_chart, why_parts

    scorings = [{"scored_at": f"2026-01-0{d}T09:00:00+00:00", "score": s, "model_version": v}
                for d, s, v in ((1, 20, "1"), (3, 40, "1"), (8, 90, "2"))]
    chart = history_chart(scorings)
    points = chart["points"]
    assert [p["score"] for p in points] == [20, 40, 90]
    assert points[0]["colour"] == points[1]["colour"] != points[2]["colour"]
    assert [item["version"] for item in chart["legend"]] == ["1", "2"]
    assert points[0]["x"] < points[1]["x"] < points[2]["x"]  # by time, not by index
    assert points[2]["y"] < points[1]["y"] < points[0]["y"]  # a higher score is higher up
    assert (points[0]["anchor"], points[-1]["anchor"]) == ("start", "end")
    why = {"data": [{"field": f"f{i}", "change": 1.0 + i} for i in range(10)],
           "model": [{"field": "m", "change": -0.5}], "baseline_change": 0.25, "rounding": -0.1}
    parts = why_parts(why, {"f9": "Field nine"})
    assert parts[0] == {"label": "Field nine", "cause": "the lead's data", "change": 10.0}
    assert parts[8]["label"] == "3 other fields" and parts[8]["cause"] == \
        "the lead's data and the model"
    total = sum(p["change"] for p in parts)
    assert round(total, 2) == round(sum(range(1, 11)) - 0.5 + 0.25 - 0.1, 2)
