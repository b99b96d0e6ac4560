"""Walk-forward backtest: each step is scored by a model trained only on what came before."""

from __future__ import annotations

import numpy as np
import pytest
from test_train_quality import FAST, make_spec, make_table

from leadscore.backtest import backtest
from leadscore.data import LABEL, TIME
from leadscore.errors import DataError


def test_backtest_walks_the_most_recent_share_in_steps() -> None:
    table = make_table(2500)
    result = backtest(table, make_spec(), 3, params=FAST)
    assert [s["step"] for s in result.steps] == [1, 2, 3]
    trained_on = [s["train_leads"] for s in result.steps]
    assert trained_on == sorted(trained_on) and trained_on[0] == 2000
    assert sum(s["scored_leads"] for s in result.steps) == 500
    # each step starts where the previous ended: history grows by the step just scored
    for before, after in zip(result.steps, result.steps[1:], strict=False):
        assert after["train_leads"] == before["train_leads"] + before["scored_leads"]
    assert 0.6 < result.overall["roc_auc"] <= 1
    assert np.isfinite(result.overall["mean_step_roc_auc"])


def test_backtest_needs_a_clock() -> None:
    with pytest.raises(DataError, match="created-at or order column"):
        backtest(make_table(500).drop(columns=[TIME]), make_spec(), 2)


def test_unlabelled_leads_are_neither_trained_on_nor_scored() -> None:
    table = make_table(2000)
    table.loc[table.index[-50:], LABEL] = np.nan
    result = backtest(table, make_spec(), 2, params=FAST)
    assert sum(s["scored_leads"] for s in result.steps) == round(1950 * 0.2)
