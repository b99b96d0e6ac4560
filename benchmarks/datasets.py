"""Benchmark: train on each real dataset in ../shared/datasets and on the synthetic CRM.

Each dataset goes through `leadscore.pipeline.run_training` with its spec in configs/ (the same
path the CLI takes), saving the bundle into a temporary folder and logging nothing to MLflow,
so the repository is left as it was. Writes benchmarks/results/datasets.json: per dataset the
held-out test metrics, the columns the leak audit dropped (with its reasons) and the features the
model was trained on.

    .venv/bin/python benchmarks/datasets.py [--only x_education,synthetic] [--synthetic-leads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "benchmarks" / "results"

# dataset → (spec, the lead file inside ../shared/datasets)
REAL = {
    "x_education": ("x_education.yaml", "x_education/Leads.csv"),
    "bank_marketing": ("bank_marketing.yaml", "bank_marketing/bank-additional-full.csv"),
    "maven_crm": ("maven_crm.yaml", "maven_crm/sales_pipeline.csv"),
}


def _round(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def train_one(
    spec: Any, data_path: Path | None, models_dir: Path
) -> tuple[dict[str, Any], Any, Any]:
    """One training run through the pipeline; the figures the results file keeps, the result
    and the training table (rebuilt: the pipeline does not return it)."""
    from leadscore.config import Settings
    from leadscore.data import LABEL
    from leadscore.evaluate import classification_metrics
    from leadscore.pipeline import run_training
    from leadscore.table import build_table

    # models, reports and the feature cache all go to the temporary folder: the repository is
    # left as it was, and every table is built afresh (no stale cache from older code)
    settings = Settings(models_dir=models_dir / "models", feature_cache="off")
    began = time.perf_counter()
    result = run_training(spec, settings, data_path=data_path, track=False)
    seconds = time.perf_counter() - began
    metrics = result.metrics
    split = result.trained.split
    baselines = getattr(result, "baselines", None) or {}  # simple models the pipeline compares
    entry = {
        "roc_auc": _round(metrics["test_roc_auc"]),
        "pr_auc": _round(metrics["test_pr_auc"]),
        "ece": _round(metrics["test_ece"]),
        "log_loss": _round(metrics["test_log_loss"]),
        "brier": _round(metrics["test_brier"]),
        "lift_top10": _round(metrics["test_lift_top10"]),
        "base_rate_test": _round(metrics["test_base_rate"]),
        "flagged": list(result.leak.dropped),
        "features": list(result.trained.builder.feature_names_),
        "rows": int(result.report.rows),
        "labelled": int(result.report.labelled),
        "positives": int(result.report.positives),
        "rows_train": len(split.train),
        "rows_valid": len(split.valid),
        "rows_test": len(split.test),
        "split": split.kind,
        "best_iteration": result.trained.best_iteration,
        "leak_reasons": {c: result.leak.flagged[c] for c in result.leak.dropped},
        "kept_by_spec": list(result.leak.kept),
        "excluded": dict(result.report.excluded),
        "baselines_roc_auc": {name: _round(values.get("roc_auc"))
                              for name, values in baselines.items()},
        "seconds": round(seconds, 1),
        "data_path": str(data_path) if data_path else None,
    }
    # cross-check: the trained model's own probabilities (TrainedModel.predict_proba, which adds
    # any linear start to the trees) on the same test rows; the pipeline's figures above should
    # match them
    table, _ = build_table(spec, data_path=data_path)
    test = table.iloc[split.test]
    if hasattr(result.trained, "predict_proba"):
        check = classification_metrics(test[LABEL].to_numpy(),
                                       result.trained.predict_proba(test))
        entry["trained_model_check"] = {"roc_auc": _round(check["roc_auc"]),
                                        "ece": _round(check["ece"])}
        gap = abs(check["roc_auc"] - metrics["test_roc_auc"])
        if gap > 0.01:
            print(f"  WARNING: the pipeline reports test ROC AUC {metrics['test_roc_auc']:.4f} "
                  f"but the trained model scores {check['roc_auc']:.4f} on the same rows")
    return entry, result, table


def run_real(name: str, spec_file: str, lead_file: str, models_dir: Path) -> dict[str, Any]:
    from leadscore.config import load_spec

    data_path = SHARED / lead_file
    if not data_path.is_file():
        return {"skipped": f"{data_path} not found (../shared/datasets is not beside this "
                           "checkout)"}
    spec = load_spec(CONFIGS / spec_file)
    entry, _, _ = train_one(spec, data_path, models_dir / name)
    entry["spec"] = f"configs/{spec_file}"
    return entry


def _redirect(spec: Any, folder: Path) -> Any:
    """The same spec reading its conversion and activity tables from `folder` (same names)."""
    update: dict[str, Any] = {}
    if spec.outcome.table is not None:
        table = spec.outcome.table.model_copy(
            update={"path": folder / Path(spec.outcome.table.path).name})
        update["outcome"] = spec.outcome.model_copy(update={"table": table})
    if spec.activities is not None:
        update["activities"] = spec.activities.model_copy(
            update={"path": folder / Path(spec.activities.path).name})
    return spec.model_copy(update=update)


def run_synthetic(leads: int, seed: int, models_dir: Path, work: Path) -> dict[str, Any]:
    """Generate `leads` synthetic leads into a temporary folder and train with its spec; the
    true probabilities give the best ROC AUC any model could reach on the same test rows."""
    from sklearn.metrics import roc_auc_score

    from leadscore import synth
    from leadscore.config import load_spec
    from leadscore.data import ID, LABEL

    spec_file = CONFIGS / "synthetic.yaml"
    if not spec_file.is_file():
        return {"skipped": f"{spec_file} not found"}
    folder = work / "synthetic"
    data = synth.generate(leads, seed=seed)
    paths = synth.write(data, folder, fmt="csv")
    spec = _redirect(load_spec(spec_file), folder)
    entry, result, table = train_one(spec, paths["leads"], models_dir / "synthetic")
    entry["spec"] = "configs/synthetic.yaml"
    entry["generated"] = {"leads": leads, "activities": len(data.activities), "seed": seed}
    # the table is rebuilt deterministically, so split positions index the same rows
    test = table.iloc[result.trained.split.test]
    truth = data.truth.set_index("lead_id")["p_true"]
    p_true = test[ID].map(truth).to_numpy(dtype=float)
    entry["truth_roc_auc"] = _round(roc_auc_score(test[LABEL].to_numpy(), p_true))
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [*REAL, "synthetic"]
    parser.add_argument("--only", default=",".join(names), help="comma-separated datasets")
    parser.add_argument("--synthetic-leads", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS / "datasets.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore")

    wanted = [n for n in args.only.split(",") if n]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}; choose from {names}")
    if not SHARED.is_dir():
        print(f"{SHARED} not found: skipping the real datasets (a fresh clone has no "
              "../shared); only the synthetic one is trained")

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="leadscore-datasets-") as tmp:
        work = Path(tmp)
        for name in wanted:
            print(f"training {name} ...", flush=True)
            if name == "synthetic":
                entry = run_synthetic(args.synthetic_leads, args.seed, work / "models", work)
            elif not SHARED.is_dir():
                entry = {"skipped": f"{SHARED} not found"}
            else:
                entry = run_real(name, *REAL[name], work / "models")
            if "skipped" in entry:
                print(f"  skipped: {entry['skipped']}")
            results[name] = entry

    print()
    print(f"{'dataset':<16}{'rows':>8}{'split':>12}{'ROC AUC':>9}{'PR AUC':>8}{'ECE':>7}"
          f"{'feats':>7}  flagged by the leak audit")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:<16}  skipped")
            continue
        print(f"{name:<16}{r['rows']:>8,}{r['split']:>12}{r['roc_auc']:>9.4f}{r['pr_auc']:>8.4f}"
              f"{r['ece']:>7.4f}{len(r['features']):>7}  {', '.join(r['flagged']) or '-'}")
    if "truth_roc_auc" in results.get("synthetic", {}):
        print(f"synthetic: the true probabilities reach ROC AUC "
              f"{results['synthetic']['truth_roc_auc']:.4f} on the same test rows")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
