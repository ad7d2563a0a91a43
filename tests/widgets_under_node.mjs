// Renders widgets/*.js under node with a stand-in DOM and anywidget model (no browser):
// run by tests/ui/test_ui.py as `node widgets_under_node.mjs <folder of the widgets>`, on the files
// as they are (importing ./_dom.js) and on the module texts the views ship (_dom.js inlined);
// exits non-zero on a failed check.
// What a real browser draws is checked by tests/e2e/test_browser.py.
import assert from "node:assert/strict";

class Text { constructor(t) { this.data = t; } get textContent() { return this.data; } }
let created = {};
class El {
  constructor(tag) {
    this.tagName = tag.toUpperCase(); this.children = []; this.attrs = {}; this.listeners = {};
    this.className = ""; this.value = ""; this.hidden = false; this.open = false; this.title = "";
    this.replaced = 0; this.ownerDocument = globalThis.document;
  }
  setAttribute(k, v) { this.attrs[k] = String(v); if (k === "title") this.title = String(v); }
  getAttribute(k) { return k in this.attrs ? this.attrs[k] : null; }
  append(...cs) { for (const c of cs) this.children.push(typeof c === "string" ? new Text(c) : c); }
  replaceChildren(...cs) { this.children = []; this.replaced++; this.append(...cs); }
  get textContent() { return this.children.map((c) => c.textContent).join(""); }
  set textContent(v) { this.children = [new Text(String(v))]; }
  addEventListener(t, f) { (this.listeners[t] ||= []).push(f); }
  fire(t, extra = {}) { for (const f of this.listeners[t] || []) f({ type: t, target: this, ...extra }); }
  focus() { globalThis.document.activeElement = this; }
  querySelector(tag) { return all(this, (e) => e.tagName === tag.toUpperCase())[0] || null; }
}
function all(root, pred, out = []) {
  for (const c of root.children || []) { if (c instanceof El) { if (pred(c)) out.push(c); all(c, pred, out); } }
  return out;
}
globalThis.document = { activeElement: null, createElement(tag) { created[tag] = (created[tag] || 0) + 1; return new El(tag); } };

class Model {
  constructor(state) { this.state = { ...state }; this.cbs = {}; this.sent = []; }
  get(k) { return this.state[k]; }
  on(ev, cb) { (this.cbs[ev] ||= []).push(cb); }
  off(ev, cb) { this.cbs[ev] = (this.cbs[ev] || []).filter((f) => f !== cb); }
  send(msg) { this.sent.push(msg); }
  sync(changes) {            // what one message from the kernel does: set all, then fire each change
    Object.assign(this.state, changes);
    for (const k of Object.keys(changes)) for (const cb of this.cbs[`change:${k}`] || []) cb();
  }
}
let frames = [];
globalThis.requestAnimationFrame = (cb) => frames.push(cb);
const frame = () => { const fs = frames; frames = []; for (const f of fs) f(); };
const dir = process.argv[2];
const load = async (name) => (await import(`${dir}/${name}`)).default;
const byAttr = (root, k, v) => all(root, (e) => e.getAttribute(k) === v);
const text = (root, k, v) => byAttr(root, k, v)[0].textContent;
const byClass = (root, c) => all(root, (e) => e.className.split(" ").includes(c));
const unsubscribed = (model) => Object.values(model.cbs).every((cbs) => cbs.length === 0);

// -- pool.js: controls built once; typing and focus survive redraws; one draw per sync
{
  const pool = await load("pool.js");
  const node = (i, state = "idle") => ({ id: `dedicated-${i}`, group: "dedicated", state, running: [], more: 0,
                                          slots: 1, used: 0, cpu: 10, memory: 1 << 28, reason: "" });
  const model = new Model({ pool_name: "p", nodes: [node(0), node(1)], targets: { dedicated: 2, spot: 0 },
                            current: { dedicated: 2, spot: 0 }, autoscale: "", target_reason: "", error: "" });
  const el = new El("div");
  const stop = pool.render({ model, el });
  const grid = all(el, (e) => e.className === "bnb-grid")[0];
  assert.equal(byAttr(el, "data-node", "dedicated-1").length, 1);
  const cell = byAttr(el, "data-node", "dedicated-0")[0];
  const [cpu] = byClass(cell, "bnb-meter");
  assert.equal(cpu.className, "bnb-meter"); assert.equal(cpu.getAttribute("title"), "CPU 10%");
  assert.equal(cpu.children[0].getAttribute("style"), "width:10%");
  const [idle] = byClass(el, "bnb-chip");
  assert.equal(idle.children[0].className, "bnb-dot bnb-s-idle"); assert.equal(idle.textContent, "idle");
  assert.equal(text(el, "data-role", "size-dedicated"), "2 up · target 2");
  const inputs = all(el, (e) => e.tagName === "INPUT");
  assert.equal(inputs.length, 2);
  const input = inputs[0];
  assert.equal(input.value, "2");
  input.focus(); input.value = "5"; input.fire("input");          // typing, not yet committed
  const draws = grid.replaced;
  for (let i = 0; i < 10; i++) model.sync({ nodes: [node(0, i % 2 ? "running" : "idle"), node(1)],
                                             current: { dedicated: 2, spot: 0 } });
  assert.equal(grid.replaced, draws, "no redraw before the frame");
  frame();
  assert.equal(grid.replaced, draws + 1, "twenty trait changes, one redraw");
  assert.equal(all(el, (e) => e.tagName === "INPUT")[0], input, "the input is not rebuilt");
  assert.equal(input.value, "5"); assert.equal(document.activeElement, input);
  const plus = all(el, (e) => e.tagName === "BUTTON" && e.textContent === "+")[0];
  plus.fire("click");
  assert.deepEqual(model.sent.at(-1), { type: "resize", group: "dedicated", count: 6 });
  model.sync({ targets: { dedicated: 6, spot: 0 } }); document.activeElement = null; frame();
  assert.equal(input.value, "6");
  plus.fire("click");           // from the new target, not from what was typed before it
  assert.deepEqual(model.sent.at(-1), { type: "resize", group: "dedicated", count: 7 });
  model.sync({ nodes: [node(0)] }); frame();
  assert.equal(byAttr(el, "data-node", "dedicated-1").length, 0);
  model.sync({ autoscale: "$TargetDedicatedNodes = 1;" }); frame();
  assert.ok(all(el, (e) => e.className === "bnb-controls").every((c) => c.hidden), "autoscale hides the controls");
  assert.equal(byAttr(el, "data-alert", "fails").length, 0);
  model.sync({ alerts: [{ alert: "fails", state: "firing", detail: "failure rate 0.5 above 0.2" }] }); frame();
  assert.equal(text(el, "data-alert", "fails"), "alert fails firing: failure rate 0.5 above 0.2");
  model.sync({ alerts: [] }); frame();
  assert.equal(byAttr(el, "data-alert", "fails").length, 0, "a resolved alert is no longer shown");
  model.sync({ nodes: [{ ...node(0), cpu: 150 }] }); frame();
  assert.equal(byClass(el, "bnb-meter")[0].className, "bnb-meter bnb-over");
  assert.equal(byClass(el, "bnb-meter")[0].children[0].getAttribute("style"), "width:100%");
  stop();
  assert.ok(unsubscribed(model), "stop() ends every trait subscription");
  model.sync({ nodes: [] }); frame();
  assert.equal(byAttr(el, "data-node", "dedicated-0").length, 1, "no draw after the view is removed");
}

// -- job.js and cost.js: one sync of many traits draws once
{
  const job = await load("job.js");
  const model = new Model({ job_id: "j", counts: { active: 3 }, total: 3, done: 0, job_state: "active", reason: "",
                            elapsed: 0, throughput: 0, eta: null, retries: 0, requeues: 0, failures: [],
                            failures_total: 0 });
  const el = new El("div");
  const stop = job.render({ model, el });
  const root = el.children[0];
  const before = root.replaced;
  model.sync({ counts: { active: 1, succeeded: 2 }, done: 2, elapsed: 1, throughput: 2, eta: 0.5, retries: 1 });
  assert.equal(root.replaced, before);
  frame();
  assert.equal(root.replaced, before + 1, "six trait changes, one redraw");
  assert.equal(text(root, "data-role", "done"), "2/3");
  assert.equal(text(root, "data-state", "succeeded"), "2");
  const chip = byAttr(root, "data-state", "succeeded")[0];
  assert.equal(all(root, (e) => e.children.includes(chip))[0].textContent, "succeeded 2");
  stop();
  assert.ok(unsubscribed(model), "stop() ends every trait subscription");

  const cost = await load("cost.js");
  const cm = new Model({ scope: "pool p", metered: true, currency: "USD", total: 1, rate: 3.6, budget: null,
                         groups: {}, as_of: 0 });
  const cel = new El("div");
  const cstop = cost.render({ model: cm, el: cel });
  const croot = cel.children[0];
  const cbefore = croot.replaced;
  cm.sync({ total: 2, rate: 4, groups: { dedicated: { spent: 2, rate: 4, node_hours: 1, nodes_up: 1 } }, as_of: 5 });
  frame();
  assert.equal(croot.replaced, cbefore + 1, "four trait changes, one redraw");
  cm.sync({ budget: 4 }); frame();
  const [spent] = byClass(croot, "bnb-meter");
  assert.equal(spent.className, "bnb-meter");
  assert.match(spent.children[0].getAttribute("style"), /^width:5\d(\.\d+)?%$/);   // 2 of 4, and the clock moves on
  cstop();
  assert.ok(unsubscribed(cm), "stop() ends every trait subscription");
}

// -- without requestAnimationFrame the redraw waits one turn (setTimeout 0)
{
  delete globalThis.requestAnimationFrame;
  const job = (await import(`${dir}/job.js?again`)).default;
  const model = new Model({ job_id: "j", counts: {}, total: 0, done: 0, job_state: "active", reason: "",
                            elapsed: 0, throughput: 0, eta: null, retries: 0, requeues: 0, failures: [],
                            failures_total: 0 });
  const el = new El("div");
  const stop = job.render({ model, el });
  const root = el.children[0];
  const before = root.replaced;
  model.sync({ total: 1, done: 1, counts: { succeeded: 1 } });
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(root.replaced, before + 1);
  stop();
}
console.log("ok");
