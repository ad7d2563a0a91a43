// batchnb CostView: spend so far and rate per hour per node group, and the
// budget; node-hours when the pool has no price table. Between updates the
// numbers move on in the browser at the last known rate (no kernel traffic).
// A plain ES module for anywidget: no bundler, no imports from a CDN.

/** @typedef {{spent: (number|null), rate: (number|null), node_hours: number, nodes_up: number}} Group */
/** @typedef {{get: (name: string) => any, on: (event: string, cb: () => void) => void,
 *             off: (event?: string, cb?: () => void) => void}} Model */

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
 * @param {number|null} x
 * @param {string} currency
 * @returns {string}
 */
function money(x, currency) {
  if (x === null || x === undefined) return "—";
  return `${x.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: x < 1 ? 4 : 2 })} ${currency}`;
}

/**
 * Coalesce redraws: one sync from the kernel changes several traits, each firing its own
 * change event; they draw once, in the next animation frame (or turn, where there are none).
 * @param {() => void} draw
 * @returns {{schedule: () => void, stop: () => void}}
 */
function coalesced(draw) {
  const later = typeof requestAnimationFrame === "function" ? requestAnimationFrame : (cb) => setTimeout(cb, 0);
  let pending = false;
  let alive = true;
  return {
    schedule() {
      if (pending || !alive) return;
      pending = true;
      later(() => {
        pending = false;
        if (alive) draw();
      });
    },
    stop() { alive = false; },
  };
}

/** @param {{model: Model, el: HTMLElement}} ctx */
function render({ model, el }) {
  const root = h("div", { class: "bnb bnb-cost" });
  el.append(root);
  let receivedAt = Date.now();

  function draw() {
    const dt = (Date.now() - receivedAt) / 3600000; // hours since the kernel's last reading
    const cur = model.get("currency") || "USD";
    const metered = model.get("metered");
    /** @type {Record<string, Group>} */
    const groups = model.get("groups") || {};
    const rate = model.get("rate");
    const total = model.get("total") === null ? null : model.get("total") + (rate || 0) * dt;
    const budget = model.get("budget");
    const head = h("div", { class: "bnb-head" }, [h("span", { class: "bnb-title" }, [`cost of ${model.get("scope")}`])]);
    if (metered) {
      head.append(h("b", { "data-role": "total" }, [money(total, cur)]),
                  h("span", { class: "bnb-muted" }, [`${money(rate, cur)}/h`]));
    } else {
      head.append(h("span", { class: "bnb-muted" }, ["no price table: node-hours"]));
    }
    const parts = [head];
    if (budget !== null && budget !== undefined && metered) {
      const used = budget > 0 ? (total || 0) / budget : 1;
      parts.push(h("div", { class: "bnb-muted" }, [`budget ${money(budget, cur)} · ${(100 * used).toFixed(0)}% spent`]),
                 h("div", { class: `bnb-meter${used >= 1 ? " bnb-over" : ""}` },
                   [h("div", { style: `width:${Math.min(100, 100 * used)}%` })]));
    }
    const rows = [h("tr", {}, [h("th", {}, ["group"]), h("th", { class: "bnb-num" }, ["spent"]),
                              h("th", { class: "bnb-num" }, ["rate/h"]), h("th", { class: "bnb-num" }, ["node-hours"]),
                              h("th", { class: "bnb-num" }, ["nodes up"])])];
    for (const [g, v] of Object.entries(groups)) {
      const hours = (v.node_hours || 0) + (v.nodes_up || 0) * dt;
      const spent = v.spent === null ? null : v.spent + (v.rate || 0) * dt;
      rows.push(h("tr", { "data-group": g }, [
        h("td", {}, [g]),
        h("td", { class: "bnb-num" }, [metered ? money(spent, cur) : "—"]),
        h("td", { class: "bnb-num" }, [metered ? money(v.rate, cur) : "—"]),
        h("td", { class: "bnb-num" }, [hours.toFixed(4)]),
        h("td", { class: "bnb-num" }, [String(v.nodes_up || 0)]),
      ]));
    }
    parts.push(h("table", {}, rows));
    root.replaceChildren(...parts);
  }

  const names = ["scope", "metered", "currency", "total", "rate", "budget", "groups", "as_of"];
  const redraw = coalesced(draw);
  const onChange = () => { receivedAt = Date.now(); redraw.schedule(); };
  for (const name of names) model.on(`change:${name}`, onChange);
  draw();
  const timer = setInterval(redraw.schedule, 1000);
  return () => {
    clearInterval(timer);
    redraw.stop();
    for (const name of names) model.off(`change:${name}`, onChange);
  };
}

export default { render };
