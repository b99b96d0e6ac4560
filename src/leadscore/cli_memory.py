"""The commands that work on what leadscore remembers: `history` (a lead's scorings and why they
moved, `history compact`), `monitor` (outcomes joined back, alarms) and `recalibrate`."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from leadscore.config import Settings, get_settings
from leadscore.errors import ModelError

if TYPE_CHECKING:  # LightGBM loads when a command needs it, not when the CLI starts
    from leadscore.scoring import ModelBundle


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
            str, typer.Argument(help="A lead id, or `compact` to compact the history's files.")
        ],
        model: Annotated[
            str | None,
            typer.Option(help="The model whose scores to show (default: the only one with a "
                         "history)."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        lead: Annotated[
            bool, typer.Option("--lead", help="LEAD_ID is a lead even if it reads `compact`.")
        ] = False,
    ) -> None:
        """A lead's scorings, trend and why its score last changed (or `history compact`)."""
        from leadscore.history import lead_history
        from leadscore.store import ScoreStore

        settings = get_settings()
        store = ScoreStore.of(settings)
        if lead_id == "compact" and not lead:
            typer.echo(json.dumps(store.compact(model), indent=2))
            return
        name = store.resolve_model(model)
        result = lead_history(store, name, lead_id, bundles_of(name, settings))
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        _print_history(console, result)


def _print_history(console: Console, result: dict[str, Any]) -> None:
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
