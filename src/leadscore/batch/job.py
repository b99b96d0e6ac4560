"""A job's files: parts, checkpoint, lock and the output assembled from the parts (what
makes a killed job resumable and never leaves a half-written output)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from leadscore.batch.sources import Source
from leadscore.errors import DataError
from leadscore.exports import FlatCsvWriter
from leadscore.faults import plainly, refuse_overwriting_input, remove_quietly
from leadscore.rejects import LineFinder, count_out_of_range, write_rejects
from leadscore.scoring import ModelBundle

log = logging.getLogger(__name__)


CHECKPOINT_VERSION = 1
# Parts are kept until the output is complete. As uncompressed Arrow they took 6-10x the
# output's room (every row repeats the model name, version and time); as lz4 Parquet (dictionary
# and run-length encoded, then compressed) they take about its size. lz4 and no statistics: a
# part is written once and read back only by a resumed job, so its encoding time counts, not its
# last bytes (0.3 s per 1M rows against zstd's 0.6 s, 14 MB against 10 MB).
PART_FORMAT = "parquet-lz4"
# columns whose values are (nearly) all distinct: dictionary-encoding them is a hash per row for a
# dictionary Parquet abandons at its page limit; every other output column repeats a few values
DISTINCT_COLUMNS = frozenset({"probability", "reasons"})


def output_dictionary_columns(schema: pa.Schema, id_column: str) -> list[str]:
    """The output columns worth a Parquet dictionary (all but the id and the distinct ones)."""
    return [name for name in schema.names if name != id_column and name not in DISTINCT_COLUMNS]


@dataclass
class BatchSummary:
    input: str
    output: str
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    seconds: float = 0.0
    model_name: str = ""
    model_version: str = ""
    chunks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_job(
        cls, input_path: Any, output_path: Any, state: dict[str, Any], seconds: float,
        bundle: ModelBundle, chunks: int,
    ) -> BatchSummary:
        """The summary of a finished job from its checkpoint state (local and Spark alike)."""
        return cls(
            input=str(input_path),
            output=str(output_path),
            rows=int(state["rows"]),
            scored=int(state["scored"]),
            rejected=int(state["rejected"]),
            seconds=seconds,
            model_name=bundle.name,
            model_version=bundle.version,
            chunks=chunks,
        )

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "rows": self.rows,
            "scored": self.scored,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "chunks": self.chunks,
            **self.extra,
        }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with plainly(path, "write"):
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    except BaseException:
        remove_quietly([tmp])
        raise


class _Final:
    """The output file, assembled at `<output>.partial` from the parts, in order."""

    def __init__(self, output: Path, schema: pa.Schema, kind: str, id_column: str) -> None:
        self.output = output
        self.partial = output.with_name(output.name + ".partial")
        self.kind = kind
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        try:
            with plainly(self.partial, "write"):
                self.partial.unlink(missing_ok=True)
                if kind == "parquet":
                    self._writer = pq.ParquetWriter(
                        str(self.partial), schema, compression="snappy",
                        use_dictionary=output_dictionary_columns(schema, id_column),
                    )
                else:
                    self._writer = FlatCsvWriter(self.partial, schema)
        except BaseException:
            remove_quietly([self.partial])
            raise

    def write(self, table: pa.Table) -> None:
        if table.num_rows and self._writer is not None:
            with plainly(self.partial, "write"):
                self._writer.write_table(table)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with plainly(self.partial, "write"):
                writer.close()  # a Parquet footer: a full disk can still show here

    def abort(self) -> None:
        """Drop the half-written output; a second fault while closing it must not hide the
        first."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
        except (OSError, pa.ArrowException):
            log.debug("closing %s after a fault", self.partial, exc_info=True)
        finally:
            remove_quietly([self.partial])


class Job:
    """The parts folder, its checkpoint, and the output assembled from the parts.

    `<output>.parts/` holds `part-NNNNNN.parquet` (the chunk's output rows),
    `rejects-NNNNNN.parquet` (its rejected rows) and `checkpoint.json`: what the job reads (the
    input's fingerprint, model, chunk size, options) and how far it got. A part is renamed into
    place before the checkpoint counts it, so a kill at any instant leaves every counted part
    complete.
    """

    def __init__(
        self, output: Path, identity: dict[str, Any], schema: pa.Schema, id_column: str = ""
    ) -> None:
        suffix = output.suffix.lower()
        if suffix not in {".parquet", ".pq", ".csv"}:
            raise DataError(f"{output}: output must end in .parquet or .csv")
        self.output = output
        self.kind = "csv" if suffix == ".csv" else "parquet"
        self.folder = output.with_name(output.name + ".parts")
        self.checkpoint_path = self.folder / "checkpoint.json"
        self.identity = {**identity, "format": self.kind, "parts": PART_FORMAT}
        self.schema = schema
        self.id_column = id_column
        self._dictionary = output_dictionary_columns(schema, id_column)
        self.state: dict[str, Any] = {"chunks_done": 0, "rows": 0, "scored": 0, "rejected": 0}
        self.final: _Final | None = None
        self._lock: IO[str] | None = None

    def writes(self) -> list[Path]:
        """Every file the job may create or replace beside the output (its parts folder aside)."""
        name = self.output.name
        suffixes = ("", ".partial", ".rejects.csv", ".rejects.csv.partial", ".summary.json",
                    ".summary.json.tmp", ".lock")
        return [self.output.with_name(name + suffix) for suffix in suffixes]

    def refuse_overwriting(self, source: Source) -> None:
        """Stop before anything is written when the job would destroy its own input."""
        refuse_overwriting_input(source.path, source.files, self.writes(), self.folder)

    def _part(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.parquet"

    def _rejects(self, index: int) -> Path:
        return self.folder / f"rejects-{index:06d}.parquet"

    def prepare(self, resume: bool) -> dict[str, Any] | None:
        """Start afresh, or (resume) return the saved state when it is this same job."""
        with plainly(self.output.parent, "create the output's folder"):
            self.output.parent.mkdir(parents=True, exist_ok=True)
        with plainly(self.output, "write"):
            self._lock = _lock_output(self.output)
        try:
            return self._restore(resume)
        except BaseException:
            self._unlock()
            raise

    def _restore(self, resume: bool) -> dict[str, Any] | None:
        saved = None
        if resume and self.checkpoint_path.is_file():
            saved = json.loads(self.checkpoint_path.read_text(encoding="utf-8"))
            before = saved.get("identity", {})
            changed = [k for k in self.identity if before.get(k) != self.identity[k]]
            if changed:
                raise DataError(
                    f"{self.checkpoint_path}: cannot resume: {', '.join(changed)} changed since "
                    "the interrupted run; run again without --resume to start over"
                )
            done = int(saved["state"]["chunks_done"])
            absent = [i for i in range(done) if not self._part(i).is_file()]
            if absent:
                raise DataError(
                    f"{self.folder}: cannot resume: part file(s) for chunk(s) {absent[:5]} are "
                    "missing; run again without --resume to start over"
                )
            self.state = saved["state"]
        elif resume:
            log.info("no checkpoint at %s: starting from the first chunk", self.checkpoint_path)
        if saved is None:
            if not resume and self.checkpoint_path.is_file():
                log.warning(
                    "starting %s over: an interrupted run's parts are discarded (pass "
                    "--resume to continue such a run instead)",
                    self.output,
                )
            shutil.rmtree(self.folder, ignore_errors=True)
        with plainly(self.folder, "create the parts folder"):
            self.folder.mkdir(parents=True, exist_ok=True)
        return saved

    def open_final(self) -> None:
        """Start `<output>.partial` and copy the parts already done into it."""
        self.final = _Final(self.output, self.schema, self.kind, self.id_column)
        for index in range(int(self.state["chunks_done"])):
            part = self._part(index)
            with plainly(part, "read a completed chunk", resumable=False):
                table = pq.read_table(part, memory_map=True).cast(self.schema)
            self.final.write(table)

    def add(
        self,
        index: int,
        table: pa.Table,
        rejects: pa.Table,
        rows_in: int,
        extra_state: dict[str, Any],
    ) -> None:
        """Keep one completed chunk: part file, rejects, checkpoint, then the output."""
        assert self.final is not None
        if index != self.state["chunks_done"]:
            raise RuntimeError(f"chunk {index} arrived out of order")
        part = self._part(index)
        tmp = part.with_name(part.name + ".tmp")
        reject_path = self._rejects(index)
        reject_tmp = reject_path.with_name(reject_path.name + ".tmp")
        try:
            with plainly(tmp, "write"):
                pq.write_table(table, str(tmp), compression="lz4", write_statistics=False,
                               use_dictionary=self._dictionary)
                os.replace(tmp, part)
            if rejects.num_rows:
                with plainly(reject_tmp, "write"):
                    pq.write_table(rejects, str(reject_tmp), compression="zstd")
                    os.replace(reject_tmp, reject_path)
        except BaseException:
            remove_quietly([tmp, reject_tmp])
            raise
        self.state = {
            **self.state,
            **extra_state,
            "chunks_done": index + 1,
            "rows": self.state["rows"] + rows_in,
            "scored": self.state["scored"] + table.num_rows,
            "rejected": self.state["rejected"] + rejects.num_rows,
            "warned": self.state.get("warned", 0) + _warned(table),
            "rejected_out_of_range": self.state.get("rejected_out_of_range", 0)
            + count_out_of_range(rejects),
        }
        _write_atomic(
            self.checkpoint_path,
            json.dumps(
                {"version": CHECKPOINT_VERSION, "identity": self.identity, "state": self.state}
            ),
        )
        self.final.write(table)

    def commit(self, lines: LineFinder | None = None) -> Path | None:
        """Move the output (and the rejects file, with each CSV record's line found by
        `lines`) into place; remove the parts."""
        assert self.final is not None
        self.final.close()
        rejects_path = self.output.with_name(self.output.name + ".rejects.csv")
        if self.state["rejected"]:
            tmp = rejects_path.with_name(rejects_path.name + ".partial")
            try:
                done = range(int(self.state["chunks_done"]))
                parts = [self._rejects(i) for i in done if self._rejects(i).is_file()]
                with plainly(tmp, "write"), tmp.open("wb") as out:
                    write_rejects(parts, out, lines)
                with plainly(rejects_path, "write"):
                    os.replace(tmp, rejects_path)
            except BaseException:
                remove_quietly([tmp])
                raise
        else:
            rejects_path.unlink(missing_ok=True)
        with plainly(self.output, "write"):
            os.replace(self.final.partial, self.output)
        shutil.rmtree(self.folder, ignore_errors=True)
        self._unlock()
        return rejects_path if self.state["rejected"] else None

    def abort(self, keep_parts: bool = True) -> None:
        """Stop without committing: the parts and checkpoint stay for `--resume` (unless
        `keep_parts` is false, or no chunk was completed: then nothing is left behind)."""
        try:
            if self.final is not None:
                self.final.abort()
            if not keep_parts or not self.checkpoint_path.is_file():
                shutil.rmtree(self.folder, ignore_errors=True)
        finally:
            self._unlock()

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock_path = Path(lock.name)
            lock_path.unlink(missing_ok=True)  # while still held: no other job is mid-write
            lock.close()  # closing the descriptor releases the lock


def _warned(table: pa.Table) -> int:
    """Scored rows whose `warnings` list is not empty (a value far outside training)."""
    if "warnings" not in table.column_names or not table.num_rows:
        return 0
    return int(pc.sum(pc.not_equal(table.column("warnings"), "[]")).as_py() or 0)


def _lock_output(output: Path) -> IO[str]:
    """An exclusive lock on `<output>.lock`, held for the job's life: two jobs writing the same
    output would interleave parts and checkpoints. `flock` belongs to the open descriptor, so
    a killed job (even `kill -9`) never leaves a stale lock behind, and `--resume` just works."""
    path = output.with_name(output.name + ".lock")
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataError(
            f"{output}: another scoring job ({holder}) is writing this output; wait for it to "
            "finish or choose another --output"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


