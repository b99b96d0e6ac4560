"""Model quality on the real datasets in ../shared/datasets: LightGBM (the model of record)
against a points scorecard, logistic regression and HistGradientBoosting on the same time split,
plus bank_marketing's walk-forward backtest. Writes benchmarks/results/quality.{json,md}.

    .venv/bin/python benchmarks/quality.py [--steps 20] [--only x_education] [--threads 1]
    .venv/bin/python benchmarks/quality.py --backtest-only   # bank's three-model backtest alone

The bank backtest scores three models on the same steps: this pipeline (`backtest_pipeline`,
also kept as `lightgbm_backtest`), the pipeline recalibrated on the latest matured leads before
each step (`backtest_recalibrated`) and a plain LightGBM retrained on all history each step
(`backtest_plain`). `--backtest-only` runs just that and updates those entries of quality.json
in place (quality.md is left as the last full run wrote it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from leadscore.backtest import run_backtest
from leadscore.config import Settings, load_spec
from leadscore.pipeline import run_training

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "benchmarks" / "results"
METRICS = ("roc_auc", "pr_auc", "brier", "ece", "lift_top10")
DATASETS = {
    # name: (spec, lead file in ../shared or None for the spec's own path)
    "x_education": (ROOT / "configs" / "x_education.yaml", None),
    "bank_marketing": (
        ROOT / "configs" / "bank_marketing.yaml",
        SHARED / "bank_marketing" / "bank-additional-full.csv",
    ),
}
TARGETS = {
    "x_education": "ROC AUC >= 0.92 (stretch 0.93) with ECE <= 0.03",
    "bank_marketing": "ROC AUC >= 0.76 static, >= 0.78 in the 20-step backtest",
}
# (model, metric, bound, "min" or "max"): what "target met" checks
TARGET_CHECKS = {
    "x_education": [("lightgbm", "roc_auc", 0.92, "min"), ("lightgbm", "ece", 0.03, "max")],
    "bank_marketing": [("lightgbm", "roc_auc", 0.76, "min"),
                       ("lightgbm_backtest", "roc_auc", 0.78, "min")],
}
BACKTEST_VARIANTS = ("pipeline", "recalibrated", "plain")


def backtest_models(
    spec_path: Path, data: Path | None, steps: int, settings: Settings,
    params: dict[str, Any] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """The three-model backtest: `backtest_<variant>` metrics (with the run's seconds and the
    1-minute load average, since a shared machine's figures are only comparable with it), the
    per-step rows, and the seconds taken."""
    began = time.perf_counter()
    walk = run_backtest(load_spec(spec_path), settings, steps, data_path=data, params=params,
                        recalibrate=True)
    seconds = round(time.perf_counter() - began, 1)
    load = os.getloadavg()[0]
    models: dict[str, Any] = {}
    for variant in BACKTEST_VARIANTS:
        pooled = walk.variants[variant]
        models[f"backtest_{variant}"] = {
            **{k: pooled[k] for k in METRICS},
            "mean_step_roc_auc": pooled["mean_step_roc_auc"],
            "steps": steps, "seconds": seconds, "loadavg_1m": round(load, 2),
        }
    models["backtest_recalibrated"]["recalibrate_rows"] = walk.recalibrate_rows
    rows = [dict(s) for s in walk.steps]
    return models, rows, seconds


def evaluate(
    name: str, steps: int, settings: Settings, params: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    spec_path, data = DATASETS[name]
    spec = load_spec(spec_path)
    began = time.perf_counter()
    result = run_training(
        spec, settings, data_path=data, track=False, with_report=False, params=params
    )
    models: dict[str, Any] = {
        "lightgbm": {k: result.metrics[f"test_{k}"] for k in METRICS},
    }
    for baseline, values in (result.baselines or {}).items():
        models[baseline] = {k: values[k] for k in METRICS}
    extras: dict[str, Any] = {
        "seconds": round(time.perf_counter() - began, 1),
        "split": result.trained.split.kind,
        "rows_test": len(result.trained.split.test),
        "leak_audit_dropped": result.leak.dropped,
        "drift": (result.trained.extras.get("drift") or {}).get("drift"),
        "linear_start": result.trained.linear is not None,
        "refit": result.trained.extras.get("refit"),
        "calibration": result.trained.calibrator.state_.get("method"),
        "linear_plan": result.trained.extras.get("linear_plan") or {},
        # the model trained on the training slice alone, on the validation slice (before refit)
        "valid_roc_auc": result.trained.extras.get("valid_roc_auc"),
        "expected_conversions": result.metrics["test_expected_conversions"],
        "actual_conversions": result.metrics["test_actual_conversions"],
    }
    if name == "bank_marketing" and steps:
        walked, rows, seconds = backtest_models(spec_path, data, steps, settings, params)
        models.update(walked)
        models["lightgbm_backtest"] = {
            k: walked["backtest_pipeline"][k] for k in (*METRICS, "mean_step_roc_auc")
        }
        extras["backtest_steps"] = rows
        extras["backtest_seconds"] = seconds
    return models, extras


def _met(name: str, models: dict[str, Any]) -> str:
    checks = TARGET_CHECKS.get(name, [])
    if not checks:
        return "-"
    missed = [f"{model} {metric} {models[model][metric]:.4f} "
              f"{'<' if kind == 'min' else '>'} {bound}"
              for model, metric, bound, kind in checks
              if model in models and (models[model][metric] < bound if kind == "min"
                                      else models[model][metric] > bound)]
    return "yes" if not missed else "no (" + "; ".join(missed) + ")"


# What development found, measured on this machine on 2026-11-23 (not recomputed by this script)
NOTES = {
    "bank_marketing": [
        "Why the static split is hard: in the test slice (May 2009 - Nov 2010) the conversion "
        "rate climbs from 6% to 52%, and what ranks its leads is mostly *when* they were called. "
        "nr.employed alone ranks the test slice at ROC AUC 0.722, but every value after May "
        "2009 is below its training range; within a 412-lead backtest step the lead-level "
        "fields reach only about 0.62 (poutcome 0.60, pdays 0.58, contact 0.55 on their own).",
        "Ranking the whole slice by each step's true conversion rate (an oracle for the level, "
        "nothing within a step) gives 0.739; ranking by the previous step's rate gives 0.725.",
        "What moved the static figure from 0.716 to about 0.75: the linear start extrapolates "
        "a drifted field only if that lowers the log loss at two forecast origins inside the "
        "validation slice (fitted on train, scored on its first half; refitted with that half, "
        "scored on the second), one field at a time. It picks nr.employed alone and holds "
        "cons.conf.idx, whose declared direction the 2010 data reverses (test ROC AUC of "
        "-cons.conf.idx: 0.343). Holding all five indicators gives 0.690; extrapolating every "
        "declared one (the previous rule) 0.716. With a single origin the choice hung on the "
        "regularisation it was made at (C=1: cons.conf.idx + cons.price.idx, 0.637); with two, "
        "C=1 holds every indicator (0.684) and C=0.01 picks nr.employed + emp.var.rate (0.745).",
        "Tried without reaching the targets (static / backtest): LightGBM linear_tree 0.631 / -; "
        "recency weighting (half-life 0.1 of the span) 0.647 / 0.758; trees kept off every "
        "macro field 0.754 / -; early stopping by AUC 0.749 / 0.762; depth 4, 15 leaves "
        "0.754 / -. "
        "A plain LightGBM retrained on all history each step (no validation hold-out, 100-200 "
        "trees) backtests at 0.761-0.771; with a logistic nr.employed start 0.761-0.768.",
        "Where the backtest's 0.78 lies: give each step of this pipeline's backtest its true "
        "conversion rate (shift its log-odds until the mean probability matches) and keep its "
        "ranking within the step: 0.771. The same with the plain LightGBM's within-step ranking "
        "(mean step AUC 0.633 vs 0.616 here): 0.782. So the target needs both a level known in "
        "advance and the plain model's within-step ranking; shifting each step to the previous "
        "step's rate gives 0.761.",
        "The static split and the backtest pull apart: the static test slice is 18 months ahead "
        "(extrapolating a trend pays), a backtest step about a month (the latest level "
        "pays, which trees give by holding the newest leads' edge bin). Linear start off with a "
        "fixed 100 trees: backtest 0.765 but static 0.662; on with 100 trees: 0.759 / 0.747; "
        "every indicator held at the edge: backtest 0.743; a linear start of the trend field "
        "alone (lead fields left to the trees): 0.745 static / 0.742 backtest.",
        "Damping the linear start's reach past the training range (train.params "
        "linear_damping, default 1) trades one for the other: 0.5 gives backtest 0.764 (ECE "
        "0.046) but static 0.745 (ECE 0.124); 0.25 gives 0.763 / 0.735. Recalibrating on "
        "out-of-sample margins (the previous steps' scorings) does worse than today's "
        "(0.736-0.752): the pipeline's level errors swing from step to step rather than persist "
        "(benchmarks/results/backtest_experiments.json).",
    ],
}


def _plan(plan: dict[str, Any]) -> str:
    """How the linear start was chosen on validation, for the report line."""
    if not plan:
        return ""
    return (f" (chosen by validation log loss: C={plan['c']:g}; extrapolated: "
            f"{', '.join(plan['trend']) or 'none'}; held at the edge of their training range: "
            f"{', '.join(plan['held']) or 'none'})")


def markdown(results: dict[str, Any], extras: dict[str, Any]) -> str:
    lines = [
        "# Model quality on real lead datasets",
        "",
        "Produced by `benchmarks/quality.py` from `../shared/datasets` (time-ordered split: the "
        "most recent 20% of leads is the test slice, the 20% before it validation). Each baseline "
        "is fitted on the same rows and features as LightGBM.",
        "",
    ]
    for name, models in results.items():
        e = extras[name]
        lines += [
            f"## {name}",
            "",
            f"Target: {TARGETS.get(name, '-')}. Split: {e['split']}, {e['rows_test']:,} test "
            f"leads; leak audit dropped {', '.join(e['leak_audit_dropped']) or 'nothing'}; "
            f"drift detected: {e['drift']}; linear start: {e['linear_start']}"
            f"{_plan(e.get('linear_plan') or {})}; refit on train + "
            f"valid: {e['refit']}; calibration: {e['calibration']}; expected "
            f"{e['expected_conversions']:,.0f} vs actual {e['actual_conversions']:,.0f} "
            f"conversions. Validation ROC AUC (trained on the training slice only): "
            f"{e.get('valid_roc_auc', float('nan')):.4f}.",
            "",
            f"Target met: {_met(name, models)}.",
            "",
            "| model | " + " | ".join(METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        for model, values in models.items():
            lines.append(f"| {model} | " + " | ".join(f"{values[k]:.4f}" for k in METRICS) + " |")
        lgb = models["lightgbm"]
        lines.append("")
        lines.append("LightGBM's ROC AUC margin: " + ", ".join(
            f"{m} {lgb['roc_auc'] - v['roc_auc']:+.4f}" for m, v in models.items()
            if m != "lightgbm" and "backtest" not in m
        ) + ".")
        if "backtest_steps" in e:
            lines += ["", f"Backtest: {len(e['backtest_steps'])} steps, pooled ROC AUC "
                      f"{models['lightgbm_backtest']['roc_auc']:.4f}, mean per-step ROC AUC "
                      f"{models['lightgbm_backtest']['mean_step_roc_auc']:.4f}.", "",
                      "| step | trained on | scored | conversion | ROC AUC pipeline | "
                      "recalibrated | plain |",
                      "|---|---|---|---|---|---|---|"]
            for s in e["backtest_steps"]:
                lines.append(f"| {s['step']} | {s['train_leads']:,} | {s['scored_leads']:,} | "
                             f"{s['conversion_rate']:.3f} | {s['roc_auc']:.4f} | "
                             f"{s['recalibrated_roc_auc']:.4f} | {s['plain_roc_auc']:.4f} |")
        if name in NOTES:
            lines += ["", "### Findings", ""] + [f"- {note}" for note in NOTES[name]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20, help="backtest steps (0: none)")
    parser.add_argument("--only", choices=sorted(DATASETS), default=None)
    parser.add_argument("--threads", type=int, default=0,
                        help="LightGBM threads (0: its default; 1 on a busy machine)")
    parser.add_argument("--backtest-only", action="store_true",
                        help="only bank_marketing's three-model backtest; updates quality.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.backtest_only:
        backtest_only(args.steps or 20, {"num_threads": args.threads} if args.threads else None)
        return
    results: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(models_dir=Path(tmp) / "models", feature_cache="off")
        for name in [args.only] if args.only else list(DATASETS):
            if not SHARED.is_dir():
                raise SystemExit(f"{SHARED} not found: the benchmark reads ../shared/datasets")
            params = {"num_threads": args.threads} if args.threads else None
            results[name], extras[name] = evaluate(name, args.steps, settings, params)
            print(json.dumps({name: results[name]}, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "quality.md").write_text(markdown(results, extras), encoding="utf-8")
    print(f"written: {RESULTS / 'quality.json'} and quality.md")


def backtest_only(steps: int, params: dict[str, Any] | None) -> None:
    """Bank's backtest alone, merged into the existing quality.json (other entries kept)."""
    spec_path, data = DATASETS["bank_marketing"]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(models_dir=Path(tmp) / "models", feature_cache="off")
        walked, rows, seconds = backtest_models(spec_path, data, steps, settings, params)
    path = RESULTS / "quality.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    bank = results.setdefault("bank_marketing", {})
    bank.update(walked)
    bank["lightgbm_backtest"] = {
        k: walked["backtest_pipeline"][k] for k in (*METRICS, "mean_step_roc_auc")
    }
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({**walked, "steps": rows}, indent=2))
    print(f"written: {path} ({seconds} s)")


if __name__ == "__main__":
    main()
