"""What `leadscore train` costs over LightGBM's own training on the same matrix, and what its
evaluation report costs.

Scaling (`--leads 100000 1000000`): per size, two fresh processes on N synthetic leads
(configs/synthetic.yaml): (1) the whole training as `leadscore train` runs it
(`pipeline.run_training`: features, leak audit, training, calibration, baselines, report and
model card, MLflow logging and registry), timed per stage through `leadscore.progress`; (2)
`lightgbm.train` alone with the same parameters, validation slice and early stopping on the
same encoded matrix. Wall and CPU seconds, their ratios (goal: <= 1.5 at 1M leads) and each
process tree's peak RSS, children included, sampled by psutil every 0.2 s (goal: <= 1.5 GB).
The MLflow store is created before the clock starts (its one-time table migrations are timed
apart, as `store_creation_s`): a team trains into an existing store.

Report (`--report`): the evaluation report and model card on each dataset of ../shared/datasets
the project has a spec for, and on 78k synthetic leads (the size issue #15 measured; the only
one when ../shared is absent): a training without report, then, timed apart in the same
process, the baselines' fitting, `report.build_report` and `report.write_report` (plots, card;
the first call, so matplotlib's start-up counts), in wall and in CPU seconds (which a busy
machine hardly changes). Goal: report <= 5 s at 78k leads.

    .venv/bin/python benchmarks/train.py --leads 100000 1000000   (1M: tens of minutes, 2 cores)
    .venv/bin/python benchmarks/train.py --report
Results (with the load average at start and end) merge into benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "benchmarks" / "results" / "train.json"
REPORT_SYNTH_LEADS = 78_000


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _synthetic_spec(folder: Path, leads: int, seed: int) -> Path:
    import yaml

    from leadscore import synth

    paths = synth.write(synth.generate(leads, seed=seed), folder, fmt="csv")
    spec = yaml.safe_load((ROOT / "configs" / "synthetic.yaml").read_text(encoding="utf-8"))
    spec["leads"]["path"] = str(paths["leads"])
    spec["activities"]["path"] = str(paths["activities"])
    spec["outcome"]["table"]["path"] = str(paths["conversions"])
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _shared_spec(name: str, folder: Path) -> Path | None:
    """configs/<name>.yaml with every table read from ../shared/datasets/<name>/, or None when
    a table is in neither place."""
    import yaml

    spec = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text(encoding="utf-8"))

    def repoint(node: Any) -> bool:
        if isinstance(node, dict):
            ok = True
            for key, value in node.items():
                if key == "path" and isinstance(value, str):
                    shared = SHARED / name / Path(value).name
                    if not shared.is_file():
                        return False
                    node[key] = str(shared)
                else:
                    ok = repoint(value) and ok
            return ok
        if isinstance(node, list):
            return all(repoint(item) for item in node)
        return True

    if not repoint(spec):
        return None
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _settings(home: str) -> Any:
    from leadscore.config import Settings

    return Settings(home=Path(home), model_name="bench-train", feature_cache="off")


def whole(spec_path: str, home: str) -> dict[str, object]:
    """`leadscore train` as the CLI runs it, with the time of each stage."""
    from leadscore import progress
    from leadscore.config import load_spec
    from leadscore.pipeline import run_training

    marks: list[tuple[str, float]] = []
    spec = load_spec(Path(spec_path))
    settings = _settings(home)
    start, cpu_start = time.perf_counter(), time.process_time()
    with progress.listening(progress.Listener(on_stage=lambda n: marks.append(
            (n, time.perf_counter())))):
        result = run_training(spec, settings)
    end = time.perf_counter()
    stages: dict[str, float] = {}
    for (name, at), (_, until) in zip(marks, [*marks[1:], ("end", end)], strict=True):
        stages[name] = round(stages.get(name, 0.0) + until - at, 2)
    return {"seconds": round(end - start, 2),
            "cpu_s": round(time.process_time() - cpu_start, 2), "stages": stages,
            "best_iteration": result.trained.best_iteration,
            "rows_train": len(result.trained.split.train), "params": result.bundle.meta["params"],
            "test_roc_auc": round(result.metrics["test_roc_auc"], 4)}


def store(home: str) -> dict[str, object]:
    """Create the embedded MLflow store (its table migrations) before a timed training."""
    from leadscore import tracking

    start = time.perf_counter()
    tracking.configure(_settings(home))
    import mlflow

    mlflow.search_experiments()
    return {"seconds": round(time.perf_counter() - start, 2)}


def raw(spec_path: str, params_json: str) -> dict[str, object]:
    """`lightgbm.train` alone: same parameters, same matrices, same early stopping."""
    import lightgbm as lgb

    from leadscore.config import load_spec
    from leadscore.table import build_table
    from leadscore.train import EARLY_STOPPING, NUM_BOOST_ROUND, prepare

    spec = load_spec(Path(spec_path))
    leads, _ = build_table(spec)
    prepared = prepare(leads, spec)
    y, split = prepared.y, prepared.split
    params = {**json.loads(params_json), "metric": ["binary_logloss"],
              "monotone_constraints": prepared.builder.monotone_constraints_}
    start, cpu_start = time.perf_counter(), time.process_time()
    train_set = lgb.Dataset(prepared.x_train, label=y[split.train],
                            categorical_feature=prepared.builder.categorical_indices_,
                            params={"verbosity": -1})
    valid_set = lgb.Dataset(prepared.x_valid, label=y[split.valid], reference=train_set)
    booster = lgb.train(params, train_set, num_boost_round=NUM_BOOST_ROUND,
                        valid_sets=[valid_set], valid_names=["valid"],
                        callbacks=[lgb.early_stopping(EARLY_STOPPING, first_metric_only=True,
                                                      verbose=False)])
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
            "best_iteration": booster.best_iteration}


def report(spec_path: str, home: str) -> dict[str, object]:
    """Train without a report, then time the baselines, `build_report` and `write_report`."""
    from leadscore.baselines import fit_baselines
    from leadscore.config import load_spec
    from leadscore.data import LABEL
    from leadscore.pipeline import cached_build, run_training
    from leadscore.report import build_report, write_report

    spec = load_spec(Path(spec_path))
    settings = _settings(home)
    result = run_training(spec, settings, track=False, with_report=False, baselines=False)
    leads, _ = cached_build(spec, settings, None)
    trained, split = result.trained, result.trained.split
    y = leads[LABEL].to_numpy()
    p_test = trained.predict_proba(leads.iloc[split.test])
    p_valid = trained.predict_proba(leads.iloc[split.valid])
    start, cpu_start = time.perf_counter(), time.process_time()
    others = fit_baselines(trained, leads, spec, spec.train.seed).probabilities
    fitted, cpu_fitted = time.perf_counter(), time.process_time()
    card = build_report(dataset=spec.name, trained=trained, y_valid=y[split.valid],
                        p_valid=p_valid, y_test=y[split.test], p_test=p_test, baselines=others,
                        leak={"dropped": result.leak.dropped, "flagged": result.leak.flagged},
                        tuning={}, kept_tiers=False)
    built = time.perf_counter()
    write_report(Path(home) / "report", card, y[split.test], p_test, others)
    written, cpu_written = time.perf_counter(), time.process_time()
    return {"rows": len(leads), "rows_test": len(split.test),
            "report_seconds": round(written - fitted, 2),
            # CPU seconds hardly move with the machine's load, wall seconds do
            "report_cpu_s": round(cpu_written - cpu_fitted, 2),
            "baselines_cpu_s": round(cpu_fitted - cpu_start, 2),
            "build_report_s": round(built - fitted, 2),
            "write_report_s": round(written - built, 2),
            "baselines_fit_s": round(fitted - start, 2)}


def _child(kind: str, *args: str) -> dict[str, object]:
    """Run `kind` in a fresh process; its tree's peak RSS (children included) rides along."""
    import psutil

    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
           "PYTHONWARNINGS": "ignore"}
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import train; "
            f"print(json.dumps(train.{kind}(*sys.argv[1:])))")
    proc = psutil.Popen([sys.executable, "-c", code, *args], env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            try:
                tree = [proc, *proc.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{err[-3000:]}")
    result = dict(json.loads(out.strip().splitlines()[-1]))
    result["peak_rss_mb"] = round(peak[0] / 2**20)
    return result


def scaling(leads: int, seed: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="leadscore-bench-train-") as tmp:
        folder = Path(tmp)
        spec = _synthetic_spec(folder / "data", leads, seed)
        home = str(folder / "home")
        created = _child("store", home)
        load_before = _load()
        ours = _child("whole", str(spec), home)
        theirs = _child("raw", str(spec), json.dumps(ours.pop("params")))
    ratio = float(ours["seconds"]) / max(float(theirs["seconds"]), 1e-9)  # type: ignore[arg-type]
    cpu_ratio = float(ours["cpu_s"]) / max(float(theirs["cpu_s"]), 1e-9)  # type: ignore[arg-type]
    return {"leads": leads, "leadscore_train": ours, "lightgbm_train": theirs,
            "ratio_to_lightgbm": round(ratio, 2), "cpu_ratio_to_lightgbm": round(cpu_ratio, 2),
            "store_creation_s": created["seconds"],
            "load_average_start": load_before, "load_average_end": _load()}


def reports(seed: int) -> dict[str, object]:
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="leadscore-bench-report-") as tmp:
        folder = Path(tmp)
        specs: dict[str, Path] = {}
        for name in ("bank_marketing", "x_education", "maven_crm"):
            found = _shared_spec(name, folder) if SHARED.is_dir() else None
            if found is not None:
                specs[name] = found
        specs[f"synthetic_{REPORT_SYNTH_LEADS // 1000}k"] = _synthetic_spec(
            folder / "synth", REPORT_SYNTH_LEADS, seed)
        for name, spec in specs.items():
            load_before = _load()
            out[name] = {**_child("report", str(spec), str(folder / f"home-{name}")),
                         "load_average_start": load_before, "load_average_end": _load()}
            print(name, json.dumps(out[name]), flush=True)
    return out


def _save(key: str, value: Any) -> None:
    """Merge one key into results/train.json (re-read first: a `--report` run and a scaling
    run may write it in turn)."""
    out = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    out["goal"] = ("whole train <= 1.5x lightgbm.train at 1M leads, peak RSS <= 1.5 GB; "
                   "evaluation report and model card <= 5 s at 78k leads")
    out["cpus"] = os.cpu_count()
    out[key] = value
    RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, nargs="*", default=[])
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.report:
        _save("report", {"measured_at": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
                         "datasets": reports(args.seed)})
    for leads in args.leads:
        row = {"measured_at": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
               **scaling(leads, args.seed)}
        print(json.dumps(row, indent=2), flush=True)
        previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
        rows = {r["leads"]: r for r in previous.get("scaling", [])}
        rows[leads] = row
        _save("scaling", [rows[k] for k in sorted(rows)])
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
