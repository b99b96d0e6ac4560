"""The training line in one call: spec → leads → model → bundle → MLflow run and registry.

The CLI, the benchmarks and the end-to-end test all train through `run_training`, so what a
data team runs is what the tests check.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from leadscore import __version__
from leadscore.audit import LeakReport, audit_leaks
from leadscore.config import DatasetSpec, Settings
from leadscore.data import ID, LABEL, check_ready
from leadscore.evaluate import classification_metrics, profile_training
from leadscore.features import TableReport, build_table
from leadscore.ranges import training_ranges
from leadscore.scoring import ModelBundle
from leadscore.train import TrainedModel, fit_model, split_leads

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    bundle: ModelBundle
    bundle_dir: Path
    trained: TrainedModel
    metrics: dict[str, float]
    report: TableReport
    leak: LeakReport
    run_id: str | None = None
    version: str | None = None
    model_uri: str | None = None
    report_dir: Path | None = None
    baselines: dict[str, dict[str, float]] | None = None
    promoted: bool | None = None
    promotion_reason: str = ""
    champion_version: str | None = None


def fingerprint(leads: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """Identifies the training data without storing any of it: a hash of the rows used."""
    frame = leads[[ID, LABEL, *columns]]
    row_hashes = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    digest = hashlib.sha256(np.sort(row_hashes).tobytes()).hexdigest()
    return {"sha256": digest, "rows": int(len(frame)), "columns": list(columns)}


def build_bundle(
    trained: TrainedModel,
    spec: DatasetSpec,
    leads: pd.DataFrame,
    metrics: dict[str, float],
    model_name: str,
) -> ModelBundle:
    used = leads.iloc[np.concatenate([trained.split.train, trained.split.valid])]
    builder = trained.builder
    hashed = [c for c in builder.inputs_ if c in leads and c not in builder.sensitive_inputs_]
    meta: dict[str, Any] = {
        "name": model_name,
        "version": None,
        "dataset": spec.name,
        "id_column": spec.leads.id or "lead_id",
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "leadscore_version": __version__,
        "split": trained.split.kind,
        "best_iteration": trained.best_iteration,
        "params": {k: v for k, v in trained.params.items() if k != "monotone_constraints"},
        "metrics": metrics,
        "tiers": trained.tiers,
        "percentiles": trained.percentiles,
        "fingerprint": fingerprint(used, hashed),
        "profile": profile_training(trained, used),  # training distributions, for drift
        "spec": spec.model_dump(mode="json", exclude={"source"}),
        "training": {
            "drift": trained.extras.get("drift"),
            "refit": trained.extras.get("refit"),
            "linear_start": trained.linear is not None,
        },
    }
    if trained.linear is not None:
        meta["linear"] = trained.linear.to_dict()  # the trees' starting log-odds, as numbers
    meta.update(measure_limits(builder, used, spec))
    return ModelBundle(trained.booster, trained.builder, trained.calibrator, meta)


def measure_limits(builder: Any, used: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """What scoring checks numeric values against: each field's training range (a value far
    outside it is scored with a warning, see `leadscore.ranges`) and the spec's hard bounds."""
    return {
        "ranges": training_ranges(builder, builder.transform(used)),
        "bounds": {name: list(pair) for name, pair in spec.bounds.items()},
    }


def evaluate_test(trained: TrainedModel, leads: pd.DataFrame) -> dict[str, float]:
    test = leads.iloc[trained.split.test]
    return classification_metrics(test[LABEL].to_numpy(), trained.predict_proba(test))


def _input_files(spec: DatasetSpec, data_path: Path | None) -> list[Path]:
    files = [data_path or spec.resolve(spec.leads.path)]
    if spec.outcome.table is not None:
        files.append(spec.resolve(spec.outcome.table.path))
    if spec.activities is not None:
        files.append(spec.resolve(spec.activities.path))
    files += [spec.resolve(d.path) for d in spec.dimensions]
    return files


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        info = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path.resolve()), info.st_size, info.st_mtime_ns)


def _build_for_cache(
    spec_json: str, data_path: str | None, stats: list[tuple[str, int, int]]
) -> tuple[pd.DataFrame, TableReport]:
    """What the cache stores; `stats` is only part of the key (size and mtime of every file)."""
    spec = DatasetSpec.model_validate_json(spec_json)
    return build_table(spec, data_path=Path(data_path) if data_path else None)


def cached_build(
    spec: DatasetSpec, settings: Settings, data_path: Path | None = None
) -> tuple[pd.DataFrame, TableReport]:
    """`build_table`, cached with joblib between retrains on unchanged files: a 20M-row activity
    log takes tens of seconds to aggregate, and tuning or a backtest retrains many times.

    The key is the spec and each input file's path, size and modification time; the cache
    holds data tables only, never a model.
    """
    location = settings.resolved_feature_cache()
    files = _input_files(spec, data_path)
    if location is None or not all(f.is_file() for f in files):
        return build_table(spec, data_path=data_path)
    memory = joblib.Memory(location=str(location), verbose=0)
    # paths in the spec resolve against its own folder; pin them so the cached call agrees
    pinned = spec.model_dump(mode="json")
    pinned["source"] = str(spec.source) if spec.source else None
    spec_json = json.dumps(pinned, sort_keys=True, default=str)
    build = memory.cache(_build_for_cache)
    stats = [_stat(f) for f in files] + [_code_fingerprint()]
    return build(spec_json, str(data_path) if data_path else None, stats)


def _code_fingerprint() -> tuple[str, int, int]:
    """The table-building code's own hash: joblib only watches the cached function's body, and
    a fix in data.py or features.py must not be answered from a table built before it."""
    import leadscore.config
    import leadscore.data
    import leadscore.features

    digest = hashlib.sha256()
    for module in (leadscore.config, leadscore.data, leadscore.features):
        digest.update(Path(str(module.__file__)).read_bytes())
    return (digest.hexdigest(), 0, 0)


def run_training(
    spec: DatasetSpec,
    settings: Settings,
    *,
    data_path: Path | None = None,
    track: bool = True,
    params: dict[str, Any] | None = None,
    tune: int = 0,
    keep_tiers: bool = False,
    with_report: bool = True,
    baselines: bool = True,
) -> TrainingResult:
    """Build the point-in-time table, audit it for leaks, (optionally tune,) train, evaluate on
    the held-out most recent slice against the baselines, write the report, save the bundle,
    log and register (the champion moves only if the new version holds up)."""
    leads, report = cached_build(spec, settings, data_path)
    source = str(data_path or spec.resolve(spec.leads.path))
    check_ready(leads, spec, source)
    leak = LeakReport()
    if spec.leak_audit.enabled:
        split = split_leads(leads, spec)
        leak = audit_leaks(leads, spec, np.concatenate([split.train, split.valid]))
        if leak.dropped:
            spec = spec.model_copy(update={"drop": [*spec.drop, *leak.dropped]})
    tuning: dict[str, Any] = {}
    if tune > 0:
        from leadscore.tuning import tune as run_tuning

        tuning = run_tuning(leads, spec, tune, params)
        params = {**(params or {}), **tuning["params"]}
    trained = fit_model(leads, spec, params)
    if keep_tiers:
        previous = _champion_tiers(settings, track)
        if previous:
            trained.tiers = previous
        else:
            log.warning("--keep-tiers: no previous champion with tiers; new cutoffs chosen")
            keep_tiers = False
    metrics = {f"test_{k}": v for k, v in evaluate_test(trained, leads).items()}
    log.info(
        "test ROC AUC %.4f, PR AUC %.4f, log loss %.4f, Brier %.4f (%s split)",
        metrics["test_roc_auc"],
        metrics["test_pr_auc"],
        metrics["test_log_loss"],
        metrics["test_brier"],
        trained.split.kind,
    )
    bundle = build_bundle(trained, spec, leads, metrics, settings.model_name)
    bundle.meta["activity_types"] = report.notes.get("activity_types")
    bundle.meta["leak_audit"] = {"dropped": leak.dropped, "flagged": leak.flagged}
    bundle_dir = settings.resolved_models_dir() / settings.model_name
    bundle.save(bundle_dir)
    result = TrainingResult(bundle, bundle_dir, trained, metrics, report, leak)
    card: dict[str, Any] | None = None
    if with_report or baselines:
        card = _evaluation(trained, leads, spec, leak, tuning, keep_tiers, baselines)
        result.baselines = card["baselines"]
        for name, values in card["baselines"].items():
            for key in ("roc_auc", "pr_auc", "brier", "ece", "lift_top10"):
                metrics[f"baseline_{name}_{key}"] = values[key]
    if with_report and card is not None:
        result.report_dir = _write_report(card, settings, spec.name)
    if not track:
        return result

    from leadscore import tracking  # imported late: MLflow costs seconds to import

    split = trained.split
    logged = tracking.log_training(
        bundle_dir=bundle_dir,
        bundle=bundle,
        settings=settings,
        experiment=spec.name,
        params={
            "dataset": spec.name,
            "split": split.kind,
            "rows_train": len(split.train),
            "rows_valid": len(split.valid),
            "rows_test": len(split.test),
            "features": trained.builder.feature_names_,
            "dropped_columns": spec.drop,
            "leak_audit_dropped": leak.dropped,
            "as_of_days": spec.as_of_days,
            "best_iteration": trained.best_iteration,
            "calibration": trained.calibrator.state_["method"],
            "linear_start": trained.linear is not None,
            "refit": bool(trained.extras.get("refit")),
            "drift": bool((trained.extras.get("drift") or {}).get("drift")),
            **({"tuning_trials": tuning["trials"], "tuning_best_valid_auc": tuning["best_value"],
                **{f"tuned_{k}": v for k, v in tuning["params"].items()}} if tuning else {}),
            **{f"lgb_{k}": v for k, v in bundle.meta["params"].items()},
        },
        metrics=metrics,
        artifacts={
            "table_report.json": report.as_dict(),
            "leak_report.json": leak.as_dict(),
            "fingerprint.json": bundle.meta["fingerprint"],
            "tiers.json": bundle.meta["tiers"],
        },
        tags={
            "leadscore.dataset": spec.name,
            "leadscore.split": split.kind,
            "leadscore.data_sha256": bundle.meta["fingerprint"]["sha256"],
        },
        evaluate=lambda other: _score_on(other, leads.iloc[split.test]),
        challenger_metrics=_score_on(bundle, leads.iloc[split.test]),
        report_dir=result.report_dir,
    )
    bundle.meta["version"] = logged.version
    bundle.meta["run_id"] = logged.run_id
    bundle.save(bundle_dir)  # the local copy now names its registered version
    result.run_id, result.version, result.model_uri = logged.run_id, logged.version, logged.uri
    result.promoted, result.promotion_reason = logged.promoted, logged.reason
    result.champion_version = logged.champion_version
    if result.report_dir is not None and card is not None:
        from leadscore.report import write_card

        registry = {"version": logged.version, "promoted": logged.promoted,
                    "reason": logged.reason, "run_id": logged.run_id}
        write_card(result.report_dir, card["report"], registry)
        tracking.log_report(logged.run_id, result.report_dir, settings)
    return result


def _score_on(bundle: ModelBundle, test: pd.DataFrame) -> dict[str, float]:
    """A bundle's metrics on a slice of the training table, through the scoring path."""
    from leadscore.scoring import score

    probability = score(bundle, test)["probability"].to_numpy(dtype=float)
    return classification_metrics(test[LABEL].to_numpy(), probability)


def _champion_tiers(settings: Settings, track: bool) -> dict[str, float] | None:
    """The tier cutoffs of the current champion (registry), or of the last local bundle."""
    from leadscore.errors import LeadscoreError
    from leadscore.scoring import load_bundle

    try:
        if track:
            from leadscore import tracking

            bundle = tracking.load_model(settings.resolved_model_uri(), settings)
        else:
            bundle = load_bundle(settings.resolved_models_dir() / settings.model_name)
    except LeadscoreError:
        return None
    tiers = bundle.meta.get("tiers")
    return {k: float(v) for k, v in tiers.items()} if tiers else None


def _evaluation(
    trained: TrainedModel,
    leads: pd.DataFrame,
    spec: DatasetSpec,
    leak: LeakReport,
    tuning: dict[str, Any],
    kept_tiers: bool,
    with_baselines: bool,
) -> dict[str, Any]:
    """Test probabilities of the model and the baselines, and the report built from them."""
    from leadscore.baselines import fit_baselines
    from leadscore.report import build_report

    split = trained.split
    y = leads[LABEL].to_numpy()
    p_test = trained.predict_proba(leads.iloc[split.test])
    p_valid = trained.predict_proba(leads.iloc[split.valid])
    others: dict[str, np.ndarray] = {}
    if with_baselines:
        others = fit_baselines(trained, leads, spec, spec.train.seed).probabilities
    card = build_report(
        dataset=spec.name, trained=trained, y_valid=y[split.valid], p_valid=p_valid,
        y_test=y[split.test], p_test=p_test, baselines=others,
        leak={"dropped": leak.dropped, "flagged": leak.flagged}, tuning=tuning,
        kept_tiers=kept_tiers,
    )
    return {"report": card, "baselines": card["baselines"], "p_test": p_test,
            "y_test": y[split.test], "others": others}


def _write_report(card: dict[str, Any], settings: Settings, dataset: str) -> Path:
    """reports/<run>/ beside the models folder (the project root by default)."""
    from leadscore.report import run_label, write_report

    folder = settings.resolved_models_dir().parent / "reports" / run_label(dataset)
    return write_report(folder, card["report"], card["y_test"], card["p_test"], card["others"])
