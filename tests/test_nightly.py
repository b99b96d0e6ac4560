"""The nightly job of docs/ (cron script and Airflow DAG) runs these exact commands: rescore,
monitor (exit 3 on the level shift), then the branch the DAG would take, recalibrate."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_recalibrate import write_fit_cohort

from leadscore.store import ScoreStore

ROOT = Path(__file__).resolve().parents[1]


def load_dag() -> Any:
    spec = importlib.util.spec_from_file_location("nightly_dag", ROOT / "docs" / "nightly_dag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_nightly_commands(trained: Any, bundle: Any, synth_dir: Path,
                          synth_leads: pd.DataFrame, tmp_path: Path) -> None:
    dag = load_dag()
    registry = tmp_path / "registry"
    registry.mkdir()
    shutil.copy(trained.settings.tracking_uri.removeprefix("sqlite:///"),
                registry / "mlflow.db")
    home = tmp_path / "home"
    outcomes = write_fit_cohort(tmp_path, ScoreStore(home / "scores"), bundle, synth_leads)
    paths = {"model": "test-leads", "leads": synth_dir / "leads.csv",
             "scored": tmp_path / "scored.parquet", "outcomes": outcomes,
             "reports": tmp_path / "reports", "since": "2026-01-01", "config": "unused"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LEADSCORE_HOME": str(home),
           "LEADSCORE_TRACKING_URI": f"sqlite:///{registry / 'mlflow.db'}",
           "LEADSCORE_MODELS_DIR": str(tmp_path / "models")}

    def run(command: str) -> subprocess.CompletedProcess[str]:
        words = shlex.split(command.format(**paths))
        assert words[0] == "leadscore"
        return subprocess.run([sys.executable, "-m", "leadscore.cli", *words[1:]], env=env,
                              capture_output=True, text=True)

    scored = run(dag.SCORE)
    assert scored.returncode == 0, scored.stderr
    assert ScoreStore(home / "scores").rows("test-leads").num_rows == 4000 + 12_000
    monitored = run(dag.MONITOR)
    assert monitored.returncode == dag.ALARM_EXIT, monitored.stderr
    assert "conversions expected" in monitored.stderr
    assert dag.next_step(str(paths["reports"])) == "recalibrate"
    recalibrated = run(dag.RECALIBRATE)
    assert recalibrated.returncode == 0, recalibrated.stderr
    assert json.loads(recalibrated.stdout)["promoted"] is True
