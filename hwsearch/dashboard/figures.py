"""The dashboard's plotly figures, one function per panel (numbers from :mod:`hwsearch.dashboard.data`)."""

from __future__ import annotations

from collections.abc import Sequence

from hwsearch.dashboard.data import Curve, DashboardData, DevicePanel, RecoveredPoint, WinnerLayers
from hwsearch.dashboard.reference import speedup

COLORS = {"search": "#1f77b4", "uniform": "#ff7f0e", "random": "#2ca02c"}
PRECISION_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int8d": 8}  # int8d: dynamic int8 (hwsearch.policy)
PRECISION_COLORS = {"fp32": "#4c72b0", "fp16": "#dd8452", "int8": "#55a868", "int8d": "#8c8c3c"}


def _color(label: str) -> str:
    return COLORS.get(label.split(" ", maxsplit=1)[0], "#7f7f7f")


def _speedups(p: DevicePanel, xs: Sequence[float]) -> list[str]:
    return [f"{s:.1f}×" if (s := speedup(p.dense, x)) is not None else "" for x in xs]


def _hover(kind: str) -> str:
    return "trial %{customdata[0]}<br>%{x:.4f} ms (%{customdata[1]} vs dense)<br>score %{customdata[2]:.4f}<extra>" + kind + "</extra>"


def _points(go, p: DevicePanel, c: Curve, name: str, group: str, first: bool, marker: dict, kind: str, **kw):
    custom = [[n, s or "n/a", y] for n, s, y in zip(c.trials, _speedups(p, c.x), c.y)]
    return go.Scatter(x=c.x, y=c.y, mode=kw.pop("mode", "markers"), name=name, legendgroup=group, showlegend=first, marker=marker,
                      customdata=custom, hovertemplate=_hover(kind), **kw)


def _below(go, p: DevicePanel, first: bool):
    """Trials under the plotted range, drawn on its lower edge (their real score in the hover)."""
    real = {n: y for n, y in zip(p.feasible.trials + p.infeasible.trials, p.feasible.y + p.infeasible.y)}
    custom = [[n, s or "n/a", real.get(n, float("nan"))] for n, s in zip(p.below.trials, _speedups(p, p.below.x))]
    return go.Scatter(x=p.below.x, y=p.below.y, mode="markers", name="below the range (score in hover)", legendgroup="below", showlegend=first,
                      marker={"symbol": "triangle-down", "color": "#999999", "size": 9}, cliponaxis=False, customdata=custom,
                      hovertemplate=_hover("below the plotted range"))


def _front_panel(go, fig, p: DevicePanel, col: int, exported: set[int]) -> None:
    first = col == 1
    fig.add_trace(_points(go, p, p.infeasible, "search: over budget", "inf", first, {"symbol": "x", "color": "#bbbbbb", "size": 7}, "over budget"), 1, col)
    fig.add_trace(_points(go, p, p.feasible, "search: trial", "feas", first, {"color": COLORS["search"], "size": 6, "opacity": 0.45}, "feasible"), 1, col)
    fig.add_trace(_points(go, p, p.warm, "warm start", "warm", first, {"symbol": "diamond-open", "color": "#6a3d9a", "size": 12, "line": {"width": 2}},
                          "warm start"), 1, col)
    for i, front in enumerate(p.fronts):
        label = {"mode": "lines+markers+text", "text": _speedups(p, front.x), "textposition": "top left", "textfont": {"size": 11}} if i == 0 else {}
        fig.add_trace(_points(go, p, front, f"front: {front.label}", front.label, first, {"color": _color(front.label), "size": 7}, front.label,
                              line={"shape": "hv", "color": _color(front.label), "width": 2.5}, **({"mode": "lines+markers"} | label)), 1, col)
    if p.below.trials:
        fig.add_trace(_below(go, p, first), 1, col)
    main = p.fronts[0] if p.fronts else None
    if main is not None and exported:
        pts = [(x, y, t) for x, y, t in zip(main.x, main.y, main.trials) if t in exported]
        fig.add_trace(go.Scatter(x=[q[0] for q in pts], y=[q[1] for q in pts], mode="markers", name="exported winner", legendgroup="exp", showlegend=first,
                                 marker={"symbol": "star", "size": 14, "color": "gold", "line": {"color": "black", "width": 1}}, hoverinfo="skip"), 1, col)
    if p.dense is not None:
        fig.add_trace(go.Scatter(x=[p.dense.latency_ms], y=[p.dense.score], mode="markers+text", name="dense fp32 (1.0×)", legendgroup="dense", showlegend=first,
                                 text=["dense fp32"], textposition="bottom center", marker={"symbol": "square", "size": 11, "color": "black"},
                                 hovertemplate=f"dense fp32 (trial {p.dense.trial}, {p.dense.series})<br>%{{x:.4f}} ms<br>score %{{y:.4f}}<extra></extra>"), 1, col)
    _budget(fig, p, col)
    if p.score_range is not None:
        fig.update_yaxes(range=list(p.score_range), row=1, col=col)


def _recovered(go, fig, p: DevicePanel, col: int, recovered: Sequence[RecoveredPoint]) -> None:
    """Recovered exports: a dotted line from each winner's unrecovered score up (or down) to its recovered one, at its predicted latency."""
    pts = [r for r in recovered if r.predicted_ms.get(p.device) is not None and r.before is not None and r.after is not None]
    if not pts:
        return
    first = col == 1
    xs = [v for r in pts for v in (r.predicted_ms[p.device], r.predicted_ms[p.device], None)]
    ys = [v for r in pts for v in (r.before, r.after, None)]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"dash": "dot", "color": "#d62728", "width": 1.5}, name="recovery (before → after)",
                             legendgroup="rec", showlegend=False, hoverinfo="skip"), 1, col)
    fig.add_trace(go.Scatter(x=[r.predicted_ms[p.device] for r in pts], y=[r.after for r in pts], mode="markers", name="recovered export (after)",
                             legendgroup="rec", showlegend=first, marker={"symbol": "star-triangle-up", "size": 13, "color": "#d62728", "line": {"color": "black", "width": 1}},
                             customdata=[[r.trial, r.steps, r.before, r.kept] for r in pts],
                             hovertemplate="trial %{customdata[0]} recovered (%{customdata[1]} steps, %{customdata[3]})<br>%{x:.4f} ms<br>"
                                           "score %{customdata[2]:.4f} → %{y:.4f}<extra>recovered export</extra>"), 1, col)
    if p.score_range is not None:  # the zoomed range grows to show every recovered score
        lo, hi = p.score_range
        top, bottom = max(r.after for r in pts), min(r.after for r in pts)
        pad = 0.04 * (max(hi, top) - min(lo, bottom))
        fig.update_yaxes(range=[min(lo, bottom - pad), max(hi, top + pad)], row=1, col=col)


def _budget(fig, p: DevicePanel, col: int) -> None:
    """The budget line; a budget far right of every trial is named at the axis' right edge instead of stretching the axis."""
    if p.budget_ms is None:
        return
    xs = [*p.feasible.x, *p.infeasible.x, *(x for f in p.fronts for x in f.x), *([p.dense.latency_ms] if p.dense else [])]
    right = max(xs, default=p.budget_ms)
    if p.budget_ms <= 1.5 * right:
        fig.add_vline(x=p.budget_ms, line={"dash": "dash", "color": "crimson"}, annotation_text=f"budget {p.budget_ms:g} ms", row=1, col=col)
        return
    fig.update_xaxes(range=[0, right * 1.08], row=1, col=col)
    axis = "x" if col == 1 else f"x{col}"
    fig.add_annotation(x=1, y=1, xref=f"{axis} domain", yref=f"{axis.replace('x', 'y')} domain", xanchor="right", yanchor="top", showarrow=False,
                       text=f"budget {p.budget_ms:g} ms →", font={"color": "crimson"})


def fronts_figure(panels: Sequence[DevicePanel], exported: set[int], metric: str = "accuracy", recovered: Sequence[RecoveredPoint] = ()):
    """Score vs latency, one subplot per device: fronts of every series (the search's labelled with
    its speedup vs dense fp32), trials, warm starts, the dense point, the budget line, the zoomed range, and
    each recovered export's score before and after recovery."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = [f"device {p.device}" + (f" (dense fp32: {p.dense.latency_ms:.3f} ms)" if p.dense else "") for p in panels]
    fig = make_subplots(rows=1, cols=max(1, len(panels)), subplot_titles=titles)
    for col, p in enumerate(panels, start=1):
        _front_panel(go, fig, p, col, exported)
        _recovered(go, fig, p, col, recovered)
        fig.update_xaxes(title_text=f"predicted latency on {p.device} (ms); labels: speedup vs dense fp32", row=1, col=col)
        fig.update_yaxes(title_text=f"{metric} (validation)" if col == 1 else None, row=1, col=col)
    fig.update_layout(height=520, margin={"t": 50}, legend={"orientation": "h", "y": -0.22})
    return fig


def hypervolume_figure(panels: Sequence[DevicePanel], warm: Sequence[int] = ()):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = [f"device {p.device} (reference: score {p.reference[0]:.4f}, {p.reference[1]:.3g} ms)" for p in panels]
    fig = make_subplots(rows=1, cols=max(1, len(panels)), subplot_titles=titles)
    for col, p in enumerate(panels, start=1):
        for curve in p.hypervolume:
            fig.add_trace(go.Scatter(x=curve.x, y=curve.y, mode="lines", line={"shape": "hv", "color": _color(curve.label)}, name=curve.label,
                                     legendgroup=curve.label, showlegend=col == 1), 1, col)
        if warm:
            fig.add_vrect(x0=min(warm) - 0.5, x1=max(warm) + 0.5, fillcolor="#6a3d9a", opacity=0.08, line_width=0, row=1, col=col,
                          annotation_text="warm starts", annotation_position="top left")
        fig.update_xaxes(title_text="trial number", row=1, col=col)
        fig.update_yaxes(title_text="hypervolume (share of the reference box)" if col == 1 else None, rangemode="tozero", row=1, col=col)
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


