"""The `leadscore` command: a user's mistake is one line on stderr and exit code 2, no trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from leadscore import cli
from leadscore.config import get_settings


@pytest.fixture
def run(trained, monkeypatch: pytest.MonkeyPatch) -> Iterator:  # type: ignore[no-untyped-def]
    """Invoke the CLI in-process against the isolated store, restoring logging afterwards."""
    settings = trained.settings
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LEADSCORE_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("LEADSCORE_MODELS_DIR", str(settings.models_dir))
    monkeypatch.setenv("LEADSCORE_MODEL_NAME", settings.model_name)
    monkeypatch.setattr(cli.console, "_width", 200)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ours = logging.getLogger("leadscore").level
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(cli.app, list(args), input=input, catch_exceptions=False)

    yield invoke
    get_settings.cache_clear()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("leadscore").setLevel(ours)


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_train_with_a_bad_spec(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"name": "x", "leads": {"path": "l.csv"}, "outcom": {}}))
    line = one_line_error(run("train", "--config", str(spec)))
    assert "outcom: unknown key; did you mean 'outcome'?" in line
    assert str(spec) in line


def test_train_with_params(run, synth_spec, tmp_path: Path,  # type: ignore[no-untyped-def]
                           monkeypatch: pytest.MonkeyPatch) -> None:
    from leadscore.scoring import load_bundle

    monkeypatch.setenv("LEADSCORE_MODELS_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    result = run("train", "--config", str(synth_spec.source), "--no-track",
                 "--param", "num_leaves=4", "-p", "learning_rate=0.2", "-p", "refit=false",
                 "--bundle-out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "models").exists(), "--no-track writes only where --bundle-out says"
    bundle = load_bundle(tmp_path / "out")
    params = bundle.meta["params"]
    assert params["num_leaves"] == 4 and params["learning_rate"] == 0.2
    assert bundle.meta["training"]["refit"] is False


@pytest.mark.parametrize(("param", "expected"), [
    ("num_leafs=4", "error: unknown training parameter(s): 'num_leafs' (did you mean "
                    "'num_leaves'?)"),
    ("num_leaves=abc", "error: LightGBM refused the training parameters: Parameter num_leaves "
                       'should be of type int, got "abc"'),
    ("num_leaves", "error: --param 'num_leaves': expected KEY=VALUE, e.g. num_leaves=15"),
    ("num_leaves=", "error: --param 'num_leaves=': expected KEY=VALUE, e.g. num_leaves=15"),
])
def test_train_with_a_bad_param(run, synth_spec, param: str,  # type: ignore[no-untyped-def]
                                expected: str) -> None:
    line = one_line_error(run("train", "--config", str(synth_spec.source), "--no-track",
                              "--param", param))
    assert line.startswith(expected)


def test_backtest_prints_steps_and_writes_json(run, synth_spec,  # type: ignore[no-untyped-def]
                                              tmp_path: Path) -> None:
    out = tmp_path / "backtest.json"
    result = run("backtest", "--config", str(synth_spec.source), "--steps", "2",
                 "-p", "learning_rate=0.3", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "mean probability" in result.output and "over all steps: ROC AUC" in result.output
    steps = json.loads(out.read_text())["steps"]
    assert [s["step"] for s in steps] == [1, 2]
    assert steps[0]["train_leads"] < steps[1]["train_leads"]
    for s in steps:
        assert f"{s['mean_probability']:.3f}" in result.output
        assert 0.5 < s["roc_auc"] <= 1.0


def test_backtest_recalibrate_shows_three_models(run, synth_spec,  # type: ignore[no-untyped-def]
                                                tmp_path: Path) -> None:
    out = tmp_path / "backtest.json"
    result = run("backtest", "--config", str(synth_spec.source), "--steps", "2",
                 "-p", "learning_rate=0.3", "--recalibrate", "--output", str(out))
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert set(written["variants"]) == {"pipeline", "recalibrated", "plain"}
    for name, pooled in written["variants"].items():
        assert f"{name:>12} over all steps: ROC AUC {pooled['roc_auc']:.4f}" in result.output
        assert 0.5 < pooled["roc_auc"] <= 1.0 and 0 <= pooled["ece"] < 0.2
    assert written["recalibrate_rows"] >= 200
    for s in written["steps"]:
        assert f"{s['recalibrated_mean_probability']:.3f}" in result.output
        assert 0.5 < s["plain_roc_auc"] <= 1.0


def test_train_with_a_missing_spec(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    line = one_line_error(run("train", "--config", str(tmp_path / "nope.yaml")))
    assert line == f"error: {tmp_path / 'nope.yaml'}: spec file not found"


def test_train_with_a_missing_data_file(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "x",
        "leads": {"path": "missing.csv", "id": "id"},
        "outcome": {"column": "won", "positive": ["1"]},
        "features": {"categorical": ["channel"]},
    }))
    line = one_line_error(run("train", "--config", str(spec)))
    assert line == f"error: {tmp_path / 'missing.csv'}: file not found"


def test_score_with_a_missing_input(run, trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.csv"
    result = run("score", "--model", str(trained.bundle_dir), "--input", str(missing),
                 "--output", str(tmp_path / "out.parquet"))
    line = one_line_error(result)
    assert line == f"error: {missing}: file not found"
    assert not (tmp_path / "out.parquet").exists()


def test_score_with_an_unknown_model(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("score", "--model", "models:/test-leads@nobody", "--input", "x.csv",
                 "--output", str(tmp_path / "out.parquet"))
    assert "models:/test-leads@nobody: not found in the registry" in one_line_error(result)


def test_score_writes_scores(run, trained, synth_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "scored.csv"
    result = run("score", "--input", str(synth_dir / "leads.csv"), "--output", str(out))
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out)
    assert len(scored) == 4000
    assert scored["model_version"].astype(str).unique().tolist() == [trained.version]
    assert scored["probability"].between(0, 1).all()


def test_models_lists_the_champion(run, trained) -> None:  # type: ignore[no-untyped-def]
    result = run("models")
    assert result.exit_code == 0, result.output
    row = _champion_row(result.stdout.splitlines(), "test-leads")
    assert "champion" in row
    assert f"{trained.metrics['test_roc_auc']:.4f}" in row


def _champion_row(lines: list[str], model: str) -> str:
    """The champion row of `model`'s table (the shared store may list other models first)."""
    start = [line.strip() for line in lines].index(model)
    return next(line for line in lines[start:] if "│ champion " in line)


def test_models_table_fits_80_columns(run, trained, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(cli.console, "_width", 80)
    result = run("models")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "test-leads" in [line.strip() for line in lines], "the full name on its title line"
    row = _champion_row(lines, "test-leads")
    assert "synthetic_test" in row and f"{trained.metrics['test_roc_auc']:.4f}" in row


def test_models_json_and_one_model(run, trained) -> None:  # type: ignore[no-untyped-def]
    result = run("models", "--json")
    assert result.exit_code == 0, result.output
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    champion = entries["test-leads"]["champion"]
    assert champion["version"] == trained.version and champion["dataset"] == "synthetic_test"
    assert champion["metrics"]["test_roc_auc"] == pytest.approx(
        trained.metrics["test_roc_auc"], abs=1e-6)
    assert champion["trained_at"]
    result = run("models", "test-leads", "--json")
    assert [r["version"] for r in json.loads(result.stdout)][-1] == "1"
    line = one_line_error(run("models", "nope"))
    assert line.startswith("error: no model named 'nope' at ")
    assert "test-leads" in line


def test_promote_a_missing_version(run) -> None:  # type: ignore[no-untyped-def]
    line = one_line_error(run("promote", "test-leads", "999"))
    assert line.startswith("error: test-leads has no version 999 (versions: ")


def test_promote_an_existing_version(run, trained) -> None:  # type: ignore[no-untyped-def]
    result = run("promote", "test-leads", trained.version)
    assert result.exit_code == 0, result.output
    assert f"test-leads version {trained.version} is now @champion" in result.stdout


def test_export_writes_a_bundle(run, trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from leadscore.scoring import load_bundle

    result = run("export", f"test-leads/{trained.version}", str(tmp_path / "deploy"))
    assert result.exit_code == 0, result.output
    assert load_bundle(tmp_path / "deploy").meta["version"] == trained.version
    result = run("export", "test-leads@champion", str(tmp_path / "deploy"))  # replaces it
    assert result.exit_code == 0, result.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    line = one_line_error(run("export", "test-leads", str(tmp_path / "busy")))
    assert "exists and is not a model bundle folder" in line
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_score_by_model_name(run, trained, synth_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "scored.parquet"
    result = run("score", "--model", "test-leads", "--input", str(synth_dir / "leads.csv"),
                 "--output", str(out))
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(out)["model_version"].unique().tolist() == [trained.version]


def test_score_a_file_of_another_dataset(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "bank.csv"
    pd.DataFrame({"age": [30, 40], "job": ["admin.", "services"]}).to_csv(other, index=False)
    line = one_line_error(run("score", "--input", str(other), "--output",
                              str(tmp_path / "o.parquet")))
    assert "none of the input columns of model test-leads version" in line
    assert "--model NAME" in line and "leadscore features" in line


def test_cache_clear(run, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "a.parquet").write_bytes(b"x")
    monkeypatch.setenv("LEADSCORE_FEATURE_CACHE", str(cache))
    get_settings.cache_clear()
    result = run("cache", "clear")
    assert result.exit_code == 0, result.output
    assert "removed 1 file(s)" in result.stdout and not cache.exists()


def test_no_arguments_shows_help(run) -> None:  # type: ignore[no-untyped-def]
    result = run()
    assert "train" in result.output and "score" in result.output


# imported by no `-h` and no `--help`: the scoring stack, and pydantic with the settings
HEAVY = ("mlflow", "lightgbm", "sklearn", "pandas", "pyspark", "pandera", "optuna", "numpy",
         "pyarrow", "pydantic", "pydantic_settings", "leadscore.config", "leadscore.scoring")


def test_importing_the_cli_imports_no_heavy_library() -> None:
    """`leadscore --help` and a spec mistake must not pay for MLflow, LightGBM, scikit-learn,
    pandas or PySpark: each is imported inside the command that uses it."""
    import subprocess
    import sys

    code = (
        "import sys, leadscore.cli; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
    assert out.stderr == ""


def test_every_commands_help_imports_no_heavy_library() -> None:
    """`-h` on every command and sub-command (history, monitor, cache clear, ...) answers from
    typer alone: no pydantic (the settings are read when a command runs, not in the group's
    callback), no MLflow, LightGBM or pandas. One fresh process runs them all, so what it
    imported is the union of what each one did."""
    import subprocess
    import sys

    code = (
        "import sys, typer.main\n"
        "from leadscore import cli\n"
        "group = typer.main.get_command(cli.app)\n"
        "paths = []\n"
        "for name, command in group.commands.items():\n"
        "    subs = getattr(command, 'commands', None)\n"
        "    paths += [[name, sub] for sub in subs] if subs else [[name]]\n"
        "codes = []\n"
        "for path in [[], *paths]:\n"
        "    try:\n"
        "        cli.app([*path, '-h'], prog_name='leadscore')\n"
        "    except SystemExit as exc:\n"
        "        codes.append(exc.code)\n"
        "print('PATHS', len(paths), 'CODES', sorted(set(codes)))\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    lines = {line.split(" ", 1)[0]: line for line in out.stdout.splitlines()
             if line.startswith(("PATHS", "HEAVY"))}
    paths = int(lines["PATHS"].split()[1])
    assert paths >= 13  # synth, train, ..., history, monitor, recalibrate, cache clear
    assert lines["PATHS"].endswith("CODES [0]")
    assert lines["HEAVY"] == "HEAVY []"
    assert "Usage: leadscore monitor" in out.stdout
    assert "Usage: leadscore cache clear" in out.stdout


def test_log_level_comes_from_the_settings_when_a_command_runs(run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The group's callback no longer reads the settings (it would cost every `-h` pydantic):
    LEADSCORE_LOG_LEVEL applies once the command runs, and --verbose wins over it."""
    monkeypatch.setenv("LEADSCORE_LOG_LEVEL", "ERROR")
    get_settings.cache_clear()
    assert run("models", "--json").exit_code == 0
    assert logging.getLogger("leadscore").level == logging.ERROR
    assert run("-v", "models", "--json").exit_code == 0
    assert logging.getLogger("leadscore").level == logging.DEBUG


def test_version_and_short_help(run) -> None:  # type: ignore[no-untyped-def]
    from leadscore import __version__

    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"leadscore {__version__}"
    for args in (("-h",), ("score", "-h"), ("train", "-h"), ("cache", "clear", "-h")):
        result = run(*args)
        assert result.exit_code == 0, (args, result.output)
        assert "Usage:" in result.stdout
    # help is plain text, not Rich markup: the extra's brackets survive
    assert "leadscore[spark]" in run("score", "-h").stdout.replace("\n", " ").replace(" ", "")


def test_tune_without_optuna_is_one_line(run, synth_spec, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed: import fails
    line = one_line_error(run("train", "--config", str(synth_spec.source), "--tune", "3"))
    assert "pip install 'leadscore[tune]'" in line


def test_score_prints_a_short_summary_and_json_on_request(  # type: ignore[no-untyped-def]
    run, synth_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scored.parquet"
    result = run("score", "--input", str(synth_dir / "leads.csv"), "--output", str(out))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert 3 <= len(lines) <= 10, result.stdout
    assert lines[0].startswith("scored 4,000 of 4,000 rows")
    drift = [line for line in lines if line.startswith("drift:")]
    assert len(drift) == 1
    # the training file itself has not drifted from the training data
    assert drift[0].startswith("drift: none"), drift
    assert f"summary: {out}.summary.json" in lines
    full = run("score", "--input", str(synth_dir / "leads.csv"), "--output", str(out), "--json")
    report = json.loads(full.stdout)
    assert report["rows"] == 4000 and report["drift"]["drifted"] == []
    assert report == {**json.loads(Path(f"{out}.summary.json").read_text()),
                      "seconds": report["seconds"], "rows_per_s": report["rows_per_s"],
                      "rows_this_run": report["rows_this_run"]}


def test_score_stdin_to_stdout_equals_the_file_path(  # type: ignore[no-untyped-def]
    run, synth_dir: Path, tmp_path: Path
) -> None:
    leads = pd.read_csv(synth_dir / "leads.csv", dtype=str).head(40)
    leads.to_csv(tmp_path / "leads.csv", index=False)
    out = tmp_path / "scored.csv"
    by_file = run("score", "-i", str(tmp_path / "leads.csv"), "-o", str(out), "--reasons", "3")
    assert by_file.exit_code == 0, by_file.output
    expected = pd.read_csv(out).drop(columns="scored_at")

    piped = run("score", "-i", "-", "-o", "-", "--reasons", "3",
                input=(tmp_path / "leads.csv").read_text())
    assert piped.exit_code == 0, piped.output
    import io

    got = pd.read_csv(io.StringIO(piped.stdout)).drop(columns="scored_at")
    pd.testing.assert_frame_equal(got, expected)
    assert "drift: not measured (fewer than 500 rows" in piped.stderr

    # one lead as JSON lines in, JSON lines out, reasons as a list
    one = leads.iloc[0].dropna().to_dict()
    single = run("score", "-i", "-", "-o", "-", "--reasons", "3", input=json.dumps(one) + "\n")
    assert single.exit_code == 0, single.output
    rows = [json.loads(line) for line in single.stdout.splitlines()]
    assert len(rows) == 1
    first = expected.iloc[0]
    assert rows[0]["lead_id"] == first["lead_id"]
    assert rows[0]["probability"] == pytest.approx(first["probability"], abs=1e-12)
    assert [r["text"] for r in rows[0]["reasons"]][:2] == [first["reason_1"], first["reason_2"]]
    assert not list(tmp_path.glob("-*")), "no file named '-' is written"


def test_score_stdin_that_is_empty_is_one_line(run) -> None:  # type: ignore[no-untyped-def]
    line = one_line_error(run("score", "-i", "-", "-o", "-", input=""))
    assert "nothing on stdin" in line
