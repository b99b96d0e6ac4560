"""The training line in one call: spec → leads → model → bundle → MLflow run and registry.

The CLI, the benchmarks and the end-to-end test all train through `run_training`, so what a
data team runs is what the tests check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadscore import __version__, labels
from leadscore.audit import LeakReport, audit_leaks
from leadscore.config import DatasetSpec, Settings, model_name_for
from leadscore.data import ID, LABEL, check_ready
from leadscore.evaluate import classification_metrics, profile_training
from leadscore.promotion import quality_problem
from leadscore.ranges import training_ranges
from leadscore.scoring import ModelBundle, publish_bundle
from leadscore.table import TableReport, build_table
from leadscore.train import TrainedModel, fit_model, split_leads

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    bundle: ModelBundle
    bundle_dir: Path | None  # models/<name>/ when promoted, or --bundle-out; else None
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
    quality_problem: str | None = None  # why it is not fit to serve on its own, if it is not
    schema_change: dict[str, Any] | None = None


def fingerprint(leads: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """Identifies the training data without storing any of it: a hash of the rows used.

    Each column is hashed as it is typed (the table is typed by the spec, so the same file
    gives the same digest): turning every value into text first cost 12 s of a 78k-lead
    training under load, and most of the fingerprint's time at 1M leads."""
    frame = leads[[ID, LABEL, *columns]]
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
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
        # words for people (reasons, tiers), so serving and batch need no spec
        "labels": labels.resolve(builder.features_, spec.labels),
        "tier_words": labels.tier_words(spec.tiers.words),
        "percentiles": trained.percentiles,
        "fingerprint": fingerprint(used, hashed),
        # the reference drift is measured against: every labelled lead of the table (train,
        # validation and test), so scoring the training file itself shows none, while a time
        # split's later test period (macro rates, new campaigns) counts as seen, not as drift
        "profile": profile_training(trained, leads.iloc[np.concatenate(
            [trained.split.train, trained.split.valid, trained.split.test])]),
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
    meta["whole_number_fields"] = whole_number_fields(builder, used)
    return ModelBundle(trained.booster, trained.builder, trained.calibrator, meta)


def whole_number_fields(builder: Any, used: pd.DataFrame) -> list[str]:
    """Numeric input fields that were whole numbers on every training row, none missing: the
    model's MLflow signature types them `long` (as `mlflow.models.infer_signature` would on the
    training table) so a pandas int64 column from `read_csv` passes MLflow's schema check, which
    refuses to cast int64 to double. Other numeric fields are `double`."""
    fields = []
    for name, kind in builder.input_kinds_.items():
        if kind != "numeric" or name not in used:
            continue
        values = pd.to_numeric(used[name], errors="coerce").to_numpy(dtype=float)
        if len(values) and np.isfinite(values).all() and (values == np.round(values)).all():
            fields.append(name)
    return fields


def measure_limits(builder: Any, used: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """What scoring checks numeric values against: each field's training range (a value far
    outside it is scored with a warning, see `leadscore.ranges`) and the spec's hard bounds."""
    return {
        "ranges": training_ranges(builder, builder.transform(used)),
        "bounds": {name: list(pair) for name, pair in spec.bounds.items()},
    }


def evaluate_test(
    trained: TrainedModel, leads: pd.DataFrame
) -> tuple[dict[str, float], np.ndarray]:
    """The test slice's metrics and its probabilities (the report reuses them)."""
    test = leads.iloc[trained.split.test]
    p_test = trained.predict_proba(test)
    return classification_metrics(test[LABEL].to_numpy(), p_test), p_test


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


CACHE_FORMAT = 1  # bump when what a cache entry holds changes


def scrub_table(leads: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The training table without personal data: `pii` columns dropped (never features), and a
    PII column that a feature is derived from (an email's domain type, a phone's presence)
    replaced by a stand-in that derives the same value. Training, the cache and anything kept
    from a run see only this table, so whether the cache answered makes no difference."""
    derived = {spec.derive.email: "email", spec.derive.phone: "phone"}
    drop = [c for c in spec.pii if c in leads and c not in derived]
    out = leads.drop(columns=drop)
    blank = {"", *spec.leads.missing_values}
    for column, kind in derived.items():
        if column and column in out:
            out[column] = _stand_in(out[column], kind, blank)
    return out


def _stand_in(values: pd.Series, kind: str, blank: set[str]) -> pd.Series:
    """`x@<domain>` for an address (free / business / invalid is decided by the domain alone),
    `present` for a phone; a missing value stays as it was."""
    text = values.astype("string").str.strip()
    missing = (text.isna() | text.isin(blank)).to_numpy(dtype=bool)
    if kind == "phone":
        masked = pd.Series("present", index=values.index, dtype=object)
    else:
        domain = text.str.extract(r"^.+@([^@]*)$", expand=False)
        masked = ("x@" + domain).fillna("x").astype(object)
    return masked.where(~missing, values).astype(values.dtype)


def cached_build(
    spec: DatasetSpec, settings: Settings, data_path: Path | None = None,
    engine: str | None = None,
) -> tuple[pd.DataFrame, TableReport]:
    """`build_table`, scrubbed of personal data (`scrub_table`), cached between retrains on
    unchanged files: a 20M-row activity log takes tens of seconds to aggregate, and tuning or a
    backtest retrains many times.

    An entry is a Parquet file and a JSON report under `LEADSCORE_HOME/cache/features/`, keyed
    by the spec, each input file's path, size and modification time, and the table-building
    code's hash. Never a pickle: a file planted in the folder is at worst an unreadable entry,
    which is rebuilt. `engine` (see `feature_engines`) is not part of the key: every engine
    builds the same table.
    """
    location = settings.resolved_feature_cache()
    files = _input_files(spec, data_path)
    if location is None or not all(f.is_file() for f in files):
        leads, report = build_table(spec, data_path=data_path, engine=engine)
        return scrub_table(leads, spec), report
    # paths in the spec resolve against its own folder; pin them so the key agrees
    pinned = spec.model_dump(mode="json", exclude={"labels", "tiers"})  # words: no rebuild
    pinned["source"] = str(spec.source) if spec.source else None
    key = hashlib.sha256(json.dumps(
        [CACHE_FORMAT, pinned, str(data_path) if data_path else None,
         [_stat(f) for f in files], _code_fingerprint()],
        sort_keys=True, default=str,
    ).encode()).hexdigest()[:32]
    table_path, report_path = location / f"{key}.parquet", location / f"{key}.report.json"
    hit = _read_cached(table_path, report_path)
    if hit is not None:
        log.debug("training table from the cache (%s)", table_path.name)
        return hit
    leads, report = build_table(spec, data_path=data_path, engine=engine)
    leads = scrub_table(leads, spec)
    _write_cached(leads, report, table_path, report_path)
    return leads, report


def _read_cached(
    table_path: Path, report_path: Path
) -> tuple[pd.DataFrame, TableReport] | None:
    if not (table_path.is_file() and report_path.is_file()):
        return None
    try:
        raw = json.loads(report_path.read_text(encoding="utf-8"))
        report = TableReport(
            leads=int(raw["leads"]), rows=int(raw["rows"]), labelled=int(raw["labelled"]),
            positives=int(raw["positives"]), excluded=dict(raw["excluded"]),
            notes=dict(raw["notes"]),
        )
        return pd.read_parquet(table_path), report
    except Exception as exc:  # a damaged or planted entry: rebuild, never trust it
        log.warning("feature cache entry %s unreadable (%s): rebuilding", table_path.name,
                    type(exc).__name__)
        return None


def _write_cached(
    leads: pd.DataFrame, report: TableReport, table_path: Path, report_path: Path
) -> None:
    payload = {"leads": report.leads, "rows": report.rows, "labelled": report.labelled,
               "positives": report.positives, "excluded": report.excluded,
               "notes": report.notes}
    try:
        table_path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(payload, default=_json_number)
        tmp = table_path.with_suffix(f".tmp-{os.getpid()}")
        leads.to_parquet(tmp, index=True)
        if not pd.read_parquet(tmp).equals(leads):  # a type Parquet cannot hold exactly
            tmp.unlink()
            log.debug("training table not cached: it does not round-trip through Parquet")
            return
        tmp.replace(table_path)
        report_path.write_text(text, encoding="utf-8")
    except (OSError, TypeError, ValueError, ImportError) as exc:
        log.debug("training table not cached (%s)", type(exc).__name__)


def _json_number(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(type(value).__name__)


def clear_cache(settings: Settings) -> int:
    """Remove every cached training table; returns how many files went."""
    location = settings.resolved_feature_cache()
    if location is None or not location.is_dir():
        return 0
    count = sum(1 for p in location.rglob("*") if p.is_file())
    shutil.rmtree(location)
    return count


def _code_fingerprint() -> tuple[str, int, int]:
    """The table-building code's own hash: a fix in data.py, table.py or features.py must not be
    answered from a table built before it."""
    import leadscore.config
    import leadscore.data
    import leadscore.derive
    import leadscore.feature_engines
    import leadscore.features
    import leadscore.features_duckdb
    import leadscore.table

    digest = hashlib.sha256()
    for module in (leadscore.config, leadscore.data, leadscore.derive, leadscore.features,
                   leadscore.table, leadscore.feature_engines, leadscore.features_duckdb):
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
    bundle_out: Path | None = None,
    engine: str | None = None,
) -> TrainingResult:
    """Build the point-in-time table, audit it for leaks, (optionally tune,) train, evaluate on
    the held-out most recent slice against the baselines, write the report, log and register
    (the champion moves only if the new version holds up).

    The bundle goes to `models/<name>/` only when this version becomes @champion, and to
    `bundle_out` when given (the only place a `track=False` run writes one). `engine` builds the
    table (local, duckdb or spark: see `feature_engines`).
    """
    import time

    from leadscore import progress

    started = time.time()  # the MLflow run's start: its duration is the whole training
    name = model_name_for(spec, settings)
    progress.stage("reading the data and building features")
    leads, report = cached_build(spec, settings, data_path, engine)
    source = str(data_path or spec.resolve(spec.leads.path))
    check_ready(leads, spec, source)
    # always: the personal-data scan runs even with the leak statistics switched off
    split = split_leads(leads, spec)
    progress.stage("leak audit")
    leak = audit_leaks(leads, spec, np.concatenate([split.train, split.valid]))
    if leak.dropped:
        spec = spec.model_copy(update={"drop": [*spec.drop, *leak.dropped]})
    tuning: dict[str, Any] = {}
    if tune > 0:
        from leadscore.tuning import tune as run_tuning

        progress.stage(f"tuning ({tune} trials)")
        tuning = run_tuning(leads, spec, tune, params)
        params = {**(params or {}), **tuning["params"]}
    progress.stage("training")
    trained = fit_model(leads, spec, params)
    if keep_tiers:
        previous = _champion_tiers(settings, name, track)
        if previous:
            trained.tiers = previous
        else:
            log.warning("--keep-tiers: no previous champion with tiers; new cutoffs chosen")
            keep_tiers = False
    progress.stage("evaluating on the test slice")
    tested, p_test = evaluate_test(trained, leads)
    metrics = {f"test_{k}": v for k, v in tested.items()}
    log.info(
        "test ROC AUC %.4f, PR AUC %.4f, log loss %.4f, Brier %.4f (%s split)",
        metrics["test_roc_auc"],
        metrics["test_pr_auc"],
        metrics["test_log_loss"],
        metrics["test_brier"],
        trained.split.kind,
    )
    bundle = build_bundle(trained, spec, leads, metrics, name)
    bundle.meta["activity_types"] = report.notes.get("activity_types")
    bundle.meta["leak_audit"] = {"dropped": leak.dropped, "flagged": leak.flagged}
    result = TrainingResult(bundle, None, trained, metrics, report, leak)
    card: dict[str, Any] | None = None
    if with_report or baselines:
        progress.stage("baselines and the evaluation report")
        card = _evaluation(trained, leads, spec, leak, tuning, keep_tiers, baselines, p_test)
        result.baselines = card["baselines"]
        from leadscore.report import bundle_evaluation

        # the model page's test figures travel with the version (older bundles lack them)
        bundle.meta["evaluation"] = bundle_evaluation(card["report"])
        for baseline, values in card["baselines"].items():
            for key in ("roc_auc", "pr_auc", "brier", "ece", "lift_top10"):
                metrics[f"baseline_{baseline}_{key}"] = values[key]
    result.quality_problem = quality_problem(
        metrics, result.baselines, settings.promote_auc_tolerance
    )
    if result.quality_problem:
        log.warning("%s: not fit to serve: %s", name, result.quality_problem)
    if with_report and card is not None:
        card["report"]["verdict"] = result.quality_problem
        progress.stage("writing the report")
        result.report_dir = _write_report(card, settings, spec.name)
    if bundle_out is not None:
        result.bundle_dir = publish_bundle(bundle, bundle_out)
    if not track:
        return result

    progress.stage("logging to MLflow and registering")
    from leadscore import tracking  # imported late: MLflow costs seconds to import

    split = trained.split
    with tempfile.TemporaryDirectory(prefix="leadscore-bundle-") as staging:
        # the artifact MLflow copies; models/<name>/ is written only for a new champion
        staged = bundle.save(Path(staging) / "bundle")
        logged = tracking.log_training(
            name=name,
            bundle_dir=staged,
            bundle=bundle,
            settings=settings,
            experiment=spec.name,
            params={
                "dataset": spec.name,
                "model_name": name,
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
                **({"tuning_trials": tuning["trials"],
                    "tuning_best_valid_auc": tuning["best_value"],
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
                "leadscore.model_name": name,
                "leadscore.split": split.kind,
            },
            started=started,
            dataset=tracking.TrainingData(leads, source, spec.name,
                                          bundle.meta["fingerprint"]["sha256"]),
            description=(
                f"{spec.description or spec.name}: LightGBM on {len(split.train):,} leads "
                f"({split.kind} split), calibration {trained.calibrator.state_['method']}, "
                f"test ROC AUC {metrics['test_roc_auc']:.3f}, ECE {metrics['test_ece']:.3f}."
            ),
            evaluate=lambda other: _score_on(other, leads.iloc[split.test]),
            challenger_metrics=_score_on(bundle, leads.iloc[split.test]),
            report_dir=result.report_dir,
            quality=result.quality_problem,
        )
    bundle.meta["version"] = logged.version
    bundle.meta["run_id"] = logged.run_id
    result.run_id, result.version, result.model_uri = logged.run_id, logged.version, logged.uri
    result.promoted, result.promotion_reason = logged.promoted, logged.reason
    result.champion_version = logged.champion_version
    result.schema_change = logged.schema_change
    if logged.promoted:
        result.bundle_dir = tracking.publish_champion(bundle, name, settings)
    if bundle_out is not None:
        result.bundle_dir = publish_bundle(bundle, bundle_out)  # now naming its version
    if result.report_dir is not None and card is not None:
        from leadscore.report import write_card

        progress.stage("writing the model card")
        registry = {"version": logged.version, "promoted": logged.promoted,
                    "reason": logged.reason, "run_id": logged.run_id, "name": name}
        write_card(result.report_dir, card["report"], registry)
        tracking.log_report(logged.run_id, result.report_dir, settings)
    return result


def _score_on(bundle: ModelBundle, test: pd.DataFrame) -> dict[str, float]:
    """A bundle's metrics on a slice of the training table, through the scoring path."""
    from leadscore.scoring import score

    probability = score(bundle, test)["probability"].to_numpy(dtype=float)
    return classification_metrics(test[LABEL].to_numpy(), probability)


def _champion_tiers(settings: Settings, name: str, track: bool) -> dict[str, float] | None:
    """The tier cutoffs of the current champion (registry), or of its local bundle folder."""
    from leadscore.errors import LeadscoreError
    from leadscore.scoring import load_bundle

    try:
        if track:
            from leadscore import tracking

            bundle = tracking.load_model(f"models:/{name}@champion", settings)
        else:
            bundle = load_bundle(settings.resolved_models_dir() / name)
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
    p_test: np.ndarray,
) -> dict[str, Any]:
    """The baselines' test probabilities beside the model's (`p_test`), and the report built
    from them."""
    from leadscore.baselines import fit_baselines
    from leadscore.report import build_report

    split = trained.split
    y = leads[LABEL].to_numpy()
    p_valid = trained.predict_proba(leads.iloc[split.valid])
    others: dict[str, np.ndarray] = {}
    note = None
    if with_baselines:
        fitted = fit_baselines(trained, leads, spec, spec.train.seed)
        others, note = fitted.probabilities, fitted.note
    card = build_report(
        dataset=spec.name, trained=trained, y_valid=y[split.valid], p_valid=p_valid,
        y_test=y[split.test], p_test=p_test, baselines=others,
        leak={"dropped": leak.dropped, "flagged": leak.flagged}, tuning=tuning,
        kept_tiers=kept_tiers,
    )
    if note:
        card["notes"].append(note)
    return {"report": card, "baselines": card["baselines"], "p_test": p_test,
            "y_test": y[split.test], "others": others}


def _write_report(card: dict[str, Any], settings: Settings, dataset: str) -> Path:
    """`reports/<run>/` under LEADSCORE_HOME (the working directory by default)."""
    from leadscore.report import run_label, write_report

    folder = settings.resolved_reports_dir() / run_label(dataset)
    return write_report(folder, card["report"], card["y_test"], card["p_test"], card["others"])
