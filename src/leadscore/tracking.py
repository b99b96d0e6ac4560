"""The only module that imports MLflow: runs, the model registry, aliases, and model URIs.

A trained model is logged as a pyfunc "model from code": the artifact holds the LightGBM text
model and JSON metadata plus a three-line shim that imports `leadscore`, so nothing is pickled
and `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false` loads it.

Past 600 lines on purpose: MLflow stays behind this one door (runs, registry, aliases, the
promotion gates applied to the registry, listing), and the rules themselves live in
promotion.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
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

from leadscore.config import MODEL_NAME_PATTERN, Settings
from leadscore.errors import LeadscoreError, ModelError
from leadscore.promotion import SchemaChange, decide, schema_change
from leadscore.scoring import META_FILE, ModelBundle, load_bundle, publish_bundle, score

log = logging.getLogger(__name__)
# MLflow draws a tqdm bar for every artifact it fetches (a two-file bundle, a model card): noise
# between leadscore's own log lines in the CLI and the demo. An explicit setting wins.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

BUNDLE_ARTIFACT = "bundle"
WHEEL_ARTIFACT = "leadscore_wheel"
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
        return scores[["probability", "score", "tier"]].astype(
            {"probability": "float64", "score": "int64", "tier": "object"}
        )


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


def _input_type(bundle: ModelBundle, name: str, kind: str) -> str:
    if kind == "categorical":
        return "string"
    # `long` for a field that was whole numbers on every training row (what `read_csv` gives
    # for it, and MLflow refuses to cast int64 to double); `double` for the rest
    whole = bundle.meta.get("whole_number_fields")
    return "long" if whole is not None and name in whole else "double"


def signature_for(bundle: ModelBundle) -> ModelSignature:
    """The lead's id and raw fields, all optional (a missing field is scored as missing):
    categories as strings, numbers as `long` or `double` as they were in training. Out come the
    calibrated probability, the 0-100 score and the A-D tier."""
    columns: list[Any] = [ColSpec("string", bundle.id_column, required=False)]
    columns += [
        ColSpec(_input_type(bundle, name, kind), name, required=False)
        for name, kind in bundle.input_types().items()
        if name != bundle.id_column
    ]
    outputs = Schema([ColSpec("double", "probability"), ColSpec("long", "score"),
                      ColSpec("string", "tier")])
    return ModelSignature(inputs=Schema(columns), outputs=outputs)


def input_example_for(bundle: ModelBundle) -> pd.DataFrame:
    """Two made-up leads from the model's own metadata, never copied from the data (a lead's
    row may hold names and emails): each category's first and last level, each number at a
    third and two thirds of its training range, text the model only derives from left blank."""
    builder = bundle.builder
    ranges = bundle.meta.get("ranges") or {}
    levels = {f.source: f.levels for f in builder.features_
              if f.kind == "categorical" and not f.derive}
    hidden = set(builder.sensitive_inputs_)
    rows: list[dict[str, Any]] = [{bundle.id_column: "example-1"},
                                  {bundle.id_column: "example-2"}]
    for name, kind in bundle.input_types().items():
        if name == bundle.id_column:
            continue
        for i, row in enumerate(rows):
            value: Any = None
            if kind == "categorical" and name not in hidden and levels.get(name):
                value = levels[name][0 if i == 0 else -1]
            elif kind == "numeric" and name in ranges:
                low, high = ranges[name]
                value = low + (high - low) * (i + 1) / 3
                value = round(value) if _input_type(bundle, name, kind) == "long" else value
            row[name] = value
    frame = pd.DataFrame(rows)
    for name, kind in bundle.input_types().items():
        if name in frame and name != bundle.id_column:
            kind_type = _input_type(bundle, name, kind)
            if kind_type == "long" and frame[name].notna().all():
                frame[name] = frame[name].astype("int64")
            elif kind_type == "double":
                frame[name] = frame[name].astype("float64")
            else:
                frame[name] = frame[name].astype(object)
    return frame


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    version: str
    uri: str
    aliases: tuple[str, ...]
    promoted: bool = True
    reason: str = ""
    champion_version: str | None = None
    schema_change: dict[str, Any] | None = None


@dataclass
class Champion:
    """The current @champion of a registered model, as a challenger is judged against it."""

    version: str
    bundle: ModelBundle | None  # None: it cannot be loaded (a damaged artifact)
    dataset: str | None


def _current_champion(name: str, settings: Settings) -> Champion | None:
    client = MlflowClient()
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    version = str(current.version)
    tags = current.tags or {}
    try:
        bundle: ModelBundle | None = load_model(f"models:/{name}/{version}", settings)
    except (LeadscoreError, MlflowException, OSError, ValueError) as exc:
        log.warning("model %s: champion version %s cannot be loaded (%s)", name, version,
                    type(exc).__name__)
        bundle = None
    dataset = (bundle.meta.get("dataset") if bundle else None) or _dataset_tag(tags) or None
    return Champion(version, bundle, dataset)


def _champion_version(name: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def _dataset_tag(tags: Mapping[str, str]) -> str:
    return tags.get("dataset") or tags.get("spec", "")


@dataclass
class Verdict:
    promoted: bool
    reason: str
    champion: Champion | None = None
    change: SchemaChange | None = None
    champion_metrics: Mapping[str, float] | None = None  # on the challenger's test slice


def judge(
    name: str,
    bundle: ModelBundle,
    settings: Settings,
    *,
    mine: Mapping[str, float],
    quality: str | None,
    evaluate: Callable[[ModelBundle], Mapping[str, float]] | None,
) -> Verdict:
    """Apply the promotion gates (see promotion.py) to a new version of `name`."""
    if quality is not None:  # refused on its own: no need to load the champion's bundle
        current = _champion_version(name)
        return Verdict(False, f"not fit to serve: {quality}",
                       Champion(current, None, None) if current else None)
    champion = _current_champion(name, settings)
    if champion is None:
        return Verdict(True, "no champion yet")
    ours = bundle.meta.get("dataset")
    if champion.dataset and ours and champion.dataset != ours:
        hint = (
            f"@champion version {champion.version} of {name} was trained on dataset "
            f"{champion.dataset!r}, this version on {ours!r}: not compared, not promoted. Give "
            f"each dataset its own model (`model: {{name: ...}}` in the spec) or promote it by "
            f"hand: leadscore promote {name} VERSION --allow-schema-change"
        )
        log.warning("%s", hint)
        return Verdict(False, hint, champion)
    if champion.bundle is None:
        return Verdict(True, "the champion cannot be loaded", champion)
    change = schema_change(champion.bundle.input_types(), bundle.input_types())
    if change:
        return Verdict(False, (
            f"input fields differ from @champion version {champion.version}: "
            f"{change.describe()}; callers send the champion's fields, so this waits for "
            f"leadscore promote {name} VERSION --allow-schema-change"
        ), champion, change)
    if evaluate is None:
        try:
            logged = _version_metrics(MlflowClient().get_model_version(name, champion.version))
        except MlflowException:
            logged = {}
        stored = {k: float(logged.get(f"test_{k}", float("nan"))) for k in ("roc_auc", "ece")}
        ok, reason = decide(
            mine, stored, settings.promote_auc_tolerance, settings.promote_ece_tolerance
        )
        return Verdict(ok, reason + " (champion's own test slice: no evaluator given)", champion)
    try:
        theirs: Mapping[str, float] | None = evaluate(champion.bundle)
        note = ""
    except (LeadscoreError, KeyError, ValueError) as exc:
        log.warning("champion version %s cannot score the new test slice (%s)",
                    champion.version, type(exc).__name__)
        theirs, note = None, " (the champion cannot score this test slice)"
    ok, reason = decide(
        mine, theirs, settings.promote_auc_tolerance, settings.promote_ece_tolerance
    )
    return Verdict(ok, reason + note, champion, None, theirs)


def _tag_champion_metrics(name: str, version: str, metrics: Mapping[str, float]) -> None:
    client = MlflowClient()
    for key in ("roc_auc", "ece"):
        value = metrics.get(key)
        if value is not None and value == value:
            client.set_model_version_tag(
                name, version, f"champion_on_this_test.{key}", f"{float(value):.6f}"
            )


def _version_metrics(mv: Any) -> dict[str, float]:
    """A version's test metrics: those of its logged model (MLflow 3, what the UI shows on the
    model's page), over the `metric.*` tags versions logged before carried."""
    tags = mv.tags or {}
    found = {k.removeprefix("metric."): float(v) for k, v in tags.items()
             if k.startswith("metric.")}
    source = str(mv.source or "")
    # the registry keeps the logged model in `source` (models:/m-...); not every store fills
    # `model_id` back in
    model_id = getattr(mv, "model_id", None) or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else None)
    if model_id:
        try:
            logged = MlflowClient().get_logged_model(model_id)
        except MlflowException:
            return found
        found.update({m.key: float(m.value) for m in logged.metrics or []})
    return found


def _version_tags(name: str, version: str) -> dict[str, str]:
    try:
        return dict(MlflowClient().get_model_version(name, version).tags or {})
    except MlflowException:
        return {}


def log_training(
    *,
    name: str,
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
    quality: str | None = None,
    started: float | None = None,
    dataset: TrainingData | None = None,
    description: str = "",
) -> LoggedModel:
    """Log a run (params, metrics, reports, model), register a version of `name` as
    `@challenger`, and point `@champion` at it only if it passes the promotion gates (`judge`).

    `evaluate` scores a bundle on this run's test slice, so the champion is judged on the same
    leads as the challenger; `challenger_metrics` are the new model's (`roc_auc`, `ece`);
    `quality` is why the model is not worth serving on its own (None: it is).
    Params and artifacts come from the caller, which keeps PII out: only column names, counts
    and metrics are logged, never a lead's values.

    The run is named `<spec>-<UTC time>` and starts at `started` (epoch seconds: when training
    began, so its duration is the training's); `dataset` becomes the run's MLflow dataset input.
    Everything the run writes besides the model goes to one folder, `report/`.
    """
    import time

    tracking_uri = configure(settings)
    experiment_id = _experiment(experiment, tracking_uri)
    begun = started if started is not None else time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(begun))
    created_run = MlflowClient().create_run(
        experiment_id,
        start_time=int(begun * 1000),
        run_name=f"{experiment}-{stamp}",
        tags={"mlflow.note.content": description} if description else None,
    )
    with mlflow.start_run(run_id=created_run.info.run_id) as run:
        mlflow.set_tags(dict(tags))
        mlflow.log_params({k: _param(v) for k, v in params.items()})
        if dataset is not None:
            mlflow.log_input(dataset.as_mlflow(), context="training")
        for filename, content in artifacts.items():
            mlflow.log_text(json.dumps(content, indent=2, default=str), f"report/{filename}")
        if report_dir is not None and report_dir.is_dir():
            mlflow.log_artifacts(str(report_dir), "report")
        with tempfile.TemporaryDirectory() as tmp:
            shim = Path(tmp) / "leadscore_model.py"
            shim.write_text(_SHIM, encoding="utf-8")
            wheel = build_wheel(Path(tmp))
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(shim),
                artifacts={BUNDLE_ARTIFACT: str(bundle_dir), WHEEL_ARTIFACT: str(wheel)},
                signature=signature_for(bundle),
                # made up from the model's levels and ranges: never a lead (PII)
                input_example=input_example_for(bundle),
                pip_requirements=_requirements(wheel),
            )
        # the run's metrics, linked to the logged model: the version's page shows them
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v},  # drop NaN
                           model_id=info.model_id)
        run_id = run.info.run_id
    client = MlflowClient()
    with contextlib.suppress(MlflowException):  # already registered
        client.create_registered_model(name)
    dataset_name = str(bundle.meta.get("dataset") or experiment)
    # model_id: a tracking server refuses a `models:/m-...` source without it
    created = client.create_model_version(
        name=name,
        source=info.model_uri,
        run_id=run_id,
        tags={"spec": experiment, "dataset": dataset_name,
              "trained_at": str(bundle.meta.get("trained_at", ""))},
        model_id=info.model_id,
    )
    version = str(created.version)
    mine = challenger_metrics or {
        "roc_auc": float(metrics.get("test_roc_auc", float("nan"))),
        "ece": float(metrics.get("test_ece", float("nan"))),
    }
    verdict = judge(name, bundle, settings, mine=mine, quality=quality, evaluate=evaluate)
    promoted, champion, change = verdict.promoted, verdict.champion, verdict.change
    reason = verdict.reason.replace("VERSION", version)
    if verdict.champion_metrics is not None:
        _tag_champion_metrics(name, version, verdict.champion_metrics)
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(
        name, version, "promotion", "champion" if promoted else "rejected"
    )
    client.set_model_version_tag(name, version, "promotion_reason", reason[:5000])
    if change:
        client.set_model_version_tag(name, version, "schema_change", change.describe()[:5000])
    champion_version = champion.version if champion else None
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        log.info("registered %s version %s as @%s: %s", name, version, CHAMPION, reason)
        return LoggedModel(run_id, version, f"models:/{name}@{CHAMPION}",
                           (CHALLENGER, CHAMPION), True, reason, version)
    log.warning("registered %s version %s as @%s; @%s stays version %s: %s",
                name, version, CHALLENGER, CHAMPION, champion_version, reason)
    return LoggedModel(run_id, version, f"models:/{name}/{version}", (CHALLENGER,), False,
                       reason, champion_version, change.as_dict() if change else None)


MONITORING_EXPERIMENT = "monitoring"


def log_monitoring(report: Mapping[str, Any], report_dir: Path | None,
                   settings: Settings) -> str:
    """One run in the `monitoring` experiment per monitor call, tagged with the model and the
    versions it judged; metrics per cohort and version as steps of a series (`roc_auc`, `gap`,
    ...), so MLflow plots them over time. Only counts and metrics: no lead id, no value."""
    tracking_uri = configure(settings)
    experiment_id = _experiment(MONITORING_EXPERIMENT, tracking_uri)
    versions = sorted({str(c["model_version"]) for c in report["cohorts"]})
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"model": str(report["model"]), "model_version": ",".join(versions),
                         "alarms": str(len(report["alarms"])), "as_of": str(report["as_of"])})
        mlflow.log_params({"period": report["period"], "horizon_days": report["horizon_days"],
                           **{k: _param(v) for k, v in report["thresholds"].items()}})
        for step, cohort in enumerate(report["cohorts"]):
            suffix = f"v{cohort['model_version']}"
            for key in ("roc_auc", "pr_auc", "ece", "gap", "expected", "actual", "matured"):
                value = cohort.get(key)
                if value is not None:
                    mlflow.log_metric(f"{key}_{suffix}", float(value), step=step)
        mlflow.log_text(json.dumps(report, indent=2, default=str), "monitor.json")
        if report_dir is not None and report_dir.is_dir():
            mlflow.log_artifacts(str(report_dir), "report")
        return str(run.info.run_id)


def log_report(run_id: str, report_dir: Path, settings: Settings) -> None:
    """Add (or refresh) a run's report folder: the card names the registry decision, which is
    only known after the run was logged."""
    configure(settings)
    MlflowClient().log_artifacts(run_id, str(report_dir), "report")


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's param value limit


def _requirements(wheel: Path | None = None) -> list[str]:
    """What `--env-manager virtualenv`/`uv` installs to rebuild the model's environment: the
    libraries it runs on, pinned, and leadscore itself from the wheel logged beside the model
    (`artifacts/<wheel>`, a path MLflow resolves inside the model folder), so a machine
    without this checkout, or a PyPI release of leadscore, can load it."""
    from importlib.metadata import version

    pinned = [
        f"{pkg}=={version(pkg)}"
        for pkg in ("lightgbm", "numpy", "pandas", "pyarrow", "scikit-learn", "mlflow")
    ]
    return [*pinned, f"artifacts/{wheel.name}"] if wheel is not None else pinned


def build_wheel(folder: Path) -> Path:
    """A pure-Python wheel of the installed leadscore package (its modules and metadata,
    dependencies declared), written into `folder`. Built from what is installed, so it works
    from an editable checkout and from a wheel install alike, with no build tools."""
    import base64
    import hashlib
    import zipfile
    from importlib.metadata import distribution

    import leadscore

    dist = distribution("leadscore")
    version = dist.version
    info = f"leadscore-{version}.dist-info"
    path = folder / f"leadscore-{version}-py3-none-any.whl"
    package = Path(leadscore.__file__).parent
    metadata = dist.read_text("METADATA") or f"Metadata-Version: 2.1\nName: leadscore\n" \
        f"Version: {version}\n"
    files: dict[str, bytes] = {}
    for source in sorted(package.rglob("*")):
        if source.is_file() and "__pycache__" not in source.parts and source.suffix != ".pyc":
            files[f"leadscore/{source.relative_to(package).as_posix()}"] = source.read_bytes()
    files[f"{info}/METADATA"] = metadata.encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: leadscore.tracking\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED)
    return path


@dataclass(frozen=True)
class TrainingData:
    """The lead table a model was trained on, as the run's MLflow dataset input: where it was
    read from, leadscore's digest of it and its size (column names and types, never values)."""

    frame: pd.DataFrame
    source: str
    name: str
    digest: str

    def as_mlflow(self) -> Any:
        import warnings
        from functools import cached_property

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.pandas_dataset import PandasDataset
        from mlflow.types.utils import _infer_schema

        class LeadTable(PandasDataset):
            # MLflow infers a column's type from every value: 13 s of a 20k-lead training.
            # The table is typed already, so its first rows tell the same.
            @cached_property
            def schema(self) -> Any:
                return _infer_schema(self._df.head(1000))

        with warnings.catch_warnings():
            # "can be interpreted in multiple ways" (a local path) and the integer-column hint
            # of schema inference: notes for MLflow's developers, not for ours
            warnings.simplefilter("ignore", UserWarning)
            dataset = LeadTable(df=self.frame, source=resolve_dataset_source(self.source),
                                name=self.name, digest=self.digest[:32])
            _ = dataset.schema, dataset.profile  # computed here, under the filter
        return dataset


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
    return {"name": mv.name, "version": str(mv.version), "run_id": mv.run_id or "",
            "schema_change_allowed": (mv.tags or {}).get("schema_change_allowed", "")}


def load_model(uri: str, settings: Settings) -> ModelBundle:
    """Resolve and load a bundle, stamping it with the registry's name and version."""
    bundle_dir, info = resolve_model(uri, settings)
    bundle = load_bundle(bundle_dir, signing_key=settings.signing_secret() or "")
    if info:
        bundle.meta["name"] = info["name"]
        bundle.meta["version"] = info["version"]
    bundle.meta["uri"] = uri
    return bundle


def list_versions(name: str, settings: Settings) -> list[dict[str, Any]]:
    """Every registered version of `name` with its aliases and logged metrics, newest first."""
    configure(settings)
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{_quoted(name)}'")
        # search results carry no aliases in MLflow's SQL store: the registered model does
        registered = client.get_registered_model(name).aliases or {}
    except MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, number in sorted(registered.items()):
        aliases.setdefault(str(number), []).append(alias)
    return [
        _version_row(mv, aliases.get(str(mv.version), []))
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True)
    ]


def _version_row(mv: Any, aliases: list[str]) -> dict[str, Any]:
    tags = mv.tags or {}
    created = pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").isoformat()
    return {
        "name": mv.name,
        "version": str(mv.version),
        "aliases": aliases,
        "run_id": mv.run_id,
        "created": created,
        "trained_at": tags.get("trained_at") or created,
        "metrics": _version_metrics(mv),
        "dataset": _dataset_tag(tags),
        "promotion": tags.get("promotion", ""),
        "reason": tags.get("promotion_reason", ""),
        "schema_change": tags.get("schema_change", ""),
        "schema_change_allowed": tags.get("schema_change_allowed") == "true",
    }


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def list_models(settings: Settings) -> list[dict[str, Any]]:
    """Every registered model with its @champion and @challenger (version, dataset, test ROC
    AUC, ECE, trained at), by name."""
    configure(settings)
    client = MlflowClient()
    try:
        registered = client.search_registered_models(max_results=1000)
    except MlflowException:
        return []
    out = []
    for model in sorted(registered, key=lambda m: m.name):
        entry: dict[str, Any] = {"name": model.name, "champion": None, "challenger": None}
        for alias in (CHAMPION, CHALLENGER):
            number = (model.aliases or {}).get(alias)
            if number is None:
                continue
            try:
                mv = client.get_model_version(model.name, str(number))
            except MlflowException:
                continue
            aliases = sorted(a for a, n in (model.aliases or {}).items() if str(n) == str(number))
            entry[alias] = _version_row(mv, aliases)
        out.append(entry)
    return out


def schema_change_allowed(name: str, version: str, settings: Settings) -> bool:
    """Was this version promoted with `--allow-schema-change`?"""
    configure(settings)
    return _version_tags(name, version).get("schema_change_allowed") == "true"


def champion_names(settings: Settings) -> list[str]:
    """Registered models that have a @champion: what the API serves when not told otherwise."""
    return [m["name"] for m in list_models(settings) if m["champion"] is not None]


def resolve_model_uri(model: str | None, settings: Settings) -> str:
    """What `--model` (or its absence) means: a bundle folder or a full URI as given; a bare
    model name is its @champion; nothing given is `LEADSCORE_MODEL_URI`/`LEADSCORE_MODEL_NAME`,
    else the one registered model that has a champion."""
    if model:
        if "://" in model or model.startswith(("models:/", "runs:/")) or Path(model).exists():
            return model
        if re.match(MODEL_NAME_PATTERN, model):
            return f"models:/{model}@{CHAMPION}"
        raise ModelError(f"--model {model!r}: no such bundle folder, and not a model name")
    configured = settings.resolved_model_uri()
    if configured:
        return configured
    names = champion_names(settings)
    if len(names) == 1:
        return f"models:/{names[0]}@{CHAMPION}"
    where = settings.resolved_tracking_uri()
    if not names:
        raise ModelError(
            f"no registered model has a @champion at {where} (train one first: "
            "leadscore train --config configs/<dataset>.yaml)"
        )
    raise ModelError(
        f"{len(names)} models have a @champion at {where} ({', '.join(names)}): "
        "choose one with --model NAME (or LEADSCORE_MODEL_NAME)"
    )


def promote(
    name: str, version: str, settings: Settings, *, allow_schema_change: bool = False
) -> Path:
    """Point `name`@champion at `version` whatever its metrics, and write its bundle to
    `models/<name>/`. A version whose input fields differ from the champion's needs
    `allow_schema_change`: the API serving the champion holds such a version back otherwise."""
    configure(settings)
    client = MlflowClient()
    try:
        client.get_model_version(name, version)
    except MlflowException:
        known = ", ".join(r["version"] for r in list_versions(name, settings)) or "none"
        raise ModelError(f"{name} has no version {version} (versions: {known})") from None
    bundle = load_model(f"models:/{name}/{version}", settings)
    champion = _current_champion(name, settings)
    change = None
    if champion is not None and champion.bundle is not None and champion.version != version:
        change = schema_change(champion.bundle.input_types(), bundle.input_types())
        if change and not allow_schema_change:
            raise ModelError(
                f"{name} version {version} takes other input fields than @champion version "
                f"{champion.version} ({change.describe()}): callers would have to change; "
                "pass --allow-schema-change to promote it anyway"
            )
    reason = "promoted by hand (leadscore promote)"
    if change:
        reason += f" with a schema change: {change.describe()}"
        client.set_model_version_tag(name, version, "schema_change", change.describe()[:5000])
    if allow_schema_change:  # also for an alias moved by hand, which a server holds back
        client.set_model_version_tag(name, version, "schema_change_allowed", "true")
    client.set_model_version_tag(name, version, "promotion", "forced")
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion_reason", reason[:5000])
    if allow_schema_change:
        bundle.meta["schema_change_allowed"] = True  # a server reading the folder sees it too
    return publish_champion(bundle, name, settings)


def publish_champion(bundle: ModelBundle, name: str, settings: Settings) -> Path:
    """`models/<name>/` holds exactly the champion: written when a version becomes @champion,
    never by a challenger."""
    folder = settings.resolved_models_dir() / name
    publish_bundle(bundle, folder)
    log.info("bundle of %s version %s written to %s", name, bundle.version, folder)
    return folder


def export(ref: str, directory: Path, settings: Settings) -> ModelBundle:
    """Write any version's bundle (`NAME`, `NAME@alias`, `NAME/3` or a `models:/` URI) to
    `directory`, for a deployment that reads a folder."""
    uri = ref if ref.startswith(("models:/", "runs:/")) else f"models:/{ref}"
    if "@" not in uri and uri.count("/") < 2 and uri.startswith("models:/"):
        uri += f"@{CHAMPION}"
    target = Path(directory)
    if target.is_file() or (
        target.is_dir() and any(target.iterdir()) and not (target / META_FILE).is_file()
    ):
        raise ModelError(f"{target}: exists and is not a model bundle folder; choose another")
    bundle = load_model(uri, settings)
    publish_bundle(bundle, target)
    return bundle


def local_tracking_hint(settings: Settings) -> str:
    uri = settings.resolved_tracking_uri()
    if uri.startswith("sqlite:///"):
        root = settings.resolved_home()
        return (
            f"mlflow ui --backend-store-uri {uri} --default-artifact-root {root / 'mlartifacts'}"
        )
    return f"open {uri}"


def tracking_env_is_remote() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI", "").startswith("http"))
