"""Batch rescoring benchmark: file→file rows/s against raw `Booster.predict`, in one run.

    .venv/bin/python benchmarks/batch.py               # 1M rows
    .venv/bin/python benchmarks/batch.py --rows 10000000   # the 10M flat-memory check

Builds a synthetic CRM (leads + activity log), trains a model on it (no MLflow), writes N leads
of about 30 columns to Parquet, then measures on the same machine, interleaved:
  raw       `booster.predict` on the first min(N, 1M) rows held as an in-memory numpy matrix;
  file      `leadscore.batch.rescore` Parquet→Parquet without reasons, in a fresh process
            (its peak RSS is the memory figure), with the compiled trees (`leadscore.compiled`,
            the [fast] extra; compiled once before, as a first job would, and cached);
  lightgbm  the same job scoring with LightGBM only (`compiled=False`);
  reasons   the same with 3 reasons per lead on the first --reasons-rows rows.
The compiled and LightGBM outputs are compared: the largest difference in probability is
recorded (the issue holds it to 1e-9).
Writes benchmarks/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "batch.json"


def build(workdir: Path, base: int, seed: int) -> tuple[Path, Path]:
    """A trained bundle and a base table of scoring rows (cached in `workdir`)."""
    import pandas as pd
    import yaml

    from leadscore import synth
    from leadscore.config import Settings, load_spec
    from leadscore.pipeline import run_training
    from leadscore.table import build_table

    bundle_dir = workdir / "models" / "bench"
    base_path = workdir / f"base-{base}.parquet"
    if (bundle_dir / "bundle.json").is_file() and base_path.is_file():
        return bundle_dir, base_path
    data_dir = workdir / "synth"
    synth.write(synth.generate(base, seed=seed), data_dir, fmt="parquet")
    spec = {
        "name": "synthetic_bench",
        "leads": {"path": str(data_dir / "leads.parquet"), "id": "lead_id",
                  "created_at": "created_at"},
        "outcome": {"table": {"path": str(data_dir / "conversions.parquet"), "id": "lead_id",
                              "converted_at": "converted_at"}, "horizon_days": 60},
        "activities": {"path": str(data_dir / "activities.parquet"), "id": "lead_id",
                       "timestamp": "timestamp", "type": "type", "channel": "channel",
                       "windows": [30]},
        "as_of_days": 14,
        "features": {"categorical": ["source_channel", "industry", "company_size", "country",
                                     "budget", "authority", "need", "timeline",
                                     "stage_at_creation"]},
        "derive": {"job_title": "job_title", "email": "email", "phone": "phone"},
        "drop": ["converted"],
        "pii": ["name"],
        "leak_audit": {"enabled": False},
    }
    spec_path = workdir / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    loaded = load_spec(spec_path)
    settings = Settings(models_dir=workdir / "models", model_name="bench",
                        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    import inspect

    # the model is all this needs: no evaluation report or baselines where training offers them
    skip = {k: False for k in ("with_report", "baselines")
            if k in inspect.signature(run_training).parameters}
    run_training(loaded, settings, track=False, bundle_out=bundle_dir, **skip)
    # scoring rows: the leads as exported (about 30 columns) with their activity aggregates
    table, _ = build_table(loaded)
    raw = pd.read_parquet(data_dir / "leads.parquet").set_index("lead_id")
    activity = [c for c in table.columns if c.startswith("activity.")]
    frame = raw.loc[table["_id"]].reset_index()
    frame = frame.drop(columns=["converted", "converted_at"], errors="ignore")
    for column in activity:
        frame[column] = table[column].to_numpy()
    frame.to_parquet(base_path, index=False)
    return bundle_dir, base_path


def write_input(base_path: Path, path: Path, rows: int) -> Path:
    """`rows` leads, the base table repeated with fresh ids, written a row group at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if path.is_file() and pq.read_metadata(path).num_rows == rows:
        return path
    base = pq.read_table(base_path)
    base = base.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type)
                                else f for f in base.schema]))
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(str(tmp), base.schema) as writer:
        done = 0
        while done < rows:
            part = base.slice(0, min(base.num_rows, rows - done))
            ids = pc.binary_join_element_wise(
                "B", pc.utf8_lpad(pc.cast(pa.array(range(done, done + part.num_rows)),
                                          pa.string()), 9, "0"), "")
            part = part.set_column(part.schema.get_field_index("lead_id"), "lead_id", ids)
            writer.write_table(part, row_group_size=100_000)
            done += part.num_rows
    tmp.replace(path)
    return path


def raw_predict(bundle_dir: Path, path: Path, rows: int) -> tuple[float, float]:
    """Wall and CPU seconds of `Booster.predict` on the first `rows` rows as one numpy matrix."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from leadscore.scoring import load_bundle

    bundle = load_bundle(bundle_dir)
    batches, have = [], 0
    with pq.ParquetFile(path, pre_buffer=False) as parquet:
        for batch in parquet.iter_batches(columns=[bundle.id_column, *bundle.inputs]):
            batches.append(batch)
            have += batch.num_rows
            if have >= rows:
                break
    table = pa.Table.from_batches(batches).slice(0, rows)
    matrix = bundle.builder.transform(table)
    del table
    start, cpu = time.perf_counter(), time.process_time()
    bundle.booster.predict(matrix)
    return time.perf_counter() - start, time.process_time() - cpu


def child(args: argparse.Namespace) -> None:
    """One scoring job in a fresh process; prints its figures as JSON."""
    import logging

    from leadscore.batch import rescore
    from leadscore.scoring import load_bundle

    logging.basicConfig(level=logging.WARNING)
    bundle = load_bundle(args.bundle)
    cpu = time.process_time()
    summary = rescore(bundle, Path(args.input), Path(args.output), reasons=args.reasons,
                      chunk_rows=args.chunk_rows, compiled=bool(args.compiled))
    used = bundle.compiled_ is not None and bundle.compiled_.checked and \
        not bundle.compiled_.broken
    # VmHWM, not ru_maxrss: the latter keeps the parent's RSS from before exec
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak_kib = int(line.split()[1])
    json.dump({"rows": summary.rows, "seconds": summary.seconds,
               "cpu_seconds": time.process_time() - cpu,
               "peak_rss_mib": round(peak_kib / 1024, 1), "compiled": used}, sys.stdout)


def score_file(bundle_dir: Path, src: Path, out: Path, reasons: int, chunk_rows: int,
               compiled: bool = True, keep: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", "--bundle", str(bundle_dir), "--input",
               str(src), "--output", str(out), "--reasons", str(reasons),
               "--chunk-rows", str(chunk_rows), "--compiled", str(int(compiled))]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"scoring failed:\n{result.stderr[-3000:]}")
    if not keep:
        out.unlink(missing_ok=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def compile_once(bundle_dir: Path) -> float | None:
    """Build the compiled model into LEADSCORE_HOME's cache (as a first large job would); its
    seconds, or None when the [fast] extra or a compiler is missing."""
    from leadscore import compiled
    from leadscore.scoring import load_bundle

    bundle = load_bundle(bundle_dir)
    start = time.perf_counter()
    if compiled.cached_model(bundle.booster, bundle.meta) is not None:
        return 0.0
    model = compiled.compile_model(bundle.booster, bundle.meta)
    return round(time.perf_counter() - start, 1) if model is not None else None


def probability_gap(a: Path, b: Path) -> float | None:
    """The largest difference in probability between two outputs of the same leads."""
    import numpy as np
    import pyarrow.parquet as pq

    if not (a.is_file() and b.is_file()):
        return None
    left = pq.read_table(a, columns=["probability"]).column("probability").to_numpy()
    right = pq.read_table(b, columns=["probability"]).column("probability").to_numpy()
    return float(np.max(np.abs(left - right))) if len(left) == len(right) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--base", type=int, default=60_000, help="synthetic leads to train on")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--reasons-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (cached)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--reasons", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--compiled", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import warnings

    warnings.filterwarnings("ignore")
    scratch = None
    if args.workdir is None:
        scratch = tempfile.TemporaryDirectory(prefix="leadscore-bench-")
        workdir = Path(scratch.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    print(f"building model and {args.rows:,}-row input in {workdir} ...", flush=True)
    bundle_dir, base_path = build(workdir, args.base, args.seed)
    src = write_input(base_path, workdir / f"leads-{args.rows}.parquet", args.rows)
    reasons_rows = min(args.rows, args.reasons_rows)
    reasons_src = write_input(base_path, workdir / f"leads-{reasons_rows}.parquet", reasons_rows)
    raw_rows = min(args.rows, 1_000_000)
    out = workdir / "scores.parquet"

    os.environ.setdefault("LEADSCORE_HOME", str(workdir))  # the compiled model's cache
    compile_s = compile_once(bundle_dir)
    print(f"  compiled model: {'unavailable' if compile_s is None else f'{compile_s} s'}",
          flush=True)
    raw_s, raw_cpu, file_runs, lgb_runs = [], [], [], []
    lgb_out = workdir / "scores-lightgbm.parquet"
    for i in range(args.repeats):
        wall, cpu = raw_predict(bundle_dir, src, raw_rows)
        raw_s.append(wall)
        raw_cpu.append(cpu)
        print(f"  raw predict    {raw_rows / wall:>12,.0f} rows/s", flush=True)
        last = i == args.repeats - 1 or args.rows > 2_000_000
        file_runs.append(score_file(bundle_dir, src, out, 0, args.chunk_rows, keep=last))
        run = file_runs[-1]
        print(f"  file -> file   {run['rows'] / run['seconds']:>12,.0f} rows/s  "
              f"(peak RSS {run['peak_rss_mib']:,.0f} MiB, compiled: {run['compiled']})",
              flush=True)
        lgb_runs.append(score_file(bundle_dir, src, lgb_out, 0, args.chunk_rows, compiled=False,
                                   keep=last))
        run = lgb_runs[-1]
        print(f"  ... LightGBM   {run['rows'] / run['seconds']:>12,.0f} rows/s", flush=True)
        if i == 0 and args.rows > 2_000_000:
            break  # one pass is enough to show a large job's speed and memory
    gap = probability_gap(out, lgb_out)
    out.unlink(missing_ok=True)
    lgb_out.unlink(missing_ok=True)
    reasons = score_file(bundle_dir, reasons_src, out, 3, args.chunk_rows)
    print(f"  with 3 reasons {reasons['rows'] / reasons['seconds']:>12,.0f} rows/s", flush=True)

    raw_rate = raw_rows / min(raw_s)
    best = min(file_runs, key=lambda r: r["seconds"])
    rate = best["rows"] / best["seconds"]
    best_lgb = min(lgb_runs, key=lambda r: r["seconds"])
    lgb_rate = best_lgb["rows"] / best_lgb["seconds"]
    from leadscore.scoring import load_bundle

    bundle = load_bundle(bundle_dir)
    import pyarrow.parquet as pq

    result = {
        "rows": args.rows,
        "rows_per_s": round(rate, 1),
        "raw_predict_rows_per_s": round(raw_rate, 1),
        "ratio": round(rate / raw_rate, 3),
        "ratio_target": 1.5,
        "compiled": bool(best["compiled"]),
        "rows_per_s_lightgbm": round(lgb_rate, 1),
        "ratio_lightgbm": round(lgb_rate / raw_rate, 3),
        "max_probability_difference_compiled_vs_lightgbm": gap,
        "compile_seconds_once": compile_s,
        "rows_per_s_reasons3": round(reasons["rows"] / reasons["seconds"], 1),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in file_runs),
        "peak_rss_mib_lightgbm": max(r["peak_rss_mib"] for r in lgb_runs),
        "details": {
            "input_columns": len(pq.read_schema(src).names),
            "input": "Parquet, snappy; output Parquet",
            "chunk_rows": args.chunk_rows,
            "raw_predict_rows": raw_rows,
            # CPU-seconds per row, less sensitive to other jobs on a shared machine
            "cpu_ratio": round((min(raw_cpu) / raw_rows)
                               / (min(r["cpu_seconds"] for r in file_runs) / args.rows), 3),
            "reasons_rows": reasons_rows,
            "model": {"trees": bundle.booster.num_trees(), "features": len(bundle.inputs)},
            "repeats": len(file_runs),
            "runs_rows_per_s": [round(r["rows"] / r["seconds"]) for r in file_runs],
            "runs_rows_per_s_lightgbm": [round(r["rows"] / r["seconds"]) for r in lgb_runs],
            "runs_raw_rows_per_s": [round(raw_rows / s) for s in raw_s],
            # each round's file job over the raw predict measured just before it: the best-of
            # ratio above pairs figures from different moments of a shared machine
            "ratios_per_round": [round((r["rows"] / r["seconds"]) / (raw_rows / s), 3)
                                 for r, s in zip(file_runs, raw_s, strict=False)],
            "load_average_at_start": load_start,
            "best_of": "each figure is the best of the interleaved repeats",
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "seconds_total": round(time.perf_counter() - started, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
