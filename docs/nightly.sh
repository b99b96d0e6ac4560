#!/usr/bin/env bash
# The nightly loop for cron: rescore, monitor, and on an alarm recalibrate or retrain.
# The same commands as docs/nightly_dag.py (and tests/test_nightly.py).
#   15 2 * * *  cd /srv/leadscore && docs/nightly.sh >> /var/log/leadscore-nightly.log 2>&1
set -uo pipefail
MODEL=${MODEL:-lead-conversion}
CONFIG=${CONFIG:-configs/bank_marketing.yaml}
LEADS=${LEADS:-/data/crm/open-leads.parquet}
OUTCOMES=${OUTCOMES:-/data/crm/outcomes.csv}
REPORTS=${REPORTS:-/data/reports/monitoring}
TODAY=$(date -u +%F)
SINCE=$(date -u -d '-90 days' +%F)

leadscore score --input "$LEADS" --output "/data/scores/$TODAY.parquet" --model "$MODEL" || exit
leadscore monitor "$MODEL" --outcomes "$OUTCOMES" --report-dir "$REPORTS" > /dev/null
status=$?
if [ "$status" -eq 3 ]; then
  if grep -q "realized ROC AUC" "$REPORTS/monitor.json"; then
    leadscore train --config "$CONFIG"
  else
    leadscore recalibrate "$MODEL" --outcomes "$OUTCOMES" --since "$SINCE"
  fi
elif [ "$status" -ne 0 ]; then
  exit "$status"
fi
