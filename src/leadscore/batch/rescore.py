"""`rescore`: the local engine, reading, scoring and writing in three threads."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from leadscore.batch.checks import Checked, check_chunk, output_schema, score_chunk
from leadscore.batch.drift import Drift, _drift_stride
from leadscore.batch.job import BatchSummary, Job, _write_atomic
from leadscore.batch.sources import Chunk, Source, absent_fields, iter_chunks, open_source
from leadscore.compiled import available as compiled_unavailable
from leadscore.compiled import cached_model, compile_model
from leadscore.errors import DataError
from leadscore.evaluate import PSI_WARNING
from leadscore.faults import Fault
from leadscore.rejects import LineFinder
from leadscore.scoring import ModelBundle
from leadscore.store import ScoreStore, history_rows, job_key, kept_for_history

if TYPE_CHECKING:
    from rich.console import Console


log = logging.getLogger(__name__)


DEFAULT_CHUNK_ROWS = 100_000
SCORING_THREADS = 2
# a job this large compiles the model's trees when no compiled copy is cached (seconds of gcc,
# paid once per model); a smaller one is done before the compiler would be
COMPILE_MIN_ROWS = 300_000
CSV_ROW_BYTES = 200  # a rough size of a CSV row, to guess a CSV's rows from its bytes
LOG_EVERY_S = 10.0


class Progress:
    """A Rich progress bar (rows/s, ETA) on a terminal; a log line every few seconds otherwise."""

    def __init__(self, source: Source, done_rows: int, console: Console | None) -> None:
        self.total_rows = source.total_rows
        self.total_bytes = source.total_bytes
        self.start = time.perf_counter()
        self.start_rows = done_rows
        self.last_log = self.start
        self._bar: Any = None
        if console is not None and console.is_terminal:
            from rich.progress import (
                BarColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("scoring"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rows]:>12,} rows"),
                TextColumn("{task.fields[rate]:>9,.0f} rows/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            total = self.total_rows if self.total_rows is not None else self.total_bytes
            self._task = self._bar.add_task("score", total=total or None, rows=done_rows, rate=0.0)
            self._bar.start()

    def update(self, rows: int, bytes_read: int) -> None:
        now = time.perf_counter()
        rate = (rows - self.start_rows) / max(now - self.start, 1e-9)
        done = rows if self.total_rows is not None else bytes_read
        total = self.total_rows if self.total_rows is not None else self.total_bytes
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rows=rows, rate=rate)
            return
        if now - self.last_log >= LOG_EVERY_S:
            self.last_log = now
            share = done / total if total else 0.0
            start = self.start_rows if self.total_rows is not None else 0
            speed = (done - start) / max(now - self.start, 1e-9)
            eta = (total - done) / speed if total and speed > 0 else float("nan")
            log.info(
                "scored %s rows (%.0f%%) at %s rows/s, ETA %.0f s",
                f"{rows:,}",
                100 * share,
                f"{rate:,.0f}",
                eta,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


_DONE = object()


def _prefetch(items: Iterator[Any], depth: int, stop: threading.Event) -> Iterator[Any]:
    """Run an iterator in a thread, `depth` items ahead (reading overlaps scoring)."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    thread = threading.Thread(target=produce, name="leadscore-read", daemon=True)
    thread.start()
    while True:
        item = slots.get()
        if item is _DONE:
            break
        if isinstance(item, BaseException):
            raise item
        yield item


class _Writer:
    """A thread that keeps completed chunks (part, checkpoint, output) while the next is scored."""

    def __init__(
        self,
        job: Job,
        on_done: Callable[[dict[str, list[int]]], dict[str, Any]],
        on_kept: Callable[[int], None],
    ) -> None:
        self.job = job
        self.on_done = on_done
        self.on_kept = on_kept
        self.slots: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="leadscore-write", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self.job.open_final()
            while True:
                item = self.slots.get()
                if item is _DONE:
                    return
                index, table, rejects, rows_in, counts, bytes_read, history = item
                if history is not None:
                    # the chunk's history is written before its checkpoint counts it: a job
                    # killed in between redoes the chunk and rewrites the same history file
                    history.result()
                self.job.add(index, table, rejects, rows_in, self.on_done(counts))
                self.on_kept(bytes_read)
        except BaseException as exc:
            self.error = exc
            # keep draining so the producer never blocks on a full queue
            while self.slots.get() is not _DONE:
                pass

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.slots.put(item)

    def finish(self) -> None:
        self.slots.put(_DONE)
        self.thread.join()
        if self.error is not None:
            raise self.error


def rescore(
    bundle: ModelBundle,
    input_path: Path,
    output_path: Path,
    *,
    reasons: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: Sequence[str] = (),
    resume: bool = False,
    console: Console | None = None,
    scored_at: str | None = None,
    after_chunk: Callable[[int], None] | None = None,
    history: ScoreStore | None = None,
    compiled: bool = True,
) -> BatchSummary:
    """Score a CSV/Parquet file (or folder of Parquet files) into a Parquet or CSV file.

    With `resume`, a job interrupted before (killed, Ctrl-C, a crash) continues after its last
    completed chunk when the input, model, chunk size and options are unchanged; the output is
    the same as an uninterrupted run's (`scored_at` included). `console`: a terminal to draw a
    progress bar on. `after_chunk(index)` is called once each chunk is kept (tests use it).
    `history`: the score store each kept chunk's scores are appended to (`store.py`); a resumed
    job rewrites its chunks' history files rather than adding their rows twice.
    `compiled`: score with the model's compiled trees when the [fast] extra can build them
    (`compiled.py`; the same probabilities, checked); False: LightGBM only (the bundle's
    compiled trees, if a job attached them, are dropped).
    """
    if chunk_rows < 1:
        raise DataError("--chunk-rows must be at least 1")
    if reasons < 0:
        raise DataError("--reasons must be 0 or more")
    keep = list(dict.fromkeys(keep))
    source = open_source(input_path, bundle, keep)
    schema = output_schema(bundle, source.schema, keep, reasons)
    identity = {
        "input": source.fingerprint,
        "model": {
            "name": bundle.name,
            "version": bundle.version,
            "sha256": bundle.meta.get("model_sha256"),
        },
        "chunk_rows": chunk_rows,
        "reasons": reasons,
        "keep": keep,
    }
    job = Job(output_path, identity, schema, bundle.id_column)
    job.refuse_overwriting(source)
    saved = job.prepare(resume)
    drift = Drift(bundle, _drift_stride(source))
    if saved is not None:
        scored_at = saved["state"]["scored_at"]
        drift.restore(saved["state"].get("drift", {}))
        log.info(
            "resuming %s after chunk %d (%s rows done)",
            output_path,
            saved["state"]["chunks_done"],
            f"{saved['state']['rows']:,}",
        )
    scored_at = scored_at or datetime.now(UTC).isoformat(timespec="seconds")
    skip = int(job.state["chunks_done"])
    rows_before = int(job.state["rows"])
    progress = Progress(source, rows_before, console)

    def on_done(counts: dict[str, list[int]]) -> dict[str, Any]:
        drift.add(counts)
        return {"scored_at": scored_at, "drift": drift.state()}

    def on_kept(bytes_read: int) -> None:
        progress.update(int(job.state["rows"]), bytes_read)
        if after_chunk is not None:
            after_chunk(int(job.state["chunks_done"]) - 1)

    key = job_key(str(output_path.resolve()), scored_at)
    # the history of chunk k is built and written on its own thread while chunk k + 1 is scored
    # and chunk k's part written: off the critical path of the job
    recorder = ThreadPoolExecutor(1, "leadscore-history") if history is not None else None

    stored_keep: list[list[str]] = []  # the kept columns the history holds (first chunk's call)

    def record(index: int, table: pa.Table, matrix: np.ndarray) -> None:
        assert history is not None
        if not stored_keep:
            skip = {bundle.id_column, *bundle.builder.sensitive_inputs_}
            stored_keep.append(kept_for_history(keep, table, skip))
        rows = history_rows(
            table.column(bundle.id_column), bundle.version, scored_at,
            table.column("probability").to_numpy(), table.column("score").to_numpy(),
            table.column("tier"), matrix, {name: table.column(name) for name in stored_keep[0]},
        )
        history.append(bundle.name, rows, key, index)

    def work(chunk: tuple[Checked, Chunk]) -> tuple[Any, ...]:
        """Score one chunk (on a scoring thread): the writer's item for it."""
        checked, raw = chunk
        recorded: Future[None] | None = None
        if checked.table.num_rows:
            table, matrix = score_chunk(bundle, checked, raw.table, reasons, keep, scored_at)
            probability = table.column("probability").to_numpy()
            counts = drift.counts_for(bundle, checked.table, checked.rows, probability, matrix)
            if recorder is not None:
                recorded = recorder.submit(record, raw.index, table, matrix)
        else:
            table, counts = schema.empty_table(), {}
        rows_in = raw.table.num_rows + len(raw.malformed)
        return (raw.index, table.cast(schema), checked.rejects, rows_in, counts, raw.bytes_read,
                recorded)

    # the compiled trees, when the [fast] extra has them: built (or found in the cache) on a
    # thread of its own while LightGBM scores the first chunks; reasons need LightGBM's TreeSHAP
    if not compiled:
        bundle.compiled_ = None  # LightGBM only, for this job and the bundle's later use
    compiling = (
        _attach_compiled(bundle, source) if compiled and reasons == 0 and bundle.compiled_ is None
        else None
    )
    writer = _Writer(job, on_done, on_kept)
    stop = threading.Event()
    start = time.perf_counter()
    writer.start()
    # two chunks scored at once when the compiled trees do it (one thread each, the GIL
    # released while they walk): LightGBM's own predict already uses every core
    scorer = ThreadPoolExecutor(SCORING_THREADS, "leadscore-score")
    scoring: deque[Future[tuple[Any, ...]]] = deque()
    try:
        for chunk in _prefetch(_checked(iter_chunks(source, chunk_rows), bundle, skip), 2, stop):
            scoring.append(scorer.submit(work, chunk))
            fast = bundle.compiled_ is not None and not bundle.compiled_.broken
            limit = SCORING_THREADS if fast else 1
            while len(scoring) >= limit:
                writer.put(scoring.popleft().result())
        while scoring:
            writer.put(scoring.popleft().result())
        writer.finish()
        lines = LineFinder(source.path, source.encoding, source.delimiter)
        rejects_path = job.commit(lines if source.kind == "csv" else None)
    except BaseException as exc:
        stop.set()
        if writer.thread.is_alive():
            try:
                writer.finish()
            except BaseException:  # the first error is the one to report
                log.debug("writer stopped with an error", exc_info=True)
        job.abort(keep_parts=not isinstance(exc, Fault) or exc.resumable)
        if job.checkpoint_path.is_file():
            done = int(job.state["chunks_done"])
            hint = f"{done} completed chunk(s) kept: run again with --resume to continue"
            if isinstance(exc, Fault):  # the fault's one line says it, no second line
                raise Fault(f"{exc}; {hint} once that is fixed", resumable=True) from None
            log.warning("stopped; %s from there", hint)
        raise
    finally:
        progress.close()
        scorer.shutdown(wait=True, cancel_futures=True)
        if recorder is not None:
            recorder.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - start
    if compiling is not None and compiling.is_alive():  # a failed job does not wait for it
        log.info("finishing the model's compilation (once per model; later jobs use it)")
        compiling.join()
    state = job.state
    summary = BatchSummary.of_job(
        input_path, output_path, state, seconds, bundle, int(state["chunks_done"])
    )
    assert summary.rows == summary.scored + summary.rejected
    rows_now = summary.rows - rows_before
    report = drift.report()
    absent = absent_fields(bundle, source.columns)
    if report.get("drifted"):  # an absent field was already named as such, not as drift
        report["drifted"] = [name for name in report["drifted"] if name not in absent]
    summary.extra = {
        "rows_per_s": round(rows_now / seconds, 1) if seconds > 0 else 0.0,
        "rows_this_run": rows_now,
        "resumed_after_chunk": skip if saved is not None else None,
        "rejects_file": str(rejects_path) if rejects_path else None,
        # rows refused for NaN, +-inf or a number out of range (the API's rule), a share of
        # `rejected`
        "rejected_out_of_range": int(state.get("rejected_out_of_range", 0)),
        "scored_at": scored_at,
        "chunk_rows": chunk_rows,
        "reasons": reasons,
        "absent_fields": absent,
        "range_warnings": int(state.get("warned", 0)),  # scored leads far outside training
        "drift": report,
    }
    drifted = report.get("drifted", [])
    if drifted:  # one line for all fields: a terminal shows it beside the summary's own line
        psi = {**report.get("feature_psi", {}), "score": report.get("score_psi")}
        log.warning("drift: PSI above %.1f for %s: the input differs from the training data",
                    PSI_WARNING, ", ".join(f"{name} {psi[name]:.2f}" for name in drifted))
    if summary.rejected:
        log.warning("%s row(s) rejected; see %s", f"{summary.rejected:,}", rejects_path)
    if state.get("warned"):
        log.warning("%s lead(s) scored with a value far outside the training range (see the "
                    "warnings column)", f"{state['warned']:,}")
    if summary.rows == 0:
        log.warning("%s has no rows: wrote an empty %s", input_path, output_path)
    summary_path = output_path.with_name(output_path.name + ".summary.json")
    _write_atomic(summary_path, json.dumps(summary.as_dict(), indent=2))
    log.info(
        "wrote %s: %s rows (%s scored, %s rejected) in %.1f s",
        output_path,
        f"{summary.rows:,}",
        f"{summary.scored:,}",
        f"{summary.rejected:,}",
        seconds,
    )
    return summary


def _attach_compiled(bundle: ModelBundle, source: Source) -> threading.Thread | None:
    """The bundle's compiled trees: from the cache at once, or (a job large enough to gain from
    them) compiled on a thread and attached when ready. Until then, and for good when they
    cannot be had, LightGBM scores."""
    cached = cached_model(bundle.booster, bundle.meta)
    if cached is not None:
        bundle.compiled_ = cached
        return None
    rows = source.total_rows
    if (rows if rows is not None else source.total_bytes // CSV_ROW_BYTES) < COMPILE_MIN_ROWS:
        return None
    if compiled_unavailable() is not None:
        log.info("scoring with LightGBM: %s", compiled_unavailable())
        return None

    def build() -> None:
        model = compile_model(bundle.booster, bundle.meta)
        if model is not None:
            bundle.compiled_ = model

    thread = threading.Thread(target=build, name="leadscore-compile", daemon=True)
    thread.start()
    return thread


def _checked(
    chunks: Iterator[Chunk], bundle: ModelBundle, skip: int
) -> Iterator[tuple[Checked, Chunk]]:
    """Validation runs in the reading thread; chunks already done are read past, not scored."""
    for chunk in chunks:
        if chunk.index < skip:
            continue
        yield check_chunk(bundle, chunk), chunk


