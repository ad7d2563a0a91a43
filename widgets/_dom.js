// batchnb widgets: what job.js, pool.js and cost.js share: the element builder,
// the legend chip and meter they draw, redraws coalesced per frame, a view's life.
// A plain ES module; the widgets import it by name from "./_dom.js". anywidget loads
// each widget as one module text, where a relative import cannot resolve, so
// batchnb.ui.views inlines this file's body into each widget's text (no bundler):
// keep to `export function` / `export const`, no default export, nothing imported.

/** @typedef {{get: (name: string) => any, on: (event: string, cb: () => void) => void,
 *             off: (event?: string, cb?: () => void) => void, send?: (msg: object) => void}} Model */

/**
 * An element with attributes (`class` sets className) and children.
 * @param {string} tag
 * @param {Record<string, string>} [attrs]
 * @param {(Node|string)[]} [children]
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

/**
 * A legend entry: the state's colour dot, then what follows it.
 * @param {string} state a task or node state (theme.css colours `bnb-s-<state>`)
 * @param {...(Node|string)} after
 * @returns {HTMLElement}
 */
export function chip(state, ...after) {
  return h("span", { class: "bnb-chip" }, [h("span", { class: `bnb-dot bnb-s-${state}` }), ...after]);
}

/**
 * A horizontal meter filled to `percent` (capped at 100), marked when over its limit.
 * @param {number} percent
 * @param {boolean} over
 * @param {Record<string, string>} [attrs] more attributes of the meter (a title)
 * @returns {HTMLElement}
 */
export function meter(percent, over, attrs = {}) {
  return h("div", { class: `bnb-meter${over ? " bnb-over" : ""}`, ...attrs },
           [h("div", { style: `width:${Math.min(100, percent)}%` })]);
}

/**
 * Coalesce redraws: one sync from the kernel changes several traits, each firing its own
 * change event; they draw once, in the next animation frame (or turn, where there are none).
 * @param {() => void} draw
 * @returns {{schedule: () => void, stop: () => void}}
 */
export function coalesced(draw) {
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

/**
 * A view's life: draw now, then once per frame after changes of the traits `names`
 * (`changed(name)` runs first, at the change) and, with `ticking`, every second while
 * `ticking()` says so (clocks that move in the browser between kernel updates).
 * @param {Model} model
 * @param {string[]} names
 * @param {() => void} draw
 * @param {{changed?: (name: string) => void, ticking?: () => boolean}} [opts]
 * @returns {() => void} the cleanup anywidget calls when the view is removed
 */
export function drawOnChanges(model, names, draw, { changed, ticking } = {}) {
  const redraw = coalesced(draw);
  /** @type {[string, () => void][]} */
  const handlers = names.map((name) => [`change:${name}`, () => { if (changed) changed(name); redraw.schedule(); }]);
  for (const [event, cb] of handlers) model.on(event, cb);
  draw();
  const timer = ticking ? setInterval(() => { if (ticking()) redraw.schedule(); }, 1000) : null;
  return () => {
    if (timer !== null) clearInterval(timer);
    redraw.stop();
    for (const [event, cb] of handlers) model.off(event, cb);
  };
}
