"""Render a run's :class:`~hwsearch.dashboard.data.DashboardData` to one self-contained HTML page.

Rendering only: the numbers come from :mod:`hwsearch.dashboard.data`. plotly.js is embedded once
(inline, no CDN), so the page works offline. The page records JavaScript errors in the
``data-js-errors`` attribute of ``<html>`` and the number of drawn plots in ``data-plots-rendered``
(the browser test reads both from the rendered DOM).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwsearch.dashboard.data import DashboardData, DevicePanel, WinnerLayers, load_dashboard_data

COLORS = {"search": "#1f77b4", "uniform": "#ff7f0e", "random": "#2ca02c"}
PRECISION_BITS = {"fp32": 32, "fp16": 16, "int8": 8}
PRECISION_COLORS = {"fp32": "#4c72b0", "fp16": "#dd8452", "int8": "#55a868"}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

ERROR_HOOK = """<script>
document.documentElement.setAttribute('data-js-errors', '0');
window.__hwErrors = [];
function __hwError(msg) {
  window.__hwErrors.push(String(msg));
  document.documentElement.setAttribute('data-js-errors', String(window.__hwErrors.length));
  document.documentElement.setAttribute('data-js-error-messages', window.__hwErrors.join(' | ').slice(0, 2000));
}
window.addEventListener('error', function (e) { __hwError(e.message || e); });
window.addEventListener('unhandledrejection', function (e) { __hwError('unhandled rejection: ' + (e.reason && e.reason.message || e.reason)); });
</script>"""

PAGE_SCRIPT = """<script>
function hwSort(th) {
  var table = th.closest('table'), idx = Array.prototype.indexOf.call(th.parentNode.children, th);
  var asc = th.getAttribute('data-order') !== 'asc';
  Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute('data-order'); });
  th.setAttribute('data-order', asc ? 'asc' : 'desc');
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  rows.sort(function (a, b) {
    var x = a.cells[idx].getAttribute('data-v'), y = b.cells[idx].getAttribute('data-v');
    var nx = parseFloat(x), ny = parseFloat(y), c;
    if (!isNaN(nx) && !isNaN(ny)) { c = nx - ny; } else { c = String(x).localeCompare(String(y)); }
    return asc ? c : -c;
  });
  rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
}
window.addEventListener('load', function () {
  var plots = document.querySelectorAll('.js-plotly-plot');
  var drawn = Array.prototype.filter.call(plots, function (p) { return p.querySelector('.main-svg') && p.querySelectorAll('.trace, .bars, .scatterlayer path, g.point').length > 0; });
  document.documentElement.setAttribute('data-plots', String(plots.length));
  document.documentElement.setAttribute('data-plots-rendered', String(drawn.length));
});
</script>"""

STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
section { margin-bottom: 2em; } p.note { color: #555; max-width: 70em; }
table.trials { border-collapse: collapse; font-size: 12px; } table.trials td, table.trials th { border: 1px solid #ddd; padding: 2px 6px; }
table.trials th { cursor: pointer; background: #f3f3f3; position: sticky; top: 0; } th[data-order=asc]::after { content: ' ▲'; } th[data-order=desc]::after { content: ' ▼'; }
div.scroll { max-height: 420px; overflow: auto; display: inline-block; }
</style>"""


def _color(label: str) -> str:
    return COLORS.get(label.split(" ", maxsplit=1)[0], "#7f7f7f")


def fronts_figure(panels: Sequence[DevicePanel], exported: set[int]):
    """Accuracy vs latency, one subplot per device: fronts of every series, (in)feasible trials, budget line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=max(1, len(panels)), subplot_titles=[f"device {p.device}" for p in panels])
    for col, p in enumerate(panels, start=1):
        first = col == 1
        fig.add_trace(go.Scatter(x=p.infeasible.x, y=p.infeasible.y, mode="markers", name="search: infeasible", legendgroup="inf", showlegend=first,
                                 marker={"symbol": "x", "color": "#bbbbbb", "size": 7}, customdata=p.infeasible.trials,
                                 hovertemplate="trial %{customdata}<br>%{x:.4f} ms<br>acc %{y:.4f}<extra>over budget</extra>"), 1, col)
        fig.add_trace(go.Scatter(x=p.feasible.x, y=p.feasible.y, mode="markers", name="search: feasible", legendgroup="feas", showlegend=first,
                                 marker={"color": COLORS["search"], "size": 6, "opacity": 0.45}, customdata=p.feasible.trials,
                                 hovertemplate="trial %{customdata}<br>%{x:.4f} ms<br>acc %{y:.4f}<extra>feasible</extra>"), 1, col)
        for front in p.fronts:
            fig.add_trace(go.Scatter(x=front.x, y=front.y, mode="lines+markers", line={"shape": "hv", "color": _color(front.label), "width": 2.5},
                                     name=f"front: {front.label}", legendgroup=front.label, showlegend=first, customdata=front.trials,
                                     hovertemplate="trial %{customdata}<br>%{x:.4f} ms<br>acc %{y:.4f}<extra>" + front.label + "</extra>"), 1, col)
        main = p.fronts[0] if p.fronts else None
        if main is not None and exported:
            pts = [(x, y, t) for x, y, t in zip(main.x, main.y, main.trials) if t in exported]
            fig.add_trace(go.Scatter(x=[q[0] for q in pts], y=[q[1] for q in pts], mode="markers", name="exported winner", legendgroup="exp", showlegend=first,
                                     marker={"symbol": "star", "size": 13, "color": "gold", "line": {"color": "black", "width": 1}}), 1, col)
        if p.budget_ms is not None:
            fig.add_vline(x=p.budget_ms, line={"dash": "dash", "color": "crimson"}, annotation_text=f"budget {p.budget_ms:g} ms", row=1, col=col)
        fig.update_xaxes(title_text=f"predicted latency on {p.device} (ms)", row=1, col=col)
        fig.update_yaxes(title_text="accuracy (validation)" if first else None, row=1, col=col)
    fig.update_layout(height=480, margin={"t": 50}, legend={"orientation": "h", "y": -0.2})
    return fig


def hypervolume_figure(panels: Sequence[DevicePanel]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=max(1, len(panels)), subplot_titles=[f"device {p.device} (ref: acc {p.reference[0]:.3f}, {p.reference[1]:.3g} ms)" for p in panels])
    for col, p in enumerate(panels, start=1):
        for curve in p.hypervolume:
            fig.add_trace(go.Scatter(x=curve.x, y=curve.y, mode="lines", line={"shape": "hv", "color": _color(curve.label)}, name=curve.label,
                                     legendgroup=curve.label, showlegend=col == 1), 1, col)
        fig.update_xaxes(title_text="trial number", row=1, col=col)
        fig.update_yaxes(title_text="hypervolume (accuracy × ms)" if col == 1 else None, row=1, col=col)
    fig.update_layout(height=360, margin={"t": 50})
    return fig


def latency_check_figure(data: DashboardData):
    """Predicted (device table) vs measured (re-run after export) latency of exported winners."""
    import plotly.graph_objects as go

    fig = go.Figure()
    pts = [e for e in data.exports if e.predicted_ms is not None and e.measured_ms is not None]
    for dev in data.devices:
        mine = [e for e in pts if e.device == dev]
        fig.add_trace(go.Scatter(x=[e.predicted_ms for e in mine], y=[e.measured_ms for e in mine], mode="markers", name=dev,
                                 marker={"size": 10, "symbol": ["circle" if e.ok else "x" for e in mine]}, customdata=[e.trial for e in mine],
                                 hovertemplate="trial %{customdata}<br>predicted %{x:.4f} ms<br>measured %{y:.4f} ms<extra>" + dev + "</extra>"))
    hi = max([max(e.predicted_ms, e.measured_ms) for e in pts] or [1.0]) * 1.1
    fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", name="measured = predicted", line={"dash": "dot", "color": "gray"}))
    if not pts:
        fig.add_annotation(text="no exported winners yet: run `hwsearch export RUN --pareto`", x=hi / 2, y=hi / 2, showarrow=False)
    fig.update_layout(height=420, xaxis_title="predicted latency (ms)", yaxis_title="measured latency on this machine (ms)", margin={"t": 30})
    return fig


def winner_figure(winners: Sequence[WinnerLayers], active: int):
    """Keep ratio per channel group (top) and precision bits per layer (bottom); a menu picks the winner."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.25, subplot_titles=("keep ratio per channel group", "precision per layer (bits)"))
    per = 1 + len(PRECISION_BITS)
    for i, w in enumerate(winners):
        vis = i == active
        fig.add_trace(go.Bar(x=[g for g, _ in w.keep], y=[k for _, k in w.keep], name="keep ratio", marker_color="#8172b3", visible=vis, showlegend=False), 1, 1)
        for prec, bits in PRECISION_BITS.items():
            layers = [name for name, p in w.precision if p == prec]
            fig.add_trace(go.Bar(x=layers, y=[bits] * len(layers), name=prec, marker_color=PRECISION_COLORS[prec], visible=vis), 2, 1)
    buttons = []
    for i, w in enumerate(winners):
        lat = ", ".join(f"{d} {v:.3f} ms" for d, v in w.latency_ms.items())
        visible = [j // per == i for j in range(per * len(winners))]
        buttons.append({"label": f"trial {w.trial}: acc {w.accuracy:.3f}, {lat}", "method": "update", "args": [{"visible": visible}]})
    fig.update_layout(height=560, margin={"t": 90}, barmode="overlay", updatemenus=[{"buttons": buttons, "active": active, "x": 0, "xanchor": "left", "y": 1.22, "yanchor": "top"}] if buttons else [])
    if winners:  # keep the stored layer order (not grouped by precision) whichever winner is shown
        fig.update_xaxes(categoryorder="array", categoryarray=[g for g, _ in winners[active].keep], row=1, col=1)
        fig.update_xaxes(categoryorder="array", categoryarray=[name for name, _ in winners[active].precision], row=2, col=1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(tickvals=[8, 16, 32], range=[0, 34], row=2, col=1)
    if not winners:
        fig.add_annotation(text="no Pareto winners in this run", xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False)
    return fig


def _cell(value: Any) -> str:
    if value is None:
        return '<td data-v=""></td>'
    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    return f'<td data-v="{html.escape(str(value), quote=True)}">{html.escape(shown)}</td>'


def trials_table_html(data: DashboardData) -> str:
    head = "".join(f'<th onclick="hwSort(this)">{html.escape(c)}</th>' for c in data.table_columns)
    body = "\n".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in data.table_rows)
    return f'<div class="scroll"><table class="trials" id="trials"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>'


def _section(title: str, note: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2><p class=\"note\">{note}</p>{body}</section>"


def render(data: DashboardData, winner: int | None = None) -> str:
    """The whole page as one HTML string (plotly.js inline)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    order = [w.trial for w in data.winners]
    best = max(range(len(order)), key=lambda i: data.winners[i].accuracy) if order else 0
    active = order.index(winner) if winner in order else best
    exported = {e.trial for e in data.exports}
    figs = {name: pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"plot-{name}", config=PLOT_CONFIG) for name, fig in (
        ("fronts", fronts_figure(data.panels, exported)), ("latency", latency_check_figure(data)),
        ("winner", winner_figure(data.winners, active)), ("hypervolume", hypervolume_figure(data.panels)))}
    n_trials = sum(1 for r in data.table_rows if r[0].startswith("search"))
    sections = [
        _section("Accuracy–latency fronts", "Each subplot is one device. Lines: the Pareto front of the search and of each baseline (feasible trials only). Dots: the search's trials within budget; grey crosses: over budget. Dashed red: the latency budget. Stars: exported winners.", figs["fronts"]),
        _section("Predicted vs measured latency", "Exported winners: latency predicted from the device's table against latency re-measured on the exporting machine with the table's session settings. Points on the dotted line were predicted exactly; crosses failed an export check.", figs["latency"]),
        _section("A winner's policy", "Pick a Pareto winner: its keep ratio per channel group (1.0 keeps every channel) and each layer's precision.", figs["winner"]),
        _section("Hypervolume over trials", "Area dominated by each search's feasible trials so far (accuracy above the worst completed accuracy, latency below the budget), by trial number: higher and earlier is better.", figs["hypervolume"]),
        _section("Trials", "Every trial of the search and the baselines. Click a column header to sort.", trials_table_html(data)),
    ]
    title = f"hwsearch — {html.escape(data.run)}"
    header = f"<h1>{title}</h1><p class=\"note\">sampler {html.escape(data.sampler)} · {n_trials} trials · devices: {html.escape(', '.join(data.devices))} · {len(data.winners)} Pareto winners · {len(exported)} exported</p>"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>{ERROR_HOOK}{STYLE}"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>{header}{''.join(sections)}{PAGE_SCRIPT}</body></html>\n")


def write_dashboard(run_dir: str | Path, out: str | Path | None = None, winner: int | None = None) -> Path:
    """Write ``run_dir/dashboard.html`` (or ``out``) and return its path."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "dashboard.html"
    page = render(load_dashboard_data(run_dir), winner)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
