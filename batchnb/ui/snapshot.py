"""Static HTML of a job's, pool's or cost's state: kept in executed notebooks
(papermill, nbconvert) and readable on a code host, where no widget runs.

Inline styles only (no stylesheet survives nbconvert's sanitising on code
hosts), with colours that read on light and dark backgrounds.

>>> from batchnb.result import JobResult
>>> html = job_result_html(JobResult("j", "completed", "all_tasks_complete", {"succeeded": 3}, [], 1.5))
>>> "3 succeeded" in html
True
"""

from __future__ import annotations

import html
import json
import sys

from ..states import TASK_STATE_ORDER

COLOURS = {"pending": "#9e9e9e", "active": "#42a5f5", "running": "#1565c0", "succeeded": "#2e7d32",
           "failed": "#c62828", "blocked": "#ef6c00", "cancelled": "#6d4c41",
           "idle": "#66bb6a", "starting": "#90caf9", "preempted": "#ef6c00", "unusable": "#c62828",
           "start_task_failed": "#e57373", "leaving": "#9e9e9e", "offline": "#9e9e9e"}
ORDER = tuple(s.value for s in TASK_STATE_ORDER)
BOX = "font-family:sans-serif;font-size:13px;border:1px solid #8884;border-radius:4px;padding:6px 10px;max-width:760px"
MAX_FAILURES_SHOWN = 20
# JupyterLab right-aligns rendered tables and stripes them: say how ours read.
TD = "text-align:left;vertical-align:top;padding:1px 6px"


def _e(x) -> str:
    return html.escape(str(x))


def state_bar(counts: dict, width: int = 320) -> str:
    total = sum(counts.values()) or 1
    parts = "".join(
        f'<div title="{_e(s)}: {n}" style="width:{100 * n / total:.3f}%;background:{COLOURS.get(s, "#999")}"></div>'
        for s, n in sorted(counts.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99) if n)
    return (f'<div style="display:flex;width:{width}px;height:10px;border-radius:3px;overflow:hidden;'
            f'background:#8883;margin:4px 0">{parts}</div>')


def counts_text(counts: dict) -> str:
    """``"21 tasks: 20 succeeded, 1 failed"`` (states in the engine's order)."""
    total = sum(counts.values())
    parts = ", ".join(f"{counts[s]} {s}" for s in ORDER if counts.get(s))
    return f"{total} task{'' if total == 1 else 's'}: {parts or 'none'}"


def _stderr_tails(job_id: str, task_ids: list[str]) -> dict[str, str]:
    """The last attempt's stderr tail of each failed task, from the ledger of an open pool.

    A JobResult carries no ledger; the pools of this process know where it is.
    """
    pools = getattr(sys.modules.get("batchnb.pool"), "_open_pools", ())
    for pool in list(pools):
        try:
            if pool.ledger.job(job_id) is None:
                continue
            out = {}
            for tid in task_ids:
                attempts = pool.ledger.attempts(job_id, tid)
                if attempts and attempts[-1].get("stderr_tail"):
                    out[tid] = attempts[-1]["stderr_tail"]
            return out
        except Exception:  # a closed ledger: show the failures without their tails
            continue
    return {}


def failures_html(failures: list, total: int | None = None, tails: dict | None = None) -> str:
    if not failures:
        return ""
    shown = failures[:MAX_FAILURES_SHOWN]
    tails = tails or {}
    rows = []
    for f in shown:
        tail = f.get("stderr") or tails.get(f["task_id"]) or ""
        why = _e(f.get("message") or f.get("category") or "")
        if tail:
            why += (f"<details><summary>stderr</summary><pre style='white-space:pre-wrap;max-height:12em;"
                    f"overflow:auto;margin:2px 0'>{_e(tail[-2000:])}</pre></details>")
        code = "" if f.get("exit_code") is None else f["exit_code"]
        rows.append(f"<tr><td style='{TD}'><code>{_e(f['task_id'])}</code></td><td style='{TD}'>{_e(f['state'])}</td>"
                    f"<td style='{TD};text-align:right'>{_e(code)}</td><td style='{TD}'>{_e(f.get('node') or '')}</td>"
                    f"<td style='{TD}'>{why}</td></tr>")
    total = len(failures) if total is None else total
    more = f" (first {len(shown)} shown)" if total > len(shown) else ""
    return (f"<details open><summary style='color:#c62828'><b>{total} failed or blocked</b>{more}</summary>"
            "<table><tr>" + "".join(f"<th style='{TD}'>{h}</th>" for h in ("task", "state", "exit", "node", "why"))
            + "</tr>"
            + "".join(rows) + "</table></details>")


def cost_html(cost) -> str:
    if cost is None:
        return ""
    if hasattr(cost, "_repr_html_"):
        return f"<div style='margin-top:4px'>{cost._repr_html_()}</div>"
    return f"<div>cost: {_e(cost)}</div>"


def state_words(result) -> str:
    """The job's state word (the one ``job.state`` reads), why it ended, and whether its tasks all ended.

    >>> from batchnb.result import JobResult
    >>> state_words(JobResult("j", "active", "all_tasks_complete", {}, [], 0.0, all_tasks_complete=True))
    "<span data-role='state'>active</span> &middot; <span data-role='tasks-complete'>all tasks complete</span>"
    >>> state_words(JobResult("j", "completed", "terminated", {}, [], 0.0, all_tasks_complete=True))
    "<span data-role='state'>completed</span> (terminated)"
    """
    text = f"<span data-role='state'>{_e(result.state)}</span>"
    if result.state == "completed" and result.reason:
        text += f" ({_e(result.reason)})"
    elif getattr(result, "all_tasks_complete", False):
        text += " &middot; <span data-role='tasks-complete'>all tasks complete</span>"
    elif result.reason:
        text += f" ({_e(result.reason)})"
    return text


def job_result_html(result) -> str:
    counts = {k: v for k, v in result.counts.items() if v}
    failures = list(result.failures)
    tails = _stderr_tails(result.job_id, [f["task_id"] for f in failures[:MAX_FAILURES_SHOWN]
                                          if f.get("state") == "failed"]) if failures else {}
    legend = " ".join(f"<span style='color:{COLOURS.get(s, '#999')}'>&#9632;</span> {_e(s)} <b>{n}</b>"
                      for s, n in sorted(counts.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99))
    return (f"<div class='batchnb-result' data-job='{_e(result.job_id)}' "
            f"data-counts='{_e(json.dumps(counts, sort_keys=True))}' style='{BOX}'>"
            f"<b>job {_e(result.job_id)}</b>: {state_words(result)} in {result.wall_time:.1f}s"
            f"{state_bar(counts)}<div>{legend}</div><div>{_e(counts_text(counts))}</div>"
            f"{cost_html(result.cost)}{failures_html(failures, tails=tails)}</div>")


def pool_html(state: dict) -> str:
    """A static table of a pool's nodes (the PoolView's state)."""
    rows = "".join(
        f"<tr><td style='{TD}'>{_e(n['id'])}</td><td style='{TD}'>{_e(n['group'])}</td>"
        f"<td style='{TD}'><span style='color:{COLOURS.get(n['state'], '#999')}'>&#9632;</span> {_e(n['state'])}</td>"
        f"<td style='{TD}'>{n['used']}/{n['slots']}</td><td style='{TD}'>{_e(', '.join(n['running']))}</td></tr>"
        for n in state["nodes"])
    sizes = ", ".join(f"{g} {state['current'].get(g, 0)} up / target {t}" for g, t in state["targets"].items())
    return (f"<div class='batchnb-pool' style='{BOX}'><b>pool {_e(state['pool'])}</b>: {_e(sizes)}"
            + (" (autoscale)" if state.get("autoscale") else "")
            + "<table><tr>" + "".join(f"<th style='{TD}'>{h}</th>" for h in ("node", "group", "state", "slots", "running"))
            + "</tr>"
            + rows + "</table></div>")


def job_view_html(state: dict) -> str:
    """A static copy of a JobView's state (:meth:`batchnb.ui.model.JobModel.state`)."""
    counts = {k: v for k, v in state["counts"].items() if v}
    return (f"<div class='batchnb-job' data-job='{_e(state['job_id'])}' style='{BOX}'>"
            f"<b>job {_e(state['job_id'])}</b>: <span data-role='state'>{_e(state['job_state'])}</span>"
            f" &middot; elapsed {state['elapsed']:.1f}s &middot; {state['throughput']:g} tasks/s"
            f" &middot; retries {state['retries']} &middot; requeues {state['requeues']}"
            f"{state_bar(counts)}<div>{_e(counts_text(counts))}</div>"
            f"{failures_html(state['failures'], state['failures_total'])}</div>")


def _money(x, currency: str) -> str:
    return "—" if x is None else f"{x:,.4f} {_e(currency)}"


def cost_view_html(state: dict) -> str:
    """A static copy of a CostView's state (:meth:`batchnb.ui.model.CostModel.state`)."""
    cur = state["currency"]
    head = (f"<b>{_money(state['total'], cur)}</b> at {_money(state['rate'], cur)}/h" if state["metered"]
            else "no price table: node-hours")
    if state["metered"] and state.get("budget") is not None:
        head += f" &middot; budget {_money(state['budget'], cur)}"
    rows = "".join(
        f"<tr data-group='{_e(g)}'><td style='{TD}'>{_e(g)}</td><td style='{TD}'>"
        f"{_money(v['spent'], cur) if state['metered'] else '—'}</td>"
        f"<td style='{TD}'>{(v.get('node_hours') or 0):.4f}</td><td style='{TD}'>{v.get('nodes_up', 0)}</td></tr>"
        for g, v in state["groups"].items())
    return (f"<div class='batchnb-cost' style='{BOX}'><b>cost of {_e(state['scope'])}</b>: {head}"
            "<table><tr>" + "".join(f"<th style='{TD}'>{h}</th>" for h in ("group", "spent", "node-hours", "nodes up"))
            + "</tr>" + rows + "</table></div>")
