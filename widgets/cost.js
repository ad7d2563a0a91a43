// batchnb CostView: spend so far and rate per hour per node group, and the
// budget; node-hours when the pool has no price table. Between updates the
// numbers move on in the browser at the last known rate (no kernel traffic).
// A plain ES module for anywidget: no bundler, no imports from a CDN; batchnb.ui.views
// inlines the shared ./_dom.js into the text it ships.

import { drawOnChanges, h, meter } from "./_dom.js";

/** @typedef {{spent: (number|null), rate: (number|null), node_hours: number, nodes_up: number}} Group */
/** @typedef {import("./_dom.js").Model} Model */

/**
 * @param {number|null} x
 * @param {string} currency
 * @returns {string}
 */
function money(x, currency) {
  if (x === null || x === undefined) return "—";
  return `${x.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: x < 1 ? 4 : 2 })} ${currency}`;
}

/** @param {{model: Model, el: HTMLElement}} ctx */
function render({ model, el }) {
  const root = h("div", { class: "bnb bnb-cost" });
  el.append(root);
  let receivedAt = Date.now();

  function draw() {
    // Hours since the kernel's last reading; none once the pool closed (its figures are final).
    const dt = model.get("final") ? 0 : (Date.now() - receivedAt) / 3600000;
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
                 meter(100 * used, used >= 1));
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

  const names = ["scope", "metered", "currency", "total", "rate", "budget", "groups", "as_of", "final"];
  return drawOnChanges(model, names, draw, {
    changed: () => { receivedAt = Date.now(); },
    ticking: () => !model.get("final"),   // spend moves on at the last known rate until the pool closes
  });
}

export default { render };
