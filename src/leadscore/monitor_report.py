"""The monitoring report as one self-contained HTML file: the plots embedded as base64 PNG, the
cohort, tier, drift and alarm tables, every value escaped; nothing fetched from elsewhere, so it
can be mailed, attached to a ticket or opened offline."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from leadscore.evaluate import PSI_WARNING
from leadscore.monitor import PLOTS, write_plots
from leadscore.scoring import TIERS

REPORT_HTML = "report.html"
PLOT_TITLES = {
    "calibration": "Expected vs actual conversions over time",
    "auc": "Realized ROC AUC over time",
    "tiers": "Conversion rate per tier",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 8px}td.n{text-align:right}"
    "th{background:#f3f3f3}figure{display:inline-block;margin:0 1em 1em 0}"
    "figure img{width:30em;max-width:100%}.alarm{color:#a00}"
)


def write_html(folder: Path, report: dict[str, Any]) -> Path:
    """`report.html` in `folder`, drawing the plots there first (`monitor.write_plots`)."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = dict(zip(PLOTS, write_plots(folder, report), strict=True))
    path = folder / REPORT_HTML
    path.write_text(render(report, {k: p.read_bytes() for k, p in plots.items()}),
                    encoding="utf-8")
    return path


def render(report: dict[str, Any], plots: dict[str, bytes]) -> str:
    """The page; `plots` maps a PLOTS name to its PNG bytes."""
    e = _text
    title = f"Monitoring: {report['model']}"
    out = [
        "<!doctype html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>As of {e(report['as_of'])}, {e(report['period'])}ly cohorts, a "
        f"{e(report['horizon_days'])}-day horizon.</p>",
        f"<p>{e(report['rule'])}</p>",
    ]
    if report.get("outcome_source"):
        out.append(f"<p>Outcomes: {e(report['outcome_source'])}</p>")
    alarms = report.get("alarms") or []
    out.append("<h2>Alarms</h2>")
    if alarms:
        out.append("<ul>" + "".join(f"<li class='alarm'>{e(a)}</li>" for a in alarms) + "</ul>")
    else:
        out.append("<p>None.</p>")
    out.append("<h2>Plots</h2>")
    for name, png in plots.items():
        label = PLOT_TITLES.get(name, name)
        data = base64.b64encode(png).decode("ascii")
        out.append(f"<figure><img alt='{e(label)}' src='data:image/png;base64,{data}'>"
                   f"<figcaption>{e(label)}</figcaption></figure>")
    cohorts = report.get("cohorts") or []
    out.append("<h2>Expected vs actual</h2>")
    out.append(_table(
        ["cohort", "version", "scored", "matured", "pending", "expected", "actual", "gap",
         "ROC AUC", "test AUC", "PR AUC", "ECE"],
        [[c["cohort"], c["model_version"], c["scored"], c["matured"], c["pending"],
          _num(c["expected"], 1), c["actual"], _num(c["gap"], 3), _num(c["roc_auc"]),
          _num(c["test_roc_auc"]), _num(c["pr_auc"]), _num(c["ece"])] for c in cohorts],
        numeric_from=2,
    ))
    out.append("<h2>Conversion rate per tier (matured leads)</h2>")
    out.append(_table(
        ["cohort", "version", *(f"tier {t}" for t in TIERS)],
        [[c["cohort"], c["model_version"],
          *(f"{_num(c['tiers'][t]['conversion_rate'])} of {c['tiers'][t]['leads']}"
            for t in TIERS)] for c in cohorts],
        numeric_from=2,
    ))
    out.append(f"<h2>Input drift (PSI against training; above {e(PSI_WARNING)} is a "
               "shift)</h2>")
    rows = []
    for c in cohorts:
        if c.get("psi"):
            worst = sorted(c["psi"].items(), key=lambda kv: -kv[1])[:5]
            rows.append([c["cohort"], c["model_version"],
                         ", ".join(f"{k} {v:.3f}" for k, v in worst)])
    out.append(_table(["cohort", "version", "fields that moved most"], rows) if rows
               else "<p>No drift measured (no training profile for these versions).</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _text(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[Any]], numeric_from: int | None = None) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f"<td class='n'>{_text(v)}</td>" if numeric_from is not None and i >= numeric_from
            else f"<td>{_text(v)}</td>" for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
