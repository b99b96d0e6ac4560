"""The commands that work on what leadscore remembers: `history` (a lead's scorings and why they
moved, `history compact`), `monitor` (outcomes joined back, alarms) and `recalibrate`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from leadscore.defaults import (
    DEFAULT_HORIZON_DAYS,
    MAX_AUC_DROP,
    MAX_CALIBRATION_GAP,
    MIN_COHORT,
)
from leadscore.errors import DataError, ModelError

# `history -h` and `monitor -h` answer without pydantic (config) or LightGBM (scoring): each is
# imported inside the command that uses it
if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.scoring import ModelBundle


def get_settings() -> Settings:
    """The settings, imported when a command runs (pydantic costs a third of a second)."""
    from leadscore.config import get_settings as settings

    return settings()


def bundles_of(model: str, settings: Settings) -> Callable[[str], ModelBundle]:
    """A version -> bundle loader for one registered model (each version loaded once)."""
    from leadscore.tracking import load_model

    @lru_cache(maxsize=8)
    def load(version: str) -> ModelBundle:
        if not version.isdigit():
            raise ModelError(
                f"version {version!r} of {model} is not a registered version (scored from a "
                "bundle folder), so its impacts cannot be recomputed"
            )
        return load_model(f"models:/{model}/{version}", settings)

    return load


def register(app: typer.Typer, friendly: Callable[[Any], Any], console: Console) -> None:
    """Add the commands to the `leadscore` app."""

    @app.command()
    @friendly
    def history(
        lead_id: Annotated[
            str, typer.Argument(help="A lead id; `compact` to compact the history's files; "
                                "`sql` to run QUERY.")
        ],
        query: Annotated[
            str | None,
            typer.Argument(help="With `sql`: a DuckDB query over the view `scores` (one row per "
                           "scoring, with `model` and `date` columns).", show_default=False),
        ] = None,
        model: Annotated[
            str | None,
            typer.Option(help="The model whose scores to show (default: the only one with a "
                         "history)."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        as_csv: Annotated[
            bool, typer.Option("--csv", help="With `sql`: the result as CSV.")
        ] = False,
        lead: Annotated[
            bool, typer.Option("--lead", help="LEAD_ID is a lead even if it reads `compact` "
                               "or `sql`.")
        ] = False,
    ) -> None:
        """A lead's scorings, trend and why its score last changed; `history compact`;
        `history sql "SELECT ... FROM scores"` (DuckDB over the history's Parquet)."""
        from leadscore.history import lead_history
        from leadscore.store import ScoreStore

        settings = get_settings()
        store = ScoreStore.of(settings)
        if lead_id == "compact" and not lead:
            typer.echo(json.dumps(store.compact(model), indent=2))
            return
        if lead_id == "sql" and not lead:
            _print_sql(console, store.sql(query or "", model), as_json, as_csv)
            return
        if query is not None:
            raise DataError(f"history takes one lead id, not also {query!r} (a query goes "
                            "after `sql`)")
        name = store.resolve_model(model)
        result = lead_history(store, name, lead_id, bundles_of(name, settings))
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        _print_history(console, result)


    @app.command()
    @friendly
    def monitor(
        name: Annotated[str, typer.Argument(help="The model (registered name) to judge.")],
        outcomes: Annotated[
            Path | None, typer.Option(help="CSV/Parquet: lead_id, converted, converted_at.")
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option(help="Instead of --outcomes: the dataset spec whose own outcomes "
                         "(conversion table or label column) are joined back."),
        ] = None,
        horizon_days: Annotated[
            int | None,
            typer.Option(min=1, help="Days after a score its conversion may come (default: "
                         f"the spec's outcome.horizon_days, else {DEFAULT_HORIZON_DAYS})."),
        ] = None,
        cohort: Annotated[str, typer.Option(help="week or month.")] = "week",
        as_of: Annotated[
            str | None, typer.Option(help="Judge as of this date (default: now, UTC).")
        ] = None,
        max_auc_drop: Annotated[float, typer.Option(min=0.0)] = MAX_AUC_DROP,
        max_calibration_gap: Annotated[float, typer.Option(min=0.0)] = MAX_CALIBRATION_GAP,
        min_cohort: Annotated[
            int, typer.Option(min=1, help="Matured leads a cohort needs to raise an alarm.")
        ] = MIN_COHORT,
        report_dir: Annotated[
            Path | None,
            typer.Option("--report", "--report-dir",
                         help="Where to write monitor.json, monitor.md, report.html and the "
                         "plots (default: LEADSCORE_HOME/reports/monitoring/NAME)."),
        ] = None,
        track: Annotated[
            bool, typer.Option(help="Log a run in the MLflow `monitoring` experiment.")
        ] = True,
    ) -> None:
        """Join outcomes (a file, or the spec's own) to the scores given before them; report
        per cohort and version (JSON, Markdown, HTML with plots), and exit 3 with one line per
        alarm (AUC drop, calibration gap) for a scheduler to act on."""
        from leadscore import monitor as monitoring
        from leadscore.monitor_report import write_html
        from leadscore.store import ScoreStore

        if (outcomes is None) == (config is None):
            raise DataError("give the outcomes as --outcomes FILE or --config SPEC.yaml (the "
                            "spec's own outcome source), one of the two")
        settings = get_settings()
        store = ScoreStore.of(settings)
        when = _date(as_of, "--as-of") if as_of else datetime.now(UTC)
        if config is not None:
            from leadscore.config import load_spec

            spec = load_spec(config)
            known = monitoring.outcomes_of_spec(spec, when)
            source = f"{config}: {monitoring.SPEC_OUTCOMES_RULE}"
            horizon = horizon_days or spec.outcome.horizon_days or DEFAULT_HORIZON_DAYS
        else:
            assert outcomes is not None
            known, source = monitoring.read_outcomes(outcomes), str(outcomes)
            horizon = horizon_days or DEFAULT_HORIZON_DAYS
        report = monitoring.monitor(
            store, name, known, horizon_days=horizon, as_of=when, period=cohort,
            thresholds=monitoring.Thresholds(max_auc_drop, max_calibration_gap, min_cohort),
            bundle_for=bundles_of(name, settings),
        )
        report["outcome_source"] = source
        folder = report_dir or settings.resolved_reports_dir() / "monitoring" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "monitor.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        (folder / "monitor.md").write_text(monitoring.markdown(report), encoding="utf-8")
        write_html(folder, report)
        if track:
            from leadscore.tracking import log_monitoring

            report["mlflow_run_id"] = log_monitoring(report, folder, settings)
        typer.echo(json.dumps(report, indent=2))
        if report["alarms"]:
            for line in report["alarms"]:
                typer.echo(f"alarm: {line}", err=True)
            raise typer.Exit(code=monitoring.ALARM_EXIT)

    @app.command()
    @friendly
    def recalibrate(
        name: Annotated[str, typer.Argument(help="The registered model to recalibrate.")],
        outcomes: Annotated[
            Path, typer.Option(help="CSV/Parquet: lead_id, converted, converted_at.")
        ],
        since: Annotated[
            str | None, typer.Option(help="Only scorings from this date on (YYYY-MM-DD).")
        ] = None,
        horizon_days: Annotated[
            int, typer.Option(min=1, help="Days after a score its conversion may come.")
        ] = DEFAULT_HORIZON_DAYS,
        as_of: Annotated[
            str | None, typer.Option(help="Outcomes known as of this date (default: now).")
        ] = None,
        holdout: Annotated[
            float, typer.Option(help="Share of the latest matured scorings held out to check.")
        ] = 0.3,
    ) -> None:
        """Fit a new calibration (trees unchanged) on the champion's recent matured outcomes,
        check it on held-out later ones and register it as a new version through the promotion
        gate (calibration error and ROC AUC on the held-out outcomes)."""
        from leadscore import monitor as monitoring
        from leadscore import recalibrate as recal
        from leadscore.store import ScoreStore
        from leadscore.tracking import load_model

        settings = get_settings()
        champion = load_model(f"models:/{name}@champion", settings)
        result = recal.recalibrate(
            ScoreStore.of(settings), name, monitoring.read_outcomes(outcomes), champion,
            since=_date(since, "--since") if since else None, horizon_days=horizon_days,
            as_of=_date(as_of, "--as-of") if as_of else None, holdout=holdout,
        )
        typer.echo(json.dumps(recal.register(name, result, settings), indent=2))


def _date(text: str, option: str) -> datetime:
    """A date or timestamp option, UTC unless it says otherwise."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"{option} {text!r} is not a date or timestamp (YYYY-MM-DD)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


SQL_ROWS_SHOWN = 200  # a terminal table; --json and --csv print every row


def _print_sql(console: Console, table: Any, as_json: bool, as_csv: bool) -> None:
    """A query's result as a Rich table, JSON (a list of rows) or CSV."""
    from rich.table import Table
    from rich.text import Text

    if as_csv:
        import io

        import pyarrow.csv as pcsv

        buffer = io.BytesIO()
        pcsv.write_csv(table, buffer)
        typer.echo(buffer.getvalue().decode("utf-8"), nl=False)
        return
    rows = table.to_pylist()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    shown = Table(title_justify="left")
    for name in table.column_names:
        shown.add_column(name, overflow="fold")
    for row in rows[:SQL_ROWS_SHOWN]:
        # Text, not str: a value from the data is never read as Rich markup
        shown.add_row(*(Text("" if v is None else str(v)) for v in row.values()))
    console.print(shown)
    more = len(rows) - SQL_ROWS_SHOWN
    if more > 0:
        console.print(f"... {more:,} more row(s): --csv or --json prints them all",
                      highlight=False, markup=False)


def _print_history(console: Console, result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"lead {result['lead_id']} ({result['model']})", title_justify="left")
    for column in ("scored at (UTC)", "version", "probability", "score", "tier"):
        table.add_column(column)
    for row in result["scorings"]:
        table.add_row(row["scored_at"].replace("T", " ")[:16], row["model_version"],
                      f"{row['probability']:.3f}", str(row["score"]), row["tier"])
    console.print(table)
    console.print(f"trend: {result['trend']} ({result['trend_rule']})", highlight=False,
                  markup=False)
    why = result["why_changed"]
    if why is None:
        return
    if not why["available"]:
        console.print(f"why it changed: not available: {why['reason']}", highlight=False,
                      markup=False)
        return
    console.print(f"why it changed: {why['score_change']:+d} points", highlight=False)
    for side, label in (("data", "the lead's data"), ("model", "the model")):
        for item in why[side][:5]:
            console.print(f"  {label}: {item['field']} {item['change']:+.2f}", highlight=False,
                          markup=False)
        rest = why[side][5:]
        if rest:
            total = sum(item["change"] for item in rest)
            console.print(f"  {label}: {len(rest)} other field(s) {total:+.2f}",
                          highlight=False)
    for key, label in (("baseline_change", "the model's average lead"), ("rounding",
                                                                          "rounding")):
        if why[key]:
            console.print(f"  {label}: {why[key]:+.2f}", highlight=False)
