"""Render a run's :class:`~hwsearch.dashboard.data.DashboardData` to one self-contained HTML page.

Rendering only: the numbers come from :mod:`hwsearch.dashboard.data`. plotly.js is embedded once
(inline, no CDN), so the page works offline. The page records JavaScript errors in the
``data-js-errors`` attribute of ``<html>`` and the number of drawn plots in ``data-plots-rendered``
(the browser test reads both from the rendered DOM).
"""

from __future__ import annotations

import html
from pathlib import Path

from hwsearch.dashboard.data import DashboardData, load_dashboard_data
from hwsearch.dashboard.figures import fronts_figure, hypervolume_figure, latency_check_figure, winner_figure
from hwsearch.dashboard.reference import HV_LATENCY_MARGIN, HV_SCORE_MARGIN
from hwsearch.dashboard.sections import ort_defaults_html, run_info_html, trials_table_html, winners_table_html, zoom_note

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
table.kv { border-collapse: collapse; font-size: 12px; margin: 0 1.5em 0.5em 0; vertical-align: top; display: inline-table; }
table.kv th { text-align: left; padding: 1px 8px 1px 0; color: #555; font-weight: normal; white-space: nowrap; vertical-align: top; } table.kv td { padding: 1px 0; }
div.cfg { display: grid; grid-template-columns: repeat(4, minmax(12em, max-content)); column-gap: 2em; font-size: 12px; margin: 0.4em 0; }
div.cfg span { color: #555; } tr.predicted td { color: #666; } tr.dense td { font-style: italic; background: #f7f7f7; } details pre { font-size: 11px; max-height: 300px; overflow: auto; }
</style>"""


def _section(title: str, note: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2><p class=\"note\">{note}</p>{body}</section>"


FRONTS_NOTE = ("Each subplot is one device. Lines: the Pareto front of the search and of each baseline (feasible trials only); the search's front points "
               "are labelled with their speedup over the dense fp32 model (black square) on the same device's predictions. Dots: the search's trials "
               "within budget; grey crosses: over budget; purple diamonds: warm starts (enqueued first, not sampled). Dashed red: the latency budget. "
               "Stars: exported winners; red triangles: exported winners after recovery (<code>hwsearch export --recover-steps</code>), "
               "joined by a dotted line to their score before it. ")
WINNERS_NOTE = ("The Pareto winners (and any other exported trial). Test scores, measured latency and files come from the export "
                "(<code>hwsearch export RUN --pareto</code>); rows in grey are not exported yet and show predictions only. Speedups are against the "
                "dense fp32 model (first row): measured over measured when the export measured both, else predicted over predicted. ★DEVICE: the pick "
                "export/index.json recommends for that device. Recovery: how export's distillation changed the shipped file's scores "
                "(the validation column is the search's score, before recovery). Paths are relative to the run directory.")
HV_NOTE = ("Area dominated by each series' feasible trials so far, by trial number, as a share of the reference box: from the reference "
           f"(the lowest score on the fronts inside the plotted range, less {HV_SCORE_MARGIN:.0%} of their span, and the lower of the budget and {HV_LATENCY_MARGIN:g}× the dense fp32 "
           "latency) to the best front score at 0 ms. The reference is recomputed from all trials each time the page is written, so collapsed "
           "trials do not flatten the curve. Shaded: the warm starts.")


def _figures(data: DashboardData, active: int, exported: set[int]) -> dict[str, str]:
    import plotly.io as pio

    warm = data.info.warm_starts if data.info else ()
    figs = (("fronts", fronts_figure(data.panels, exported, data.metric, data.recovered)), ("latency", latency_check_figure(data)),
            ("winner", winner_figure(data.winners, active)), ("hypervolume", hypervolume_figure(data.panels, warm)))
    return {name: pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"plot-{name}", config=PLOT_CONFIG) for name, fig in figs}


def _header(data: DashboardData, exported: set[int]) -> str:
    n_trials = sum(1 for r in data.table_rows if r[0].startswith("search"))
    title = f"hwsearch — {html.escape(data.run)}"
    when = f"{data.info.started} – {data.info.finished} · " if data.info and data.info.started else ""
    return (f"<h1>{title}</h1><p class=\"note\">{html.escape(when)}sampler {html.escape(data.sampler)} · {n_trials} trials · devices: "
            f"{html.escape(', '.join(data.devices))} · {len(data.winners)} Pareto winners · {len(exported)} exported</p>{run_info_html(data.info)}")


def render(data: DashboardData, winner: int | None = None) -> str:
    """The whole page as one HTML string (plotly.js inline)."""
    from plotly.offline import get_plotlyjs

    order = [w.trial for w in data.winners]
    best = max(range(len(order)), key=lambda i: data.winners[i].accuracy) if order else 0
    active = order.index(winner) if winner in order else best
    exported = {e.trial for e in data.exports}
    figs = _figures(data, active, exported)
    metric = html.escape(data.metric.capitalize())
    sections = [
        _section(f"{metric}–latency fronts", html.escape(FRONTS_NOTE) + zoom_note(data.panels), figs["fronts"]),
        _section("Winners", WINNERS_NOTE, winners_table_html(data)),
        _section("ONNX Runtime's one-line defaults", "What a user gets from ONNX Runtime's whole-model quantization in one line, scored like the trials and measured with each table's session settings, interleaved with the dense fp32 file in the same rounds (each keeps its fastest); compare their measured speedups with the winners' measured ones.", ort_defaults_html(data)),
        _section("Hypervolume over trials", html.escape(HV_NOTE), figs["hypervolume"]),
        _section("Predicted vs measured latency", "Exported winners: latency predicted from the device's table against latency re-measured on the exporting machine with the table's session settings. Points on the dotted line were predicted exactly; crosses failed an export check.", figs["latency"]),
        _section("A winner's policy", "Pick a Pareto winner: its keep ratio per channel group (1.0 keeps every channel) and each layer's precision.", figs["winner"]),
        _section("Trials", "Every trial of the search and the baselines. Click a column header to sort.", trials_table_html(data)),
    ]
    title = f"hwsearch — {html.escape(data.run)}"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>{ERROR_HOOK}{STYLE}"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>{_header(data, exported)}{''.join(sections)}{PAGE_SCRIPT}</body></html>\n")


def write_dashboard(run_dir: str | Path, out: str | Path | None = None, winner: int | None = None) -> Path:
    """Write ``run_dir/dashboard.html`` (or ``out``) and return its path."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "dashboard.html"
    page = render(load_dashboard_data(run_dir), winner)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
