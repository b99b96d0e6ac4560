"""The history's appends: split by UTC day from the timestamps' distinct values, LZ4 files with
the statistics lookups use (lead id) and none on the feature columns, read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from leadscore.store import ScoreStore, history_rows


def test_an_append_spanning_two_days_lands_in_each_day(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path / "scores")
    n = 6
    matrix = np.arange(n * 3, dtype=float).reshape(n, 3)
    matrix[2, 1] = np.nan
    first = history_rows(pa.array([f"L{i}" for i in range(n)]), "1", "2026-03-01T23:59:59+00:00",
                         np.linspace(0.1, 0.6, n), np.arange(n), ["A", "B", "C", "D", "A", "B"],
                         matrix)
    # the same rows, three of them a second later: past midnight UTC
    stamps = first.column("scored_at").to_pylist()
    later = [s.replace(day=2, hour=0, minute=0, second=0) if i % 2 else s
             for i, s in enumerate(stamps)]
    rows = first.set_column(first.schema.get_field_index("scored_at"), "scored_at",
                            pa.array(later, pa.timestamp("us", tz="UTC")))
    written = store.append("m", rows, "key", 0)
    assert sorted(p.parent.name for p in written) == ["date=2026-03-01", "date=2026-03-02"]
    by_day = {p.parent.name: pq.read_table(p) for p in written}
    assert by_day["date=2026-03-01"].column("lead_id").to_pylist() == ["L0", "L2", "L4"]
    assert by_day["date=2026-03-02"].column("lead_id").to_pylist() == ["L1", "L3", "L5"]
    meta = pq.read_metadata(written[0])
    columns = {meta.schema.column(j).name: meta.row_group(0).column(j) for j in
               range(meta.num_columns)}
    assert columns["lead_id"].compression == "LZ4"  # pyarrow's name for LZ4_RAW
    assert columns["lead_id"].statistics is not None
    assert columns["f_000"].statistics is None
    back = store.rows("m")
    assert back.num_rows == n
    got = dict(zip(back.column("lead_id").to_pylist(), back.column("features").to_pylist(),
                   strict=True))
    assert got["L1"] == [3.0, 4.0, 5.0]
    assert np.isnan(got["L2"][1]) and got["L2"][0] == 6.0
    assert store.lead("m", "L3").column("score").to_pylist() == [3]
