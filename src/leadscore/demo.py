"""`make demo`: the whole line on the committed bank-marketing data, then a short summary.

Train → MLflow run → registered version → @champion → batch scores in data/scored/. Run it
again and a new version is registered.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from rich.console import Console

from leadscore.batch import rescore
from leadscore.cli import err, setup_logging
from leadscore.config import get_settings, load_spec, model_name_for, project_root
from leadscore.errors import LeadscoreError
from leadscore.pipeline import run_training
from leadscore.store import ScoreStore
from leadscore.terminal import training_progress
from leadscore.tracking import load_model, local_tracking_hint

log = logging.getLogger(__name__)


def _short(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def _forecast(report_dir: Path | None) -> list[str]:
    """The card's opening (expected vs actual, can the probabilities be summed), so the demo
    claims no more about calibration than the card shows."""
    from leadscore.report import forecast_verdict

    if report_dir is None or not (report_dir / "report.json").is_file():
        return []
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    return [line.replace("**", "") for line in forecast_verdict(report)]


def main() -> int:
    setup_logging("INFO")
    console = Console()
    root = project_root()
    settings = get_settings()
    spec = load_spec(root / "configs" / "bank_marketing.yaml")
    output = root / "data" / "scored" / "bank_marketing.parquet"
    name = model_name_for(spec, settings)
    try:
        with training_progress(err):
            result = run_training(spec, settings)
        bundle = load_model(f"models:/{name}@champion", settings)  # the champion scores
        # the scores go to the history too, as `leadscore score` does: `make serve`'s lead board
        # then shows them
        summary = rescore(bundle, spec.resolve(spec.leads.path), output, reasons=3,
                          history=ScoreStore.of(settings))
    except LeadscoreError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return exc.exit_code
    m = result.metrics
    lines = [
        f"dataset        {spec.name} ({result.report.leads:,} leads, "
        f"{result.trained.split.kind} split)",
        f"test ROC AUC   {m['test_roc_auc']:.4f}   PR AUC {m['test_pr_auc']:.4f}   "
        f"Brier {m['test_brier']:.4f}   ECE {m['test_ece']:.4f}",
        f"model          {name} version {result.version}  ({result.model_uri})",
        (f"registry       promoted to @champion: {result.promotion_reason}" if result.promoted
         else f"registry       NOT promoted, @champion stays version {result.champion_version}: "
         f"{result.promotion_reason}"),
        f"model card     {result.report_dir / 'model_card.html' if result.report_dir else '-'}",
        *(f"               {line}" for line in _forecast(result.report_dir)),
        f"tracking       {settings.resolved_tracking_uri()}  run {result.run_id}",
        f"champion       {_short(settings.resolved_models_dir() / name, root)}  "
        f"(version {bundle.version})",
        f"scored file    {_short(Path(summary.output), root)}  ({summary.rows:,} rows, "
        f"{summary.rows_per_s:,.0f} rows/s with 3 reasons)",
        "",
        f"MLflow UI      {local_tracking_hint(settings)}   (or: make mlflow-ui)",
        "API            make serve   then:  curl -s localhost:8000/v1/models",
    ]
    console.rule("leadscore demo")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
