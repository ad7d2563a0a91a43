// batchnb JobView: one bar split by state, counts, throughput, elapsed, ETA,
// retries and requeues, and the failed tasks (exit code, node, stderr tail).
// A plain ES module for anywidget: no bundler, no imports from a CDN; batchnb.ui.views
// inlines the shared ./_dom.js into the text it ships.

import { chip, drawOnChanges, h } from "./_dom.js";

/** @typedef {{task_id: string, state: string, exit_code: (number|null), node: (string|null),
 *             message: (string|null), category?: (string|null), stderr?: string, attempt?: number}} Failure */
/** @typedef {import("./_dom.js").Model} Model */

const STATES = ["pending", "active", "running", "succeeded", "failed", "blocked", "cancelled"];
const SHOWN = new Set(["pending", "active", "running", "succeeded", "failed", "blocked"]);

/**
 * A short human duration: 42s, 3m 05s, 2h 07m.
 * @param {number|null|undefined} s seconds
 * @returns {string}
 */
function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * @param {Failure} f
 * @returns {HTMLElement}
 */
function failureRow(f) {
  const what = f.message || f.category || "";
  const cell = h("td", {}, [what]);
  if (f.stderr) {
    cell.append(h("details", {}, [h("summary", {}, ["stderr"]), h("pre", {}, [f.stderr])]));
  }
  return h("tr", { "data-task": f.task_id }, [
    h("td", {}, [h("code", {}, [f.task_id])]),
    h("td", {}, [f.state]),
    h("td", { class: "bnb-num" }, [f.exit_code === null || f.exit_code === undefined ? "" : String(f.exit_code)]),
    h("td", {}, [f.node || ""]),
    cell,
  ]);
}

/** @param {{model: Model, el: HTMLElement}} ctx */
function render({ model, el }) {
  const root = h("div", { class: "bnb bnb-job" });
  el.append(root);
  /** @type {Set<string>} failures the user opened: kept open across redraws */
  const opened = new Set();
  let failuresOpen = false;
  let receivedAt = Date.now();

  function draw() {
    const counts = model.get("counts") || {};
    const total = model.get("total") || 0;
    const done = model.get("done") || 0;
    const state = model.get("job_state");
    const tasksComplete = !!model.get("tasks_complete");
    const live = state !== "completed" && !tasksComplete;
    const ticking = live ? (Date.now() - receivedAt) / 1000 : 0;
    const rate = model.get("throughput") || 0;
    const eta = model.get("eta");

    const head = h("div", { class: "bnb-head" }, [
      h("span", { class: "bnb-title" }, [`job ${model.get("job_id")}`]),
      h("span", { class: `bnb-badge bnb-${state}`, "data-role": "state" }, [state]),
    ]);
    // Azure's job states only: a job that accepts more tasks stays active after its tasks
    // ended ("noaction"); that they all ended is a fact shown beside the state.
    if (tasksComplete && state !== "completed") {
      head.append(h("span", { class: "bnb-badge bnb-tasks-complete", "data-role": "tasks-complete" },
                    ["all tasks complete"]));
    }
    if (model.get("reason")) head.append(h("span", { class: "bnb-muted" }, [model.get("reason")]));

    const bar = h("div", { class: "bnb-bar", title: `${done} of ${total} tasks ended` });
    for (const s of STATES) {
      const n = counts[s] || 0;
      if (!n || !total) continue;
      bar.append(h("div", { class: `bnb-s-${s}`, style: `width:${(100 * n) / total}%`, title: `${s}: ${n}` }));
    }

    const legend = h("div", { class: "bnb-legend" });
    for (const s of STATES) {
      const n = counts[s] || 0;
      if (!SHOWN.has(s) && !n) continue;
      legend.append(chip(s, `${s} `, h("b", { class: "bnb-count", "data-state": s }, [String(n)])));
    }

    const stats = h("div", { class: "bnb-stats" }, [
      h("span", {}, [h("b", { "data-role": "done" }, [`${done}/${total}`]), " ended"]),
      h("span", {}, [h("b", {}, [rate >= 10 ? rate.toFixed(0) : rate.toFixed(2)]), " tasks/s"]),
      h("span", {}, ["elapsed ", h("b", {}, [duration((model.get("elapsed") || 0) + ticking)])]),
      h("span", {}, ["ETA ", h("b", {}, [live && eta !== null ? duration(Math.max(0, eta - ticking)) : "—"])]),
      h("span", {}, ["retries ", h("b", { "data-role": "retries" }, [String(model.get("retries") || 0)])]),
      h("span", {}, ["requeues ", h("b", { "data-role": "requeues" }, [String(model.get("requeues") || 0)])]),
    ]);

    root.replaceChildren(head, bar, legend, stats);
    const problem = model.get("problem");
    if (problem) root.append(h("div", { class: "bnb-problem", role: "alert", "data-role": "problem" }, [problem]));
    /** @type {{node: string, prep: string, release: string, exit_code: (number|null)}[]} */
    const prep = model.get("prep") || [];
    if (prep.length) {
      root.append(h("div", { class: "bnb-muted", "data-role": "prep" }, prep.map((p) => h("div", {}, [
        `${p.node}: preparation ${p.prep || "—"}${p.exit_code ? ` (exit ${p.exit_code})` : ""}`,
        ` · release ${p.release || "—"}`]))));
    }

    /** @type {Failure[]} */
    const failures = model.get("failures") || [];
    const nfail = model.get("failures_total") || 0;
    if (nfail) {
      const rows = failures.map(failureRow);
      for (const r of rows) {
        const d = r.querySelector("details");
        if (d) {
          const id = r.getAttribute("data-task") || "";
          d.open = opened.has(id);
          d.addEventListener("toggle", () => (d.open ? opened.add(id) : opened.delete(id)));
        }
      }
      const more = nfail > failures.length ? ` (first ${failures.length} shown)` : "";
      const box = h("details", { class: "bnb-failures" }, [
        h("summary", {}, [`${nfail} failed or blocked task${nfail === 1 ? "" : "s"}${more}`]),
        h("table", {}, [
          h("tr", {}, [h("th", {}, ["task"]), h("th", {}, ["state"]), h("th", { class: "bnb-num" }, ["exit"]),
                       h("th", {}, ["node"]), h("th", {}, ["why"])]),
          ...rows,
        ]),
      ]);
      box.open = failuresOpen;
      box.addEventListener("toggle", () => (failuresOpen = box.open));
      root.append(box);
    }
  }

  const names = ["counts", "total", "done", "job_state", "tasks_complete", "reason", "elapsed", "throughput", "eta",
                 "retries", "requeues", "failures", "failures_total", "problem", "prep"];
  return drawOnChanges(model, names, draw, {
    changed: () => { receivedAt = Date.now(); },
    // The clock ticks in the browser between updates; the kernel sends nothing for it.
    ticking: () => model.get("job_state") !== "completed" && !model.get("tasks_complete"),
  });
}

export default { render };
