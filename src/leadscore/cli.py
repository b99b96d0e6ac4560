"""The `leadscore` command line. Sets up logging once; turns every LeadscoreError into one plain
line on stderr and exit code 2, never a traceback.

Start-up is part of the interface: `--help`, `--version` and a spec mistake answer in well
under a second, so this module imports only typer, rich and the settings; MLflow, LightGBM,
scikit-learn and pandas are imported inside the command that uses them (tests/test_cli.py
checks, benchmarks/cli.py measures).

Past 600 lines on purpose: each command is its options, help text and a call into the library,
and Typer wants them declared where the app is; the score-history commands (history, monitor,
recalibrate) live in `cli_memory`, the output helpers in `terminal`."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from leadscore import __version__, cli_memory
from leadscore.errors import LeadscoreError

if TYPE_CHECKING:
    from rich.table import Table

    from leadscore.config import DatasetSpec, Settings

class LeanGroup(TyperGroup):
    """A command group whose unused `-h` costs nothing: typer (0.29) builds a pydantic adapter
    to coerce the group's absent help flag (None) before a subcommand's `-h` answers, which made
    every `leadscore COMMAND -h` import pydantic (a fifth of a second). The help flag is a
    plain bool; it gets typer's pass-through coercion instead. Other typer versions (no
    `_runtime_param`) are left as they are."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None and getattr(option, "_runtime_param", False) is None:
            try:
                from typer._coercion import PassThroughRuntimeParam

                option._runtime_param = PassThroughRuntimeParam(
                    parameter_info=option.type_descriptor.parameter_info, annotation=bool)
            except (ImportError, AttributeError, TypeError):  # a typer without them: as is
                pass
        return option


app = typer.Typer(
    cls=LeanGroup,
    help="Lead conversion probabilities learned from your own CRM history.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts are plain text: "leadscore[spark]" must not be read as Rich markup
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err = Console(stderr=True)
log = logging.getLogger("leadscore")

F = TypeVar("F", bound=Callable[..., Any])


# pydantic and pydantic-settings cost a third of a second: `--help` and `--version` skip them
def get_settings() -> Settings:
    from leadscore.config import get_settings as settings

    return settings()


def load_spec(path: Path) -> DatasetSpec:
    from leadscore.config import load_spec as load

    return load(path)


def model_name_for(spec: DatasetSpec, settings: Settings) -> str:
    from leadscore.config import model_name_for as name_for

    return name_for(spec, settings)


def setup_logging(level: str) -> None:
    """Our own records at `level`; third-party libraries only from WARNING up, and their
    Python warnings (deprecations, PySpark's pandas notice) kept out of a user's terminal."""
    import os
    import warnings

    if level.upper() != "DEBUG":
        # MLflow sets up its own handler at import, INFO by default ("Creating initial MLflow
        # database tables..."); its documented switch, read then, keeps it to warnings
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if not sys.warnoptions:  # `python -W ...` still wins, for whoever debugs
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(mlflow|pydantic)")
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=err, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("leadscore").setLevel(level.upper())


_verbose = [False]  # --verbose, as the group's callback last saw it


def apply_log_level() -> None:
    """`LEADSCORE_LOG_LEVEL` for our records, once a command runs: the group's callback runs
    before a command's `-h` is parsed, and reading the settings there would make every `-h` pay
    for pydantic. `--verbose` (DEBUG, set by the callback) wins."""
    if _verbose[0]:
        return
    logging.getLogger("leadscore").setLevel(get_settings().log_level.upper())


def friendly(func: F) -> F:
    """A user's mistake is one line and exit 2; anything else is a bug and keeps its trace."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            apply_log_level()
            return func(*args, **kwargs)
        except LeadscoreError as exc:
            from rich.markup import escape

            # the message is text, not markup: "pip install 'leadscore[tune]'" keeps its brackets
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True,
                      soft_wrap=True)
            raise typer.Exit(code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"leadscore {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    # INFO until the command runs and `apply_log_level` reads LEADSCORE_LOG_LEVEL
    _verbose[0] = verbose
    setup_logging("DEBUG" if verbose else "INFO")


EngineOption = Annotated[
    str | None,
    typer.Option(help="Who aggregates the activity log: local (in memory), duckdb (SQL over the "
                 "files, spilling to disk) or spark (pip install leadscore[spark]). Default: "
                 "LEADSCORE_FEATURE_ENGINE, else the spec's features.engine, else local."),
]


def feature_engine(spec: DatasetSpec, engine: str | None) -> str:
    """The feature engine, checked before any data is read (a typo costs no waiting)."""
    from leadscore.feature_engines import choose_engine

    return choose_engine(spec, engine)


ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="KEY=VALUE training parameter, repeatable (LightGBM's, e.g. num_leaves=15, or "
        "leadscore's: linear_start, recency_half_life, refit); wins over the spec's train.params.",
    ),
]


def parse_params(pairs: list[str] | None) -> dict[str, Any] | None:
    """`--param KEY=VALUE` pairs, each value read as a YAML scalar (15, 0.05, true, gbdt)."""
    import yaml

    if not pairs:
        return None
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise LeadscoreError(f"--param {pair!r}: expected KEY=VALUE, e.g. num_leaves=15")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict | list):
            raise LeadscoreError(f"--param {key.strip()}: expected one value, not a list or map")
        params[key.strip()] = value
    return params


@app.command()
@friendly
def synth(
    leads: Annotated[int, typer.Option(help="How many leads to generate.")] = 20_000,
    out: Annotated[
        Path, typer.Option(help="Folder for leads, activities, conversions, truth.")
    ] = Path("data/synthetic"),
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
) -> None:
    """Generate a synthetic CRM (leads, activity log, conversions and the true probabilities)."""
    from leadscore import synth as synthetic

    if fmt not in {"csv", "parquet"}:
        raise LeadscoreError("--format must be csv or parquet")
    data = synthetic.generate(leads, seed=seed)
    paths = synthetic.write(data, out, fmt=fmt)  # type: ignore[arg-type]
    for table, path in paths.items():
        console.print(f"{table:12s} {path}")


@app.command()
@friendly
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Dataset spec (YAML).")],
    data: Annotated[
        Path | None, typer.Option(help="Read the lead table from this file instead of the spec's.")
    ] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Skip MLflow.")] = False,
    tune: Annotated[
        int, typer.Option(min=0, help="Optuna trials on the validation slice (0: no tuning).")
    ] = 0,
    keep_tiers: Annotated[
        bool, typer.Option("--keep-tiers", help="Keep the current champion's tier cutoffs.")
    ] = False,
    param: ParamOption = None,
    bundle_out: Annotated[
        Path | None,
        typer.Option(help="Also write this run's bundle here (the only place --no-track writes "
                     "one; models/<name>/ holds the @champion alone)."),
    ] = None,
    engine: EngineOption = None,
) -> None:
    """Train on a lead table, evaluate on its most recent slice, log and register the model
    (the spec's `model.name`, e.g. lead-bank-marketing; LEADSCORE_MODEL_NAME overrides)."""
    # the cheap checks first: a spec mistake must not wait for pandas, LightGBM and MLflow
    params = parse_params(param)
    spec = load_spec(config)
    engine = feature_engine(spec, engine)
    if tune:
        from leadscore.tuning import require_optuna

        require_optuna()
    from rich.table import Table

    from leadscore.pipeline import run_training
    from leadscore.terminal import training_progress

    settings = get_settings()
    name = model_name_for(spec, settings)
    with training_progress(err):
        result = run_training(
            spec,
            settings,
            data_path=data,
            track=not no_track,
            params=params,
            tune=tune,
            keep_tiers=keep_tiers,
            bundle_out=bundle_out,
            engine=engine,
        )
    m = result.metrics
    table = Table(title=f"{spec.name}: test slice ({result.trained.split.kind} split)")
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "ece"):
        table.add_column(key)
    table.add_row(
        *(f"{m[f'test_{k}']:.4f}" for k in ("roc_auc", "pr_auc", "log_loss", "brier", "ece"))
    )
    console.print(table)
    for column, why in result.leak.flagged.items():
        verdict = "kept (leak_audit.keep)" if column in result.leak.kept else "dropped"
        console.print(f"[yellow]leak audit[/]: {column!r} {verdict}: {'; '.join(why)}")
    for reason, count in result.report.excluded.items():
        console.print(f"not a training example: {count:,} lead(s) {reason}")
    if result.trained.split.kind == "stratified":
        console.print(
            "[yellow]no created-at or order column: the test slice is a stratified "
            "random 20%, which flatters a model when conversion drifts over time[/]"
        )
    for baseline, b in (result.baselines or {}).items():
        console.print(
            f"baseline {baseline:10s} ROC AUC {b['roc_auc']:.4f}  ECE {b['ece']:.4f}  "
            f"(LightGBM {m['test_roc_auc'] - b['roc_auc']:+.4f} ROC AUC)"
        )
    if result.quality_problem and not result.version:  # else the registry line says it
        console.print(f"[bold yellow]not fit to serve[/]: {result.quality_problem}",
                      highlight=False)
    if result.report_dir:
        console.print(f"report:  {result.report_dir / 'model_card.html'}")
    if result.version:
        console.print(f"model:   {name} version {result.version} -> {result.model_uri}")
        if result.promoted:
            console.print(f"[green]promoted to @champion[/]: {result.promotion_reason}",
                          highlight=False)
        else:
            stays = (f"@champion stays version {result.champion_version}"
                     if result.champion_version else "no @champion yet")
            console.print(f"[yellow]not promoted[/] ({stays}): {result.promotion_reason}",
                          highlight=False)
        console.print(f"tracking: {settings.resolved_tracking_uri()} (run {result.run_id})")
    if result.bundle_dir:
        console.print(f"bundle:  {result.bundle_dir}")
    elif no_track:
        console.print("bundle:  not written (--no-track: give --bundle-out DIR to keep it)")


@app.command()
@friendly
def backtest(
    config: Annotated[Path, typer.Option("--config", "-c", help="Dataset spec (YAML).")],
    steps: Annotated[int, typer.Option(min=1, help="Steps through the most recent 20%.")] = 10,
    data: Annotated[
        Path | None, typer.Option(help="Read the lead table from this file instead of the spec's.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write the per-step results here as JSON.")
    ] = None,
    param: ParamOption = None,
    recalibrate: Annotated[
        bool, typer.Option(help="Also score each step with the pipeline's trees recalibrated on "
                           "the latest leads whose outcomes were known before it.")
    ] = False,
    plain: Annotated[
        bool, typer.Option(help="Also score a plain LightGBM retrained on all history each step.")
    ] = True,
) -> None:
    """Replay history: retrain on everything before each step, score the step (ROC AUC), next to
    a plain LightGBM and (--recalibrate) the recalibrated pipeline."""
    params = parse_params(param)
    spec = load_spec(config)
    from rich.table import Table

    from leadscore.backtest import run_backtest

    result = run_backtest(spec, get_settings(), steps, data_path=data, params=params,
                          recalibrate=recalibrate, plain=plain)
    others = [v for v in ("recalibrated", "plain") if v in result.variants]
    table = Table(title=f"{spec.name}: {len(result.steps)}-step backtest")
    columns = ["step", "trained on", "scored", "conversion", "mean probability", "roc_auc"]
    if others:
        columns[-1] = "roc_auc pipeline"
        columns += [f"roc_auc {v}" for v in others]
        if "recalibrated" in others:
            columns.insert(5, "mean p recalibrated")
    for column in columns:
        table.add_column(column)
    for s in result.steps:
        row = [
            str(s["step"]),
            f"{s['train_leads']:,}",
            f"{s['scored_leads']:,}",
            f"{s['conversion_rate']:.3f}",
            f"{s['mean_probability']:.3f}",
            f"{s['roc_auc']:.4f}",
        ]
        if "recalibrated" in others:
            row.insert(5, f"{s['recalibrated_mean_probability']:.3f}")
        row += [f"{s[f'{v}_roc_auc']:.4f}" for v in others]
        table.add_row(*row)
    console.print(table)
    for name, o in result.variants.items():
        label = "over all steps" if not others else f"{name:>12} over all steps"
        console.print(
            f"{label}: ROC AUC {o['roc_auc']:.4f}, PR AUC {o['pr_auc']:.4f}, "
            f"ECE {o['ece']:.4f}; mean per-step ROC AUC {o['mean_step_roc_auc']:.4f}"
        )
    if result.recalibrate_rows:
        console.print(f"recalibrated: Platt on the latest {result.recalibrate_rows:,} matured "
                      "leads before each step, trees unchanged")
    if output:
        output.write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
        console.print(f"written: {output}")


@app.command()
@friendly
def score(
    input: Annotated[
        Path,
        typer.Option("--input", "-i", help="CSV, Parquet, or a folder of Parquet; - reads CSV "
                     "or JSON lines from stdin."),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Output .parquet, .csv or .xlsx; - writes to stdout "
                     "(JSON lines when the input was JSON lines, else CSV)."),
    ],
    model: Annotated[
        str | None,
        typer.Option(help="A model name (its @champion), a models:/ URI or a bundle folder "
                     "(default: the only model with a @champion)."),
    ] = None,
    reasons: Annotated[
        int,
        typer.Option(
            min=0, max=10, help="Reasons per lead: up to K fields that raised the score and K "
            "that lowered it."
        ),
    ] = 0,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows per chunk.")] = 100_000,
    keep: Annotated[
        str, typer.Option(help="Input columns to copy to the output (comma-separated).")
    ] = "",
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted job from its last completed chunk.")
    ] = False,
    engine: Annotated[
        str, typer.Option(help="local, or spark (PySpark: pip install leadscore[spark]).")
    ] = "local",
    output_format: Annotated[
        str | None,
        typer.Option("--format", help="parquet (reasons as structured JSON), or csv / xlsx "
                     "(flat columns a CRM imports: reason_1 … and reason_1_points …; xlsx: pip "
                     "install leadscore[xlsx]). Default: from the output's suffix."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full JSON summary instead of a few lines.")
    ] = False,
    history: Annotated[
        bool,
        typer.Option("--history/--no-history",
                     help="Append the scores to the score history (LEADSCORE_HOME/scores)."),
    ] = True,
) -> None:
    """Score a file of leads into a file of probabilities, scores and tiers, in chunks.

    Rows that cannot be scored go to <output>.rejects.csv; a JSON summary (rows, rejects,
    rows/s, drift against the training data) is written to <output>.summary.json. The scores
    are added to the score history (`leadscore history`) unless --no-history.
    One lead from the terminal: echo '{"id": ...}' | leadscore score -i - -o - --reasons 3
    """
    import tempfile
    from contextlib import ExitStack

    from leadscore.batch import rescore, rescore_spark
    from leadscore.exports import XLSX_INSTALL, format_for
    from leadscore.store import ScoreStore
    from leadscore.terminal import file_to_stdout, stdin_to_file, summary_lines
    from leadscore.tracking import load_model, resolve_model_uri

    if engine not in {"local", "spark"}:
        raise LeadscoreError("--engine must be local or spark")
    stack = ExitStack()
    piped_in, piped_out = str(input) == "-", str(output) == "-"
    fmt = "csv"
    if piped_in or piped_out:
        if resume:
            raise LeadscoreError("--resume needs a file for --input and --output, not -")
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="leadscore-")))
        if piped_in:
            input, fmt = stdin_to_file(scratch)
        if piped_out:
            output = scratch / "scores.parquet"
    kind = "parquet" if piped_out else format_for(output, output_format)
    if kind == "xlsx":
        if importlib.util.find_spec("openpyxl") is None:
            raise LeadscoreError(XLSX_INSTALL)  # before an hour of scoring, not after
        final, output = output, output.with_name(output.name + ".parquet")
    settings = get_settings()
    uri = resolve_model_uri(model, settings)
    keep_cols = [c.strip() for c in keep.split(",") if c.strip()]
    if engine == "spark":
        summary = rescore_spark(
            uri, input, output, settings=settings, reasons=reasons, keep=keep_cols,
            history=ScoreStore.of(settings) if history else None,
        )
    else:
        bundle = load_model(uri, settings)
        summary = rescore(
            bundle,
            input,
            output,
            reasons=reasons,
            chunk_rows=chunk_rows,
            keep=keep_cols,
            resume=resume,
            console=err if err.is_terminal else None,
            history=ScoreStore.of(settings) if history else None,
        )
    with stack:
        if piped_out:
            file_to_stdout(output, fmt)
        report = summary.as_dict()
        if kind == "xlsx":
            report = _to_xlsx(output, final, report)
        if piped_out:  # no file: the summary of a piped job is printed, never kept
            report["output"] = "-"
            report.pop("rejects_file", None)
        if piped_in:
            report["input"] = "-"
        if as_json:
            (err if piped_out else console).print_json(json.dumps(report))
        else:
            for line in summary_lines(report, piped=piped_out):
                (err if piped_out else console).print(line, highlight=False, markup=False,
                                                      soft_wrap=True)


def _to_xlsx(scored: Path, final: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Write the finished Parquet `scored` as the XLSX `final`, then drop it; the rejects and
    summary files take the XLSX's name."""
    from leadscore.exports import write_xlsx

    write_xlsx(scored, final)
    scored.unlink()
    for suffix in (".rejects.csv", ".summary.json"):
        beside = scored.with_name(scored.name + suffix)
        if beside.exists():
            beside.replace(final.with_name(final.name + suffix))
    renamed = {str(scored): str(final), f"{scored}.rejects.csv": f"{final}.rejects.csv"}
    summary = {k: renamed.get(v, v) if isinstance(v, str) else v for k, v in summary.items()}
    summary_path = final.with_name(final.name + ".summary.json")
    if summary_path.exists():
        summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


@app.command()
@friendly
def models(
    name: Annotated[
        str | None, typer.Argument(help="A registered model: list its versions.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered models with their @champion and @challenger, or one model's versions."""
    from rich.table import Table

    from leadscore.tracking import list_models, list_versions

    settings = get_settings()
    where = settings.resolved_tracking_uri()
    if name is None:
        entries = list_models(settings)
        if as_json:
            typer.echo(json.dumps(entries, indent=2))
            return
        if not entries:
            console.print(f"no registered models at {where}", highlight=False)
            return
        for entry in entries:
            console.print(_models_table(entry))
        return
    rows = list_versions(name, settings)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        known = ", ".join(m["name"] for m in list_models(settings)) or "none"
        raise LeadscoreError(f"no model named {name!r} at {where} (registered: {known})")
    table = Table(title=name, title_justify="left")
    for column in ("version", "aliases", "dataset", "ROC AUC", "ECE", "trained (UTC)",
                   "promotion"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["version"], ", ".join(row["aliases"]), row["dataset"],
                      *_metric_cells(row), _when(row["trained_at"]), row["promotion"])
    console.print(table)
    for row in rows:
        if row["reason"]:
            console.print(f"version {row['version']}: {row['reason']}", highlight=False,
                          markup=False)


def _metric_cells(row: dict[str, Any]) -> tuple[str, str]:
    metrics = row["metrics"]
    return (f"{metrics.get('test_roc_auc', float('nan')):.4f}",
            f"{metrics.get('test_ece', float('nan')):.4f}")


def _when(stamp: str) -> str:
    return stamp.replace("T", " ")[:16]


def _models_table(entry: dict[str, Any]) -> Table:
    """One small table per model, titled with its full name: readable at 80 columns."""
    from rich.table import Table

    table = Table(title=entry["name"], title_justify="left", title_style="bold")
    for column in ("alias", "version", "dataset", "ROC AUC", "ECE", "trained (UTC)"):
        table.add_column(column, overflow="fold")
    for alias in ("champion", "challenger"):
        row = entry[alias]
        if row is None:
            table.add_row(alias, "-", "", "", "", "")
            continue
        table.add_row(alias, row["version"], row["dataset"], *_metric_cells(row),
                      _when(row["trained_at"]))
    return table


@app.command()
@friendly
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version number.")],
    allow_schema_change: Annotated[
        bool,
        typer.Option("--allow-schema-change",
                     help="Promote a version whose input fields differ from the champion's."),
    ] = False,
) -> None:
    """Point NAME@champion at VERSION, whatever its metrics, and write models/NAME/."""
    from leadscore.tracking import promote as set_champion

    settings = get_settings()
    folder = set_champion(name, version, settings, allow_schema_change=allow_schema_change)
    console.print(f"{name} version {version} is now @champion (bundle: {folder})",
                  highlight=False)


@app.command()
@friendly
def export(
    ref: Annotated[str, typer.Argument(help="NAME (its @champion), NAME@alias or NAME/VERSION.")],
    directory: Annotated[Path, typer.Argument(help="Folder to write the bundle to.")],
) -> None:
    """Write any registered version's bundle (model.txt + bundle.json) to a folder."""
    from leadscore.tracking import export as write_bundle

    bundle = write_bundle(ref, directory, get_settings())
    console.print(f"{bundle.name} version {bundle.version} -> {directory}", highlight=False)


cache_app = typer.Typer(help="The training-table cache (LEADSCORE_HOME/cache/features).",
                        no_args_is_help=True, cls=LeanGroup)
app.add_typer(cache_app, name="cache")


@cache_app.command("clear")
@friendly
def cache_clear() -> None:
    """Remove every cached training table."""
    from leadscore.pipeline import clear_cache

    settings = get_settings()
    removed = clear_cache(settings)
    console.print(f"removed {removed} file(s) from {settings.resolved_feature_cache()}",
                  highlight=False)


def server_log_config(level: str) -> dict[str, Any]:
    """Logging for the server and each of its worker processes (uvicorn applies it in every
    worker): one plain line per record on stderr. Our access log replaces uvicorn's, which
    would print query strings."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {
            name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
            for name in ("uvicorn", "serve", "leadscore")
        },
    }


@app.command()
@friendly
def features(
    config: Annotated[Path, typer.Option("--config", "-c", help="Dataset spec (YAML).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output .parquet, .csv or .xlsx.")
    ],
    as_of: Annotated[
        str | None,
        typer.Option(help="Score leads as of this time (default: the data's latest timestamp)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model URI or bundle folder: reuse its activity types.")
    ] = None,
    training: Annotated[
        bool, typer.Option("--training", help="Write the training table (with labels) instead.")
    ] = False,
    engine: EngineOption = None,
) -> None:
    """Build the table of leads to score (or the training table) from the spec's raw exports:
    joins, activity aggregates as of one moment, every lead kept. Feed it to `leadscore score`."""
    spec = load_spec(config)
    engine = feature_engine(spec, engine)
    from leadscore.table import build_table, export_table

    types = None
    if model:
        from leadscore.tracking import load_model, resolve_model_uri

        settings = get_settings()
        types = load_model(resolve_model_uri(model, settings), settings).meta.get(
            "activity_types"
        )
    if training:
        table, report = build_table(spec, activity_types=types, engine=engine)
    else:
        when = None
        if as_of:
            import pandas as pd

            try:
                when = pd.Timestamp(as_of)
            except ValueError:
                raise LeadscoreError(f"--as-of {as_of!r} is not a date or timestamp") from None
        table, report = build_table(
            spec, scoring_time=when or "cutoff", activity_types=types, engine=engine
        )
    path = export_table(table, spec, output, with_label=training)
    console.print(f"{len(table):,} leads -> {path}")
    console.print(json.dumps(report.as_dict(), indent=2, default=str))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    graceful_timeout: Annotated[
        int, typer.Option(min=0, help="Seconds to let in-flight requests finish on shutdown.")
    ] = 30,
) -> None:
    """Serve scores over HTTP (FastAPI under uvicorn); SIGTERM drains in-flight requests."""
    import tempfile
    from contextlib import ExitStack

    import uvicorn

    apply_log_level()
    with ExitStack() as stack:
        if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # each worker writes its metrics here and /metrics adds them up
            metrics_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="leadscore-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run(
            "serve.main:app",
            host=host,
            port=port,
            workers=workers,
            log_config=server_log_config(get_settings().log_level),
            access_log=False,
            timeout_graceful_shutdown=graceful_timeout or None,
        )


# the score history, monitoring and recalibration commands live in their own module (this one
# would pass 600 lines); passed what they share, since under `python -m leadscore.cli` this
# module is `__main__` and importing it from there would build a second `app`
cli_memory.register(app, friendly, console)

if __name__ == "__main__":
    app()

