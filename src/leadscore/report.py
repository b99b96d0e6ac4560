"""The evaluation report of one training run: numbers (JSON), plots (PNG) and a one-page model
card (Markdown and HTML) in `reports/<run-id>/`. Only aggregates and column names are written,
never a lead's values, so the folder can be shared and logged to MLflow as it is."""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from leadscore.evaluate import (
    classification_metrics,
    decile_table,
    f1_optimal_threshold,
    reliability_table,
    tier_table,
    tiers_descend,
)
from leadscore.train import TrainedModel

log = logging.getLogger(__name__)

HEADLINE = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10")
PLOTS = ("roc", "pr", "calibration", "gains", "importance")


def run_label(dataset: str) -> str:
    """A sortable folder name for a run before MLflow has given it an id."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{dataset}"


def field_importance(trained: TrainedModel, top: int = 15) -> list[dict[str, Any]]:
    """Total split gain per business field (every part of `Job Title` counts as Job Title)."""
    gains = np.asarray(trained.booster.feature_importance(importance_type="gain"), dtype=float)
    total: dict[str, float] = {}
    for feature, gain in zip(trained.builder.features_, gains, strict=False):
        total[feature.source] = total.get(feature.source, 0.0) + float(gain)
    overall = sum(total.values()) or 1.0
    ranked = sorted(total.items(), key=lambda kv: -kv[1])[:top]
    return [{"field": name, "gain": gain, "share": gain / overall} for name, gain in ranked]


def build_report(
    *,
    dataset: str,
    trained: TrainedModel,
    y_valid: np.ndarray,
    p_valid: np.ndarray,
    y_test: np.ndarray,
    p_test: np.ndarray,
    baselines: Mapping[str, np.ndarray] | None = None,
    leak: Mapping[str, Any] | None = None,
    tuning: Mapping[str, Any] | None = None,
    kept_tiers: bool = False,
) -> dict[str, Any]:
    """Everything the model card shows, as plain numbers."""
    split = trained.split
    test = classification_metrics(y_test, p_test)
    tiers_valid = tier_table(y_valid, p_valid, trained.tiers)
    tiers_test = tier_table(y_test, p_test, trained.tiers)
    compared: dict[str, dict[str, float]] = {}
    for name, probability in (baselines or {}).items():
        compared[name] = classification_metrics(y_test, probability)
    notes = []
    if split.kind == "stratified":
        notes.append(
            "No created-at or order column: the test slice is a stratified random 20%, which "
            "flatters any model when conversion drifts over time."
        )
    drift = trained.extras.get("drift") or {}
    if drift.get("drift"):
        notes.append(
            f"Drift between the training and validation slices (conversion rate "
            f"{drift['rate_train']:.1%} -> {drift['rate_valid']:.1%}, "
            f"{drift['out_of_range_share']:.0%} of validation leads outside a numeric field's "
            "training range): the trees start from a logistic regression and the model keeps "
            "its own refitted probabilities rather than the validation calibration."
        )
    plan = trained.extras.get("linear_plan") or {}
    if trained.linear is not None and plan:
        notes.append(
            f"The logistic start (C={plan['c']:g}, chosen on validation) extrapolates "
            f"{', '.join(plan['trend']) or 'no field'} beyond the training range (the trees "
            "leave these to it, so they are missing from the gain table below but not from "
            "the reasons); held at the edge of their training range: "
            f"{', '.join(plan['held']) or 'none'}."
        )
    if trained.extras.get("refit"):
        notes.append(
            "After early stopping on validation the model was refitted on train + "
            "validation with the same tree count."
        )
    elif trained.extras.get("refit_skipped"):
        notes.append(trained.extras["refit_skipped"])
    if kept_tiers:
        notes.append("Tier cutoffs were kept from the previous champion (--keep-tiers).")
    if not tiers_descend(tiers_valid):
        notes.append("Conversion rate does not fall from tier A to D on validation.")
    return {
        "dataset": dataset,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "split": {
            "kind": split.kind,
            "rows_train": int(len(split.train)),
            "rows_valid": int(len(split.valid)),
            "rows_test": int(len(split.test)),
        },
        "model": {
            "best_iteration": trained.best_iteration,
            "calibration": trained.calibrator.state_.get("method"),
            "linear_start": bool(trained.extras.get("linear_start")),
            "refit": bool(trained.extras.get("refit")),
            "drift": drift,
        },
        "test": test,
        "expected_vs_actual": {
            "expected_conversions": test["expected_conversions"],
            "actual_conversions": test["actual_conversions"],
            "test_leads": int(len(y_test)),
            "valid_rate": float(np.mean(y_valid)) if len(y_valid) else None,
            "valid_expected_rate": float(np.mean(p_valid)) if len(p_valid) else None,
            "test_rate": float(np.mean(y_test)) if len(y_test) else None,
        },
        "deciles": decile_table(y_test, p_test),
        "reliability": reliability_table(y_test, p_test),
        "threshold_f1": f1_optimal_threshold(y_test, p_test),
        "tiers": {
            "cutoffs": dict(trained.tiers),
            "kept_from_champion": kept_tiers,
            "valid": tiers_valid,
            "test": tiers_test,
            "descending_valid": tiers_descend(tiers_valid),
            "descending_test": tiers_descend(tiers_test),
        },
        "importance": field_importance(trained),
        "baselines": compared,
        "beats": {
            name: {
                "roc_auc": test["roc_auc"] - m["roc_auc"],
                "pr_auc": test["pr_auc"] - m["pr_auc"],
                "brier": m["brier"] - test["brier"],
                "ece": m["ece"] - test["ece"],
            }
            for name, m in compared.items()
        },
        "leak_audit": dict(leak or {}),
        "tuning": dict(tuning or {}),
        "notes": notes,
    }


def bundle_evaluation(report: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the report the model page shows, kept in `bundle.json` so a served version
    carries its own test figures (the report folder may be gone, MLflow out of reach): test
    expected vs actual, calibration bins, tier rates, field importance and the baselines. Only
    aggregates; NaN becomes null so the JSON stays strict."""
    keep = ("test", "expected_vs_actual", "reliability", "tiers", "importance", "baselines",
            "split", "model")
    tiers = report.get("tiers") or {}
    summary = {key: report.get(key) for key in keep}
    summary["tiers"] = {"cutoffs": tiers.get("cutoffs"), "test": tiers.get("test"),
                        "descending_test": tiers.get("descending_test")}
    summary["model"] = {"calibration": (report.get("model") or {}).get("calibration")}
    return {"format": 1, **_finite(summary)}


def _finite(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return value


# --------------------------------------------------------------------------- plots


# fixed margins for a 5x4 inch plot with one-line axis labels: `tight_layout` measured every
# tick label again for each figure, a third of the plots' time (benchmarks/train.py)
MARGINS = {"left": 0.13, "right": 0.97, "bottom": 0.12, "top": 0.92}
# points per drawn ROC / precision-recall curve: the curve of 15k test leads has ~15k corners,
# which no 500-pixel-wide PNG can show; the drawn curve keeps its ends and its shape
CURVE_POINTS = 400


def _figure(title: str, left: float = MARGINS["left"]) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(**{**MARGINS, "left": left})
    axes = figure.add_subplot(1, 1, 1)
    axes.set_title(title)
    return figure, axes


def thin_curve(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> tuple[
        np.ndarray, np.ndarray]:
    """At most about `points` of a curve's corners, evenly spread along it, first and last kept."""
    if len(x) <= points:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(int))
    return x[keep], y[keep]


def write_plots(
    folder: Path,
    report: Mapping[str, Any],
    y_test: np.ndarray,
    p_test: np.ndarray,
    baselines: Mapping[str, np.ndarray] | None = None,
) -> list[Path]:
    """ROC, precision-recall, reliability, cumulative gains and field importance as PNG (Agg)."""
    paths: list[Path] = []
    both = 0 < np.sum(y_test) < len(y_test)
    curves = {"lightgbm": p_test, **(baselines or {})}

    figure, ax = _figure("ROC curve (test)")
    if both:
        for name, p in curves.items():
            fpr, tpr = thin_curve(*roc_curve(y_test, p)[:2])
            ax.plot(fpr, tpr, label=name, lw=2 if name == "lightgbm" else 1)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=8)
    paths.append(_save(figure, folder / "roc.png"))

    figure, ax = _figure("Precision-recall (test)")
    if both:
        for name, p in curves.items():
            precision, recall = thin_curve(*precision_recall_curve(y_test, p)[:2])
            ax.plot(recall, precision, label=name, lw=2 if name == "lightgbm" else 1)
    ax.axhline(float(np.mean(y_test)), ls="--", color="grey", lw=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(loc="upper right", fontsize=8)
    paths.append(_save(figure, folder / "pr.png"))

    figure, ax = _figure("Reliability (test, 10 bins)")
    rows = [r for r in report["reliability"] if r["leads"] > 0]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], marker="o")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed conversion rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    paths.append(_save(figure, folder / "calibration.png"))

    figure, ax = _figure("Cumulative gains (test)")
    deciles = report["deciles"]
    ax.plot(
        [0] + [d["cumulative_leads"] for d in deciles],
        [0] + [d["cumulative_gain"] for d in deciles],
        marker="o",
        label="lightgbm",
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="random")
    ax.set_xlabel("share of leads called (best first)")
    ax.set_ylabel("share of conversions reached")
    ax.legend(loc="lower right", fontsize=8)
    paths.append(_save(figure, folder / "gains.png"))

    importance = list(reversed(report["importance"]))
    labels = [i["field"][:30] for i in importance]
    # the field names sit left of the bars: room for the longest (about 0.012 per character)
    left = min(0.55, 0.06 + 0.0125 * max((len(label) for label in labels), default=0))
    figure, ax = _figure("Top fields by gain", left=max(left, MARGINS["left"]))
    ax.barh(labels, [i["share"] for i in importance])
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("share of total split gain")
    paths.append(_save(figure, folder / "importance.png"))
    return paths


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path)
    return path


# --------------------------------------------------------------------------- model card


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


# the probabilities sum to a forecast when the total is this close to what happened (or
# within two standard deviations of chance, for a small test slice)
FORECAST_TOLERANCE = 0.10
# above this calibration error, sums over a subset of leads are not to be trusted either
ECE_SUBSET_WARNING = 0.05


def forecast_verdict(report: Mapping[str, Any]) -> list[str]:
    """The card's opening, in plain words: expected vs actual conversions on the test slice,
    whether the probabilities can be added up as a forecast and, when not, why and what to do.
    A model that ranks well but miscounts is still useful for ordering leads, not for planning;
    the reader must learn which one they have before any table."""
    ev = report["expected_vs_actual"]
    expected, actual = float(ev["expected_conversions"]), float(ev["actual_conversions"])
    leads = int(ev.get("test_leads") or report["split"]["rows_test"])
    first = (f"On the {leads:,} most recent (test) leads the model expected "
             f"**{expected:,.0f}** conversions; **{actual:,.0f}** happened.")
    if actual <= 0:
        return [first, "No conversions in the test slice: whether the probabilities add up "
                "cannot be judged."]
    gap = (expected - actual) / actual
    chance = 2.0 * np.sqrt(max(expected * (1.0 - expected / max(leads, 1)), 1e-9))
    ece = float((report.get("test") or {}).get("ece", float("nan")))
    if abs(gap) <= FORECAST_TOLERANCE or abs(expected - actual) <= chance:
        lines = [first, f"Summed over all leads, the probabilities **can be used as a "
                 f"forecast** ({gap:+.0%}: within {FORECAST_TOLERANCE:.0%} of what happened, or "
                 "within what chance alone would give)."]
        if ece > ECE_SUBSET_WARNING:
            lines.append(
                f"Lead by lead they are off by {ece:.3f} on average (ECE; calibration: "
                f"{report['model'].get('calibration')}), so a sum over part of the leads (one "
                "tier, one campaign) can miss: check the calibration plot before using one."
            )
        return lines
    direction = "over-predict" if gap > 0 else "under-predict"
    lines = [first, f"**Do not sum the probabilities as a forecast**: they {direction} by "
             f"{abs(gap):.0%}. They still rank leads (see ROC AUC below)."]
    why = []
    valid_rate, test_rate = ev.get("valid_rate"), ev.get("test_rate")
    if valid_rate and test_rate and abs(test_rate - valid_rate) > 0.2 * valid_rate:
        why.append(f"conversion moved from {valid_rate:.1%} on the validation leads to "
                   f"{test_rate:.1%} on the later test leads, which a model fitted on older "
                   "leads cannot know")
    method = report["model"].get("calibration")
    if method in (None, "none"):
        why.append("the probabilities are the model's own (calibration: none)")
    if not why:
        why.append("the calibration fitted on the validation leads does not carry over to the "
                   "test leads")
    lines.append(
        f"Why: {'; '.join(why)}. What to do: retrain on the most recent leads (or with "
        "`--param refit=true`), and compare expected with actual conversions each month "
        "before using the total for planning."
    )
    return lines


def model_card(report: Mapping[str, Any], registry: Mapping[str, Any] | None = None) -> str:
    """The one-page model card in Markdown."""
    t = report["test"]
    s = report["split"]
    m = report["model"]
    verdict = report.get("verdict")
    lines = []
    if verdict:  # the first line: a reader must not take this model for a servable one
        lines += [f"**Not fit to serve, never promoted automatically: {verdict}.**", ""]
    lines += [
        f"# Model card: {report['dataset']}",
        "",
        " ".join(forecast_verdict(report)),
        "",
        f"Trained {report['created']}. Split: **{s['kind']}** "
        f"({s['rows_train']:,} train / {s['rows_valid']:,} validation / "
        f"{s['rows_test']:,} test leads). Trees: {m['best_iteration']}; calibration: "
        f"{m['calibration']}; linear start: {'yes' if m['linear_start'] else 'no'}; "
        f"refit on train + validation: {'yes' if m['refit'] else 'no'}.",
        "",
    ]
    if registry:
        lines += [
            f"Registry: {registry.get('name', 'model')} version **{registry.get('version')}**, "
            f"{'promoted to @champion' if registry.get('promoted') else 'stays @challenger'}"
            f" ({registry.get('reason', '')}).",
            "",
        ]
    for note in report["notes"]:
        lines.append(f"> {note}")
    if report["notes"]:
        lines.append("")
    lines += [
        "## Test slice",
        "",
        "| model | " + " | ".join(HEADLINE) + " |",
        "|---|" + "---|" * len(HEADLINE),
    ]
    lines.append("| **lightgbm** | " + " | ".join(_fmt(t[k]) for k in HEADLINE) + " |")
    for name, metrics in report["baselines"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics[k]) for k in HEADLINE) + " |")
    if report["beats"]:
        lines += [
            "",
            "LightGBM against each baseline (positive = LightGBM better): "
            + "; ".join(
                f"{name}: ROC AUC {d['roc_auc']:+.4f}, Brier {d['brier']:+.4f}, "
                f"ECE {d['ece']:+.4f}"
                for name, d in report["beats"].items()
            )
            + ".",
        ]
    ev = report["expected_vs_actual"]
    f1 = report["threshold_f1"]
    lines += [
        "",
        f"Expected conversions {ev['expected_conversions']:,.1f} against "
        f"{ev['actual_conversions']:,.0f} actual. F1-optimal threshold "
        f"{_fmt(f1['threshold'], 3)} (F1 {_fmt(f1['f1'], 3)}, precision "
        f"{_fmt(f1['precision'], 3)}, recall {_fmt(f1['recall'], 3)}).",
        "",
        "## Tiers",
        "",
        "| tier | cutoff | validation leads | validation rate | test leads | test rate |",
        "|---|---|---|---|---|---|",
    ]
    cutoffs = report["tiers"]["cutoffs"]
    for v, te in zip(report["tiers"]["valid"], report["tiers"]["test"], strict=False):
        cut = cutoffs.get(v["tier"])
        lines.append(
            f"| {v['tier']} | {'≥ ' + _fmt(cut, 3) if cut is not None else '—'} | {v['leads']:,} "
            f"| {_fmt(v['conversion_rate'], 3)} | {te['leads']:,} | "
            f"{_fmt(te['conversion_rate'], 3)} |"
        )
    lines += [
        "",
        "## Lift and gains by decile (test)",
        "",
        "| decile | leads | conversion rate | lift | cumulative gain |",
        "|---|---|---|---|---|",
    ]
    for d in report["deciles"]:
        lines.append(
            f"| {d['decile']} | {d['leads']:,} | {_fmt(d['conversion_rate'], 3)} | "
            f"{_fmt(d['lift'], 2)} | {_fmt(d['cumulative_gain'], 3)} |"
        )
    lines += ["", "## Top fields by gain", "", "| field | share of gain |", "|---|---|"]
    for item in report["importance"]:
        lines.append(f"| {item['field']} | {item['share']:.1%} |")
    leak = report.get("leak_audit") or {}
    if leak.get("dropped"):
        lines += ["", f"Leak audit dropped: {', '.join(leak['dropped'])}."]
    if report.get("tuning"):
        lines += [
            "",
            f"Tuned with Optuna ({report['tuning'].get('trials')} trials, validation "
            f"ROC AUC {_fmt(report['tuning'].get('best_value', float('nan')))}).",
        ]
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({name}.png)" for name in PLOTS]
    return "\n".join(lines) + "\n"


def markdown_to_html(markdown: str, title: str) -> str:
    """The card's small Markdown subset (headings, tables, quotes, images, bold) as HTML."""
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
        "img{width:30%}</style>",
        "</head><body>",
    ]
    table: list[str] = []

    def inline(text: str) -> str:
        escaped = html.escape(text)
        parts = escaped.split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

    def flush() -> None:
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            out.append("<table>")
            for i, row in enumerate(rows):
                cells = [c.strip() for c in row.strip().strip("|").split("|")]
                tag = "th" if i == 0 else "td"
                row_html = "".join(f"<{tag}>{inline(c)}</{tag}>" for c in cells)
                out.append(f"<tr>{row_html}</tr>")
            out.append("</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.startswith("> "):
            out.append(f"<blockquote>{inline(line[2:])}</blockquote>")
        elif line.startswith("!["):
            name = line[2 : line.index("]")]
            src = line[line.index("(") + 1 : -1]
            out.append(f"<img src='{html.escape(src)}' alt='{html.escape(name)}'>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(
    folder: Path,
    report: Mapping[str, Any],
    y_test: np.ndarray,
    p_test: np.ndarray,
    baselines: Mapping[str, np.ndarray] | None = None,
    registry: Mapping[str, Any] | None = None,
) -> Path:
    """report.json, the PNG plots and model_card.md / model_card.html into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(
        json.dumps(report, indent=2, default=_plain), encoding="utf-8"
    )
    write_plots(folder, report, y_test, p_test, baselines)
    write_card(folder, report, registry)
    log.info("report written to %s", folder)
    return folder


def write_card(
    folder: Path, report: Mapping[str, Any], registry: Mapping[str, Any] | None = None
) -> None:
    card = model_card(report, registry)
    (folder / "model_card.md").write_text(card, encoding="utf-8")
    (folder / "model_card.html").write_text(
        markdown_to_html(card, f"Model card: {report['dataset']}"), encoding="utf-8"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return str(value)
