"""MLflow: runs, the registry alias, a pickle-free pyfunc, no PII in what is logged, and a real
tracking server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from leadscore import tracking
from leadscore.config import DatasetSpec, Settings, load_spec
from leadscore.errors import ModelError
from leadscore.pipeline import run_training
from leadscore.scoring import ModelBundle, score

NUMERIC = ["web_visits", "pricing_views", "demo_requests", "calls_unanswered"]
COUNTED = {
    "web_visits": "web_visit",
    "pricing_views": "pricing_page_view",
    "demo_requests": "demo_request",
    "calls_unanswered": "call_unanswered",
}


SUBSET = 1500  # leads: enough to learn from, few enough to train in seconds



def write_spec(path: Path, data: dict) -> Path:
    """A spec file (not imported from conftest: tests/serve has a conftest module of its own)."""
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path

def numeric_leads(synth_dir: Path, out_dir: Path) -> Path:
    """The first synthetic leads plus integer activity counts, so a model has numeric inputs."""
    leads = pd.read_csv(synth_dir / "leads.csv", dtype=str, keep_default_na=False).iloc[:SUBSET]
    acts = pd.read_csv(synth_dir / "activities.csv", usecols=["lead_id", "type"])
    counts = pd.crosstab(acts["lead_id"], acts["type"])
    for column, kind in COUNTED.items():
        leads[column] = leads["lead_id"].map(counts[kind]).fillna(0).astype("int64")
    path = out_dir / "leads_numeric.csv"
    leads.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def numeric(  # type: ignore[no-untyped-def]
    synth_dir: Path, store: Settings, tmp_path_factory: pytest.TempPathFactory
):
    """A model with integer inputs, registered under its own name in the test store."""
    root = tmp_path_factory.mktemp("numeric")
    spec = load_spec(write_spec(root / "spec.yaml", {
        "name": "synthetic_numeric",
        "leads": {"path": str(numeric_leads(synth_dir, root)), "id": "lead_id",
                  "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": ["source_channel", "seniority", "stage_at_creation",
                                     "budget", "timeline"], "numeric": NUMERIC},
        "drop": ["converted_at", "job_title"],
        "pii": ["name", "email", "phone"],
        "train": {"min_per_class": 20},
    }))
    # the test store's database is already created (its migrations cost seconds): share it
    settings = store.model_copy(update={"models_dir": root / "models",
                                        "model_name": "numeric-leads"})
    # no baselines: what matters here is the pyfunc's inputs (a model that loses to the
    # logistic baseline is not promoted, and this one does on these few leads)
    return settings, spec, run_training(spec, settings, baselines=False)


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")


def test_configure_leaves_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow exports the URI it is given; that must not pass for the user's own setting."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = Settings(tracking_uri=f"sqlite:///{tmp_path / 'a.db'}")
    second = Settings(tracking_uri=f"sqlite:///{tmp_path / 'b.db'}")
    assert tracking.configure(first) == first.tracking_uri
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking.configure(second) == second.tracking_uri
    assert mlflow.get_tracking_uri() == second.tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.configure(first) == "http://127.0.0.1:1"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:1"


def test_registered_version_is_champion(trained) -> None:
    tracking.configure(trained.settings)
    client = MlflowClient()
    name = trained.settings.model_name
    mv = client.get_model_version_by_alias(name, "champion")
    assert str(mv.version) == trained.version
    assert "champion" in client.get_model_version(name, trained.version).aliases
    assert trained.uri == f"models:/{name}@champion"
    mv = client.get_model_version(name, trained.version)
    # test metrics live on the logged model (MLflow 3), not as dozens of version tags
    assert not [k for k in mv.tags if k.startswith("metric.")]
    model_id = mv.model_id or mv.source.removeprefix("models:/")
    logged = {m.key: m.value for m in client.get_logged_model(model_id).metrics}
    assert logged["test_roc_auc"] == pytest.approx(trained.metrics["test_roc_auc"], abs=1e-9)


def test_list_versions_and_promote(trained) -> None:
    rows = tracking.list_versions("test-leads", trained.settings)
    assert [int(r["version"]) for r in rows] == sorted((int(r["version"]) for r in rows),
                                                       reverse=True), "newest first"
    row = next(r for r in rows if r["version"] == trained.version)
    assert "champion" in row["aliases"]
    assert row["metrics"]["test_roc_auc"] == pytest.approx(trained.metrics["test_roc_auc"])
    folder = tracking.promote("test-leads", trained.version, trained.settings)  # idempotent
    assert json.loads((folder / "bundle.json").read_text())["version"] == trained.version
    with pytest.raises(ModelError, match="test-leads has no version 999"):
        tracking.promote("test-leads", "999", trained.settings)


def test_unknown_alias_is_a_model_error(trained) -> None:
    with pytest.raises(ModelError, match="not found in the registry"):
        tracking.load_model(f"models:/{trained.settings.model_name}@nobody", trained.settings)
    with pytest.raises(ModelError, match="no such model bundle folder"):
        tracking.load_model("no/such/folder", trained.settings)


def test_pyfunc_loads_without_pickle_and_matches_score(
    trained, bundle: ModelBundle, synth_leads: pd.DataFrame, no_pickle: None
) -> None:
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    tracking.configure(trained.settings)
    model = mlflow.pyfunc.load_model(f"models:/{trained.settings.model_name}@champion")
    leads = synth_leads.iloc[:300]
    out = model.predict(leads)
    assert list(out.columns) == ["probability", "score", "tier"]  # the output schema's
    assert len(out) == 300
    assert out["score"].tolist() == score(bundle, leads)["score"].tolist()
    expected = score(bundle, leads)["probability"].to_numpy()
    np.testing.assert_allclose(out["probability"].to_numpy(), expected, rtol=0, atol=1e-9)


def test_pyfunc_accepts_int64_columns_from_pandas(numeric, no_pickle: None) -> None:
    settings, spec, result = numeric
    frame = pd.read_csv(spec.resolve(spec.leads.path))
    assert all(frame[c].dtype == np.int64 for c in NUMERIC), "the test needs int64 columns"
    tracking.configure(settings)
    model = mlflow.pyfunc.load_model(result.model_uri)
    out = model.predict(frame)
    bundle = tracking.load_model(result.model_uri, settings)
    expected = score(bundle, frame)["probability"].to_numpy()
    np.testing.assert_allclose(out["probability"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert result.model_uri == "models:/numeric-leads@champion"
    # whole numbers in training: typed long, so int64 passes MLflow's check (int64 -> double
    # is refused); the example's columns carry the same types
    types = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    assert {types[c] for c in NUMERIC} == {"long"}
    # the integer inputs matter: without them, the probabilities change
    blank = frame.drop(columns=NUMERIC)
    assert np.abs(model.predict(blank)["probability"].to_numpy() - expected).max() > 0.01


def _run_text(client: MlflowClient, run_id: str, dst: Path, model_uri: str) -> str:
    """Everything logged for a run, as one text: params, tags, metric names, artifacts and
    the registered model's files."""
    run = client.get_run(run_id)
    parts = [
        json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(list(run.data.metrics)),
    ]
    roots = [
        Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(dst / "run"))),
        Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst / "m"))),
    ]
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    assert any(p.parent.name == "report" for p in files), "the run's reports were read"
    assert any(p.name == "model.txt" for p in files)
    for path in files:
        parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def test_logged_run_holds_no_pii(trained, synth_leads: pd.DataFrame, tmp_path: Path) -> None:
    tracking.configure(trained.settings)
    client = MlflowClient()
    mv = client.get_model_version(trained.settings.model_name, trained.version)
    text = _run_text(client, mv.run_id, tmp_path, f"models:/{mv.name}/{mv.version}")
    assert "source_channel" in text, "sanity: the text holds what was logged"
    text += json.dumps(mv.tags) + json.dumps(client.get_registered_model(mv.name).tags)
    for column in ("email", "name", "phone"):
        values = [v for v in synth_leads[column].unique() if len(v) >= 6]
        assert len(values) > 100
        leaked = [v for v in values if v in text]
        assert leaked == [], f"{column} values logged: {leaked[:3]}"


def test_pickle_free_artifact(trained, tmp_path: Path) -> None:
    tracking.configure(trained.settings)
    root = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=trained.uri, dst_path=str(tmp_path))
    )
    files = [p for p in root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".pkl", ".pickle", ".joblib", ".cloudpickle"}]
    for path in files:
        assert path.read_bytes()[:2] not in {b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"}
    mlmodel = (root / "MLmodel").read_text(encoding="utf-8")
    assert "python_model.pkl" not in mlmodel


# --------------------------------------------------------------------------- a real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} not healthy after {seconds} s")


@pytest.fixture
def mlflow_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    artifacts = tmp_path / "server-artifacts"
    log_file = (tmp_path / "server.log").open("wb")
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(artifacts),
        ],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )
    try:
        try:
            _wait_healthy(url, proc)
        except (RuntimeError, TimeoutError):
            log_file.flush()
            tail = (tmp_path / "server.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"mlflow server did not start:\n{tail}") from None
        yield url, artifacts
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log_file.close()


@pytest.mark.slow
def test_train_against_a_real_tracking_server(
    mlflow_server, synth_spec: DatasetSpec, synth_leads: pd.DataFrame, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # the spec's own store is ignored: MLFLOW_TRACKING_URI wins
    settings = Settings(
        tracking_uri=f"sqlite:///{tmp_path / 'ignored.db'}", models_dir=tmp_path / "models",
        model_name="server-leads",
    )
    assert settings.resolved_tracking_uri() == url
    spec = synth_spec.model_copy(
        update={"features": synth_spec.features.model_copy(
            update={"categorical": synth_spec.features.categorical[:6]})}
    )
    subset = tmp_path / "leads.csv"
    synth_leads.iloc[:SUBSET].to_csv(subset, index=False)
    result = run_training(spec, settings, data_path=subset, baselines=False)
    assert result.model_uri == "models:/server-leads@champion"
    assert not (tmp_path / "ignored.db").exists()
    assert any(p.name == "model.txt" for p in artifacts.rglob("*")), "artifacts went via server"

    bundle = tracking.load_model(result.model_uri, settings)
    assert bundle.version == result.version
    leads = synth_leads.iloc[:200]
    np.testing.assert_allclose(
        score(bundle, leads)["probability"], score(result.bundle, leads)["probability"],
        rtol=0, atol=1e-12,
    )
    client = MlflowClient(tracking_uri=url)
    assert client.get_model_version_by_alias("server-leads", "champion").version == result.version


def test_logged_model_has_typed_signature_and_a_made_up_example(trained, tmp_path: Path) -> None:
    """MLflow users see real types and an input example that is no lead of the data."""
    from mlflow.models import Model

    tracking.configure(trained.settings)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=trained.uri,
                                                     dst_path=str(tmp_path)))
    model = Model.load(str(local / "MLmodel"))
    bundle = tracking.load_model(trained.uri, trained.settings)
    inputs = {c.name: c.type.name for c in model.signature.inputs.inputs}
    assert inputs[bundle.id_column] == "string"
    kinds = bundle.input_types()
    for name, kind in kinds.items():
        if name != bundle.id_column:
            assert inputs[name] == ("string" if kind == "categorical" else "double")
    assert "any" not in inputs.values()
    assert [(c.name, c.type.name) for c in model.signature.outputs.inputs] == [
        ("probability", "double"), ("score", "long"), ("tier", "string")]
    example = model.load_input_example(str(local))
    assert list(example[bundle.id_column]) == ["example-1", "example-2"]
    leads = pd.read_csv(trained.spec.resolve(trained.spec.leads.path), dtype=str)
    for name in example.columns:
        if name in leads and kinds.get(name) == "categorical":
            levels = {f.source: f.levels for f in bundle.builder.features_}
            assert set(example[name].dropna()) <= set(levels.get(name, ()))
    assert not set(example[bundle.id_column]) & set(leads[bundle.id_column])
    # the example scores through MLflow's own pyfunc, schema enforcement included
    out = mlflow.pyfunc.load_model(trained.uri).predict(example)
    assert list(out.columns) == ["probability", "score", "tier"] and len(out) == 2
    assert out["probability"].between(0, 1).all() and set(out["tier"]) <= set("ABCD")


def test_run_is_named_described_and_has_its_dataset_input(trained) -> None:
    tracking.configure(trained.settings)
    client = MlflowClient()
    mv = client.get_model_version(trained.settings.model_name, trained.version)
    run = client.get_run(mv.run_id)
    assert re.fullmatch(rf"{trained.spec.name}-\d{{8}}T\d{{6}}Z", run.info.run_name)
    assert "LightGBM on" in run.data.tags["mlflow.note.content"]
    assert "leadscore.data_sha256" not in run.data.tags
    [entry] = run.inputs.dataset_inputs
    profile = json.loads(entry.dataset.profile)
    assert profile["num_rows"] == len(pd.read_csv(trained.spec.resolve(trained.spec.leads.path)))
    assert str(trained.spec.resolve(trained.spec.leads.path)) in entry.dataset.source
    assert len(entry.dataset.digest) >= 16
    assert [t.value for t in entry.tags if t.key == "mlflow.data.context"] == ["training"]
    # one artifact folder besides the model
    top = {Path(f.path).name for f in client.list_artifacts(mv.run_id)}
    assert "report" in top and "reports" not in top


@pytest.mark.slow
def test_logged_requirements_install_leadscore_from_its_wheel(trained, tmp_path: Path) -> None:
    """`--env-manager virtualenv`/`uv` install requirements.txt inside the model folder: its
    leadscore line is a wheel logged with the model. Installed offline into a bare folder, it
    is the leadscore a fresh process loads the model with (not this checkout)."""
    import subprocess
    import sys

    tracking.configure(trained.settings)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=trained.uri,
                                                     dst_path=str(tmp_path / "model")))
    lines = (local / "requirements.txt").read_text().split()
    [wheel_line] = [line for line in lines if "leadscore" in line]
    assert wheel_line.startswith("artifacts/") and wheel_line.endswith("-py3-none-any.whl")
    assert any(line.startswith("lightgbm==") for line in lines)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
         "--target", str(target), wheel_line],
        cwd=local, check=True, capture_output=True, timeout=120,
    )
    code = (
        "import sys, json, mlflow, pandas as pd, leadscore\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "x = m.metadata.load_input_example(sys.argv[1])\n"
        "print(json.dumps([leadscore.__file__, m.predict(x)['probability'].tolist()]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "LEADSCORE_HOME"}}
    env["PYTHONPATH"] = str(target)
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    done = subprocess.run([sys.executable, "-c", code, str(local)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    where, probabilities = json.loads(done.stdout.strip().splitlines()[-1])
    assert where.startswith(str(target)), where
    bundle = tracking.load_model(trained.uri, trained.settings)
    expected = tracking.input_example_for(bundle)
    from leadscore.scoring import score as score_leads

    np.testing.assert_allclose(probabilities, score_leads(bundle, expected)["probability"],
                               rtol=0, atol=1e-12)


def borrowed_site_packages(folder: Path) -> Path:
    """This interpreter's third-party packages, minus leadscore, as one folder of symlinks: what
    a rebuilt environment may take from here instead of downloading (no network in tests). No
    `.pth` file comes along, so the editable install of this checkout is not importable from
    it: leadscore must come from the model's own requirements."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    folder.mkdir(parents=True)
    for entry in site.iterdir():
        if entry.suffix == ".pth" or "leadscore" in entry.name.lower():
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


@pytest.mark.slow
def test_mlflow_rebuilds_the_model_environment_offline_with_virtualenv(
    trained, tmp_path: Path
) -> None:
    """MLflow's own rebuild of the model's environment, as `mlflow models serve -m
    models:/NAME@champion --env-manager virtualenv` does it (its pyfunc backend, the default
    environment root): pyenv's Python of the logged version, a fresh `python -m venv`, `pip
    install -r` of the logged requirements from the model folder (so the
    `artifacts/leadscore-*.whl` line installs the wheel logged with the model), then a
    prediction inside that environment.

    Offline, and its limits: pyenv must already hold the logged Python version (else skipped:
    it would download it; `mlflow models predict` always gives pyenv a fresh root, so it is
    not the command run here); pip may not download (PIP_NO_INDEX), so the pinned third-party
    requirements (lightgbm==, mlflow==, ...) are found already installed on a PYTHONPATH of this
    venv's packages without leadscore (`borrowed_site_packages`): a pin that does not match
    what is installed fails (pip would have to download), but those packages are not installed
    afresh. leadscore is not on that path: without its wheel line in the requirements the
    prediction fails with "No module named 'leadscore'"."""
    import shutil
    import sysconfig

    pyenv = shutil.which("pyenv")
    if pyenv is None:
        pytest.skip("MLflow's virtualenv env manager needs pyenv")
    root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
    python = sysconfig.get_python_version() + "." + str(sys.version_info.micro)
    if not (Path(root) / "versions" / python).is_dir():
        pytest.skip(f"pyenv has no Python {python}: MLflow would download it")
    tracking.configure(trained.settings)
    bundle = tracking.load_model(trained.uri, trained.settings)
    example = tracking.input_example_for(bundle)
    given = tmp_path / "leads.json"
    given.write_text(json.dumps({"dataframe_split": json.loads(
        example.to_json(orient="split", index=False))}), encoding="utf-8")
    out = tmp_path / "predictions.json"
    env = {k: v for k, v in os.environ.items() if k not in {"LEADSCORE_HOME"}}
    env.update({
        "PYTHONPATH": str(borrowed_site_packages(tmp_path / "borrowed")),
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "MLFLOW_ENV_ROOT": str(tmp_path / "envs"),
        "MLFLOW_TRACKING_URI": trained.settings.resolved_tracking_uri(),
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
    })
    code = (
        "import sys\n"
        "from mlflow.models.flavor_backend_registry import get_flavor_backend\n"
        "uri, given, out = sys.argv[1:]\n"
        "backend = get_flavor_backend(uri, env_manager='virtualenv', install_mlflow=False)\n"
        "backend.predict(model_uri=uri, input_path=given, output_path=out, "
        "content_type='json')\n"
    )
    done = subprocess.run([sys.executable, "-c", code, trained.uri, str(given), str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    rows = pd.DataFrame(json.loads(out.read_text())["predictions"])
    np.testing.assert_allclose(rows["probability"], score(bundle, example)["probability"],
                               rtol=0, atol=1e-12)
    # the leadscore that predicted was installed into the new environment, from the wheel
    installed = list((tmp_path / "envs").glob("*/lib/python*/site-packages/leadscore/scoring.py"))
    assert len(installed) == 1, "leadscore was not installed into the rebuilt environment"


@pytest.mark.slow
def test_make_mlflow_serve_answers_one_request(trained, tmp_path: Path) -> None:
    """`make mlflow-serve` (MLflow's own server on the embedded store, `--env-manager local`)
    serves the @champion: one POST /invocations with the logged input example returns the same
    probabilities as leadscore. Run from the store's folder (the target reads
    sqlite:///mlflow.db there), with this interpreter's bin/ and no venv bootstrap (STAMP=)."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("no make")
    home = Path(trained.settings.tracking_uri.removeprefix("sqlite:///")).parent
    assert (home / "mlflow.db").is_file()
    makefile = Path(__file__).resolve().parents[1] / "Makefile"
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"MLFLOW_TRACKING_URI", "LEADSCORE_HOME"}}
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    log_file = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        ["make", "-f", str(makefile), "mlflow-serve", "STAMP=",
         f"BIN={Path(sys.executable).parent}", f"MODEL={trained.settings.model_name}",
         f"PORT={port}"],
        cwd=home, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        bundle = tracking.load_model(trained.uri, trained.settings)
        example = tracking.input_example_for(bundle)
        body = json.dumps({"dataframe_split": json.loads(
            example.to_json(orient="split", index=False))}).encode()
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations", data=body,
                    headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.5)
        tail = (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
        assert answer is not None, f"make mlflow-serve did not answer:\n{tail}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log_file.close()
    rows = pd.DataFrame(answer["predictions"])
    np.testing.assert_allclose(rows["probability"], score(bundle, example)["probability"],
                               rtol=0, atol=1e-9)
