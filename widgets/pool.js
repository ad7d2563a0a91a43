// batchnb PoolView: the nodes as a grid coloured by state, dedicated and spot
// apart, each with its running tasks, CPU and memory; the autoscale target
// against the current size; scale controls that call pool.resize in the kernel.
// A plain ES module for anywidget: no bundler, no imports from a CDN.

/** @typedef {{id: string, group: string, state: string, running: string[], more: number, slots: number,
 *             used: number, cpu: (number|null), memory: (number|null), reason: string}} NodeRow */
/** @typedef {{get: (name: string) => any, on: (event: string, cb: () => void) => void,
 *             off: (event?: string, cb?: () => void) => void, send: (msg: object) => void}} Model */

const GROUPS = ["dedicated", "spot"];
const NODE_STATES = ["starting", "idle", "running", "preempted", "unusable", "start_task_failed", "leaving",
                     "offline"];

/**
 * @param {string} tag
 * @param {Record<string, string>} [attrs]
 * @param {(Node|string)[]} [children]
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

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
  const meter = h("div", { class: `bnb-meter${cpu !== null && cpu > 100 ? " bnb-over" : ""}`,
                           title: `CPU ${cpu === null ? "unknown" : cpu.toFixed(0) + "%"}` },
                  [h("div", { style: `width:${Math.min(100, cpu || 0)}%` })]);
  const tasks = n.running.length
    ? n.running.join(", ") + (n.more ? ` +${n.more}` : "")
    : "";
  return h("div", { class: `bnb-node bnb-n-${n.state}`, "data-node": n.id, "data-state": n.state,
                    title: n.reason || n.state }, [
    h("div", {}, [h("span", { class: "bnb-node-id" }, [n.id]), " ", h("span", { class: "bnb-muted" }, [n.state])]),
    h("div", { class: "bnb-muted" }, [
      `slots ${n.used}/${n.slots} · CPU ${cpu === null ? "—" : cpu.toFixed(0) + "%"} · ${mib(n.memory)}`]),
    meter,
    h("div", { class: "bnb-tasks" }, [tasks]),
  ]);
}

/** @param {{model: Model, el: HTMLElement}} ctx */
function render({ model, el }) {
  const root = h("div", { class: "bnb bnb-pool" });
  el.append(root);
  /** @type {Record<string, number>} counts typed into the inputs, kept across redraws */
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

  function draw() {
    /** @type {NodeRow[]} */
    const nodes = model.get("nodes") || [];
    const targets = model.get("targets") || {};
    const current = model.get("current") || {};
    const formula = model.get("autoscale");
    const head = h("div", { class: "bnb-head" }, [
      h("span", { class: "bnb-title" }, [`pool ${model.get("pool_name")}`]),
      h("span", { class: "bnb-muted" }, [`${nodes.length} node${nodes.length === 1 ? "" : "s"}`]),
    ]);
    if (formula) {
      head.append(h("span", { class: "bnb-badge", title: formula }, ["autoscale"]));
      if (model.get("target_reason")) head.append(h("span", { class: "bnb-muted" }, [model.get("target_reason")]));
    }
    const parts = [head];
    for (const g of GROUPS) {
      const mine = nodes.filter((n) => n.group === g);
      const target = targets[g] ?? 0;
      if (!mine.length && !target && g === "spot" && !formula) continue;
      const input = /** @type {HTMLInputElement} */ (h("input", { type: "number", min: "0", step: "1",
                                                                 "aria-label": `${g} nodes` }));
      input.value = String(wanted[g] ?? target);
      input.addEventListener("change", () => (wanted[g] = parseInt(input.value, 10)));
      const minus = h("button", { title: `one ${g} node fewer` }, ["−"]);
      const plus = h("button", { title: `one ${g} node more` }, ["+"]);
      const apply = h("button", { title: `resize the ${g} group` }, ["resize"]);
      minus.addEventListener("click", () => resize(g, Math.max(0, (wanted[g] ?? target) - 1)));
      plus.addEventListener("click", () => resize(g, (wanted[g] ?? target) + 1));
      apply.addEventListener("click", () => resize(g, parseInt(input.value, 10)));
      const groupHead = h("div", { class: "bnb-group-head" }, [
        h("b", {}, [g]),
        h("span", { "data-role": `size-${g}` }, [`${current[g] ?? 0} up · target ${target}`]),
      ]);
      if (!formula) groupHead.append(minus, input, plus, apply);
      parts.push(h("div", { class: "bnb-group", "data-group": g }, [
        groupHead,
        h("div", { class: "bnb-grid" }, mine.map(nodeCell)),
      ]));
    }
    const present = new Set(nodes.map((n) => n.state));
    const legend = h("div", { class: "bnb-legend" }, NODE_STATES.filter((s) => present.has(s)).map((s) =>
      h("span", { class: "bnb-chip" }, [h("span", { class: `bnb-dot bnb-s-${s}` }), s])));
    parts.push(legend);
    if (model.get("error")) parts.push(h("div", { class: "bnb-error" }, [model.get("error")]));
    root.replaceChildren(...parts);
  }

  const names = ["nodes", "targets", "current", "autoscale", "target_reason", "error", "pool_name"];
  const onChange = () => {
    for (const g of GROUPS) delete wanted[g];
    draw();
  };
  for (const name of names) model.on(`change:${name}`, name === "targets" ? onChange : draw);
  draw();
  return () => {
    for (const name of names) model.off(`change:${name}`, name === "targets" ? onChange : draw);
  };
}

export default { render };
