"""Static HTML of a job's final state: kept in executed notebooks (papermill,
nbconvert) and readable on a code host, where no widget runs."""

from __future__ import annotations

import html

COLOURS = {"pending": "#9e9e9e", "active": "#42a5f5", "running": "#1565c0", "succeeded": "#2e7d32",
           "failed": "#c62828", "blocked": "#ef6c00", "cancelled": "#6d4c41"}


def state_bar(counts: dict, width: int = 320) -> str:
    total = sum(counts.values()) or 1
    parts = "".join(
        f'<div title="{s}: {n}" style="width:{100 * n / total:.3f}%;background:{COLOURS.get(s, "#999")}"></div>'
        for s, n in counts.items() if n)
    return (f'<div style="display:flex;width:{width}px;height:10px;border-radius:3px;overflow:hidden;'
            f'background:#eee">{parts}</div>')


def job_result_html(result) -> str:
    counts = {k: v for k, v in result.counts.items() if v}
    rows = "".join(f"<tr><td>{html.escape(s)}</td><td style='text-align:right'>{n}</td></tr>"
                   for s, n in counts.items())
    fails = "".join(
        f"<li><code>{html.escape(f['task_id'])}</code> {html.escape(f['state'])}"
        + (f" exit {f['exit_code']}" if f.get("exit_code") is not None else "")
        + (f" — {html.escape(str(f.get('message') or ''))[:300]}" if f.get("message") else "") + "</li>"
        for f in result.failures[:20])
    cost = f"<div>cost: {html.escape(str(result.cost))}</div>" if result.cost is not None else ""
    return (f'<div class="batchnb-result"><b>job {html.escape(result.job_id)}</b>: '
            f'{html.escape(str(result.reason or result.state))} in {result.wall_time:.1f}s'
            f'{state_bar(counts)}<table>{rows}</table>{cost}'
            + (f"<div>failures:</div><ul>{fails}</ul>" if fails else "") + "</div>")
