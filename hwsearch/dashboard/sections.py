"""The dashboard's HTML tables and captions: run facts, winners, trials, the zoom note."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from hwsearch.dashboard.data import DashboardData, DevicePanel
from hwsearch.dashboard.reference import USEFUL_DROP
from hwsearch.dashboard.runinfo import RunInfo


def _cell(value: Any, shown: str | None = None) -> str:
    if value is None:
        return '<td data-v=""></td>'
    if shown is None:
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    return f'<td data-v="{html.escape(str(value), quote=True)}">{html.escape(shown)}</td>'


def sortable_table(table_id: str, columns: Sequence[str], rows: Sequence[str]) -> str:
    head = "".join(f'<th onclick="hwSort(this)">{html.escape(c)}</th>' for c in columns)
    body = "\n".join(rows)
    return f'<div class="scroll"><table class="trials" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>'


def trials_table_html(data: DashboardData) -> str:
    rows = ["<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in data.table_rows]
    return sortable_table("trials", data.table_columns, rows)


def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def _winner_cells(w, devs: Sequence[str]) -> list[str]:
    label = "dense fp32" if w.trial is None else str(w.trial) + ("".join(f" ★{d}" for d in w.recommended))
    cells = [_cell(-1 if w.trial is None else w.trial, label), _cell("yes" if w.warm_start else "no"), _cell(w.val_score), _cell(w.test_score)]
    for d in devs:
        sp, basis = w.speedup.get(d), w.speedup_basis.get(d, "")
        cells += [_cell(w.predicted_ms.get(d), _ms(w.predicted_ms.get(d))), _cell(w.measured_ms.get(d), _ms(w.measured_ms.get(d))),
                  _cell(sp, f"{sp:.2f}×" + (f" ({basis})" if basis else "") if sp is not None else None)]
    verdict = "not exported" if w.ok is None else ("ok" if w.ok else "FAILED")
    return cells + [_cell(w.params), _cell(w.size_bytes, f"{w.size_bytes / 1024:.0f}" if w.size_bytes else None), _cell(verdict),
                    _cell(getattr(w, "recovery", "") or None), _cell(w.file or None)]


def winners_table_html(data: DashboardData) -> str:
    """One row per winner (and the dense fp32 model first): scores, latency predicted and measured, speedup vs dense, size, its file."""
    devs = data.devices
    cols = ["trial", "warm start", f"{data.metric} (val)", f"{data.metric} (test)"]
    cols += [c for d in devs for c in (f"predicted ms {d}", f"measured ms {d}", f"speedup {d}")] + ["params", "size (KiB)", "export", "recovery", "file"]
    rows = [f'<tr class="{w.source}{" dense" if w.trial is None else ""}">' + "".join(_winner_cells(w, devs)) + "</tr>"
            for w in ((data.dense_row,) if data.dense_row else ()) + data.winner_rows]
    if not data.winner_rows:
        return '<p class="note">No Pareto winners in this run yet.</p>'
    return sortable_table("winners", cols, rows)


def ort_defaults_html(data: DashboardData) -> str:
    """ONNX Runtime's one-line recipes (``--baseline ort-default``) as measured beside the dense fp32 file in the same rounds."""
    if not data.ort_defaults:
        return '<p class="note">Not measured for this run yet: <code>hwsearch search CONFIG --baseline ort-default</code>.</p>'
    devs = data.devices
    cols = ["recipe", f"{data.metric} (val)", f"{data.metric} (test)"] + [c for d in devs for c in (f"measured ms {d}", f"speedup {d} (measured)", f"predicted ms {d}")]
    rows = []
    for r in data.ort_defaults:
        cells = [_cell(r.get("name")), _cell(r.get("accuracy")), _cell(r.get("test_score"))]
        for d in devs:
            ms, sp, pred = ((r.get(k) or {}).get(d) for k in ("measured_ms", "speedup", "predicted_ms"))
            cells += [_cell(ms, _ms(ms)), _cell(sp, None if sp is None else f"{sp:.2f}×"), _cell(pred, _ms(pred))]
        rows.append("<tr>" + "".join(cells + [_cell(r.get("size_bytes")), _cell(r.get("call"))]) + "</tr>")
    return sortable_table("ortdefaults", cols + ["size_bytes", "call"], rows)


def zoom_note(panels: Sequence[DevicePanel]) -> str:
    """The caption saying which trials lie under each panel's plotted range (or that none do)."""
    notes = []
    for p in panels:
        if p.below_count and p.floor is not None:
            where = ", ".join(f"{label}: {n}" for label, n in p.below_count.items())
            basis = "the dense fp32 score" if p.dense else "the best score"
            notes.append(f"{p.device}: {sum(p.below_count.values())} trials score below {p.floor:.3f} (more than {USEFUL_DROP:.0%} under {basis}) and lie under the "
                         f"plotted range ({where}); the search's are the grey triangles on the lower edge. Double-click the plot to zoom out to every trial.")
    return html.escape(" ".join(notes)) if notes else "Every completed trial is inside the plotted range."


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def run_info_html(info: RunInfo | None) -> str:
    """Dates and sessions, the config's main keys (the whole config folded below), and each device table's version."""
    if info is None:
        return ""
    when = [("first trial", info.started or "n/a"), ("last trial", info.finished or "n/a"), ("sessions", str(info.sessions)),
            ("warm starts", ", ".join(map(str, info.warm_starts)) or "none")]
    tables = []
    for t in info.tables:
        f = t.fields
        tables.append((f"table {t.device}", f"{t.path} · sha256 {t.sha256 or 'n/a'} · built {f.get('date', 'n/a')} on {f.get('cpu_model', '?')} · "
                       f"{f.get('runtime', '?')} {f.get('runtime_version', '')} · {f.get('threads', '?')} thread(s) · {f.get('table_rows', '?')} rows · "
                       f"statistic {t.statistic or '?'} · adaptation {t.adaptation}"))
    full = html.escape(json.dumps(info.config, indent=1, sort_keys=True))
    grid = "".join(f"<div><span>{html.escape(k)}</span> {html.escape(v)}</div>" for k, v in info.summary)
    return (f'{_kv_table(when + tables)}<div class="cfg">{grid}</div>'
            f"<details><summary>full config (config.json)</summary><pre>{full}</pre></details>")
