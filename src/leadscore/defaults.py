"""Numbers the command line shows in its help (the monitor's defaults), in a module of their own
so `leadscore monitor -h` answers without importing pydantic and the settings (`config`
re-exports them for everyone else)."""

from __future__ import annotations

# conversions may come up to DEFAULT_HORIZON_DAYS after a score; an alarm when a cohort's
# realized ROC AUC is more than MAX_AUC_DROP below the test AUC, or expected and actual
# conversions are more than MAX_CALIBRATION_GAP apart; a cohort of fewer than MIN_COHORT matured
# leads raises none (with 50 leads at 10%, 5 expected vs 8 actual is a 60% "gap" that means
# nothing); the exit status of a monitor run with an alarm is ALARM_EXIT
DEFAULT_HORIZON_DAYS = 90
MAX_AUC_DROP = 0.05
MAX_CALIBRATION_GAP = 0.20
MIN_COHORT = 200
ALARM_EXIT = 3
