"""The nightly loop as an Airflow DAG: rescore the open leads, monitor the scores against the
outcomes that came in, and on an alarm recalibrate (calibration drifted) or retrain (ranking
got worse). The commands are plain `leadscore` CLI calls, the very strings
`tests/test_nightly.py` runs, so what this DAG does is tested without Airflow.

Copy it into your DAGs folder and set the paths in `PATHS` (or Airflow Variables).
`leadscore monitor` exits 3 on an alarm: the task is then *skipped* (`skip_on_exit_code`), which
is what lets the branch after it run; exit 2 (bad input) fails the run as it should.
"""

from __future__ import annotations

import json
from pathlib import Path

PATHS = {
    "model": "lead-conversion",
    "config": "configs/bank_marketing.yaml",
    "leads": "/data/crm/open-leads.parquet",
    "scored": "/data/scores/{{ ds }}.parquet",
    "outcomes": "/data/crm/outcomes.csv",
    "reports": "/data/reports/monitoring",
    "since": "{{ macros.ds_add(ds, -90) }}",
}

# the nightly commands, in order; `monitor` exits 3 when there is an alarm
SCORE = "leadscore score --input {leads} --output {scored} --model {model}"
MONITOR = "leadscore monitor {model} --outcomes {outcomes} --report-dir {reports}"
RECALIBRATE = "leadscore recalibrate {model} --outcomes {outcomes} --since {since}"
RETRAIN = "leadscore train --config {config}"
ALARM_EXIT = 3


def next_step(report_dir: str) -> str:
    """After an alarm: retrain when a cohort's ranking fell (ROC AUC alarm), since a new
    calibration cannot fix an order; otherwise the level moved and recalibrating is enough."""
    report = json.loads((Path(report_dir) / "monitor.json").read_text(encoding="utf-8"))
    return "retrain" if any("ROC AUC" in alarm for alarm in report["alarms"]) else "recalibrate"


try:  # the commands above are importable without Airflow (the test reads them)
    import pendulum
    from airflow import DAG
    from airflow.operators.bash import BashOperator
    from airflow.operators.python import BranchPythonOperator
except ImportError:
    DAG = None

if DAG is not None:
    with DAG(
        dag_id="leadscore_nightly",
        schedule="15 2 * * *",
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
    ) as dag:
        score = BashOperator(task_id="score", bash_command=SCORE.format(**PATHS))
        monitor = BashOperator(task_id="monitor", bash_command=MONITOR.format(**PATHS),
                               skip_on_exit_code=ALARM_EXIT)
        choose = BranchPythonOperator(task_id="on_alarm", python_callable=next_step,
                                      op_args=[PATHS["reports"]],
                                      trigger_rule="all_skipped")  # monitor skipped = alarm
        recalibrate = BashOperator(task_id="recalibrate",
                                   bash_command=RECALIBRATE.format(**PATHS))
        retrain = BashOperator(task_id="retrain", bash_command=RETRAIN.format(**PATHS))
        score >> monitor >> choose >> [recalibrate, retrain]
