// batchnb TimelineView: a lane per node with a bar per attempt coloured by outcome (or, when
// dense, counts per time bin), zoomable (wheel, drag, buttons); a click on a bar opens its task,
// a click on a bin zooms to it. Under it, the failures grouped by exit code and category, and
// a "rerun failed" button. A plain ES module for anywidget: no bundler, no CDN imports;
// batchnb.ui.views inlines the shared ./_dom.js into the text it ships.

import { chip, drawOnChanges, h } from "./_dom.js";

/** @typedef {import("./_dom.js").Model} Model */
/** @typedef {{t0: (number|null), t1: (number|null), lanes: string[], count: number, width?: number,
 *             outcomes?: string[], bars?: any[][], bins?: number[][]}} Timeline */

const OUTCOMES = ["succeeded", "failed", "requeued", "preempted", "running", "interrupted", "terminated"];

/** @param {number} s seconds @returns {string} */
function span(s) {
  if (!isFinite(s)) return "—";
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** @param {{model: Model, el: HTMLElement}} ctx */
function render({ model, el }) {
  const root = h("div", { class: "bnb bnb-timeline" });
  el.append(root);
  /** @type {[number, number]|null} the window shown, in epoch seconds; null: the whole job */
  let view = null;
  /** @type {[number, number]|null} the whole job's span, from the first unzoomed answer */
  let full = null;
  let asked = 0;

  /** @param {[number, number]|null} win */
  function zoomTo(win) {
    view = win;
    draw();
    clearTimeout(asked);
    // Asked once the wheel or the drag settles: the kernel answers with the window's bars.
    asked = setTimeout(() => model.send({ type: "window", window: view }), 150);
  }

  /** @param {number} factor below 1 zooms in @param {number} at where, 0..1 across the lanes */
  function zoom(factor, at = 0.5) {
    const [a, b] = view || full || [0, 1];
    const w = (b - a) * factor;
    const c = a + (b - a) * at;
    let lo = c - w * at;
    let hi = lo + w;
    if (full && (hi - lo) >= full[1] - full[0]) return zoomTo(null);
    if (full) { if (lo < full[0]) { hi += full[0] - lo; lo = full[0]; } if (hi > full[1]) { lo -= hi - full[1]; hi = full[1]; } }
    zoomTo([lo, hi]);
  }

  function draw() {
    /** @type {Timeline} */
    const data = model.get("data") || { lanes: [], count: 0, t0: null, t1: null };
    if (!model.get("window") && data.t0 !== null && data.t1 !== null) full = [data.t0, data.t1 > data.t0 ? data.t1 : data.t0 + 1];
    const [a, b] = view || (data.t0 !== null ? [data.t0, Math.max(data.t1 || 0, data.t0 + 1e-3)] : [0, 1]);
    const pct = (/** @type {number} */ x) => (100 * (x - a)) / (b - a);

    const head = h("div", { class: "bnb-head" }, [
      h("span", { class: "bnb-title" }, [`timeline of job ${model.get("job_id")}`]),
      h("span", { class: `bnb-badge bnb-${model.get("job_state")}`, "data-role": "state" }, [model.get("job_state")]),
      h("span", { class: "bnb-muted", "data-role": "shown" },
        [`${data.count} attempt${data.count === 1 ? "" : "s"} in ${span(b - a)}${data.bins ? " (counted per bin)" : ""}`]),
    ]);
    const zin = h("button", { "data-role": "zoom-in", title: "zoom in" }, ["+"]);
    const zout = h("button", { "data-role": "zoom-out", title: "zoom out" }, ["−"]);
    const reset = h("button", { "data-role": "zoom-reset", title: "the whole job" }, ["whole job"]);
    zin.addEventListener("click", () => zoom(0.5));
    zout.addEventListener("click", () => zoom(2));
    reset.addEventListener("click", () => zoomTo(null));
    head.append(zin, zout, reset);

    const legend = h("div", { class: "bnb-legend" }, OUTCOMES.map((o) => chip(o, o)));
    const lanes = h("div", { class: "bnb-tl-lanes", "data-role": "lanes" });
    /** @type {HTMLElement[]} */
    const tracks = [];
    const bad = new Map();
    for (const bar of data.bars || []) if (bar[5] === "failed") bad.set(bar[0], (bad.get(bar[0]) || 0) + 1);
    for (const cell of data.bins || []) if ((data.outcomes || [])[cell[2]] === "failed") bad.set(cell[0], (bad.get(cell[0]) || 0) + cell[3]);
    data.lanes.forEach((name, i) => {
      const track = h("div", { class: "bnb-tl-track" });
      tracks.push(track);
      const nfail = bad.get(i) || 0;
      const label = h("span", { class: `bnb-tl-name${nfail ? " bnb-tl-bad" : ""}`, title: `${name || "(no node)"}: ${nfail} failed` },
        [name || "(no node)"]);
      lanes.append(h("div", { class: "bnb-tl-lane", "data-node": name }, [label, track]));
    });
    const now = Date.now() / 1000;
    for (const [lane, task, n, start, end, outcome] of data.bars || []) {
      const stop = end === null ? now : end;
      if (stop < a || start > b) continue;
      const left = Math.max(0, pct(start));
      const bar = h("div", { class: `bnb-tl-bar bnb-s-${outcome}`, "data-task": task, "data-outcome": outcome,
        style: `left:${left}%;width:${Math.max(0, Math.min(100, pct(stop)) - left)}%`,
        title: `${task} attempt ${n}: ${outcome}, ${span(stop - start)}` });
      bar.addEventListener("click", (ev) => { ev.stopPropagation(); model.send({ type: "open", task }); });
      tracks[lane].append(bar);
    }
    if (data.bins) {
      /** @type {Map<string, number[][]>} */
      const cells = new Map();
      for (const c of data.bins) {
        const k = `${c[0]}:${c[1]}`;
        if (!cells.has(k)) cells.set(k, []);
        cells.get(k)?.push(c);
      }
      const w = data.width || 1;
      for (const group of cells.values()) {
        const [lane, i] = group[0];
        const t = (data.t0 || 0) + i * w;
        const total = group.reduce((s, c) => s + c[3], 0);
        const bin = h("div", { class: "bnb-tl-bin", "data-bin": String(i),
          style: `left:${pct(t)}%;width:${Math.max(0.2, pct(t + w) - pct(t))}%`,
          title: group.map((c) => `${(data.outcomes || [])[c[2]]}: ${c[3]}`).join(", ") });
        for (const c of group) {
          bin.append(h("div", { class: `bnb-s-${(data.outcomes || [])[c[2]]}`, style: `flex:${c[3] / total}` }));
        }
        bin.addEventListener("click", (ev) => { ev.stopPropagation(); zoomTo([t, t + w]); });
        tracks[lane].append(bin);
      }
    }
    lanes.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const box = lanes.getBoundingClientRect();
      zoom(ev.deltaY < 0 ? 0.8 : 1.25, Math.min(1, Math.max(0, (ev.clientX - box.left - 120) / Math.max(1, box.width - 120))));
    }, { passive: false });
    lanes.addEventListener("mousedown", (ev) => {
      const x0 = ev.clientX;
      const [a0, b0] = [a, b];
      const width = Math.max(1, lanes.getBoundingClientRect().width - 120);
      const move = (/** @type {MouseEvent} */ e) => {
        const dt = ((e.clientX - x0) / width) * (b0 - a0);
        if (Math.abs(e.clientX - x0) > 3) { view = [a0 - dt, b0 - dt]; draw(); }
      };
      const up = () => {
        window.removeEventListener("mousemove", move);
        window.removeEventListener("mouseup", up);
        if (view && (view[0] !== a0 || view[1] !== b0)) zoomTo(view);
      };
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    });

    root.replaceChildren(head, legend, lanes);
    const sel = model.get("selected") || {};
    if (sel.id) {
      const exit = sel.exit_code === null || sel.exit_code === undefined ? "—" : String(sel.exit_code);
      root.append(h("div", { class: "bnb-tl-task", "data-role": "task", "data-task": sel.id }, [
        h("div", {}, [h("b", {}, [h("code", {}, [sel.id])]), ` ${sel.state} · exit code ${exit} · `,
                      `${sel.attempts || 0} attempt(s) · node ${sel.node || "—"}`,
                      sel.message && sel.message !== `exit code ${exit}` ? ` · ${sel.message}` : ""]),
        h("div", {}, ["stdout"]), h("pre", { "data-role": "stdout" }, [sel.stdout || ""]),
        h("div", {}, ["stderr"]), h("pre", { "data-role": "stderr" }, [sel.stderr || ""]),
      ]));
    }
    /** @type {{exit_code: (number|null), category: (string|null), count: number, message: (string|null),
     *          tasks: {id: string, node: (string|null), stderr: (string|null), stdout: (string|null)}[]}[]} */
    const groups = model.get("failures") || [];
    const nfail = groups.reduce((s, g) => s + g.count, 0);
    const rerun = h("button", { "data-role": "rerun-failed" }, ["rerun failed"]);
    if (!nfail) rerun.setAttribute("disabled", "");
    rerun.addEventListener("click", () => model.send({ type: "rerun" }));
    const box = h("div", { class: "bnb-failures", "data-role": "failures" }, [
      h("div", {}, [h("b", {}, [`${nfail} failed task${nfail === 1 ? "" : "s"}`]), " ", rerun, " ",
                    h("span", { class: "bnb-muted", "data-role": "note" }, [model.get("note") || ""])]),
    ]);
    if (groups.length) {
      const table = h("table", {}, [h("tr", {}, [h("th", { class: "bnb-num" }, ["tasks"]), h("th", { class: "bnb-num" }, ["exit"]),
                                                 h("th", {}, ["category"]), h("th", {}, ["e.g."]), h("th", {}, ["why"])])]);
      for (const g of groups) {
        const first = g.tasks[0];
        const link = h("a", { href: "#", "data-task": first ? first.id : "" }, [first ? first.id : ""]);
        link.addEventListener("click", (ev) => { ev.preventDefault(); if (first) model.send({ type: "open", task: first.id }); });
        table.append(h("tr", { "data-role": "failure-group" }, [
          h("td", { class: "bnb-num" }, [String(g.count)]),
          h("td", { class: "bnb-num" }, [g.exit_code === null ? "" : String(g.exit_code)]),
          h("td", {}, [g.category || ""]), h("td", {}, [link]), h("td", {}, [g.message || ""]),
        ]));
      }
      box.append(table);
    }
    root.append(box);
  }

  return drawOnChanges(model, ["data", "window", "failures", "selected", "note", "job_state", "job_id"], draw);
}

export default { render };
