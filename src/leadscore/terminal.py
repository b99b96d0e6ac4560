"""What the command line prints besides tables: training progress, the few lines of a
scoring summary, and leads piped in and scores piped out (`score -i - -o -`)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from leadscore.errors import LeadscoreError

log = logging.getLogger("leadscore")


@contextmanager
def training_progress(err: Console) -> Iterator[None]:
    """Each stage of a training on stderr: on a terminal a Rich display (a line per stage with
    its time, the boosting round, the tuning trial); else (a pipe, a log file) a debug line
    per stage, shown with -v, so a script's stderr stays the one line of an error."""
    from leadscore import progress

    if not err.is_terminal:
        with progress.listening(progress.Listener(on_stage=lambda name: log.debug("%s", name))):
            yield
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(SpinnerColumn(finished_text="[green]✓[/]"),
                   TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err)
    current: list[Any] = []
    names: list[str] = []

    def on_stage(name: str) -> None:
        if current:
            bar.update(current[-1], total=1, completed=1)
            bar.stop_task(current[-1])
        current.append(bar.add_task(name, total=None))
        names.append(name)

    def on_round(done: int, total: int) -> None:
        # tuning trials boost too: their rounds would hide the trial count
        if current and not names[-1].startswith("tuning"):
            bar.update(current[-1], total=total, completed=done,
                       description=f"{names[-1]}: boosting round {done}")

    def on_trial(done: int, total: int, best: float | None) -> None:
        if current:
            best_text = f", best validation ROC AUC {best:.4f}" if best is not None else ""
            bar.update(current[-1], total=total, completed=done,
                       description=f"tuning: trial {done}{best_text}")

    with bar, progress.listening(progress.Listener(on_stage, on_round, on_trial)):
        try:
            yield
        finally:
            if current:
                bar.update(current[-1], total=1, completed=1)
                bar.stop_task(current[-1])


def stdin_to_file(folder: Path) -> tuple[Path, str]:
    """Leads piped in as CSV or JSON lines (told apart by the first character), written to a
    CSV in `folder` so they take the same reading and checking path as a file would."""
    import io

    import pandas as pd

    text = sys.stdin.read()
    if not text.strip():
        raise LeadscoreError("--input -: nothing on stdin (pipe CSV or JSON lines in)")
    path = folder / "leads.csv"
    if text.lstrip()[0] in "{[":
        try:
            # dtype=False: an id such as "007" stays text, as the CSV reader would keep it
            leads = pd.read_json(io.StringIO(text), lines=text.lstrip()[0] == "{", dtype=False)
        except ValueError as exc:
            raise LeadscoreError(f"--input -: not valid JSON lines ({exc})") from None
        leads.to_csv(path, index=False)
        return path, "jsonl"
    path.write_text(text, encoding="utf-8")
    return path, "csv"


def file_to_stdout(path: Path, fmt: str) -> None:
    """The scored rows on stdout: CSV, or JSON lines (reasons as a list, not a string) when the
    leads came in as JSON."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if fmt == "csv":  # the same flat columns as a CSV output file (reason_1, reason_1_points…)
        import pyarrow.csv as pacsv

        from leadscore.exports import flatten

        sys.stdout.flush()
        pacsv.write_csv(flatten(table), sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    for row in table.to_pylist():
        for key in ("reasons", "warnings"):  # lists kept as JSON text in the file formats
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
        sys.stdout.write(json.dumps(row, default=str) + "\n")
    sys.stdout.flush()


def summary_lines(report: dict[str, Any], piped: bool = False) -> list[str]:
    """At most ten lines for a person; the full summary is in OUT.summary.json and `--json`."""
    seconds = report.get("seconds", 0.0)
    lines = [
        f"scored {report['scored']:,} of {report['rows']:,} rows with "
        f"{report['model_name']} version {report['model_version']} in {seconds:.1f} s"
        f" ({report.get('rows_per_s', 0):,.0f} rows/s)"
    ]
    if report.get("rejected"):
        where = report.get("rejects_file") or "not kept (output is stdout)"
        lines.append(f"rejected: {report['rejected']:,} rows -> {where}")
    if report.get("absent_fields"):
        lines.append(f"absent fields (scored as missing): {', '.join(report['absent_fields'])}")
    if report.get("range_warnings"):
        lines.append(f"far outside the training range: {report['range_warnings']:,} lead(s) "
                     "(see the warnings column)")
    lines.append(drift_line(report.get("drift") or {}))
    if not piped:
        lines.append(f"output:  {report['output']}")
        lines.append(f"summary: {report['output']}.summary.json")
    return lines


def drift_line(drift: dict[str, Any]) -> str:
    """Drift against the training data in one line."""
    if not drift.get("available"):
        return f"drift: not measured ({drift.get('reason', 'no training profile')})"
    drifted = drift.get("drifted") or []
    if not drifted:
        return (f"drift: none (every PSI at or below {drift['threshold']}, "
                f"{drift.get('sampled_rows', 0):,} rows sampled)")
    psi = {**drift.get("feature_psi", {}), "score": drift.get("score_psi")}
    shown = ", ".join(f"{name} {psi[name]:.2f}" for name in drifted[:5])
    more = f" and {len(drifted) - 5} more" if len(drifted) > 5 else ""
    return f"drift: PSI above {drift['threshold']} for {shown}{more}"
