"""Benchmark: the point-in-time training table for 1M synthetic leads and ~20M activity rows.

Measures `leadscore.table.build_table(spec)` (seconds, CPU seconds, peak RSS) in a fresh
subprocess, then runs the same activity aggregation (counts per type per window, totals, days
since the last activity, first/last channel) in pyarrow+numpy (leadscore's), pandas, DuckDB and
Polars on the same Arrow table, checks they agree, and writes benchmarks/results/features.json.

    .venv/bin/python benchmarks/features.py [--leads N] [--engines ours,pandas,duckdb,polars]
    .venv/bin/python benchmarks/features.py --activities 10000000,100000000 \
        --build-engines local,duckdb      # the scaling curve (features_scale.py), "scaling"

Synthetic CSVs are generated once into --cache (default /tmp/leadscore-bench) and reused.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_SECONDS = 60.0
ENGINES = ("ours", "pandas", "duckdb", "polars")
ENGINE_LABELS = {
    "ours": "pyarrow+numpy (leadscore)",
    "pandas": "pandas groupby",
    "duckdb": "DuckDB SQL",
    "polars": "Polars lazy",
}
SAMPLE_LEADS = 20_000

# the same spec as a data team would write for the synthetic export (see configs/)
SPEC = """\
name: synthetic
leads:
  path: {data}/leads.csv
  id: lead_id
  created_at: created_at
outcome:
  table:
    path: {data}/conversions.csv
    id: lead_id
    converted_at: converted_at
  horizon_days: 90
as_of_days: 14
activities:
  path: {data}/activities.csv
  id: lead_id
  timestamp: timestamp
  type: type
  channel: channel
  windows: [7, 14]
  positive: [demo_request, free_trial_start]
  negative: [call_unanswered]
features:
  categorical: [source_channel, industry, company_size, country, budget, authority, need,
                timeline, stage_at_creation]
derive:
  job_title: job_title
  email: email
  phone: phone
  bant: [budget, authority, need, timeline]
drop: [converted, converted_at, seniority]
pii: [name, email, phone]
"""


# --------------------------------------------------------------------------- measuring


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _child(args: list[str], timeout: float) -> dict[str, Any]:
    """Run this script in a fresh interpreter (its peak RSS is then its own); read its JSON."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    began = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_seconds"] = round(time.perf_counter() - began, 2)
    return out


# --------------------------------------------------------------------------- data


def ensure_data(cache: Path, leads: int, seed: int) -> Path:
    """Generate the synthetic CSVs and the spec once; a folder without READY is regenerated."""
    folder = cache / f"synth-{leads}-seed{seed}"
    if not (folder / "READY").is_file():
        print(f"generating {leads:,} leads into {folder} ...", flush=True)
        out = _child(["--child", "generate", "--data", str(folder), "--leads", str(leads),
                      "--seed", str(seed)], timeout=1800)
        if "error" in out:
            raise SystemExit(f"generating the synthetic data failed: {out['error']}")
    else:
        print(f"reusing {folder}", flush=True)
    return folder


def child_generate(folder: Path, leads: int, seed: int) -> dict[str, Any]:
    from leadscore import synth

    data = synth.generate(leads, seed=seed)
    synth.write(data, folder, fmt="csv")
    (folder / "spec.yaml").write_text(SPEC.format(data=folder), encoding="utf-8")
    info = {"leads": len(data.leads), "activities": len(data.activities), "seed": seed}
    (folder / "READY").write_text(json.dumps(info), encoding="utf-8")
    return info


def child_prepare(folder: Path) -> dict[str, Any]:
    """The engines' shared input as Arrow IPC files: the activity log exactly as
    `data.load_activities` returns it, and each lead's id and as-of time."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from leadscore.config import load_spec
    from leadscore.data import load_activities

    spec = load_spec(folder / "spec.yaml")
    acts = load_activities(spec)
    leads = pacsv.read_csv(
        str(folder / "leads.csv"),
        convert_options=pacsv.ConvertOptions(
            include_columns=["lead_id", "created_at"],
            column_types={"lead_id": pa.string(), "created_at": pa.timestamp("ns")},
        ),
    )
    created = leads.column("created_at").to_numpy().astype("datetime64[ns]")
    as_of = created + np.timedelta64(int(spec.as_of_days * 86_400e9), "ns")
    lead_table = pa.table({
        "id": leads.column("lead_id").combine_chunks(),
        "as_of": pa.array(as_of),
        "i": pa.array(np.arange(leads.num_rows, dtype=np.int64)),
    })
    out = folder / "engine-input"
    out.mkdir(exist_ok=True)
    for name, table in (("activities", acts.combine_chunks()), ("leads", lead_table)):
        with pa.OSFile(str(out / f"{name}.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    types = sorted(t for t in acts.column("type").unique().to_pylist() if t is not None)
    meta = {"types": types, "windows": list(spec.activities.windows)}
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    (out / "READY").write_text("ok", encoding="utf-8")
    return meta


# --------------------------------------------------------------------------- the build


def child_build(folder: Path) -> dict[str, Any]:
    """build_table on the spec, with the time of each stage (wrappers add microseconds)."""
    import leadscore.table as features
    from leadscore.config import load_spec

    stages: dict[str, float] = {}

    def timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                stages[name] = round(stages.get(name, 0.0) + time.perf_counter() - began, 2)

        return wrapper

    for name in ("load_leads", "load_conversions", "load_activities", "aggregate_activities",
                 "_label_from_conversions", "_cutoff", "_training_rows"):
        setattr(features, name, timed(name.lstrip("_"), getattr(features, name)))

    spec = load_spec(folder / "spec.yaml")
    rss_before = _rss_mib()
    cpu0, wall0 = _cpu(), time.perf_counter()
    table, report = features.build_table(spec)
    seconds = time.perf_counter() - wall0
    cpu = _cpu() - cpu0
    stages["other"] = round(seconds - sum(stages.values()), 2)
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mib": round(_peak_mib(), 1),
        "rss_before_build_mib": round(rss_before, 1),
        "rows": int(len(table)),
        "columns": int(table.shape[1]),
        "labelled": report.labelled,
        "positives": report.positives,
        "excluded": report.excluded,
        "activities_skipped": report.notes.get("activities_skipped"),
        "stages_seconds": stages,
    }


# --------------------------------------------------------------------------- engines
# Each takes the activity log (Arrow: id, ts, type, channel), the leads (Arrow: id, as_of, i),
# the activity types and windows; each returns arrays of one value per lead, in lead order,
# keyed "<type>.<w>d", "total.<w>d", "days_since_last", "first_channel", "last_channel".


def window_is_closed() -> bool:
    """Whether leadscore counts an activity exactly `window` days before the as-of time (a
    window of [as_of - w, as_of) rather than (as_of - w, as_of)), so the other engines count
    the same way; asked of the code, not assumed."""
    import pyarrow as pa

    from leadscore.config import ActivitySpec
    from leadscore.table import aggregate_activities

    as_of = np.array(["2024-01-08T00:00:00"], dtype="datetime64[ns]")
    acts = pa.table({
        "id": ["a"], "ts": pa.array(as_of - np.timedelta64(7, "D")),
        "type": ["t"], "channel": ["c"],
    })
    spec = ActivitySpec(path=Path("-"), id="id", timestamp="ts", type="type", windows=[7])
    frame, _, _ = aggregate_activities(acts, ["a"], as_of, spec, ["t"])
    return bool(frame.filter(like="total.7d").to_numpy()[0, 0] == 1)


def agg_ours(acts: Any, leads: Any, types: list[str], windows: list[int], closed: bool
             ) -> dict[str, Any]:
    from leadscore.config import ActivitySpec
    from leadscore.features import ACTIVITY_PREFIX
    from leadscore.table import aggregate_activities

    del closed  # leadscore's own rule, whichever it is: the others copy it
    spec = ActivitySpec(path=Path("-"), id="id", timestamp="ts", type="type", channel="channel",
                        windows=windows)
    as_of = leads.column("as_of").to_numpy()
    frame, _, _ = aggregate_activities(acts, leads.column("id").to_pylist(), as_of, spec, types)
    return {c.removeprefix(ACTIVITY_PREFIX): frame[c].to_numpy() for c in frame.columns}


def agg_pandas(acts: Any, leads: Any, types: list[str], windows: list[int], closed: bool
               ) -> dict[str, Any]:
    import pandas as pd

    n = leads.num_rows
    a = acts.to_pandas()
    a["type"] = a["type"].astype(pd.CategoricalDtype(types))
    lead_frame = leads.to_pandas()
    m = a.merge(lead_frame, on="id", how="inner")
    m = m[m["ts"] < m["as_of"]]
    m["age"] = (m["as_of"] - m["ts"]) / pd.Timedelta(days=1)
    out: dict[str, Any] = {}
    everyone = pd.RangeIndex(n)
    for w in windows:
        win = m[m["age"] <= w] if closed else m[m["age"] < w]
        grid = win.groupby(["i", "type"], observed=False).size().unstack(fill_value=0)
        grid = grid.reindex(index=everyone, columns=types, fill_value=0)
        for t in types:
            out[f"{t}.{w}d"] = grid[t].to_numpy()
        out[f"total.{w}d"] = win.groupby("i").size().reindex(everyone, fill_value=0).to_numpy()
    by_lead = m.groupby("i")
    out["days_since_last"] = by_lead["age"].min().reindex(everyone).to_numpy()
    for key, pick in (("first_channel", "idxmin"), ("last_channel", "idxmax")):
        rows = getattr(by_lead["ts"], pick)()
        out[key] = m.loc[rows.to_numpy(), "channel"].set_axis(rows.index).reindex(everyone)
        out[key] = out[key].to_numpy(dtype=object)
    return out


def _scatter(result: Any, n: int) -> dict[str, Any]:
    """Per-lead rows (column `i`) of a grouped result into full-length arrays in lead order."""
    import pyarrow as pa

    i = result.column("i").to_numpy()
    out: dict[str, Any] = {}
    for name in result.column_names:
        if name == "i":
            continue
        column = result.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or (
            pa.types.is_string_view(column.type)
        ):
            full = np.full(n, None, dtype=object)
            full[i] = np.asarray(column.to_pylist(), dtype=object)
        elif name == "days_since_last":
            full = np.full(n, np.nan)
            full[i] = column.to_numpy()
        else:
            full = np.zeros(n, dtype=np.int64)
            full[i] = column.to_numpy()
        out[name] = full
    return out


def agg_duckdb(acts: Any, leads: Any, types: list[str], windows: list[int], closed: bool
               ) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(config={"threads": os.cpu_count() or 1})
    con.register("acts", acts)
    con.register("leads", leads)
    op = "<=" if closed else "<"
    aggs = []
    for w in windows:
        aggs += [f"count(*) FILTER (WHERE age {op} {w} AND type = '{t}') AS \"{t}.{w}d\""
                 for t in types]
        aggs.append(f"count(*) FILTER (WHERE age {op} {w}) AS \"total.{w}d\"")
    aggs += ["min(age) AS days_since_last", "arg_min(channel, ts) AS first_channel",
             "arg_max(channel, ts) AS last_channel"]
    sql = f"""
        WITH j AS (
            SELECT l.i, a.type, a.channel, a.ts,
                   (epoch_ns(l.as_of) - epoch_ns(a.ts)) / 86400e9 AS age
            FROM acts a JOIN leads l ON a.id = l.id
            WHERE a.ts < l.as_of
        )
        SELECT i, {", ".join(aggs)} FROM j GROUP BY i
    """  # noqa: S608 (types come from the data's own type column, not from a user)
    relation = con.sql(sql)
    result = (relation.to_arrow_table() if hasattr(relation, "to_arrow_table")
              else relation.arrow())
    con.close()
    return _scatter(result, leads.num_rows)


def agg_polars(acts: Any, leads: Any, types: list[str], windows: list[int], closed: bool
               ) -> dict[str, Any]:
    import polars as pl

    age = pl.col("age")
    aggs = []
    for w in windows:
        inside = age <= w if closed else age < w
        aggs += [(inside & (pl.col("type") == t)).sum().alias(f"{t}.{w}d") for t in types]
        aggs.append(inside.sum().alias(f"total.{w}d"))
    aggs += [
        age.min().alias("days_since_last"),
        pl.col("channel").get(pl.col("ts").arg_min()).alias("first_channel"),
        pl.col("channel").get(pl.col("ts").arg_max()).alias("last_channel"),
    ]
    result = (
        pl.from_arrow(acts).lazy()
        .join(pl.from_arrow(leads).lazy(), on="id", how="inner")
        .filter(pl.col("ts") < pl.col("as_of"))
        .with_columns(age=(pl.col("as_of") - pl.col("ts")).dt.total_nanoseconds() / 86400e9)
        .group_by("i")
        .agg(aggs)
        .collect()
    )
    return _scatter(result.to_arrow(), leads.num_rows)


ENGINE_FUNCS = {"ours": agg_ours, "pandas": agg_pandas, "duckdb": agg_duckdb,
                "polars": agg_polars}


# --------------------------------------------------------------------------- reading the CSV
# Loading is most of the build, so each engine also reads activities.csv into its own memory
# with the timestamp parsed: leadscore's `data.load_activities` (pyarrow), pandas' C parser,
# DuckDB's read_csv into a table, Polars' read_csv.


def read_ours(folder: Path) -> int:
    from leadscore.config import load_spec
    from leadscore.data import load_activities

    return load_activities(load_spec(folder / "spec.yaml")).num_rows


def read_pandas(folder: Path) -> int:
    import pandas as pd

    frame = pd.read_csv(folder / "activities.csv", dtype=str, engine="c")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601")
    return len(frame)


def read_duckdb(folder: Path) -> int:
    import duckdb

    con = duckdb.connect(config={"threads": os.cpu_count() or 1})
    con.execute(
        "CREATE TABLE acts AS SELECT * FROM read_csv(?, header = true, columns = {"
        "'lead_id': 'VARCHAR', 'timestamp': 'TIMESTAMP', 'type': 'VARCHAR', "
        "'channel': 'VARCHAR'})",
        [str(folder / "activities.csv")],
    )
    rows = con.execute("SELECT count(*) FROM acts").fetchone()
    return int(rows[0]) if rows else 0


def read_polars(folder: Path) -> int:
    import polars as pl

    schema = {"lead_id": pl.String, "timestamp": pl.Datetime("ns"), "type": pl.String,
              "channel": pl.String}
    return pl.read_csv(folder / "activities.csv", schema=schema).height


READ_LABELS = {
    "ours": "pyarrow.csv (leadscore load_activities)",
    "pandas": "pandas read_csv (C parser)",
    "duckdb": "DuckDB read_csv into a table",
    "polars": "Polars read_csv",
}
READ_FUNCS = {"ours": read_ours, "pandas": read_pandas, "duckdb": read_duckdb,
              "polars": read_polars}


def child_read(folder: Path, engine: str) -> dict[str, Any]:
    _warm(engine)
    start_rss = _rss_mib()
    cpu0, wall0 = _cpu(), time.perf_counter()
    rows = READ_FUNCS[engine](folder)
    return {
        "seconds": round(time.perf_counter() - wall0, 2),
        "cpu_seconds": round(_cpu() - cpu0, 2),
        "peak_rss_mib": round(_peak_mib(), 1),
        "extra_peak_mib": round(_peak_mib() - start_rss, 1),
        "rows": rows,
    }


def child_engine(folder: Path, engine: str, repeat: int, closed: bool) -> dict[str, Any]:
    """Read the shared input fully into memory, then aggregate `repeat` times; save a sample of
    leads and per-column sums for the agreement check."""
    import pyarrow as pa

    inputs = folder / "engine-input"
    tables = {}
    for name in ("activities", "leads"):
        with pa.OSFile(str(inputs / f"{name}.arrow"), "rb") as source:
            tables[name] = pa.ipc.open_file(source).read_all()
    meta = json.loads((inputs / "meta.json").read_text(encoding="utf-8"))
    func = ENGINE_FUNCS[engine]
    _warm(engine)
    input_rss = _rss_mib()
    runs = []
    for _ in range(repeat):
        cpu0, wall0 = _cpu(), time.perf_counter()
        out = func(tables["activities"], tables["leads"], meta["types"], meta["windows"],
                   closed)
        runs.append((time.perf_counter() - wall0, _cpu() - cpu0))
    n = tables["leads"].num_rows
    sample = np.random.default_rng(0).choice(n, size=min(SAMPLE_LEADS, n), replace=False)
    saved: dict[str, Any] = {}
    sums: dict[str, float] = {}
    for key, values in out.items():
        values = np.asarray(values)
        if values.dtype == object:
            saved[key] = np.array([_text(v) for v in values[sample]])
        else:
            saved[key] = values[sample].astype("float64")
            sums[key] = float(np.nansum(values.astype("float64")))
    np.savez(inputs / f"result-{engine}.npz", **saved)
    (inputs / f"sums-{engine}.json").write_text(json.dumps(sums), encoding="utf-8")
    best = min(runs)
    return {
        "seconds": round(best[0], 2),
        "cpu_seconds": round(best[1], 2),
        "runs_seconds": [round(r[0], 2) for r in runs],
        "peak_rss_mib": round(_peak_mib(), 1),
        "input_rss_mib": round(input_rss, 1),
        "extra_peak_mib": round(_peak_mib() - input_rss, 1),
        "activities": tables["activities"].num_rows,
        "version": _version(engine),
    }


def _text(value: Any) -> str:
    """A channel as text; None, NaN and pandas' NA (no activity) all become ""."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return "" if str(value) in ("<NA>", "nan") else str(value)


def _warm(engine: str) -> None:
    """Import the engine before the clock starts (leadscore.table pulls in pandera)."""
    modules = {"ours": "leadscore.table", "pandas": "pandas"}
    __import__(modules.get(engine, engine))


def _version(engine: str) -> str:
    from importlib.metadata import version

    package = {"ours": "pyarrow", "pandas": "pandas"}.get(engine, engine)
    return version(package)


def compare(inputs: Path, engine: str) -> dict[str, Any]:
    """Exact counts on the sample, days since last to 1e-9, column sums over every lead, and
    the share of sampled leads whose first/last channel matches (ties in time may differ)."""
    ref = np.load(inputs / "result-ours.npz")
    got = np.load(inputs / f"result-{engine}.npz")
    ref_sums = json.loads((inputs / "sums-ours.json").read_text(encoding="utf-8"))
    got_sums = json.loads((inputs / f"sums-{engine}.json").read_text(encoding="utf-8"))
    missing = sorted(set(ref.files) - set(got.files))
    bad = []
    channel_match = {}
    for key in ref.files:
        if key not in got.files:
            continue
        a, b = ref[key], got[key]
        if key.endswith("_channel"):
            channel_match[key] = round(float(np.mean(a == b)), 6)
        elif key == "days_since_last":
            same_nan = np.array_equal(np.isnan(a), np.isnan(b))
            if not same_nan or not np.allclose(a, b, rtol=0, atol=1e-9, equal_nan=True):
                bad.append(key)
        elif not np.array_equal(a, b):
            bad.append(key)
    for key, total in ref_sums.items():
        if key in got_sums and key != "days_since_last" and got_sums[key] != total:
            bad.append(f"{key} (sum over all leads)")
    return {
        "sampled_leads": int(len(ref[ref.files[0]])),
        "counts_agree": not bad and not missing,
        "mismatched": bad,
        "missing": missing,
        "channel_agreement": channel_match,
    }


# --------------------------------------------------------------------------- the verdict


def read_verdict(reads: dict[str, dict[str, Any]], build: dict[str, Any]) -> str:
    """One line on the CSV readers, from the figures."""
    ok = {k: v for k, v in reads.items() if "seconds" in v}
    if "ours" not in ok or len(ok) < 2:
        return ""
    fastest = min(ok, key=lambda k: ok[k]["seconds"])
    leanest = min(ok, key=lambda k: ok[k]["extra_peak_mib"])
    load = build.get("stages_seconds", {}).get("load_activities")
    text = (f"Reading activities.csv: fastest {READ_LABELS[fastest]} "
            f"({ok[fastest]['seconds']:.1f} s wall, {ok[fastest]['cpu_seconds']:.1f} s CPU), "
            f"leanest {READ_LABELS[leanest]} (+{ok[leanest]['extra_peak_mib']:,.0f} MiB); "
            f"leadscore's pyarrow reader {ok['ours']['seconds']:.1f} s, "
            f"+{ok['ours']['extra_peak_mib']:,.0f} MiB")
    if load is not None:
        text += f" (load_activities took {load:.1f} s inside the build)"
    return text + "."


def engine_choice(comparison: dict[str, dict[str, Any]], build: dict[str, Any]) -> str:
    """One honest line, written from the figures (a rerun that turns the ranking changes it)."""
    ok = {k: v for k, v in comparison.items() if "seconds" in v and v.get("agrees", True)}
    if "ours" not in ok or len(ok) < 2:
        return "engine comparison incomplete; leadscore uses pyarrow+numpy (bincount)"
    fastest = min(ok, key=lambda k: ok[k]["seconds"])
    thrifty = min(ok, key=lambda k: ok[k]["cpu_seconds"])
    leanest = min(ok, key=lambda k: ok[k]["extra_peak_mib"])
    ours = ok["ours"]
    parts = [
        f"fastest: {ENGINE_LABELS[fastest]} ({ok[fastest]['seconds']:.1f} s wall)",
        f"least CPU: {ENGINE_LABELS[thrifty]} ({ok[thrifty]['cpu_seconds']:.1f} s)",
        f"leanest: {ENGINE_LABELS[leanest]} (+{ok[leanest]['extra_peak_mib']:.0f} MiB over "
        "the input)",
    ]
    agg = build.get("stages_seconds", {}).get("aggregate_activities")
    in_build = (f"the aggregation takes {agg:.1f} s of the {build['seconds']:.1f} s build"
                if agg is not None else "")
    if fastest == "ours":
        why = ("leadscore keeps pyarrow+numpy: it is the fastest here, adds no dependency and "
               f"keeps the per-lead as-of filter in plain arrays; {in_build}")
    else:
        ratio = ours["seconds"] / ok[fastest]["seconds"]
        cpu_ratio = ok[fastest]["cpu_seconds"] / max(ours["cpu_seconds"], 1e-9)
        cpu_text = (f"while using {cpu_ratio:.1f}x its CPU seconds" if cpu_ratio > 1
                    else f"and uses {1 / cpu_ratio:.1f}x fewer CPU seconds")
        why = (f"{ENGINE_LABELS[fastest]} is {ratio:.1f}x faster in wall time than leadscore's "
               f"pyarrow+numpy on this aggregation {cpu_text}; {in_build}")
        if build.get("seconds", 0) < TARGET_SECONDS:
            why += (f", under the {TARGET_SECONDS:.0f} s target, so leadscore keeps "
                    "pyarrow+numpy (no extra dependency, one code path for training and "
                    f"scoring); {ENGINE_LABELS[fastest]} is the measured next step if it must "
                    "get faster")
        else:
            why += (f", over the {TARGET_SECONDS:.0f} s target: moving the aggregation to "
                    f"{ENGINE_LABELS[fastest]} is the measured next step")
    return "; ".join(parts) + ". " + why


# --------------------------------------------------------------------------- scaling


SCALE_GOAL = {"activities": 100_000_000, "peak_rss_mib": 4096.0, "seconds": 180.0}


def scaling(args: argparse.Namespace, folder: Path, info: dict[str, Any]) -> None:
    """The scaling rows, merged into --out under "scaling" (earlier rows of other sizes or
    engines are kept, so the curve can be measured a piece at a time)."""
    from features_scale import run_scaling

    counts = [int(c) for c in args.activities.split(",") if c]
    engines = [e for e in args.build_engines.split(",") if e]
    load_before = os.getloadavg()
    rows = run_scaling(Path(__file__).resolve(), folder, counts, engines, args.seed,
                       args.timeout)
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    kept = [r for r in previous.get("scaling", {}).get("rows", [])
            if (r["activities"], r["engine"]) not in {(c, e) for c in counts for e in engines}]
    merged = sorted(kept + rows, key=lambda r: (r["activities"], r["engine"]))
    goal = next((r for r in merged if r["engine"] == "duckdb"
                 and r["activities"] == SCALE_GOAL["activities"] and "seconds" in r), None)
    previous["scaling"] = {
        "leads": info["leads"],
        "log": "Parquet folder, 5M-row files sorted by time (features_scale.ensure_log)",
        "rows": merged,
        "goal": {**SCALE_GOAL, "met": None if goal is None else bool(
            goal["peak_rss_mib"] <= SCALE_GOAL["peak_rss_mib"]
            and goal["seconds"] <= SCALE_GOAL["seconds"])},
        "duckdb_memory_limit": os.environ.get("LEADSCORE_DUCKDB_MEMORY", "2GB (default)"),
        "machine": {
            "cores": os.cpu_count(),
            "load_average_1m_before": round(load_before[0], 2),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
            "note": "peak RSS sums the build process and its children, sampled every 0.1 s",
        },
    }
    args.out.write_text(json.dumps(previous, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/leadscore-bench"))
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help="comma-separated subset of " + ",".join(ENGINES) + ", or none")
    parser.add_argument("--repeat", type=int, default=2,
                        help="aggregation runs per engine (the fastest is kept)")
    parser.add_argument("--no-read", dest="read", action="store_false",
                        help="skip timing each engine's CSV reader")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per subprocess")
    parser.add_argument("--out", type=Path, default=RESULTS / "features.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--closed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--activities", default="",
                        help="comma-separated activity log sizes for the scaling curve (Parquet "
                             "logs over the --leads synthetic leads); only the curve is run")
    parser.add_argument("--build-engines", default="local,duckdb",
                        help="build_table engines for the scaling curve")
    args = parser.parse_args()

    if args.child:
        import logging

        logging.basicConfig(level=logging.WARNING)
        warnings.filterwarnings("ignore")
        if args.child == "generate":
            out = child_generate(args.data, args.leads, args.seed)
        elif args.child == "prepare":
            out = child_prepare(args.data)
        elif args.child == "build":
            out = child_build(args.data)
        elif args.child == "read":
            out = child_read(args.data, args.engine)
        elif args.child == "scale-build":
            from features_scale import child_scale_build

            out = child_scale_build(args.data, args.log, args.engine)
        else:
            out = child_engine(args.data, args.engine, args.repeat, args.closed)
        print(json.dumps(out))
        return

    folder = ensure_data(args.cache, args.leads, args.seed)
    info = json.loads((folder / "READY").read_text(encoding="utf-8"))
    if args.activities:
        scaling(args, folder, info)
        return
    load_before = os.getloadavg()
    print(f"building the training table ({info['leads']:,} leads, "
          f"{info['activities']:,} activities) ...", flush=True)
    build = _child(["--child", "build", "--data", str(folder)], args.timeout)
    if "error" in build:
        raise SystemExit(f"build_table failed: {build['error']}")
    print(f"  {build['seconds']:.1f} s wall, {build['cpu_seconds']:.1f} s CPU, "
          f"peak RSS {build['peak_rss_mib']:,.0f} MiB, {build['rows']:,} training rows",
          flush=True)
    print(f"  stages (s): {build['stages_seconds']}", flush=True)

    engines = [e for e in args.engines.split(",") if e and e != "none"]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise SystemExit(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    if engines and "ours" not in engines:
        engines.insert(0, "ours")  # the reference every other engine is checked against
    for engine in ("duckdb", "polars"):
        if engine in engines and importlib.util.find_spec(engine) is None:
            print(f"{engine} is not installed (pip install -e '.[bench]'): left out")
            engines.remove(engine)
    comparison: dict[str, dict[str, Any]] = {}
    if engines:
        inputs = folder / "engine-input"
        if not (inputs / "READY").is_file():
            print("preparing the engines' shared Arrow input ...", flush=True)
            prepared = _child(["--child", "prepare", "--data", str(folder)], args.timeout)
            if "error" in prepared:
                raise SystemExit(f"preparing the engine input failed: {prepared['error']}")
        with warnings.catch_warnings():  # pandera imports pyspark, which warns on import
            warnings.simplefilter("ignore")
            closed = window_is_closed()
        for engine in engines:
            print(f"aggregating with {ENGINE_LABELS[engine]} ...", flush=True)
            result = _child(["--child", "engine", "--engine", engine, "--data", str(folder),
                             "--repeat", str(args.repeat), *(["--closed"] if closed else [])],
                            args.timeout)
            if "error" not in result and engine != "ours":
                check = compare(inputs, engine)
                result["agreement"] = check
                result["agrees"] = check["counts_agree"]
            comparison[engine] = result
        print(f"  {'engine':<28}{'wall s':>8}{'CPU s':>8}{'peak MiB':>10}{'+MiB':>8}  agrees")
        for engine, r in comparison.items():
            if "error" in r:
                print(f"  {ENGINE_LABELS[engine]:<28}{r['error']}")
                continue
            agrees = "reference" if engine == "ours" else ("yes" if r["agrees"] else "NO")
            print(f"  {ENGINE_LABELS[engine]:<28}{r['seconds']:>8.1f}{r['cpu_seconds']:>8.1f}"
                  f"{r['peak_rss_mib']:>10,.0f}{r['extra_peak_mib']:>8,.0f}  {agrees}")

    reads: dict[str, dict[str, Any]] = {}
    if engines and args.read:
        for engine in engines:
            print(f"reading activities.csv with {READ_LABELS[engine]} ...", flush=True)
            reads[engine] = _child(["--child", "read", "--engine", engine, "--data",
                                    str(folder)], args.timeout)
        print(f"  {'reader':<42}{'wall s':>8}{'CPU s':>8}{'peak MiB':>10}{'+MiB':>8}"
              f"{'rows':>12}")
        for engine, r in reads.items():
            if "error" in r:
                print(f"  {READ_LABELS[engine]:<42}{r['error']}")
                continue
            print(f"  {READ_LABELS[engine]:<42}{r['seconds']:>8.1f}{r['cpu_seconds']:>8.1f}"
                  f"{r['peak_rss_mib']:>10,.0f}{r['extra_peak_mib']:>8,.0f}{r['rows']:>12,}")

    load_after = os.getloadavg()
    result = {
        "leads": info["leads"],
        "activities": info["activities"],
        "seconds": build["seconds"],
        "peak_rss_mib": build["peak_rss_mib"],
        "cpu_seconds": build["cpu_seconds"],
        "target_seconds": TARGET_SECONDS,
        "meets_target": build["seconds"] < TARGET_SECONDS,
        "engine": "pyarrow (CSV read, compute kernels) + numpy bincount",
        "training_rows": build["rows"],
        "build": build,
        "machine": {
            "cores": os.cpu_count(),
            "load_average_1m_before": round(load_before[0], 2),
            "load_average_1m_after": round(load_after[0], 2),
            "note": "shared machine: wall seconds suffer from other jobs, CPU seconds less so",
        },
        "seed": info["seed"],
    }
    if comparison:
        result["engine_comparison"] = {ENGINE_LABELS[k]: v for k, v in comparison.items()}
        result["engine_choice"] = engine_choice(comparison, build)
        if reads:
            result["csv_read_comparison"] = {READ_LABELS[k]: v for k, v in reads.items()}
            result["csv_read_verdict"] = read_verdict(reads, build)
            print(result["csv_read_verdict"])
        result["window_rule"] = ("age <= w days (window [as_of - w, as_of))" if closed
                                 else "age < w days (window (as_of - w, as_of))")
        print(result["engine_choice"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("leads", "activities", "seconds", "peak_rss_mib",
                                             "cpu_seconds")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
