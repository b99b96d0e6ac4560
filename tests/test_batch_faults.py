"""Batch faults: the input is never overwritten, a full disk, a file-size limit, a read-only
folder or a corrupt Parquet file is one line and exit 2 with nothing half-written left behind,
and every rejected row can be found again in the input."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_batch import make_leads, tiny, tiny_bundle, write_csv  # noqa: F401
from typer.testing import CliRunner

from leadscore import cli
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
        result = runner.invoke(cli.app, ["score", "--model", str(tiny), *args],
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


def test_no_output_into_the_input_folder_of_parquet(score_cli: Invoke, tmp_path: Path) -> None:
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
