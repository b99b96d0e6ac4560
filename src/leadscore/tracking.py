"""The only module that imports MLflow: runs, the model registry, aliases, and model URIs.

A trained model is logged as a pyfunc "model from code": the artifact holds the LightGBM text
model and JSON metadata plus a three-line shim that imports `leadscore`, so nothing is pickled
and `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false` loads it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
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
from leadscore.errors import ModelError
from leadscore.scoring import META_FILE, ModelBundle, load_bundle, score

log = logging.getLogger(__name__)

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
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        scores = score(self.bundle, pd.DataFrame(model_input))
        return scores[["probability"]]


def configure(settings: Settings) -> str:
    """Point MLflow at the configured store; returns the tracking URI in use."""
    uri = settings.resolved_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
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
    columns = [
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
) -> LoggedModel:
    """Log a run (params, metrics, reports, model), register a version, point `@champion` at it.

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
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # already registered
    # model_id: a tracking server refuses a `models:/m-...` source without it
    created = client.create_model_version(
        name=name, source=info.model_uri, run_id=run_id, tags={"spec": experiment},
        model_id=info.model_id,
    )
    version = str(created.version)
    for key, value in metrics.items():
        if value == value:
            client.set_model_version_tag(name, version, f"metric.{key}", f"{float(value):.6f}")
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_registered_model_alias(name, CHAMPION, version)
    log.info("registered %s version %s as @%s", name, version, CHAMPION)
    return LoggedModel(run_id, version, f"models:/{name}@{CHAMPION}", (CHALLENGER, CHAMPION))


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
        raise ModelError(f"{uri}: cannot be loaded from the tracking store ({exc.error_code})") from None
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


def local_tracking_hint(settings: Settings) -> str:
    uri = settings.resolved_tracking_uri()
    if uri.startswith("sqlite:///"):
        root = project_root()
        return f"mlflow ui --backend-store-uri {uri} --default-artifact-root {root / 'mlartifacts'}"
    return f"open {uri}"


def tracking_env_is_remote() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI", "").startswith("http"))
