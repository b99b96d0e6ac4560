"""Optuna search over LightGBM's main knobs, scored on the validation slice (which follows the
training slice in time on a time split), never on the test slice."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leadscore.config import DatasetSpec
from leadscore.errors import LeadscoreError
from leadscore.train import boost, plan_start, prepare

log = logging.getLogger(__name__)


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 63),
        "max_depth": trial.suggest_int("max_depth", 3, 8),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 300, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
        "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 50.0, log=True),
    }


INSTALL_HINT = "--tune needs Optuna: pip install 'leadscore[tune]'"


def require_optuna() -> None:
    """Optuna is an extra (`leadscore[tune]`): say how to get it before any data is read,
    rather than failing with an ImportError after minutes of feature building."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise LeadscoreError(INSTALL_HINT) from None


def tune(
    leads: pd.DataFrame,
    spec: DatasetSpec,
    n_trials: int,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `n_trials` Optuna trials; each trains on the training slice with early stopping and
    is scored by ROC AUC on the validation slice. Returns the best parameters and the study's
    summary (logged to MLflow by the caller)."""
    require_optuna()
    import optuna

    prepared = prepare(leads, spec)
    split, builder, y = prepared.split, prepared.builder, prepared.y
    x_train, x_valid = prepared.x_train, prepared.x_valid
    # the same start `fit_model` takes (linear start and its plan, penalties, recency weights),
    # so the trial that wins is scored as the model that will be trained
    start = plan_start(leads, spec, prepared, params)
    linear = start.linear
    init_train = linear.margin(x_train) if linear is not None else None
    init_valid = linear.margin(x_valid) if linear is not None else None

    def objective(trial: Any) -> float:
        booster, best = boost(
            {**start.params, **search_space(trial)},
            builder,
            x_train,
            y[split.train],
            init_train=init_train,
            weight=start.weight,
            x_valid=x_valid,
            y_valid=y[split.valid],
            init_valid=init_valid,
        )
        margin = np.asarray(booster.predict(x_valid, raw_score=True))
        if init_valid is not None:  # the trees predict on top of the linear start
            margin = margin + init_valid
        trial.set_user_attr("trees", int(best))
        return float(roc_auc_score(y[split.valid], margin))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.train.seed)
    )
    study.enqueue_trial({k: start.params[k] for k in search_space_keys() if k in start.params})
    from leadscore import progress

    def told(study: Any, finished: Any) -> None:
        done = [t.value for t in study.trials if t.value is not None]
        progress.trial(len(study.trials), n_trials, max(done) if done else None)

    study.optimize(objective, n_trials=n_trials, callbacks=[told])
    best = study.best_trial
    log.info(
        "tuning: best validation ROC AUC %.4f after %d trials: %s",
        best.value,
        len(study.trials),
        best.params,
    )
    return {
        "params": dict(best.params),
        "best_value": _value(best.value),
        "trials": len(study.trials),
        "default_value": _value(study.trials[0].value),
    }


def search_space_keys() -> list[str]:
    return [
        "learning_rate",
        "num_leaves",
        "max_depth",
        "min_data_in_leaf",
        "feature_fraction",
        "bagging_fraction",
        "lambda_l2",
        "cat_smooth",
    ]


def _value(value: float | None) -> float:
    return float("nan") if value is None else float(value)
