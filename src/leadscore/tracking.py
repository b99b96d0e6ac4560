"""The only module that imports MLflow: runs, the model registry, aliases, and model URIs.

A trained model is logged as a pyfunc "model from code": the artifact holds the LightGBM text
model and JSON metadata plus a three-line shim that imports `leadscore`, so nothing is pickled
and `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false` loads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType

from leadscore.config import Settings, project_root
from leadscore.errors import LeadscoreError, ModelError
from leadscore.scoring import META_FILE, ModelBundle, load_bundle, score

log = logging.getLogger(__name__)
# MLflow draws a tqdm bar for every artifact it fetches (a two-file bundle, a model card): noise
# between leadscore's own log lines in the CLI and the demo. An explicit setting wins.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

BUNDLE_ARTIFACT = "bundle"
CHAMPION = "champion"
CHALLENGER = "challenger"

_SHIM = '''"""MLflow model-from-code shim: the logic lives in the installed leadscore package."""
from mlflow.models import set_model

from leadscore.tracking import LeadScorePyfunc

set_model(LeadScorePyfunc())
'''


class LeadScorePyfunc(PythonModel):
    """MLflow's view of a leadscore bundle: raw lead columns in, calibrated probabilities out."""

    def load_context(self, context: PythonModelContext) -> None:
        self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        scores = score(self.bundle, pd.DataFrame(model_input))
        return scores[["probability"]]


def configure(settings: Settings) -> str:
    """Point MLflow at the configured store; returns the tracking URI in use."""
    uri = settings.resolved_tracking_uri()
    # MLflow also exports these to the environment; left there, MLFLOW_TRACKING_URI would pass
    # for the user's own and win over every later Settings in this process (another store)
    exported = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in exported.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return uri


def _experiment(name: str, tracking_uri: str) -> str:
    """The experiment's id, creating it with artifacts in `mlartifacts/` for the embedded store
    (a shared server chooses its own artifact root)."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if tracking_uri.startswith("sqlite:///"):
        root = Path(tracking_uri.removeprefix("sqlite:///")).parent
        location = (root / "mlartifacts").resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def signature_for(bundle: ModelBundle) -> ModelSignature:
    """Raw lead columns, all optional. Numbers are `Any` because MLflow refuses to cast a pandas
    int64 column to double, and an integer column (age, visits) is what `read_csv` gives."""
    columns: list[Any] = [
        ColSpec("string" if kind == "categorical" else AnyType(), name, required=False)
        for name, kind in bundle.input_types().items()
    ]
    return ModelSignature(
        inputs=Schema(columns), outputs=Schema([ColSpec("double", "probability")])
    )


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    version: str
    uri: str
    aliases: tuple[str, ...]
    promoted: bool = True
    reason: str = ""
    champion_version: str | None = None


# a challenger takes @champion when, on the challenger's own test slice, its ROC AUC is at least
# the champion's minus AUC_TOLERANCE and its calibration error at most the champion's plus
# ECE_TOLERANCE (retrains wobble by a few thousandths; a real regression is larger): the
# defaults of `LEADSCORE_PROMOTE_AUC_TOLERANCE` and `LEADSCORE_PROMOTE_ECE_TOLERANCE`
AUC_TOLERANCE: float = Settings.model_fields["promote_auc_tolerance"].default
ECE_TOLERANCE: float = Settings.model_fields["promote_ece_tolerance"].default


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    auc_tolerance: float = AUC_TOLERANCE,
    ece_tolerance: float = ECE_TOLERANCE,
) -> tuple[bool, str]:
    """Should the challenger replace the champion? Both scored on the same test slice."""
    if champion is None:
        return True, "no champion yet"
    auc_new, auc_old = challenger["roc_auc"], champion["roc_auc"]
    ece_new, ece_old = challenger["ece"], champion["ece"]
    if auc_new != auc_new:
        return False, "challenger ROC AUC is undefined on its test slice"
    if auc_old == auc_old and auc_new < auc_old - auc_tolerance:
        return False, (
            f"ROC AUC {auc_new:.4f} is below the champion's {auc_old:.4f} "
            f"- {auc_tolerance} on the same test slice"
        )
    if ece_old == ece_old and ece_new > ece_old + ece_tolerance:
        return False, (
            f"ECE {ece_new:.4f} is above the champion's {ece_old:.4f} "
            f"+ {ece_tolerance} on the same test slice"
        )
    return True, (
        f"ROC AUC {auc_new:.4f} vs champion {auc_old:.4f}, "
        f"ECE {ece_new:.4f} vs {ece_old:.4f} on the same test slice"
    )


def _champion_metrics(
    name: str,
    settings: Settings,
    evaluate: Callable[[ModelBundle], Mapping[str, float]] | None,
    dataset: str | None = None,
) -> tuple[str | None, Mapping[str, float] | None, str]:
    """The current champion's version and its metrics on the new run's test slice (`dataset`:
    the new version's, to say so when the champion was trained on another one)."""
    client = MlflowClient()
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None, ""
    version = str(current.version)
    if evaluate is None:
        tags = current.tags or {}
        stored = {k: float(tags.get(f"metric.test_{k}", "nan")) for k in ("roc_auc", "ece")}
        return version, stored, " (champion's own test slice: no evaluator given)"
    try:
        bundle = load_model(f"models:/{name}/{version}", settings)
        note = ""
        theirs = bundle.meta.get("dataset")
        if dataset and theirs and theirs != dataset:
            # legitimate (a spec renamed, a new export), but rarely meant: say it
            other = f"the champion was trained on dataset {theirs!r}, this version on {dataset!r}"
            note = f" ({other})"
            log.warning("model %s: %s", name, other)
        return version, evaluate(bundle), note
    except (LeadscoreError, MlflowException, KeyError, ValueError) as exc:
        log.warning(
            "champion version %s cannot score the new test slice (%s)", version, type(exc).__name__
        )
        return version, None, " (the champion cannot score this test slice)"


def log_training(
    *,
    bundle_dir: Path,
    bundle: ModelBundle,
    settings: Settings,
    experiment: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifacts: Mapping[str, Any],
    tags: Mapping[str, str],
    evaluate: Callable[[ModelBundle], Mapping[str, float]] | None = None,
    challenger_metrics: Mapping[str, float] | None = None,
    report_dir: Path | None = None,
) -> LoggedModel:
    """Log a run (params, metrics, reports, model), register a version as `@challenger`, and
    point `@champion` at it only if it holds up against the current champion (`decide`).

    `evaluate` scores a bundle on this run's test slice, so the champion is judged on the same
    leads as the challenger; `challenger_metrics` are the new model's (`roc_auc`, `ece`).
    Params and artifacts come from the caller, which keeps PII out: only column names, counts
    and metrics are logged, never a lead's values.
    """
    tracking_uri = configure(settings)
    experiment_id = _experiment(experiment, tracking_uri)
    name = settings.model_name
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags(dict(tags))
        mlflow.log_params({k: _param(v) for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})  # drop NaN
        for filename, content in artifacts.items():
            mlflow.log_text(json.dumps(content, indent=2, default=str), f"reports/{filename}")
        if report_dir is not None and report_dir.is_dir():
            mlflow.log_artifacts(str(report_dir), "report")
        with tempfile.TemporaryDirectory() as tmp:
            shim = Path(tmp) / "leadscore_model.py"
            shim.write_text(_SHIM, encoding="utf-8")
            with warnings.catch_warnings():
                # no input example on purpose: it would copy leads (PII) into the artifact
                warnings.filterwarnings("ignore", message=".*input example was not provided.*")
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(shim),
                    artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
                    signature=signature_for(bundle),
                    pip_requirements=_requirements(),
                )
        run_id = run.info.run_id
    client = MlflowClient()
    with contextlib.suppress(MlflowException):  # already registered
        client.create_registered_model(name)
    # model_id: a tracking server refuses a `models:/m-...` source without it
    created = client.create_model_version(
        name=name,
        source=info.model_uri,
        run_id=run_id,
        tags={"spec": experiment},
        model_id=info.model_id,
    )
    version = str(created.version)
    for key, value in metrics.items():
        if value == value:
            client.set_model_version_tag(name, version, f"metric.{key}", f"{float(value):.6f}")
    champion_version, champion, note = _champion_metrics(
        name, settings, evaluate, bundle.meta.get("dataset")
    )
    mine = challenger_metrics or {
        "roc_auc": float(metrics.get("test_roc_auc", float("nan"))),
        "ece": float(metrics.get("test_ece", float("nan"))),
    }
    promoted, reason = decide(
        mine, champion, settings.promote_auc_tolerance, settings.promote_ece_tolerance
    )
    reason += note
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(
        name, version, "promotion", "champion" if promoted else "rejected"
    )
    client.set_model_version_tag(name, version, "promotion_reason", reason[:5000])
    if champion is not None:
        for key, value in champion.items():
            if key in ("roc_auc", "ece") and value == value:
                client.set_model_version_tag(
                    name, version, f"champion_on_this_test.{key}", f"{float(value):.6f}"
                )
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        log.info("registered %s version %s as @%s: %s", name, version, CHAMPION, reason)
        return LoggedModel(
            run_id,
            version,
            f"models:/{name}@{CHAMPION}",
            (CHALLENGER, CHAMPION),
            True,
            reason,
            version,
        )
    log.warning(
        "registered %s version %s as @%s; @%s stays version %s: %s",
        name,
        version,
        CHALLENGER,
        CHAMPION,
        champion_version,
        reason,
    )
    return LoggedModel(
        run_id,
        version,
        f"models:/{name}/{version}",
        (CHALLENGER,),
        False,
        reason,
        champion_version,
    )


def log_report(run_id: str, report_dir: Path, settings: Settings) -> None:
    """Add (or refresh) a run's report folder: the card names the registry decision, which is
    only known after the run was logged."""
    configure(settings)
    MlflowClient().log_artifacts(run_id, str(report_dir), "report")


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's param value limit


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}"
        for pkg in ("lightgbm", "numpy", "pandas", "pyarrow", "scikit-learn", "mlflow")
    ]


def resolve_model(uri: str, settings: Settings) -> tuple[Path, dict[str, str]]:
    """A local bundle folder for `uri` (a path, or `models:/name@alias`, `models:/name/3`,
    `runs:/...`) and what the registry says about it (name, version)."""
    local = Path(uri)
    if local.is_dir():
        if (local / META_FILE).is_file():
            return local, {}
        raise ModelError(f"{uri}: folder is not a model bundle (no {META_FILE})")
    if "://" not in uri and not uri.startswith("models:/") and not uri.startswith("runs:/"):
        raise ModelError(f"{uri}: no such model bundle folder")
    configure(settings)
    info: dict[str, str] = {}
    if uri.startswith("models:/"):
        info = _registry_info(uri)
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        raise ModelError(
            f"{uri}: cannot be loaded from the tracking store ({exc.error_code})"
        ) from None
    except OSError as exc:
        raise ModelError(f"{uri}: cannot be downloaded ({type(exc).__name__})") from None
    bundle_dir = _bundle_dir(root)
    if bundle_dir is None:
        raise ModelError(f"{uri}: not a leadscore model (no {BUNDLE_ARTIFACT}/{META_FILE})")
    return bundle_dir, info


def _bundle_dir(model_root: Path) -> Path | None:
    """Where the pyfunc's MLmodel says the bundle artifact was copied."""
    mlmodel = model_root / "MLmodel"
    if not mlmodel.is_file():
        return None
    config = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
    artifacts = config.get("flavors", {}).get("python_function", {}).get("artifacts", {})
    relative = artifacts.get(BUNDLE_ARTIFACT, {}).get("path")
    if not relative or not (model_root / relative / META_FILE).is_file():
        return None
    return model_root / relative


def _registry_info(uri: str) -> dict[str, str]:
    rest = uri.removeprefix("models:/")
    client = MlflowClient()
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = rest.partition("/")
            mv = client.get_model_version(name, number)
    except MlflowException:
        raise ModelError(
            f"{uri}: not found in the registry at {mlflow.get_tracking_uri()} "
            "(train a model first: leadscore train --config configs/<dataset>.yaml)"
        ) from None
    return {"name": mv.name, "version": str(mv.version), "run_id": mv.run_id or ""}


def load_model(uri: str, settings: Settings) -> ModelBundle:
    """Resolve and load a bundle, stamping it with the registry's name and version."""
    bundle_dir, info = resolve_model(uri, settings)
    bundle = load_bundle(bundle_dir)
    if info:
        bundle.meta["name"] = info["name"]
        bundle.meta["version"] = info["version"]
    bundle.meta["uri"] = uri
    return bundle


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    """Every registered version with its aliases and logged metrics, newest first."""
    configure(settings)
    client = MlflowClient()
    name = settings.model_name
    try:
        versions = client.search_model_versions(f"name='{name}'")
        # search results carry no aliases in MLflow's SQL store: the registered model does
        registered = client.get_registered_model(name).aliases or {}
    except MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, number in sorted(registered.items()):
        aliases.setdefault(str(number), []).append(alias)
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        rows.append(
            {
                "version": str(mv.version),
                "aliases": aliases.get(str(mv.version), []),
                "run_id": mv.run_id,
                "created": pd.Timestamp(mv.creation_timestamp, unit="ms").isoformat(),
                "metrics": {
                    k.removeprefix("metric."): float(v)
                    for k, v in (mv.tags or {}).items()
                    if k.startswith("metric.")
                },
                "dataset": (mv.tags or {}).get("spec", ""),
                "promotion": (mv.tags or {}).get("promotion", ""),
                "reason": (mv.tags or {}).get("promotion_reason", ""),
            }
        )
    return rows


def promote(version: str, settings: Settings) -> None:
    configure(settings)
    client = MlflowClient()
    try:
        client.get_model_version(settings.model_name, version)
    except MlflowException:
        raise ModelError(f"{settings.model_name} has no version {version}") from None
    client.set_registered_model_alias(settings.model_name, CHAMPION, version)
    client.set_model_version_tag(settings.model_name, version, "promotion", "forced")
    client.set_model_version_tag(
        settings.model_name, version, "promotion_reason", "promoted by hand (leadscore promote)"
    )


def local_tracking_hint(settings: Settings) -> str:
    uri = settings.resolved_tracking_uri()
    if uri.startswith("sqlite:///"):
        root = project_root()
        return (
            f"mlflow ui --backend-store-uri {uri} --default-artifact-root {root / 'mlartifacts'}"
        )
    return f"open {uri}"


def tracking_env_is_remote() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI", "").startswith("http"))
