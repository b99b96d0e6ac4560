"""The feature build's scaling curve: 1M synthetic leads with activity logs of 10M / 100M rows
(Parquet folders written once, chunk by chunk, never whole in memory), built by the local and
duckdb engines in fresh processes; peak RSS of the process and all its children (psutil).

Run through `benchmarks/features.py --activities 10000000,100000000 --build-engines local,duckdb`
(results go to features.json under "scaling").
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_ROWS = 5_000_000
# the local engine holds the log in memory (~160 bytes a row at its peak): past this many rows
# it is not run on a shared 23 GiB machine, its figure would be a swap or an OOM kill
LOCAL_MAX_ACTIVITIES = 30_000_000


def ensure_log(folder: Path, activities: int, seed: int) -> Path:
    """`folder/activities-<n>/parts/part-*.parquet`: `activities` rows over the leads of
    `folder`, written once (READY beside `parts/` marks a finished log). Returns `parts/`."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from leadscore.synth import ACTIVITY_CHANNELS, ACTIVITY_TYPES

    top = folder / f"activities-{activities}"
    out = top / "parts"
    if (top / "READY").is_file():
        print(f"reusing {out}", flush=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    print(f"writing {activities:,} activities into {out} ...", flush=True)
    leads = pacsv.read_csv(
        str(folder / "leads.csv"),
        convert_options=pacsv.ConvertOptions(
            include_columns=["lead_id", "created_at"],
            column_types={"lead_id": pa.string(), "created_at": pa.timestamp("s")},
        ),
    )
    ids = leads.column("lead_id").combine_chunks()
    created = leads.column("created_at").cast(pa.int64()).to_numpy()
    kinds = pa.array([t[0] for t in ACTIVITY_TYPES])
    weights = np.array([t[2] for t in ACTIVITY_TYPES], dtype=float)
    weights /= weights.sum()
    default_channel = pa.array([t[1] for t in ACTIVITY_TYPES])
    assert set(default_channel.to_pylist()) <= set(ACTIVITY_CHANNELS)
    began = time.perf_counter()
    written = 0
    part = 0
    while written < activities:
        rows = min(CHUNK_ROWS, activities - written)
        rng = np.random.default_rng([seed, part])
        lead = rng.integers(0, len(ids), rows)
        # most activity comes in the first weeks; some lands after the as-of time (excluded)
        offset = np.minimum(rng.exponential(20 * 86_400, rows), 120 * 86_400).astype(np.int64)
        kind = rng.choice(len(kinds), size=rows, p=weights)
        order = np.argsort(created[lead] + offset, kind="stable")  # exports come by time
        lead, offset, kind = lead[order], offset[order], kind[order]
        table = pa.table({
            "lead_id": ids.take(pa.array(lead)),
            "timestamp": pa.array((created[lead] + offset) * 1_000_000, pa.timestamp("us")),
            "type": kinds.take(pa.array(kind)),
            "channel": default_channel.take(pa.array(kind)),
        })
        pq.write_table(table, out / f"part-{part:05d}.parquet", row_group_size=1_000_000)
        written += rows
        part += 1
        print(f"  {written:,} rows ({time.perf_counter() - began:.0f} s)", flush=True)
    (top / "READY").write_text(json.dumps({"activities": activities, "seed": seed}))
    return out


def child_scale_build(folder: Path, log_folder: Path, engine: str) -> dict[str, Any]:
    """build_table on the synthetic spec with its activity log swapped for `log_folder`."""
    import yaml

    import leadscore.table as features
    from leadscore.config import load_spec

    raw = yaml.safe_load((folder / "spec.yaml").read_text(encoding="utf-8"))
    raw["activities"]["path"] = str(log_folder)
    spec_path = log_folder.parent / f"spec-{engine}.yaml"
    spec_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    spec = load_spec(spec_path)
    cpu0 = _cpu()
    wall0 = time.perf_counter()
    table, report = features.build_table(spec, engine=engine)
    seconds = time.perf_counter() - wall0
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(_cpu() - cpu0, 2),
        "own_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rows": int(len(table)),
        "columns": int(table.shape[1]),
        "activities_skipped": report.notes.get("activities_skipped"),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_with_peak(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run `cmd`, sampling the RSS of it and all its children every 0.1 s (psutil): the peak a
    machine must have, Spark's JVM or any helper process included. Reads its last JSON line."""
    import psutil

    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += p.memory_info().rss
            except psutil.NoSuchProcess:
                return
            peak = max(peak, total)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        done.set()
        return {"error": f"timed out after {timeout:.0f} s"}
    done.set()
    sampler.join()
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    out: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    out["process_seconds"] = round(time.perf_counter() - began, 2)
    # sampling can miss a short peak; the process's own high-water mark cannot
    out["sampled_peak_rss_mib"] = round(peak / 2**20, 1)
    out["peak_rss_mib"] = max(out["sampled_peak_rss_mib"], out.get("own_peak_rss_mib", 0.0))
    return out


def run_scaling(script: Path, folder: Path, counts: list[int], engines: list[str], seed: int,
                timeout: float) -> list[dict[str, Any]]:
    """One row per (activities, engine): seconds, CPU seconds, peak RSS with children, load."""
    rows = []
    for count in counts:
        log_folder = ensure_log(folder, count, seed)
        for engine in engines:
            if engine == "local" and count > LOCAL_MAX_ACTIVITIES:
                rows.append({"activities": count, "engine": engine, "skipped": (
                    f"the local engine holds the log in memory; over {LOCAL_MAX_ACTIVITIES:,} "
                    "rows it is not run on this shared machine")})
                print(f"  {engine} at {count:,}: skipped (in-memory log too large)", flush=True)
                continue
            load_before = os.getloadavg()[0]
            print(f"building with {engine} over {count:,} activities ...", flush=True)
            result = run_with_peak(
                [sys.executable, str(script), "--child", "scale-build", "--data", str(folder),
                 "--engine", engine, "--log", str(log_folder)], timeout)
            row = {"activities": count, "engine": engine, **result,
                   "load_average_1m_before": round(load_before, 2),
                   "load_average_1m_after": round(os.getloadavg()[0], 2)}
            rows.append(row)
            if "error" in result:
                print(f"  {result['error']}", flush=True)
            else:
                print(f"  {result['seconds']:.1f} s wall, {result['cpu_seconds']:.1f} s CPU, "
                      f"peak RSS {result['peak_rss_mib']:,.0f} MiB (with children), "
                      f"load {row['load_average_1m_before']}->{row['load_average_1m_after']}",
                      flush=True)
    return rows
