"""What `leadscore train` costs over LightGBM's own training on the same matrix.

Two fresh processes on N synthetic leads (configs/synthetic.yaml): (1) the whole training as
`leadscore train` runs it (`pipeline.run_training`: features, leak audit, training, calibration,
baselines, report and model card, MLflow logging and registry), timed per stage through
`leadscore.progress`; (2) `lightgbm.train` alone with the same parameters, validation slice and
early stopping on the same encoded matrix. Wall seconds, the ratio (goal: <= 1.5 at 1M leads)
and each process's peak RSS (goal: <= 1.5 GB) go to results/train.json.

    .venv/bin/python benchmarks/train.py [--leads 200000]     (about 2 min at 200k on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _spec(folder: Path, leads: int, seed: int) -> Path:
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


def whole(spec_path: str, home: str) -> dict[str, object]:
    """`leadscore train` as the CLI runs it, with the time of each stage."""
    from leadscore import progress
    from leadscore.config import Settings, load_spec
    from leadscore.pipeline import run_training

    stages: dict[str, float] = {}
    marks: list[tuple[str, float]] = []

    def on_stage(name: str) -> None:
        marks.append((name, time.perf_counter()))

    spec = load_spec(Path(spec_path))
    settings = Settings(home=Path(home), model_name="bench-train")
    start = time.perf_counter()
    with progress.listening(progress.Listener(on_stage=on_stage)):
        result = run_training(spec, settings)
    end = time.perf_counter()
    for (name, at), (_, until) in zip(marks, [*marks[1:], ("end", end)], strict=True):
        stages[name] = round(stages.get(name, 0.0) + until - at, 2)
    return {"seconds": round(end - start, 2), "stages": stages, "peak_rss_mb": round(_peak_mb()),
            "best_iteration": result.trained.best_iteration,
            "rows_train": len(result.trained.split.train), "params": result.bundle.meta["params"]}


def raw(spec_path: str, params_json: str) -> dict[str, object]:
    """`lightgbm.train` alone: same parameters, same matrices, same early stopping."""
    import lightgbm as lgb

    from leadscore.config import load_spec
    from leadscore.features import build_table
    from leadscore.train import EARLY_STOPPING, NUM_BOOST_ROUND, prepare

    spec = load_spec(Path(spec_path))
    leads, _ = build_table(spec)
    prepared = prepare(leads, spec)
    y, split = prepared.y, prepared.split
    params = {**json.loads(params_json), "metric": ["binary_logloss", "auc"],
              "monotone_constraints": prepared.builder.monotone_constraints_}
    start = time.perf_counter()
    train_set = lgb.Dataset(prepared.x_train, label=y[split.train],
                            categorical_feature=prepared.builder.categorical_indices_,
                            params={"verbosity": -1})
    valid_set = lgb.Dataset(prepared.x_valid, label=y[split.valid], reference=train_set)
    booster = lgb.train(params, train_set, num_boost_round=NUM_BOOST_ROUND,
                        valid_sets=[valid_set], valid_names=["valid"],
                        callbacks=[lgb.early_stopping(EARLY_STOPPING, first_metric_only=True,
                                                      verbose=False)])
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "best_iteration": booster.best_iteration,
            "peak_rss_mb": round(_peak_mb())}


def _child(kind: str, *args: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
           "PYTHONWARNINGS": "ignore"}
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import train; "
            f"print(json.dumps(train.{kind}(*sys.argv[1:])))")
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leadscore-bench-train-") as tmp:
        folder = Path(tmp)
        spec = _spec(folder / "data", args.leads, args.seed)
        ours = _child("whole", str(spec), str(folder / "home"))
        theirs = _child("raw", str(spec), json.dumps(ours.pop("params")))
    ratio = float(ours["seconds"]) / max(float(theirs["seconds"]), 1e-9)  # type: ignore[arg-type]
    out = {
        "leads": args.leads,
        "leadscore_train": ours,
        "lightgbm_train": theirs,
        "ratio_to_lightgbm": round(ratio, 2),
        "goal": "whole train <= 1.5x lightgbm.train at 1M leads, peak RSS <= 1.5 GB",
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(out, indent=2))
    path = ROOT / "benchmarks" / "results" / "train.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
