// The box editor of Cones2 Layout Boxes: draw, move, resize and delete boxes on a canvas at the
// node's width x height, each box one subject (phrase + occurrence) in its own colour.
//
// The editor has no value of its own: it reads and writes the node's `boxes` text (one box per
// line; grammar: the node's help page, web/docs/Cones2LayoutBoxes.md), so saved workflows, API-format graphs and hand edits all keep
// working. The widget is a DOM widget (frontend API of comfyui-frontend-package 1.27 to 1.58:
// app.registerExtension + beforeRegisterNodeDef, node.addDOMWidget) that is never serialized.
// It works in both renderers: the classic canvas and Nodes 2.0 (Vue nodes). Neither calls the
// widget's draw callback reliably, and undo, paste and subgraph conversion re-create the node, so
// the editor holds no node object it trusts: it finds the live node and its widgets at every read
// and commit, re-reads the text before each change, and watches links and values on a timer.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import {
  boxesOf,
  checkBoxes,
  clipBoxes,
  GRID,
  boxFromDrag,
  moveBox,
  nextFreeOccurrence,
  normalizePhrase,
  parseBoxText,
  rescaleBoxes,
  resizeBox,
  serializeBoxText,
  subjectLabel,
} from "./lib/layout_box_text.js";

const NODE_CLASS = "Cones2LayoutBoxes";
const WIDGET_NAME = "box_editor";
const BACKGROUND_PROPERTY = "cones2_background";
// guidance/layout_preview.py PALETTE: a subject has the same colour here and in Layout Preview.
const PALETTE = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
  [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]];
const HANDLE = 5; // handle half-size, screen px
const STATUS_HEIGHT = 18;
const CHROME_HEIGHT = 24 + 3 + 24 + 3 + 3 + STATUS_HEIGHT - 2; // two toolbar rows, the status line, the gaps
const CANVAS_PAD = 4;
const MARGIN = 10; // the DOM widget's margin (frontend default)
const MIN_CANVAS_HEIGHT = 120;
const POLL_MS = 200; // how often the editor looks for changes made behind its back
const HINT = "Drag to draw · drag a box to move · handles resize · Delete removes";

const rgb = (c, a = 1) => `rgba(${c[0]},${c[1]},${c[2]},${a})`;
const colorOf = (order) => PALETTE[order % PALETTE.length];

function injectStyle() {
  if (document.getElementById("cones2-box-editor-style")) return;
  const style = document.createElement("style");
  style.id = "cones2-box-editor-style";
  style.textContent = `
.cones2-box-editor { display: flex; flex-direction: column; gap: 3px; box-sizing: border-box; overflow: hidden;
  font: 11px sans-serif; color: var(--input-text, #ddd); user-select: none; }
.cones2-box-editor .c2-row { display: flex; align-items: center; gap: 4px; height: 24px; flex: none; min-width: 0; }
.cones2-box-editor input, .cones2-box-editor select, .cones2-box-editor button { box-sizing: border-box; height: 22px;
  font: 11px sans-serif; color: var(--input-text, #ddd); background: var(--comfy-input-bg, #222);
  border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 0 4px; min-width: 0; }
.cones2-box-editor input:disabled, .cones2-box-editor button:disabled { opacity: 0.45; }
.cones2-box-editor label { display: flex; align-items: center; gap: 2px; white-space: nowrap; min-width: 0; }
.cones2-box-editor .c2-phrase { flex: 1 1 80px; }
.cones2-box-editor .c2-occ { width: 42px; }
.cones2-box-editor .c2-gamma { width: 52px; }
.cones2-box-editor .c2-num { width: 54px; flex: 1 1 40px; }
.cones2-box-editor .c2-bg { flex: 1 1 70px; }
.cones2-box-editor .c2-swatch { width: 12px; height: 12px; border-radius: 3px; flex: none;
  border: 1px solid var(--border-color, #555); }
.cones2-box-editor canvas { flex: 1 1 0; min-height: 0; width: 100%; outline: none; cursor: crosshair; touch-action: none;
  border-radius: 4px; background: #1b1b1b; }
.cones2-box-editor canvas:focus-visible { box-shadow: 0 0 0 1px #4a90d9; }
.cones2-box-editor .c2-status { height: ${STATUS_HEIGHT - 2}px; flex: none; overflow: hidden; white-space: nowrap;
  text-overflow: ellipsis; opacity: 0.85; display: flex; gap: 6px; align-items: center; }
.cones2-box-editor .c2-status.warn { color: #f0b54a; opacity: 1; }
.cones2-box-editor .c2-status.error { color: #ff6b6b; opacity: 1; }
.cones2-box-editor .c2-status button { height: 16px; padding: 0 4px; font-size: 10px; }
`;
  document.head.appendChild(style);
}

function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

class BoxEditor {
  constructor(node) {
    this.boundNode = node; // the node object this editor was made for, or the live one that replaced it
    this.added = false; // seen in a graph: from then on, leaving it means the node was re-created or removed
    this.lines = [];
    this.errors = [];
    this.lastText = null;
    this.selected = -1; // index into this.lines
    this.drag = null;
    this.message = null; // {text, level, action?}
    this.rescaleBase = null;
    this.background = null; // {key, img}: the uploaded background being shown
    this.canvasWidth = this.widgetWidth();
    this.canvasHeight = this.widgetHeight();
    this.buildDom();
    this.widget = node.addDOMWidget(WIDGET_NAME, "cones2_box_editor", this.root, {
      serialize: false, // not an input of the node: nothing in the /prompt payload
      getValue: () => "",
      setValue: () => {},
      getMinHeight: () => this.minHeight(),
      // Never taller than the canvas at the node's width needs: the text widget takes the rest.
      getMaxHeight: () => this.maxHeight(),
      margin: MARGIN,
      afterResize: () => this.requestDraw(),
    });
    this.widget.serialize = false; // not in the workflow's widgets_values either
    this.hookWidgets();
    this.resizeObserver = new ResizeObserver(() => this.requestDraw());
    this.resizeObserver.observe(this.canvas);
    this.readText(true);
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  minHeight() { return CHROME_HEIGHT + MIN_CANVAS_HEIGHT + 2 * MARGIN; }

  /** The height the canvas needs at the widget's width (the canvas's aspect), chrome and margins included. */
  maxHeight() {
    // Nodes 2.0 lays the element out itself (no margin): its own width is the one to fit.
    const width = this.root?.isConnected && this.root.clientWidth ? this.root.clientWidth + 2 * MARGIN
      : (this.node.size?.[0] ?? 0);
    const canvasWidth = Math.max(0, width - 2 * MARGIN - 2 * CANVAS_PAD);
    const canvas = (canvasWidth * this.canvasHeight) / this.canvasWidth + 2 * CANVAS_PAD;
    return Math.max(this.minHeight(), Math.ceil(CHROME_HEIGHT + canvas + 2 * MARGIN));
  }

  /** Keep the element within its min/max height where the renderer sizes it by CSS (Nodes 2.0 ignores
   *  getMinHeight/getMaxHeight; the classic canvas honours them and sets a height inside this range). */
  applySizeLimits() {
    const min = `${this.minHeight() - 2 * MARGIN}px`;
    const max = `${this.maxHeight() - 2 * MARGIN}px`;
    if (this.root.style.minHeight !== min) this.root.style.minHeight = min;
    if (this.root.style.maxHeight !== max) this.root.style.maxHeight = max;
  }

  // --- the node's widgets -------------------------------------------------------------------
  /** The live node: the one this editor was made for, or the node that replaced it in its graph
   *  (undo/redo and workflow reloads re-create every node under the same id). */
  get node() {
    const node = this.boundNode;
    const inGraph = node.graph?.getNodeById?.(node.id) === node;
    if (inGraph) {
      this.added = true;
      this.graph = node.graph;
      return node;
    }
    if (!this.added) return node; // not added to a graph yet
    for (const graph of new Set([this.graph, app.canvas?.graph, app.graph])) {
      const live = graph?.getNodeById?.(node.id);
      if (live && live !== node && (live.comfyClass ?? live.type) === NODE_CLASS) {
        this.boundNode = live;
        this.graph = graph;
        return live;
      }
    }
    return node;
  }

  /** Whether the node this editor belongs to is gone from its graph (removed or re-created). */
  stale() {
    const node = this.node;
    return this.added && (node.graph?.getNodeById?.(node.id) !== node || node.cones2BoxEditor !== this);
  }

  find(name) { return this.node.widgets?.find((w) => w.name === name); }
  widgetWidth() { return Math.max(1, Math.round(Number(this.find("width")?.value) || 512)); }
  widgetHeight() { return Math.max(1, Math.round(Number(this.find("height")?.value) || 512)); }
  text() { return String(this.find("boxes")?.value ?? ""); }
  inputLinked(name) {
    const node = this.node;
    const slot = node.inputs?.findIndex((i) => i.name === name || i.widget?.name === name) ?? -1;
    if (slot < 0) return false;
    if (typeof node.isInputConnected === "function") return node.isInputConnected(slot);
    return node.inputs[slot].link != null;
  }

  hookWidgets() {
    const editor = this;
    const boxes = this.find("boxes");
    if (boxes) {
      const callback = boxes.callback;
      boxes.callback = function (...args) {
        const r = callback?.apply(this, args);
        editor.node.cones2BoxEditor?.readText();
        return r;
      };
    }
    if (boxes?.options && !boxes.options.getMaxHeight) {
      // The editor first gets the height its canvas needs at the node's width; the text takes the rest.
      boxes.options.getMaxHeight = () =>
        Math.max(50, (editor.node.freeWidgetSpace ?? 0) - editor.maxHeight());
    }
    for (const w of [this.find("width"), this.find("height")]) {
      if (!w) continue;
      const callback = w.callback;
      w.callback = function (...args) {
        const r = callback?.apply(this, args);
        editor.node.cones2BoxEditor?.canvasResized();
        return r;
      };
    }
  }

  /** Re-read the boxes text (typed by hand, loaded with a workflow, pasted, undone...); true if it changed. */
  readText(force = false) {
    const text = this.text();
    if (!force && text === this.lastText) return false;
    const previous = this.lines[this.selected];
    const parsed = parseBoxText(text);
    this.lines = parsed.lines;
    this.errors = parsed.errors;
    this.lastText = text;
    if (!(this.lines[this.selected]?.kind === "box")) this.selected = -1;
    else if (previous && previous.kind === "box" && previous.box.phrase !== this.lines[this.selected].box.phrase) {
      this.selected = -1;
    }
    if (!force) this.message = null;
    this.syncFields();
    this.requestDraw();
    return true;
  }

  /** Take the width/height widgets' values as the canvas without touching the boxes (workflow load). */
  adoptCanvasSize() {
    this.canvasWidth = this.widgetWidth();
    this.canvasHeight = this.widgetHeight();
  }

  /** The user changed width or height: rescale the boxes to the new canvas and say so. */
  canvasResized() {
    const width = this.widgetWidth();
    const height = this.widgetHeight();
    if (width === this.canvasWidth && height === this.canvasHeight) return;
    this.readText();
    // Rescale from the layout as it was before a run of size changes, so stepping the size
    // up and down does not drift the boxes by rounding.
    if (!this.rescaleBase || this.rescaleBase.text !== this.text()) {
      this.rescaleBase = { lines: this.lines, width: this.canvasWidth, height: this.canvasHeight };
    }
    this.applyCanvasChange("rescale", width, height);
  }

  applyCanvasChange(mode, width, height) {
    const base = this.rescaleBase;
    const boxes = boxesOf(base.lines);
    let result;
    if (mode === "rescale") {
      result = rescaleBoxes(boxes, base.width, base.height, width, height);
    } else {
      result = clipBoxes(boxes, width, height); // the boxes stay at their pixels, cut to the new canvas
    }
    const lines = base.lines.map((l) => ({ ...l }));
    result.boxes.forEach((b, i) => {
      const { index, ...box } = b;
      const old = boxes[i];
      const same = box.x === old.x && box.y === old.y && box.width === old.width && box.height === old.height;
      lines[index] = same ? base.lines[index] : { kind: "box", box, raw: null };
    });
    this.canvasWidth = width;
    this.canvasHeight = height;
    this.commit(lines);
    this.rescaleBase.text = this.lastText;
    const size = `Canvas ${base.width}×${base.height} → ${width}×${height}`;
    if (!boxes.length) {
      this.message = null;
    } else if (mode === "rescale") {
      const clipped = result.clipped ? `, ${result.clipped} clipped to the canvas` : "";
      this.setMessage(`${size}: ${result.changed} of ${boxes.length} box${boxes.length === 1 ? "" : "es"} rescaled${clipped}.`,
        "warn", { label: "keep positions", run: () => this.applyCanvasChange("clip", width, height) });
    } else {
      const clipped = result.changed ? `, ${result.changed} clipped to the canvas` : "";
      this.setMessage(`${size}: boxes kept at their pixel positions${clipped}.`, "warn",
        { label: "rescale", run: () => this.applyCanvasChange("rescale", width, height) });
    }
  }

  /** Write the lines to the live node's boxes widget (the only value the node has). The lines must
   *  derive from the widget's current text: if it changed since it was read, nothing is written. */
  commit(lines) {
    const boxes = this.find("boxes");
    if (!boxes || this.text() !== this.lastText) {
      this.readText();
      this.setMessage("The boxes text changed meanwhile: that edit was not applied.", "warn");
      return false;
    }
    this.lines = lines;
    const text = serializeBoxText(lines);
    this.lastText = text;
    if (boxes.value !== text) boxes.value = text;
    this.errors = parseBoxText(text).errors;
    this.message = null;
    this.syncFields();
    this.requestDraw();
    this.node.setDirtyCanvas?.(true, true);
    // Record the change for undo/redo and the workflow's modified state now, not at the next mouseup.
    try {
      const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker;
      if (typeof tracker?.captureCanvasState === "function") tracker.captureCanvasState(); // 1.58+
      else tracker?.checkState?.();
    } catch { /* no workflow store: nothing to track */ }
    return true;
  }

  boxes() { return boxesOf(this.lines); }
  selectedBox() { return this.lines[this.selected]?.kind === "box" ? this.lines[this.selected].box : null; }

  updateSelected(changes, { autoOcc } = {}) {
    this.readText();
    const line = this.lines[this.selected];
    if (!line || line.kind !== "box") return;
    const lines = this.lines.slice();
    lines[this.selected] = { kind: "box", box: { ...line.box, ...changes }, raw: null,
      autoOcc: autoOcc ?? line.autoOcc };
    this.commit(lines);
  }

  // --- DOM ----------------------------------------------------------------------------------
  buildDom() {
    injectStyle();
    const num = (cls, title, step = GRID) => el("input", { type: "number", className: `c2-num ${cls}`, step, min: 0, title });
    this.swatch = el("span", { className: "c2-swatch" });
    this.datalist = el("datalist", { id: `cones2-phrases-${Math.random().toString(36).slice(2)}` });
    this.phraseInput = el("input", { type: "text", className: "c2-phrase", placeholder: "phrase",
      title: "The subject of the selected box: a phrase of the positive prompt (e.g. 'dog', 'robot toy')" });
    this.phraseInput.setAttribute("list", this.datalist.id);
    this.occInput = el("input", { type: "number", className: "c2-occ", min: 1, step: 1,
      title: "Which occurrence of the phrase in the prompt (1 = first)" });
    this.gammaInput = el("input", { type: "text", className: "c2-gamma", inputMode: "decimal",
      title: "γ+ of this box; empty = the node's gamma" });
    this.deleteButton = el("button", { className: "c2-delete", textContent: "✕", title: "Delete the selected box (Delete key)" });
    this.xInput = num("c2-x", "x: left edge, pixels from the canvas's left");
    this.yInput = num("c2-y", "y: top edge, pixels from the canvas's top");
    this.wInput = num("c2-w", "width in pixels");
    this.hInput = num("c2-h", "height in pixels");
    this.bgSelect = el("select", { className: "c2-bg", title: "An image to draw over (display only; not sent to the server)" });
    this.fileInput = el("input", { type: "file", accept: "image/*", style: "display:none" });
    this.canvas = el("canvas", { tabIndex: 0 });
    this.status = el("div", { className: "c2-status" });
    this.root = el("div", { className: "cones2-box-editor" }, [
      el("div", { className: "c2-row" }, [this.swatch, this.phraseInput, this.datalist,
        el("label", { textContent: "#" }, [this.occInput]), el("label", { textContent: "γ+" }, [this.gammaInput]),
        this.deleteButton]),
      el("div", { className: "c2-row" }, [el("label", { textContent: "x" }, [this.xInput]),
        el("label", { textContent: "y" }, [this.yInput]), el("label", { textContent: "w" }, [this.wInput]),
        el("label", { textContent: "h" }, [this.hInput]), this.bgSelect]),
      this.canvas, this.status, this.fileInput,
    ]);
    this.ctx = this.canvas.getContext("2d");
    this.bindDom();
    this.refreshBackgroundChoices();
  }

  bindDom() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    c.addEventListener("pointermove", (e) => this.onPointerMove(e));
    c.addEventListener("pointerup", (e) => this.onPointerUp(e));
    c.addEventListener("pointercancel", (e) => this.onPointerUp(e, true));
    c.addEventListener("keydown", (e) => this.onKeyDown(e));
    c.addEventListener("dblclick", () => { if (this.selectedBox()) this.focusPhrase(); });
    // Zoom and pan the graph from over the canvas, as over a text widget.
    c.addEventListener("wheel", (e) => { e.preventDefault(); app.canvas.processMouseWheel(e); }, { passive: false });
    // Delete/Backspace in the editor must never reach the graph (it would delete the node).
    this.root.addEventListener("keydown", (e) => {
      if (e.key === "Delete" || e.key === "Backspace") e.stopPropagation();
    });

    this.phraseInput.addEventListener("input", () => {
      const phrase = normalizePhrase(this.phraseInput.value);
      if (!phrase) return this.setMessage("A box needs a phrase of the prompt.", "error");
      if (/[:#,]/.test(phrase)) return this.setMessage("A phrase cannot contain ':', '#' or ','.", "error");
      const line = this.lines[this.selected];
      if (!line) return;
      const changes = { phrase };
      if (line.autoOcc) changes.occurrence = nextFreeOccurrence(this.boxes(), phrase, this.selected);
      this.lastPhrase = phrase;
      this.updateSelected(changes);
      this.showProblems();
    });
    this.phraseInput.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); this.canvas.focus(); }
    });
    this.occInput.addEventListener("input", () => {
      const n = Number(this.occInput.value);
      if (!Number.isInteger(n) || n < 1) return this.setMessage("The occurrence is a whole number from 1.", "error");
      this.updateSelected({ occurrence: n }, { autoOcc: false });
      this.showProblems();
    });
    this.gammaInput.addEventListener("input", () => {
      const v = this.gammaInput.value.trim();
      if (v === "") return this.updateSelected({ gamma: null });
      if (!/^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/.test(v) || !Number.isFinite(Number(v))) {
        return this.setMessage("γ+ is a number like 2.5, or empty for the node's gamma.", "error");
      }
      this.updateSelected({ gamma: Number(v) });
    });
    for (const [input, key] of [[this.xInput, "x"], [this.yInput, "y"], [this.wInput, "width"], [this.hInput, "height"]]) {
      input.addEventListener("change", () => this.numberEdited(input, key));
    }
    this.deleteButton.addEventListener("click", () => this.deleteSelected());
    this.bgSelect.addEventListener("pointerdown", () => this.refreshBackgroundChoices());
    this.bgSelect.addEventListener("focus", () => this.refreshBackgroundChoices());
    this.bgSelect.addEventListener("change", () => this.backgroundChosen());
    this.fileInput.addEventListener("change", () => this.uploadBackground());
  }

  numberEdited(input, key) {
    const box = this.selectedBox();
    if (!box) return;
    const v = Number(input.value);
    if (!Number.isInteger(v)) {
      this.setMessage(`${key} is a whole number of pixels.`, "error");
      return this.syncFields();
    }
    const W = this.canvasWidth;
    const H = this.canvasHeight;
    const clamp = (value, lo, hi) => Math.max(lo, Math.min(hi, value));
    // A typed position moves the box (its size kept), a typed size stretches it; both stay inside the canvas.
    const next = {
      x: () => clamp(v, 0, W - Math.min(box.width, W)),
      y: () => clamp(v, 0, H - Math.min(box.height, H)),
      width: () => clamp(v, 1, Math.max(1, W - box.x)),
      height: () => clamp(v, 1, Math.max(1, H - box.y)),
    }[key]();
    this.updateSelected({ [key]: next });
    if (next !== v) this.setMessage(`${key} ${v} kept inside the ${W}×${H} canvas: ${next}.`, "warn");
  }

  focusPhrase() {
    this.phraseInput.focus();
    this.phraseInput.select();
  }

  /** Fill the toolbar from the selected box. */
  syncFields() {
    const box = this.selectedBox();
    const order = box ? this.boxes().findIndex((b) => b.index === this.selected) : -1;
    const editable = !!box && !this.readOnly;
    for (const input of [this.phraseInput, this.occInput, this.gammaInput, this.xInput, this.yInput, this.wInput,
      this.hInput, this.deleteButton]) input.disabled = !editable;
    const set = (input, v) => { if (document.activeElement !== input) input.value = v; };
    set(this.phraseInput, box ? box.phrase : "");
    set(this.occInput, box ? box.occurrence : "");
    set(this.gammaInput, box && box.gamma != null ? box.gamma : "");
    set(this.xInput, box ? box.x : "");
    set(this.yInput, box ? box.y : "");
    set(this.wInput, box ? box.width : "");
    set(this.hInput, box ? box.height : "");
    this.gammaInput.placeholder = `${this.find("gamma")?.value ?? 2.5}`;
    this.swatch.style.background = box ? rgb(colorOf(order)) : "transparent";
    const phrases = [...new Set(this.boxes().map((b) => b.phrase))];
    this.datalist.replaceChildren(...phrases.map((p) => el("option", { value: p })));
    this.renderStatus();
  }

  setMessage(text, level = "info", action = null) {
    this.message = { text, level, action };
    this.renderStatus();
  }

  /** What the node would reject (duplicates, boxes outside the canvas), as a warning. */
  showProblems() {
    const problems = checkBoxes(this.boxes(), this.canvasWidth, this.canvasHeight);
    if (problems.length) this.setMessage(problems[0].message, "warn");
  }

  renderStatus() {
    let msg = this.message;
    if (!msg && this.readOnly) msg = { text: this.readOnly, level: "warn" };
    if (!msg && this.errors.length) {
      msg = { text: this.errors.length === 1 ? this.errors[0].message : `${this.errors.length} lines cannot be read; ` +
        `first: ${this.errors[0].message}`, level: "error" };
    }
    if (!msg) {
      const problems = checkBoxes(this.boxes(), this.canvasWidth, this.canvasHeight);
      if (problems.length) msg = { text: problems[0].message, level: "warn" };
    }
    if (!msg && this.sizeNote) msg = { text: this.sizeNote, level: "warn" };
    if (!msg) {
      const n = this.boxes().length;
      msg = { text: `${this.canvasWidth}×${this.canvasHeight}, ${n} box${n === 1 ? "" : "es"}. ${HINT}`, level: "info" };
    }
    this.status.className = `c2-status ${msg.level}`;
    const span = el("span", { textContent: msg.text, title: msg.text });
    const children = [span];
    if (msg.action) {
      const button = el("button", { textContent: msg.action.label });
      button.addEventListener("click", () => msg.action.run());
      children.unshift(button);
    }
    this.status.replaceChildren(...children);
  }

  // --- geometry -----------------------------------------------------------------------------
  /** Where the W x H canvas sits in the <canvas> element, in its CSS pixels. */
  fit() {
    const cw = this.canvas.clientWidth;
    const ch = this.canvas.clientHeight;
    const pad = CANVAS_PAD;
    const s = Math.max(1e-6, Math.min((cw - 2 * pad) / this.canvasWidth, (ch - 2 * pad) / this.canvasHeight));
    return { s, ox: (cw - this.canvasWidth * s) / 2, oy: (ch - this.canvasHeight * s) / 2, cw, ch };
  }

  /** Canvas pixels under a pointer event (float, may lie outside the canvas). */
  eventPoint(e) {
    const rect = this.canvas.getBoundingClientRect();
    const k = this.canvas.clientWidth / Math.max(1, rect.width); // undo the graph's zoom
    const { s, ox, oy } = this.fit();
    return { x: ((e.clientX - rect.left) * k - ox) / s, y: ((e.clientY - rect.top) * k - oy) / s, k };
  }

  /** Client (page) coordinates of a canvas pixel: for tests driving the mouse. */
  layoutToClient(x, y) {
    const rect = this.canvas.getBoundingClientRect();
    const k = rect.width / Math.max(1, this.canvas.clientWidth);
    const { s, ox, oy } = this.fit();
    return { x: rect.left + (ox + x * s) * k, y: rect.top + (oy + y * s) * k };
  }

  /** What is under point p: a handle of the selected box, a box (topmost first), or nothing. */
  hitTest(p) {
    const { s } = this.fit();
    const tol = (HANDLE + 2) * p.k / s; // screen px -> canvas px
    const sel = this.selectedBox();
    if (sel) {
      for (const [edges, hx, hy] of this.handles(sel)) {
        if (Math.abs(p.x - hx) <= tol && Math.abs(p.y - hy) <= tol) return { kind: "resize", index: this.selected, edges };
      }
    }
    const order = this.boxes();
    if (sel) order.push({ ...sel, index: this.selected }); // the selected box is drawn on top
    for (let i = order.length - 1; i >= 0; i--) {
      const b = order[i];
      if (p.x >= b.x && p.x <= b.x + b.width && p.y >= b.y && p.y <= b.y + b.height) return { kind: "move", index: b.index };
    }
    return { kind: "draw" };
  }

  handles(b) {
    const x0 = b.x, y0 = b.y, x1 = b.x + b.width, y1 = b.y + b.height, xm = (x0 + x1) / 2, ym = (y0 + y1) / 2;
    return [["nw", x0, y0], ["n", xm, y0], ["ne", x1, y0], ["e", x1, ym], ["se", x1, y1], ["s", xm, y1],
      ["sw", x0, y1], ["w", x0, ym]];
  }

  // --- pointer and keys ---------------------------------------------------------------------
  onPointerDown(e) {
    if (e.button === 1) return app.canvas.processMouseDown(e); // middle button pans the graph
    this.poll(); // the text may have changed since the last look (a hand edit, an undo)
    if (e.button !== 0 || this.readOnly) return;
    this.canvas.focus();
    const p = this.eventPoint(e);
    const hit = this.hitTest(p);
    this.canvas.setPointerCapture(e.pointerId);
    if (hit.kind === "draw") {
      this.drag = { kind: "draw", start: p, box: null };
    } else {
      this.selected = hit.index;
      const box = this.lines[hit.index].box;
      this.lastPhrase = box.phrase;
      this.drag = { kind: hit.kind, edges: hit.edges, start: p, origin: box, box };
    }
    this.syncFields();
    this.requestDraw();
  }

  onPointerMove(e) {
    if (e.buttons & 4) return app.canvas.processMouseMove(e);
    const p = this.eventPoint(e);
    if (!this.drag) {
      const hit = this.readOnly ? { kind: "none" } : this.hitTest(p);
      this.canvas.style.cursor = hit.kind === "resize" ? `${hit.edges}-resize` : hit.kind === "move" ? "move" : "crosshair";
      return;
    }
    const d = this.drag;
    const W = this.canvasWidth;
    const H = this.canvasHeight;
    if (d.kind === "draw") d.box = boxFromDrag(d.start.x, d.start.y, p.x, p.y, W, H);
    else if (d.kind === "move") d.box = moveBox(d.origin, p.x - d.start.x, p.y - d.start.y, W, H);
    else d.box = resizeBox(d.origin, d.edges, p.x - d.start.x, p.y - d.start.y, W, H);
    this.showDragFields(d.box);
    this.requestDraw();
  }

  onPointerUp(e, cancelled = false) {
    if (e.button === 1) return app.canvas.processMouseUp(e);
    const d = this.drag;
    if (!d) return;
    this.drag = null;
    if (this.canvas.hasPointerCapture(e.pointerId)) this.canvas.releasePointerCapture(e.pointerId);
    if (cancelled || !d.box) {
      if (d.kind === "draw") this.selected = -1; // a click on empty canvas deselects
      this.syncFields();
      return this.requestDraw();
    }
    this.readText();
    if (d.kind === "draw") {
      const phrase = this.lastPhrase || "subject";
      const box = { phrase, occurrence: nextFreeOccurrence(this.boxes(), phrase), ...d.box, gamma: null };
      const lines = [...this.lines, { kind: "box", box, raw: null, autoOcc: true }];
      this.selected = lines.length - 1;
      this.commit(lines);
      this.focusPhrase();
    } else {
      const o = d.origin;
      const b = d.box;
      if (b.x !== o.x || b.y !== o.y || b.width !== o.width || b.height !== o.height) this.updateSelected(b);
    }
  }

  onKeyDown(e) {
    this.poll();
    if (this.readOnly) return;
    const box = this.selectedBox();
    if (e.key === "Delete" || e.key === "Backspace") {
      e.preventDefault();
      e.stopPropagation();
      if (box) this.deleteSelected();
      return;
    }
    if (e.key === "Escape" && box) {
      this.selected = -1;
      this.syncFields();
      this.requestDraw();
      e.stopPropagation();
      return;
    }
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (box && arrows[e.key]) {
      const [dx, dy] = arrows[e.key];
      e.preventDefault();
      e.stopPropagation();
      this.updateSelected(moveBox(box, dx * GRID, dy * GRID, this.canvasWidth, this.canvasHeight));
    } else if (box && e.key === "Enter") {
      e.preventDefault();
      this.focusPhrase();
    }
  }

  deleteSelected() {
    this.readText();
    if (!this.selectedBox()) return;
    const lines = this.lines.filter((_, i) => i !== this.selected);
    this.selected = -1;
    this.commit(lines);
    this.canvas.focus();
  }

  showDragFields(box) {
    if (!box) return;
    this.xInput.value = box.x;
    this.yInput.value = box.y;
    this.wInput.value = box.width;
    this.hInput.value = box.height;
  }

  // --- background image ---------------------------------------------------------------------
  refreshBackgroundChoices() {
    const current = this.node.properties?.[BACKGROUND_PROPERTY];
    const options = [el("option", { value: "", textContent: "no background" }),
      el("option", { value: "upload", textContent: "upload image…" })];
    if (current?.filename) options.push(el("option", { value: "file", textContent: `image ${current.filename}` }));
    for (const n of this.node.graph?.nodes ?? []) {
      if (n !== this.node && n.imgs?.length) {
        options.push(el("option", { value: `node:${n.id}`, textContent: `image of #${n.id} ${n.title}` }));
      }
    }
    if (current?.node != null && !options.some((o) => o.value === `node:${current.node}`)) {
      options.push(el("option", { value: `node:${current.node}`, textContent: `image of #${current.node} (none yet)` }));
    }
    this.bgSelect.replaceChildren(...options);
    this.bgSelect.value = current?.filename ? "file" : current?.node != null ? `node:${current.node}` : "";
  }

  backgroundChosen() {
    const v = this.bgSelect.value;
    if (v === "upload") {
      this.fileInput.click();
      this.refreshBackgroundChoices();
      return;
    }
    if (v === "file") return;
    this.node.properties ??= {};
    if (v === "") delete this.node.properties[BACKGROUND_PROPERTY];
    else this.node.properties[BACKGROUND_PROPERTY] = { node: v.slice(5) };
    this.background = null;
    this.requestDraw();
  }

  async uploadBackground() {
    const file = this.fileInput.files?.[0];
    this.fileInput.value = "";
    if (!file) return;
    const body = new FormData();
    body.append("image", file);
    body.append("subfolder", "cones2_layout");
    body.append("type", "input");
    try {
      const resp = await api.fetchApi("/upload/image", { method: "POST", body });
      if (resp.status !== 200) throw new Error(`${resp.status} ${resp.statusText}`);
      const data = await resp.json();
      this.node.properties ??= {};
      this.node.properties[BACKGROUND_PROPERTY] = { filename: data.name, subfolder: data.subfolder, type: data.type };
      this.background = null;
      this.refreshBackgroundChoices();
      this.requestDraw();
    } catch (err) {
      this.setMessage(`Could not upload the background image: ${err.message}`, "error");
    }
  }

  /** The background <img> to draw, if any and loaded. */
  backgroundImage() {
    const spec = this.node.properties?.[BACKGROUND_PROPERTY];
    if (!spec) return null;
    if (spec.node != null) {
      const img = this.node.graph?.getNodeById?.(spec.node)?.imgs?.[0];
      return img?.complete && img.naturalWidth ? img : null;
    }
    const key = `${spec.type}/${spec.subfolder}/${spec.filename}`;
    if (this.background?.key !== key) {
      const img = new Image();
      img.onload = () => this.requestDraw();
      const q = new URLSearchParams({ filename: spec.filename, subfolder: spec.subfolder ?? "", type: spec.type ?? "input" });
      img.src = api.apiURL(`/view?${q}`);
      this.background = { key, img };
    }
    const img = this.background.img;
    return img.complete && img.naturalWidth ? img : null;
  }

  // --- drawing ------------------------------------------------------------------------------
  /** Pick up changes made behind the editor's back: on a timer, on link changes and before each
   *  user action (never from draw callbacks, which Nodes 2.0 does not call). Never writes. */
  poll() {
    if (this.stale()) return this.handOver();
    this.readText();
    if (!this.drag && (this.widgetWidth() !== this.canvasWidth || this.widgetHeight() !== this.canvasHeight)) {
      this.adoptCanvasSize(); // set without a callback: a workflow load, not a user edit
      this.syncFields();
      this.requestDraw();
      this.node.setDirtyCanvas?.(true, true); // the classic canvas re-lays out its widgets for the new aspect
    }
    // Linked inputs: the value the server gets is not the widget's, so say what is drawn.
    const readOnly = this.inputLinked("boxes") ? "boxes comes from a link: the editor shows the widget's own text" : null;
    const sizeNote = this.inputLinked("width") || this.inputLinked("height")
      ? `width/height come from a link: drawing on the widgets' ${this.canvasWidth}×${this.canvasHeight}` : null;
    if (readOnly !== (this.readOnly ?? null) || sizeNote !== (this.sizeNote ?? null)) {
      this.readOnly = readOnly;
      this.sizeNote = sizeNote;
      this.syncFields();
      this.requestDraw();
    }
    const bg = this.node.properties?.[BACKGROUND_PROPERTY];
    if (bg?.node != null && this.backgroundImage() !== this.drawnBackground) this.requestDraw();
    const rect = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    if (Math.round(rect.width * dpr) !== this.canvas.width || Math.round(rect.height * dpr) !== this.canvas.height) {
      this.requestDraw();
    }
    if (this.root.isConnected) this.applySizeLimits();
    if (this.dirty) this.draw();
  }

  /** This editor's node was re-created (undo, redo, reload) or removed. A renderer that keeps showing
   *  this element (Nodes 2.0 keeps the element of a node id across undo) gets the live node's editor
   *  in its place; an editor no one shows stops. */
  handOver() {
    const live = this.node.cones2BoxEditor;
    if (live && live !== this && this.root.isConnected && !live.root.isConnected) {
      this.root.replaceWith(live.root);
      live.poll();
      live.requestDraw();
    }
    if (!this.root.isConnected) this.destroy();
  }

  requestDraw() {
    this.dirty = true;
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        if (this.dirty) this.draw();
      });
    }
  }

  draw() {
    this.dirty = false;
    const c = this.canvas;
    if (!c.isConnected || !c.clientWidth || !c.clientHeight) return;
    const rect = c.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const bw = Math.max(1, Math.round(rect.width * dpr));
    const bh = Math.max(1, Math.round(rect.height * dpr));
    if (c.width !== bw || c.height !== bh) {
      c.width = bw;
      c.height = bh;
    }
    const ctx = this.ctx;
    const k = bw / c.clientWidth; // CSS px -> bitmap px
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, bw, bh);
    const { s, ox, oy } = this.fit();
    ctx.setTransform(k * s, 0, 0, k * s, k * ox, k * oy); // canvas pixels from here on
    const W = this.canvasWidth;
    const H = this.canvasHeight;
    const px = 1 / (k * s); // one bitmap pixel in canvas pixels
    const screen = px * dpr; // one screen (CSS) pixel in canvas pixels

    ctx.fillStyle = "#7f7f7f"; // Layout Preview's grey canvas
    ctx.fillRect(0, 0, W, H);
    const bg = this.backgroundImage();
    this.drawnBackground = bg;
    if (bg) ctx.drawImage(bg, 0, 0, W, H);
    // a faint 64 px grid
    ctx.strokeStyle = "rgba(255,255,255,0.12)";
    ctx.lineWidth = screen;
    ctx.beginPath();
    for (let x = 64; x < W; x += 64) { ctx.moveTo(x, 0); ctx.lineTo(x, H); }
    for (let y = 64; y < H; y += 64) { ctx.moveTo(0, y); ctx.lineTo(W, y); }
    ctx.stroke();

    const problems = new Set(checkBoxes(this.boxes(), W, H).map((p) => p.index));
    const boxes = this.boxes().map((b, order) => ({ ...b, order }));
    const drag = this.drag;
    let selected = null;
    for (const b of boxes) {
      let box = b;
      if (b.index === this.selected) {
        if (drag?.box && drag.kind !== "draw") box = { ...b, ...drag.box, order: b.order, index: b.index };
        selected = box;
        continue;
      }
      this.drawBox(box, false, problems.has(b.index), screen);
    }
    if (selected) this.drawBox(selected, true, problems.has(selected.index), screen);
    if (drag?.kind === "draw" && drag.box) {
      const b = drag.box;
      ctx.setLineDash([4 * screen, 3 * screen]);
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1.5 * screen;
      ctx.strokeRect(b.x, b.y, b.width, b.height);
      ctx.setLineDash([]);
      this.drawTag(`${b.width}×${b.height}`, b.x, b.y, [255, 255, 255], screen);
    }
    // canvas outline and size
    ctx.strokeStyle = "rgba(255,255,255,0.5)";
    ctx.lineWidth = screen;
    ctx.strokeRect(0, 0, W, H);
  }

  drawBox(b, selected, bad, screen) {
    const ctx = this.ctx;
    const color = colorOf(b.order);
    ctx.fillStyle = rgb(color, selected ? 0.45 : 0.35);
    ctx.fillRect(b.x, b.y, b.width, b.height);
    ctx.lineWidth = (selected ? 2.5 : 1.5) * screen;
    ctx.strokeStyle = bad ? "#ff3b3b" : rgb(color);
    if (bad) ctx.setLineDash([5 * screen, 3 * screen]);
    ctx.strokeRect(b.x, b.y, b.width, b.height);
    ctx.setLineDash([]);
    const gamma = b.gamma != null ? `  γ+ ${b.gamma}` : "";
    this.drawTag(`${subjectLabel(b)}${gamma}`, b.x, b.y, color, screen);
    if (selected) {
      ctx.fillStyle = "#fff";
      ctx.strokeStyle = rgb(color);
      ctx.lineWidth = screen;
      for (const [, hx, hy] of this.handles(b)) {
        ctx.fillRect(hx - HANDLE * screen, hy - HANDLE * screen, 2 * HANDLE * screen, 2 * HANDLE * screen);
        ctx.strokeRect(hx - HANDLE * screen, hy - HANDLE * screen, 2 * HANDLE * screen, 2 * HANDLE * screen);
      }
    }
  }

  drawTag(text, x, y, color, screen) {
    const ctx = this.ctx;
    const size = 11 * screen;
    ctx.font = `${size}px sans-serif`;
    const w = ctx.measureText(text).width + 6 * screen;
    const h = size + 4 * screen;
    const tx = Math.min(Math.max(0, x), Math.max(0, this.canvasWidth - w));
    const ty = Math.min(Math.max(0, y), Math.max(0, this.canvasHeight - h));
    ctx.fillStyle = rgb(color, 0.9);
    ctx.fillRect(tx, ty, w, h);
    const luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2];
    ctx.fillStyle = luminance > 140 ? "#000" : "#fff";
    ctx.textBaseline = "top";
    ctx.fillText(text, tx + 3 * screen, ty + 2.5 * screen);
  }

  /** A snapshot for tests and debugging. */
  state() {
    return { width: this.canvasWidth, height: this.canvasHeight, text: this.lastText, selected: this.selected,
      boxes: this.boxes(), errors: this.errors, message: this.status.textContent, level: this.status.className };
  }

  destroy() {
    clearInterval(this.timer);
    this.resizeObserver?.disconnect();
    if (this.frame) cancelAnimationFrame(this.frame);
  }
}

app.registerExtension({
  name: "cones2.LayoutBoxes.editor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_CLASS) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const r = onNodeCreated?.apply(this, args);
      const editor = new BoxEditor(this);
      this.cones2BoxEditor = editor;
      // A new node: wide enough for the toolbar, tall enough for the whole canvas and a few text lines.
      const width = Math.max(this.size[0], 420);
      this.setSize([width, this.size[1]]);
      const min = this.computeSize()[1];
      this.setSize([width, Math.max(this.size[1], min + editor.maxHeight() - editor.minHeight() + 40)]);
      return r;
    };
    // A link to or from the boxes/width/height inputs: show it at once (the timer would, later).
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function (...args) {
      const r = onConnectionsChange?.apply(this, args);
      this.cones2BoxEditor?.poll();
      return r;
    };
    // No destroy on removal: undo removes and re-creates the node, and the old editor may still be the
    // one on screen until it hands over (poll); it stops itself once no one shows it.
  },
});
