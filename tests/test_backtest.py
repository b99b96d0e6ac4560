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


def test_the_three_models_are_scored_side_by_side() -> None:
    table = make_table(2500)
    result = backtest(table, make_spec(), 2, params=FAST, recalibrate=True)
    assert set(result.variants) == {"pipeline", "recalibrated", "plain"}
    assert result.overall == result.variants["pipeline"]
    assert result.recalibrate_rows == 250  # the step's length, above the 200-lead floor
    for name, pooled in result.variants.items():
        assert 0.6 < pooled["roc_auc"] <= 1, name
        assert 0 <= pooled["ece"] < 0.15, name
        assert pooled["rows"] == 500
    for step in result.steps:
        for prefix in ("recalibrated_", "plain_"):
            assert 0.55 < step[f"{prefix}roc_auc"] <= 1
            assert 0 < step[f"{prefix}mean_probability"] < 1
        # a new calibration is monotone in the same trees' margin: the ranking cannot change
        assert step["recalibrated_roc_auc"] == pytest.approx(step["roc_auc"])
    assert set(result.as_dict()["variants"]) == {"pipeline", "recalibrated", "plain"}


def test_the_plain_model_and_recalibration_can_be_left_out() -> None:
    result = backtest(make_table(2000), make_spec(), 2, params=FAST, plain=False)
    assert set(result.variants) == {"pipeline"} and result.recalibrate_rows is None
    assert "plain_roc_auc" not in result.steps[0]


def test_recalibration_follows_a_level_shift() -> None:
    """From lead 1850 on, half the would-be non-converters convert: the trees learnt the old
    level; a calibration refitted on the latest matured leads learns the new one."""
    table = make_table(2500)
    rng = np.random.default_rng(1)
    flip = (np.arange(len(table)) >= 1850) & (table[LABEL].to_numpy() == 0)
    table.loc[flip & (rng.random(len(table)) < 0.5), LABEL] = 1.0
    result = backtest(table, make_spec(), 3, params=FAST, recalibrate=True)
    for step in result.steps[1:]:  # by step 2 the latest 200 matured leads are all shifted
        pipeline_gap = abs(step["mean_probability"] - step["conversion_rate"])
        recal_gap = abs(step["recalibrated_mean_probability"] - step["conversion_rate"])
        assert pipeline_gap > 0.15 and recal_gap < 0.12 and recal_gap < pipeline_gap / 1.5
    pooled = result.variants
    assert pooled["recalibrated"]["ece"] < 0.6 * pooled["pipeline"]["ece"]
