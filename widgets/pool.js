// batchnb PoolView: the nodes as a grid coloured by state, dedicated and spot
// apart, each with its running tasks, CPU and memory; the autoscale target
// against the current size; scale controls that call pool.resize in the kernel.
// A plain ES module for anywidget: no bundler, no imports from a CDN; batchnb.ui.views
// inlines the shared ./_dom.js into the text it ships.

import { chip, drawOnChanges, h, meter } from "./_dom.js";

/** @typedef {{id: string, group: string, state: string, running: string[], more: number, slots: number,
 *             used: number, cpu: (number|null), memory: (number|null), reason: string}} NodeRow */
/** @typedef {import("./_dom.js").Model} Model */

const GROUPS = ["dedicated", "spot"];
const NODE_STATES = ["starting", "idle", "running", "preempted", "unusable", "start_task_failed", "leaving",
                     "offline"];

/**
 * @param {number|null} bytes
 * @returns {string}
 */
function mib(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  return bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(1)} GiB` : `${Math.round(bytes / (1 << 20))} MiB`;
}

/**
 * @param {NodeRow} n
 * @returns {HTMLElement}
 */
function nodeCell(n) {
  const cpu = n.cpu === null || n.cpu === undefined ? null : n.cpu;
  const load = meter(cpu || 0, cpu !== null && cpu > 100,
                     { title: `CPU ${cpu === null ? "unknown" : cpu.toFixed(0) + "%"}` });
  const tasks = n.running.length
    ? n.running.join(", ") + (n.more ? ` +${n.more}` : "")
    : "";
  return h("div", { class: `bnb-node bnb-n-${n.state}`, "data-node": n.id, "data-state": n.state,
                    title: n.reason || n.state }, [
    h("div", {}, [h("span", { class: "bnb-node-id" }, [n.id]), " ", h("span", { class: "bnb-muted" }, [n.state])]),
    h("div", { class: "bnb-muted" }, [
      `slots ${n.used}/${n.slots} · CPU ${cpu === null ? "—" : cpu.toFixed(0) + "%"} · ${mib(n.memory)}`]),
    load,
    h("div", { class: "bnb-tasks" }, [tasks]),
  ]);
}

/** @param {{model: Model, el: HTMLElement}} ctx */
function render({ model, el }) {
  const root = h("div", { class: "bnb bnb-pool" });
  el.append(root);
  /** @type {Record<string, number>} counts typed into the inputs, kept until the targets change */
  const wanted = {};

  /**
   * @param {string} group
   * @param {number} count
   */
  function resize(group, count) {
    if (!Number.isInteger(count) || count < 0) return;
    wanted[group] = count;
    model.send({ type: "resize", group, count });
  }

  // The controls are built once: a redraw (up to five a second while tasks run) replaces
  // the grids and texts only, so what the user types and where the focus is stay put.
  const title = h("span", { class: "bnb-title" });
  const size = h("span", { class: "bnb-muted", "data-role": "count" });
  const badge = h("span", { class: "bnb-badge" }, ["autoscale"]);
  const reason = h("span", { class: "bnb-muted", "data-role": "target-reason" });
  // The Dask dashboard of the pool's scheduler, when it has one (a new tab: the view stays).
  const dashboard = h("a", { "data-role": "dashboard", target: "_blank", rel: "noopener" }, ["Dask dashboard"]);
  const head = h("div", { class: "bnb-head" }, [title, size, badge, reason, dashboard]);
  /** @type {Record<string, {box: HTMLElement, size: HTMLElement, controls: HTMLElement,
   *                         input: HTMLInputElement, grid: HTMLElement}>} */
  const parts = {};
  for (const g of GROUPS) {
    const target = () => (model.get("targets") || {})[g] ?? 0;
    const input = /** @type {HTMLInputElement} */ (h("input", { type: "number", min: "0", step: "1",
                                                               "aria-label": `${g} nodes` }));
    input.addEventListener("input", () => {
      const n = parseInt(input.value, 10);
      if (Number.isInteger(n) && n >= 0) wanted[g] = n; else delete wanted[g];
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") resize(g, parseInt(input.value, 10));
    });
    const minus = h("button", { title: `one ${g} node fewer` }, ["−"]);
    const plus = h("button", { title: `one ${g} node more` }, ["+"]);
    const apply = h("button", { title: `resize the ${g} group` }, ["resize"]);
    minus.addEventListener("click", () => resize(g, Math.max(0, (wanted[g] ?? target()) - 1)));
    plus.addEventListener("click", () => resize(g, (wanted[g] ?? target()) + 1));
    apply.addEventListener("click", () => resize(g, parseInt(input.value, 10)));
    const groupSize = h("span", { "data-role": `size-${g}` });
    const controls = h("span", { class: "bnb-controls" }, [minus, input, plus, apply]);
    const grid = h("div", { class: "bnb-grid" });
    const box = h("div", { class: "bnb-group", "data-group": g }, [
      h("div", { class: "bnb-group-head" }, [h("b", {}, [g]), groupSize, controls]),
      grid,
    ]);
    parts[g] = { box, size: groupSize, controls, input, grid };
  }
  const legend = h("div", { class: "bnb-legend" });
  const error = h("div", { class: "bnb-error" });
  const alerts = h("div", { class: "bnb-alerts" });
  root.append(head, alerts, ...GROUPS.map((g) => parts[g].box), legend, error);

  function draw() {
    /** @type {NodeRow[]} */
    const nodes = model.get("nodes") || [];
    const targets = model.get("targets") || {};
    const current = model.get("current") || {};
    const formula = model.get("autoscale");
    title.textContent = `pool ${model.get("pool_name")}`;
    size.textContent = `${nodes.length} node${nodes.length === 1 ? "" : "s"}`;
    badge.hidden = !formula;
    badge.title = formula || "";
    reason.hidden = !(formula && model.get("target_reason"));
    reason.textContent = model.get("target_reason") || "";
    dashboard.hidden = !model.get("dashboard");
    dashboard.setAttribute("href", model.get("dashboard") || "#");
    for (const g of GROUPS) {
      const p = parts[g];
      const mine = nodes.filter((n) => n.group === g);
      const target = targets[g] ?? 0;
      p.box.hidden = !mine.length && !target && g === "spot" && !formula;
      p.controls.hidden = !!formula;
      p.size.textContent = `${current[g] ?? 0} up · target ${target}`;
      if (wanted[g] === undefined && p.input !== p.input.ownerDocument?.activeElement) {
        p.input.value = String(target);
      }
      p.grid.replaceChildren(...mine.map(nodeCell));
    }
    const present = new Set(nodes.map((n) => n.state));
    legend.replaceChildren(...NODE_STATES.filter((s) => present.has(s)).map((s) => chip(s, s)));
    error.hidden = !model.get("error");
    error.textContent = model.get("error") || "";
    const firing = model.get("alerts") || [];
    alerts.hidden = !firing.length;
    alerts.replaceChildren(...firing.map((a) => h("div", { class: "bnb-error", "data-alert": a.alert },
      [`alert ${a.alert} firing${a.detail ? `: ${a.detail}` : ""}`])));
  }

  const names = ["nodes", "targets", "current", "autoscale", "target_reason", "error", "pool_name", "dashboard",
                 "alerts"];
  return drawOnChanges(model, names, draw, {
    changed: (name) => {
      // New targets (a resize done, or autoscale) replace what was typed for them.
      if (name === "targets") for (const g of GROUPS) delete wanted[g];
    },
  });
}

export default { render };
