"""Which engine aggregates the activity log for `build_table`: local (in memory), duckdb (SQL over
the files, spilling to disk) or spark. Each gives the same table; the choice is about size.

The choice, first found wins: `--engine` (or `build_table(engine=...)`), the
`LEADSCORE_FEATURE_ENGINE` setting, the spec's `features: {engine: ...}`, local.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from leadscore.errors import LeadscoreError

if TYPE_CHECKING:  # numpy and pandas only when a table is built: the CLI checks names first
    import numpy as np
    import pandas as pd

    from leadscore.config import DatasetSpec
    from leadscore.features_duckdb import Aggregates

ENGINES = ("local", "duckdb", "spark")


def check_engine(name: str, where: str = "--engine") -> str:
    """The engine's name, or one plain line naming the choices (and the nearest one)."""
    if name == "spark" and importlib.util.find_spec("pyspark") is None:
        raise LeadscoreError(
            f"{where} spark needs PySpark and Java: pip install 'leadscore[spark]'"
        )
    if name in ENGINES:
        return name
    near = difflib.get_close_matches(str(name), ENGINES, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise LeadscoreError(
        f"{where} {name!r} is not a feature engine: choose local, duckdb or spark{hint}"
    )


def choose_engine(spec: DatasetSpec, engine: str | None = None) -> str:
    """The engine for this build (see the module's docstring for the order)."""
    if engine:
        return check_engine(engine)
    from leadscore.config import get_settings

    setting = get_settings().feature_engine
    if setting:
        return check_engine(setting, "LEADSCORE_FEATURE_ENGINE")
    return check_engine(spec.features.engine or "local", "features.engine in the spec")


def spill_root() -> Path | None:
    """Where DuckDB spills: LEADSCORE_HOME/cache/duckdb when LEADSCORE_HOME is set, else the
    system's temp folder (None). Each build spills into its own folder there, removed after."""
    from leadscore.config import get_settings

    home = get_settings().home
    return home / "cache" / "duckdb" if home is not None else None


def aggregate(
    engine: str,
    spec: DatasetSpec,
    lead_ids: Sequence[str],
    as_of: np.ndarray,
    types: Sequence[str] | None,
) -> Aggregates:
    """The activity features of these leads, by the duckdb or spark engine."""
    if engine == "duckdb":
        from leadscore.features_duckdb import aggregate_activities_duckdb

        return aggregate_activities_duckdb(spec, lead_ids, as_of, types, spill_under=spill_root())
    from leadscore.features_spark import aggregate_activities_spark

    return aggregate_activities_spark(spec, lead_ids, as_of, types)


def latest_activity(engine: str, spec: DatasetSpec) -> pd.Timestamp | None:
    """The activity log's latest time, read by the engine from the files."""
    if engine == "duckdb":
        from leadscore.features_duckdb import latest_activity as latest

        return latest(spec)
    from leadscore.features_spark import latest_activity_spark

    return latest_activity_spark(spec)
