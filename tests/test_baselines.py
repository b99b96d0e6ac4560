"""Baselines: a points scorecard derived from conversion rates (or written in the spec),
logistic regression and HistGradientBoosting, fitted on the model's own split."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score
from test_train_quality import FAST, make_spec, make_table

from leadscore.baselines import BASELINES, Scorecard, fit_baselines, scorecard_rules
from leadscore.data import LABEL
from leadscore.features import Feature
from leadscore.train import fit_model


def card_data(n: int = 4000):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    channel = rng.integers(0, 3, n).astype(float)  # 0 web, 1 event, 2 cold
    calls = rng.poisson(2, n).astype(float)
    logit = -1 + np.select([channel == 1, channel == 2], [1.2, -1.2], 0) - 0.4 * calls
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    features = [Feature("channel", "categorical", "channel", ("web", "event", "cold")),
                Feature("unanswered", "numeric", "unanswered")]
    return np.column_stack([channel, calls]), y, features


def test_points_follow_each_values_conversion_rate() -> None:
    x, y, features = card_data()
    card = Scorecard().fit(x, y, features)
    web, event, cold, _missing = card.fields_[0].points
    assert event > web > cold
    assert event > 0 > cold
    assert 0.7 < roc_auc_score(y, card.predict_proba(x)) < 1


def test_unanswered_calls_never_earn_points_when_declared_bad_news() -> None:
    x, y, features = card_data()
    card = Scorecard().fit(x, y, features, monotone=[0, -1])
    body = card.fields_[1].points[:-1]
    assert all(p <= 0 for p in body)
    assert all(a >= b for a, b in zip(body, body[1:], strict=False))


def test_rules_in_the_spec_replace_derived_points() -> None:
    x, y, features = card_data()
    rules = [{"field": "channel", "points": {"event": 25}, "missing": -5},
             {"field": "unanswered", "bins": [1, 3], "bin_points": [0, -5, -15]}]
    card = Scorecard(rules).fit(x, y, features)
    assert card.fields_[0].points[1] == 25 and card.fields_[0].points[-1] == -5
    assert card.fields_[1].points == [0, -5, -15, card.fields_[1].points[-1]]
    assert card.fields_[1].edges == [1.0, 3.0]
    lead = np.array([[1.0, 4.0]])  # an event lead with four unanswered calls
    assert card.points(lead)[0] == 25 - 15


def test_scorecard_rules_default_to_derived_when_the_spec_has_none() -> None:
    assert scorecard_rules(make_spec()) == ([], 10.0)


def test_baselines_are_fitted_on_the_same_split_and_rank_leads() -> None:
    table = make_table(3000)
    model = fit_model(table, make_spec(), FAST)
    result = fit_baselines(model, table, make_spec())
    y = table[LABEL].to_numpy()[model.split.test]
    assert set(result.probabilities) == set(BASELINES)
    for name, p in result.probabilities.items():
        assert len(p) == len(y), name
        assert np.all((p > 0) & (p < 1)), name
        assert roc_auc_score(y, p) > 0.65, name
    assert "channel" in result.scorecard


def test_baselines_learn_from_a_sample_of_a_large_table_and_say_so(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import leadscore.baselines as baselines_module

    table = make_table(3000)
    model = fit_model(table, make_spec(), FAST)
    full = fit_baselines(model, table, make_spec())
    assert full.note is None
    monkeypatch.setattr(baselines_module, "BASELINE_MAX_ROWS", 800)
    sampled = fit_baselines(model, table, make_spec())
    y = table[LABEL].to_numpy()[model.split.test]
    assert sampled.note is not None and "random 800 of the" in sampled.note
    for name, p in sampled.probabilities.items():
        assert len(p) == len(y), name
        assert roc_auc_score(y, p) > 0.6, name
        assert not np.allclose(p, full.probabilities[name]), name
