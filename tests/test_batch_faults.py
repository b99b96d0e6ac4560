"""Batch faults: the input is never overwritten, a full disk, a file-size limit, a read-only
folder or a corrupt Parquet file is one line and exit 2 with nothing half-written left behind,
and every rejected row can be found again in the input."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_batch import make_leads, tiny, tiny_bundle, write_csv  # noqa: F401
from typer.testing import CliRunner

from leadscore import cli
from leadscore.batch import rescore
from leadscore.config import get_settings

Invoke = Callable[..., "Result"]


class Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


@pytest.fixture
def score_cli(tiny: Path) -> Iterator[Callable[..., Result]]:  # noqa: F811
    """`leadscore score --model <tiny bundle> ARGS...` in-process, logging restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ours = logging.getLogger("leadscore").level
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        result = runner.invoke(cli.app, ["score", "--json", "--model", str(tiny), *args],
                               catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    yield invoke
    get_settings.cache_clear()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("leadscore").setLevel(ours)


def one_line(result: Result) -> str:
    """The single line a fault may print: exit 2, no traceback, nothing else on stderr."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A small real file system (a full disk, a read-only folder), skipped where not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# --------------------------------------------------------------------------- self-overwrite


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink"])
def test_the_input_is_never_overwritten(score_cli: Invoke, tmp_path: Path, how: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_csv(make_leads(50, seed=1), tmp_path / "leads.csv")
    before = src.read_bytes()
    out = {"same": src, "relative": Path("sub/../leads.csv"), "symlink": tmp_path / "link.csv",
           "hardlink": tmp_path / "hard.csv"}[how]
    (tmp_path / "sub").mkdir()
    if how == "symlink":
        out.symlink_to(src)
    elif how == "hardlink":
        os.link(src, out)
    monkeypatch.chdir(tmp_path)
    line = one_line(score_cli("-i", str(src), "-o", str(out)))
    assert "refusing to overwrite the input" in line and str(src) in line
    assert src.read_bytes() == before
    assert listing(tmp_path) == sorted(["leads.csv", "sub", *([out.name] if how in {
        "symlink", "hardlink"} else [])]), "nothing is written, not even a lock or parts folder"


def test_no_output_into_the_input_folder_nor_over_a_side_file(score_cli: Invoke,
                                                              tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make_leads(40, seed=2).to_parquet(folder / "part-0.parquet", index=False)
    line = one_line(score_cli("-i", str(folder), "-o", str(folder / "scores.parquet")))
    assert "refusing to write into the input folder" in line
    assert listing(folder) == ["part-0.parquet"]
    side = write_csv(make_leads(10), tmp_path / "scores.csv.rejects.csv")
    before = side.read_bytes()  # an input named like the job's own rejects file
    line = one_line(score_cli("-i", str(side), "-o", str(tmp_path / "scores.csv")))
    assert "refusing to overwrite the input" in line and side.read_bytes() == before


# --------------------------------------------------------------------------- faults


def leftovers(folder: Path) -> list[str]:
    """Files a stopped job must never leave: temporary, half-written, or its lock."""
    return [name for name in listing(folder)
            if name.endswith((".tmp", ".partial", ".lock"))]


def test_a_full_disk_is_one_line_and_resume_finishes_the_job(
        score_cli: Invoke, tiny_bundle, tmp_path: Path) -> None:  # noqa: F811
    src = write_csv(make_leads(30_000, seed=4), tmp_path / "leads.csv")
    with tmpfs(tmp_path / "disk", "size=1m") as disk:
        out = disk / "scores.parquet"
        args = ("-i", str(src), "-o", str(out), "--chunk-rows", "2000", "--reasons", "3")
        line = one_line(score_cli(*args))
        assert "no space left on the device" in line and str(disk) in line
        assert not out.exists() and leftovers(disk) == []
        checkpoint = json.loads((disk / "scores.parquet.parts" / "checkpoint.json").read_text())
        done = checkpoint["state"]["chunks_done"]
        assert 1 <= done < 15 and f"{done} completed chunk(s) kept" in line and "--resume" in line
        parts = sorted(p.name for p in (disk / "scores.parquet.parts").iterdir())
        assert parts == ["checkpoint.json", *(f"part-{i:06d}.parquet" for i in range(done))]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = score_cli(*args, "--resume")
        assert resumed.exit_code == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["resumed_after_chunk"] == done and summary["rows"] == 30_000
        whole = tmp_path / "whole.parquet"
        rescore(tiny_bundle, src, whole, chunk_rows=2000, reasons=3,
                scored_at=summary["scored_at"])
        assert pq.read_table(out).equals(pq.read_table(whole))
        assert listing(disk) == sorted(["scores.parquet", "scores.parquet.summary.json"])


def test_a_read_only_folder_or_a_file_in_the_path(score_cli: Invoke, tmp_path: Path) -> None:
    src = write_csv(make_leads(100, seed=5), tmp_path / "leads.csv")
    line = one_line(score_cli("-i", str(src), "-o", str(src / "scores.parquet")))
    assert line == (f"error: {tmp_path}/leads.csv: cannot create the output's folder: it is a "
                    "file, not a folder")
    with tmpfs(tmp_path / "ro", "size=1m,ro") as folder:
        line = one_line(score_cli("-i", str(src), "-o", str(folder / "scores.csv")))
        assert line == f"error: {folder}/scores.csv: cannot write: read-only file system"
        assert listing(folder) == []
    assert listing(tmp_path) == ["leads.csv", "ro"]


def test_a_corrupt_parquet_page_is_one_line_and_leaves_nothing(score_cli: Invoke,
                                                               tmp_path: Path) -> None:
    src = tmp_path / "leads.parquet"
    make_leads(5000, seed=6).to_parquet(src, index=False, row_group_size=1000)
    column = pq.ParquetFile(src).metadata.row_group(3).column(2)  # 'visits', rows 3001-4000
    data = bytearray(src.read_bytes())
    middle = column.data_page_offset + column.total_compressed_size // 2
    data[middle - 32:middle + 32] = b"\xff" * 64
    src.write_bytes(bytes(data))
    out = tmp_path / "out" / "scores.parquet"
    line = one_line(score_cli("-i", str(src), "-o", str(out), "--chunk-rows", "500"))
    assert line.startswith(f"error: {src}: cannot read it as Parquet: ")
    assert listing(tmp_path / "out") == [], "a corrupt input keeps no parts: resuming cannot help"


@pytest.mark.slow
def test_a_file_size_limit_is_one_line(tiny: Path, tmp_path: Path) -> None:  # noqa: F811
    """EFBIG from a real RLIMIT_FSIZE in a real `leadscore score` process."""
    src = write_csv(make_leads(20_000, seed=7), tmp_path / "leads.csv")
    out = tmp_path / "out" / "scores.csv"

    def limit() -> None:  # in the child: fail the write with EFBIG instead of dying of SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    result = subprocess.run(
        [sys.executable, "-m", "leadscore.cli", "score", "--model", str(tiny), "-i", str(src),
         "-o", str(out), "--chunk-rows", "5000"],
        env={**os.environ, "PYTHONWARNINGS": "ignore"}, preexec_fn=limit,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"{out}.partial: cannot write: file too large" in lines[0]
    assert leftovers(out.parent) == [] and not out.exists()


def test_the_parts_folder_stays_about_the_output_size(tiny_bundle, tmp_path: Path) -> None:  # noqa: F811
    """Parts are kept until the output is whole: they must not need several times its room."""
    src = write_csv(make_leads(40_000, seed=8), tmp_path / "leads.csv")
    out = tmp_path / "scores.parquet"
    parts = tmp_path / "scores.parquet.parts"
    peak = 0

    def measure(index: int) -> None:
        nonlocal peak
        peak = max(peak, sum(p.stat().st_size for p in parts.iterdir()))

    rescore(tiny_bundle, src, out, chunk_rows=5000, after_chunk=measure)
    assert 0 < peak <= 2 * out.stat().st_size, (peak, out.stat().st_size)


# --------------------------------------------------------------------------- rejects


def test_a_malformed_row_is_found_by_its_line_and_id(score_cli: Invoke, tmp_path: Path) -> None:
    src = tmp_path / "leads.csv"
    src.write_text(
        "lead_id,channel,visits,budget,email,note\n"        # line 1
        "A1,web,3,10,a@x.io,x\n"                            # 2
        "\n"                                                # 3: blank, no record
        'A2,web,4,10,b@x.io,"two\nlines"\n'                 # 4-5
        "A3,web,5,10,c@x.io,x,one too many\n"               # 6: malformed
        "A4,web,6\n"                                        # 7: malformed
        'A5,web,7,10,e@x.io,"three\n\nlines"\n'             # 8-10
        "A6,web,eight,10,f@x.io,x\n"                        # 11: not a number
        "A7,web,9,10,g@x.io,x\n",                           # 12
        encoding="utf-8",
    )
    out = tmp_path / "scores.csv"
    result = score_cli("-i", str(src), "-o", str(out), "--chunk-rows", "2")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["scored"], summary["rejected"]) == (7, 4, 3)
    rejects = pd.read_csv(tmp_path / "scores.csv.rejects.csv", dtype=str, keep_default_na=False)
    assert list(rejects.columns) == ["row", "line", "lead_id", "reason"]
    assert rejects.values.tolist() == [
        ["", "6", "A3", "malformed record: 7 fields where the header has 6"],
        ["", "7", "A4", "malformed record: 3 fields where the header has 6"],
        ["4", "11", "A6", "'visits' is not a number"],
    ]
    assert "f@x.io" not in (tmp_path / "scores.csv.rejects.csv").read_text()
    assert pd.read_csv(out)["lead_id"].tolist() == ["A1", "A2", "A5", "A7"]


TEXT_VALUES = ["12", " 7 ", "+3", "-0", ".5", "5.", "1e5", "1E+05", "-1e200",  # numbers
               "nan", "NaN", "inf", "-Infinity", "1e400", "-1e400", "9" * 31,  # range
               "abc", "1,5", "0x10", "NA", "N/A"]                                      # not


def test_batch_and_the_api_refuse_the_same_numbers(tiny_bundle, tmp_path: Path) -> None:  # noqa: F811
    from pydantic import TypeAdapter, ValidationError

    from serve.schemas import lead_model

    api = TypeAdapter(lead_model(tiny_bundle))

    def api_accepts(value: object) -> bool:
        try:
            api.validate_python({"lead_id": "x", "visits": value})
        except ValidationError:
            return False
        return True

    leads = make_leads(len(TEXT_VALUES), seed=9).assign(visits=TEXT_VALUES)
    summary = rescore(tiny_bundle, write_csv(leads, tmp_path / "text.csv"),
                      tmp_path / "text.parquet").as_dict()
    rejects = pd.read_csv(summary["rejects_file"])
    refused = {TEXT_VALUES[row - 1] for row in rejects["row"]}
    assert refused == {v for v in TEXT_VALUES if not api_accepts(v)}
    assert refused == set(TEXT_VALUES[9:]), "numbers outside the rule are rejects, not blanks"
    assert summary["rejected"] == 12 and summary["rejected_out_of_range"] == 7
    assert set(rejects["reason"][rejects["row"] <= 16]) == {"'visits' is NaN, infinite or out "
                                                            "of range"}

    floats = [1.5, float("nan"), float("inf"), float("-inf"), 1e308, None]
    typed = pa.Table.from_pandas(make_leads(len(floats), seed=9), preserve_index=False)
    typed = typed.set_column(typed.schema.get_field_index("visits"), "visits",
                             pa.array(floats, pa.float64(), from_pandas=False))
    src = tmp_path / "typed.parquet"
    pq.write_table(typed, src)
    assert pq.read_table(src).column("visits").null_count == 1, "NaN is a value in the file"
    summary = rescore(tiny_bundle, src, tmp_path / "typed.csv").as_dict()
    rows = pd.read_csv(summary["rejects_file"])["row"].tolist()
    assert rows == [i + 1 for i, v in enumerate(floats) if v is not None and not api_accepts(v)]
    assert rows == [2, 3, 4] and summary["rejected_out_of_range"] == 3
