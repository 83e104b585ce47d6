// Drives the Cones2 Layout Boxes editor in headless Chromium against a running ComfyUI, as a
// user would: loads a workflow, draws boxes with mouse drags, names their subjects, moves,
// resizes and deletes boxes, queues the graph, picks a background, edits the text by hand and
// changes the canvas size, undoes and redoes, links the boxes input. Writes what it saw to
// <outdir>/result.json (asserted by tests/integration/test_browser_layout_widget.py) and
// screenshots to <outdir>. The renderer is the classic canvas or Nodes 2.0 (Vue nodes).
//
// usage: node tests/browser/layout_widget.mjs <comfyui url> <outdir> [background.png] [classic|vue]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const [url, outdir, backgroundPng, renderer = "classic"] = process.argv.slice(2);
const vue = renderer === "vue";
if (!url || !outdir) {
  console.error("usage: node layout_widget.mjs <comfyui url> <outdir> [background.png]");
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const workflow = JSON.parse(fs.readFileSync(path.join(here, "layout_boxes_workflow.json"), "utf8"));
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
fs.mkdirSync(outdir, { recursive: true });
const result = { steps: [], console: [], renderer };
const step = (name) => { result.steps.push(name); console.log(`step: ${name}`); };

// A fresh profile; without the networking flags Chromium stalls on this machine's closed network.
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "cones2-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1280, height: 1000 },
  deviceScaleFactor: 1,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

try {
  const page = browser.pages()[0] ?? await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") result.console.push(m.text().slice(0, 400)); });
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.stack ?? e.message}`));
  const prompts = [];
  page.on("request", (r) => {
    if (r.method() === "POST" && new URL(r.url()).pathname.endsWith("/prompt")) prompts.push(r.postDataJSON());
  });

  // No first-run template dialog, no minimap over the graph.
  await fetch(`${url}/api/settings`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ "Comfy.TutorialCompleted": true, "Comfy.Minimap.Visible": false, "Comfy.VueNodes.Enabled": vue }) });
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.app.extensions?.some(
    (e) => e.name === "cones2.LayoutBoxes.editor"), null, { timeout: 120_000 });
  step("frontend loaded with the extension");

  await page.evaluate(async (wf) => { await window.app.loadGraphData(wf); }, workflow);
  await page.waitForFunction(() => window.app.graph.getNodeById(1)?.cones2BoxEditor?.canvas?.isConnected);
  await page.waitForTimeout(300);
  result.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  // Which renderer drew the node: Nodes 2.0 puts each node in an element with data-node-id.
  result.vueNodes = await page.evaluate(() =>
    !!window.app.graph.getNodeById(1).cones2BoxEditor.root.closest("[data-node-id]"));
  if (result.vueNodes !== vue) throw new Error(`asked for the ${renderer} renderer, got ${result.vueNodes ? "vue" : "classic"}`);
  step("workflow loaded");
  result.loaded = await editorState(page);

  const toClient = (x, y) => page.evaluate(([x, y]) =>
    window.app.graph.getNodeById(1).cones2BoxEditor.layoutToClient(x, y), [x, y]);
  async function drag(from, to) {
    const a = await toClient(...from);
    const b = await toClient(...to);
    await page.mouse.move(a.x, a.y);
    await page.mouse.down();
    for (let i = 1; i <= 8; i++) await page.mouse.move(a.x + ((b.x - a.x) * i) / 8, a.y + ((b.y - a.y) * i) / 8);
    await page.mouse.up();
    await page.waitForTimeout(50);
  }
  async function click(at) {
    const p = await toClient(...at);
    await page.mouse.click(p.x, p.y);
    await page.waitForTimeout(50);
  }
  /** A drag on the editor of node `id` of the graph on screen (canvas pixels). */
  async function dragOn(id, from, to) {
    const point = (x, y) => page.evaluate(([id, x, y]) =>
      window.app.canvas.graph.getNodeById(id).cones2BoxEditor.layoutToClient(x, y), [id, x, y]);
    const a = await point(...from);
    const b = await point(...to);
    await page.mouse.move(a.x, a.y);
    await page.mouse.down();
    for (let i = 1; i <= 8; i++) await page.mouse.move(a.x + ((b.x - a.x) * i) / 8, a.y + ((b.y - a.y) * i) / 8);
    await page.mouse.up();
    await page.waitForTimeout(100);
  }
  /** Type at the end of the node's boxes text area, as a user editing the text by hand. */
  async function typeInBoxesText(typed) {
    const textarea = await page.evaluateHandle(() => {
      const w = window.app.graph.getNodeById(1).widgets.find((x) => x.name === "boxes");
      if (w.inputEl?.isConnected && w.inputEl.offsetParent) return w.inputEl;
      return document.querySelector('[data-node-id="1"] [data-widget-name="boxes"] textarea');
    });
    await textarea.click();
    await page.keyboard.press("Control+End");
    await page.keyboard.type(typed);
    await page.waitForTimeout(2 * 200 + 100); // the editor's poll
  }
  /** The page rectangle around the three nodes. */
  async function nodesClip() {
    return page.evaluate(() => {
      const canvas = window.app.canvas;
      const rect = canvas.canvas.getBoundingClientRect();
      const { scale, offset } = canvas.ds;
      const nodes = [1, 2, 3].map((id) => window.app.graph.getNodeById(id));
      const x0 = Math.min(...nodes.map((n) => n.pos[0])) - 10;
      const y0 = Math.min(...nodes.map((n) => n.pos[1])) - 56;
      const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + 10;
      const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + 10;
      return { x: Math.max(0, rect.left + (x0 + offset[0]) * scale), y: Math.max(0, rect.top + (y0 + offset[1]) * scale),
        width: (x1 - x0) * scale, height: (y1 - y0) * scale };
    });
  }

  // Two boxes, each drawn with a drag and named by typing (a new box focuses its phrase field).
  await drag([34, 38], [246, 298]);
  await page.keyboard.type("dog");
  await page.keyboard.press("Enter");
  await drag([282, 78], [474, 342]);
  result.secondBoxDefault = await editorState(page);
  await page.keyboard.type("cat");
  await page.keyboard.press("Enter");
  step("drew two boxes and named them");
  result.drawn = await editorState(page);

  // Move the cat box, resize the dog box by its bottom-right handle.
  await drag([376, 210], [354, 220]);
  await click([100, 120]);
  await drag([248, 296], [266, 282]);
  step("moved and resized");
  result.edited = await editorState(page);

  // A third box, selected by a click and removed with the Delete key.
  await drag([98, 318], [178, 370]);
  await page.keyboard.press("Enter");
  await click([136, 344]);
  result.beforeDelete = await editorState(page);
  await page.keyboard.press("Delete");
  step("deleted a box with the Delete key");
  result.afterDelete = await editorState(page);
  result.nodeStillThere = await page.evaluate(() => !!window.app.graph.getNodeById(1));

  // The frontend's undo/redo covers the editor's changes.
  await page.keyboard.press("Control+z");
  await page.waitForFunction(() => window.app.graph.getNodeById(1)?.cones2BoxEditor?.boxes().length === 3);
  result.undone = await editorState(page);
  await page.keyboard.press("Control+y");
  await page.waitForFunction(() => window.app.graph.getNodeById(1)?.cones2BoxEditor?.boxes().length === 2);
  result.redone = await editorState(page);
  step("undo and redo");

  // After an undo (which re-creates the node) the editor on screen edits the live node: a drag,
  // a hand edit (drawn), a drag of the hand-edited box, then undo/redo and another drag.
  await page.keyboard.press("Control+z");
  await page.waitForFunction(() => window.app.graph.getNodeById(1)?.cones2BoxEditor?.boxes().length === 3);
  await page.waitForTimeout(2 * 200 + 100); // the editor's poll hands the screen to the live node's editor
  result.undoShown = await shownEditors(page);
  await drag([136, 344], [176, 328]);
  result.undoDragged = await editorState(page);
  await typeInBoxesText("\nbird: 0 0 64 64");
  result.undoHandEdited = await editorState(page);
  await drag([32, 32], [96, 96]);
  result.undoHandEditDragged = await editorState(page);
  await page.keyboard.press("Control+z"); // back to before the drag (the frontend decides whether the hand edit was its own step)
  await page.waitForFunction((t) => window.app.graph.getNodeById(1)?.cones2BoxEditor?.state().text !== t,
    result.undoHandEditDragged.text, { timeout: 10_000 });
  await page.waitForTimeout(2 * 200 + 100);
  result.undoneAgain = await editorState(page);
  await page.keyboard.press("Control+y");
  await page.waitForFunction((t) => window.app.graph.getNodeById(1)?.cones2BoxEditor?.state().text === t,
    result.undoHandEditDragged.text, { timeout: 10_000 });
  await page.waitForTimeout(2 * 200 + 100);
  result.redoShown = await shownEditors(page);
  await drag([96, 96], [128, 64]);
  result.redoDragged = await editorState(page);
  step("undo, drag, hand edit, drag, undo, redo, drag");
  // back to the two drawn boxes: delete the bird and the second dog
  await click([128, 64]);
  await page.keyboard.press("Delete");
  await click([176, 328]);
  await page.keyboard.press("Delete");
  result.cleanedUp = await editorState(page);

  result.serialized = await page.evaluate(() => {
    const node = window.app.graph.getNodeById(1);
    return {
      widgetValue: node.widgets.find((w) => w.name === "boxes").value,
      textarea: node.widgets.find((w) => w.name === "boxes").inputEl.value,
      workflowWidgetsValues: window.app.graph.serialize().nodes.find((n) => n.id === 1).widgets_values,
    };
  });

  // Queue it with the Run button; read back the /prompt payload and wait for the run.
  const response = page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname.endsWith("/prompt"));
  await page.locator('[data-testid="queue-button"]').first().click();
  const queued = await (await response).json();
  result.queued = queued;
  result.prompt = prompts.at(-1);
  step("queued with the Run button");
  result.history = await waitForHistory(queued.prompt_id);
  await page.waitForFunction(() => window.app.graph.getNodeById(3)?.imgs?.[0]?.complete, null, { timeout: 60_000 });
  step("the run finished and its image is shown");

  // A background taken from another node: the image Save Image now shows.
  await page.locator(".cones2-box-editor .c2-bg").focus();
  await page.locator(".cones2-box-editor .c2-bg").selectOption("node:3");
  await page.waitForFunction(() => window.app.graph.getNodeById(1).cones2BoxEditor.drawnBackground);
  result.nodeBackground = await page.evaluate(() => {
    const node = window.app.graph.getNodeById(1);
    return { property: node.properties.cones2_background, src: node.cones2BoxEditor.drawnBackground.src,
      choices: [...node.cones2BoxEditor.bgSelect.options].map((o) => o.textContent) };
  });
  step("background from another node's image");

  if (backgroundPng) {
    // A background picked from disk: uploaded through ComfyUI's /upload/image.
    const chooser = page.waitForEvent("filechooser");
    await page.locator(".cones2-box-editor .c2-bg").focus();
    await page.locator(".cones2-box-editor .c2-bg").selectOption("upload");
    await (await chooser).setFiles(backgroundPng);
    await page.waitForFunction(() => {
      const node = window.app.graph.getNodeById(1);
      const ed = node.cones2BoxEditor;
      return node.properties.cones2_background?.filename && ed.backgroundImage() &&
        ed.drawnBackground === ed.backgroundImage();
    }, null, { timeout: 30_000 });
    result.background = await page.evaluate(() => window.app.graph.getNodeById(1).properties.cones2_background);
    step("background image uploaded and drawn");
  }
  // Select the dog box for the picture, then shoot the three nodes.
  await click([100, 120]);
  await page.evaluate(() => window.app.canvas.setDirty(true, true));
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(outdir, "layout-widget.png"), clip: await nodesClip() });
  step("screenshot");

  // Hand edit: type a line into the text; the drawing follows.
  await typeInBoxesText("\nbird: 0 0 64 64");
  result.handEdited = await editorState(page);
  step("edited the text by hand");

  // Change the canvas width in the width widget as a user would; boxes follow.
  if (vue) {
    const input = page.locator('[data-node-id="1"] [data-widget-name="width"] input').first();
    await input.fill("768"); // the field sits under a drag-to-scrub overlay
    await input.press("Enter");
  } else {
    await widthByDialog("768");
  }
  await page.waitForFunction(() => window.app.graph.getNodeById(1).cones2BoxEditor.canvasWidth === 768);
  result.resized = await editorState(page);
  step("changed the canvas width in its widget");
  await page.screenshot({ path: path.join(outdir, "after-resize.png"), clip: await nodesClip() });
  async function widthByDialog(value) {
  const widthPos = await page.evaluate(() => {
    const canvas = window.app.canvas;
    const node = window.app.graph.getNodeById(1);
    const w = node.widgets.find((x) => x.name === "width");
    const rect = canvas.canvas.getBoundingClientRect();
    const { scale, offset } = canvas.ds;
    const y = node.pos[1] + w.y + 10;
    const x = node.pos[0] + node.size[0] / 2;
    return { x: rect.left + (x + offset[0]) * scale, y: rect.top + (y + offset[1]) * scale };
  });
  await page.mouse.click(widthPos.x, widthPos.y);
  const dialogInput = page.locator(".graphdialog input, .litegraph .graphdialog input").first();
  await dialogInput.waitFor({ timeout: 10_000 });
  await dialogInput.fill(value);
  await dialogInput.press("Enter");
  }

  // The message offers the other choice: keep the boxes' pixel positions instead.
  await page.locator(".cones2-box-editor .c2-status button").first().click();
  await page.waitForTimeout(100);
  result.keptPositions = await editorState(page);
  step("chose to keep the pixel positions");

  // The workflow as saved loads back to the same drawing.
  result.reloaded = await page.evaluate(async () => {
    const saved = window.app.graph.serialize();
    await window.app.loadGraphData(saved);
    await new Promise((r) => setTimeout(r, 300));
    const node = window.app.graph.getNodeById(1);
    return { ...node.cones2BoxEditor.state(), widgetsValues: saved.nodes.find((n) => n.id === 1).widgets_values,
      background: node.properties.cones2_background, backgroundShown: !!node.cones2BoxEditor.backgroundImage() };
  });
  step("saved and reloaded the workflow");

  // Resizing the node keeps the editor working and the boxes unchanged.
  result.sizesBefore = await sizes(page);
  await page.evaluate(() => {
    const node = window.app.graph.getNodeById(1);
    node.setSize([300, 520]);
    window.app.canvas.setDirty(true, true);
  });
  await page.waitForTimeout(600);
  result.nodeResized = await editorState(page);
  result.sizesAfter = await sizes(page);
  step("resized the node");

  // The selected box's numbers: a typed x moves it, a typed width is kept inside the canvas, γ+ is per box.
  await click([20, 20]);
  const field = (name) => page.evaluateHandle((n) => window.app.graph.getNodeById(1).cones2BoxEditor[n], name);
  const x = await field("xInput");
  await x.fill("100");
  await x.press("Enter");
  const w = await field("wInput");
  await w.fill("1000");
  await w.press("Enter");
  result.clamped = await editorState(page);
  const gamma = await field("gammaInput");
  await gamma.fill("3");
  await page.waitForTimeout(50);
  result.numbers = await editorState(page);
  step("edited the selected box's numbers");

  // A link into the boxes input: the editor turns read-only (noticed without any canvas redraw),
  // a drag changes nothing; unlinked, it is editable again.
  result.linked = await page.evaluate(async () => {
    const node = window.app.graph.getNodeById(1);
    const source = window.LiteGraph.createNode("PrimitiveStringMultiline");
    source.pos = [20, 760];
    window.app.graph.add(source);
    const slot = node.inputs.findIndex((i) => i.name === "boxes" || i.widget?.name === "boxes");
    source.connect(0, node, slot);
    await new Promise((r) => setTimeout(r, 500));
    const ed = node.cones2BoxEditor;
    return { sourceId: source.id, slot, readOnly: ed.readOnly ?? null, message: ed.state().message,
      phraseDisabled: ed.phraseInput.disabled, text: ed.state().text };
  });
  await drag([300, 300], [340, 340]);
  result.linkedDrag = await editorState(page);
  result.unlinked = await page.evaluate(async (slot) => {
    const node = window.app.graph.getNodeById(1);
    node.disconnectInput(slot);
    await new Promise((r) => setTimeout(r, 500));
    return { readOnly: node.cones2BoxEditor.readOnly ?? null };
  }, result.linked.slot);
  step("linked and unlinked the boxes input");

  // Paste: the copy gets an editor of its own with the same boxes, and a drag on it changes the
  // copy only. Then the copy becomes a subgraph: the node is re-created inside it, and its editor
  // there edits the node inside.
  const at = await toClient(40, 40);
  await page.mouse.move(at.x, at.y); // the copy lands at the mouse, over the original
  result.pasted = await page.evaluate(async () => {
    const canvas = window.app.canvas;
    const graph = window.app.graph;
    const before = new Set(graph.nodes.map((n) => n.id));
    canvas.copyToClipboard([graph.getNodeById(1)]);
    canvas.pasteFromClipboard({});
    await new Promise((r) => setTimeout(r, 800));
    const copy = graph.nodes.find((n) => !before.has(n.id));
    window.__copyId = copy.id;
    return { id: copy.id, text: copy.cones2BoxEditor.state().text };
  });
  await dragOn(result.pasted.id, [600, 200], [700, 300]);
  result.pastedDrawn = await page.evaluate(() => ({
    copy: window.app.graph.getNodeById(window.__copyId).widgets.find((w) => w.name === "boxes").value,
    original: window.app.graph.getNodeById(1).widgets.find((w) => w.name === "boxes").value }));
  step("pasted the node and drew on the copy");
  if (await page.evaluate(() => typeof window.app.graph.convertToSubgraph === "function")) {
    result.subgraph = await page.evaluate(async () => {
      const graph = window.app.graph;
      const copy = graph.getNodeById(window.__copyId);
      const oldEditor = copy.cones2BoxEditor;
      graph.convertToSubgraph(new Set([copy]));
      await new Promise((r) => setTimeout(r, 800));
      const host = graph.nodes.find((n) => n.isSubgraphNode?.());
      const inner = host.subgraph.nodes.find((n) => n.type === "Cones2LayoutBoxes");
      window.app.canvas.openSubgraph(host.subgraph, host);
      await new Promise((r) => setTimeout(r, 800));
      // bring the inner node into view
      const ds = window.app.canvas.ds;
      ds.offset[0] = 40 / ds.scale - inner.pos[0];
      ds.offset[1] = 120 / ds.scale - inner.pos[1];
      window.app.canvas.setDirty(true, true);
      await new Promise((r) => setTimeout(r, 800));
      return { innerId: inner.id, innerText: inner.cones2BoxEditor.state().text, oldEditorShown: oldEditor.root.isConnected,
        innerShown: inner.cones2BoxEditor.root.isConnected };
    });
    await dragOn(result.subgraph.innerId, [470, 120], [580, 200]);
    result.subgraphDrawn = await page.evaluate((id) =>
      window.app.canvas.graph.getNodeById(id).widgets.find((w) => w.name === "boxes").value, result.subgraph.innerId);
    step("converted the copy to a subgraph and drew inside it");
  }
} catch (e) {
  result.error = `${e.stack ?? e}`;
  try {
    const page = browser.pages()[0];
    await page.screenshot({ path: path.join(outdir, "failure.png") });
  } catch { /* no page */ }
} finally {
  fs.writeFileSync(path.join(outdir, "result.json"), JSON.stringify(result, null, 1));
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
if (result.error) {
  console.error(result.error);
  process.exit(1);
}

/** Editors on screen: how many, and whether the one shown is the live node's. */
async function shownEditors(page) {
  return page.evaluate(() => {
    const shown = [...document.querySelectorAll(".cones2-box-editor")].filter((r) => r.isConnected && r.offsetParent);
    const live = window.app.graph.getNodeById(1).cones2BoxEditor.root;
    return { count: shown.length, live: shown.length === 1 && shown[0] === live };
  });
}

/** The editor's element and the boxes text area, in CSS pixels, with the editor's height limits. */
async function sizes(page) {
  return page.evaluate(() => {
    const node = window.app.graph.getNodeById(1);
    const ed = node.cones2BoxEditor;
    const ta = boxesTextArea();
    return { editor: ed.root.getBoundingClientRect().height, max: ed.maxHeight() - 20, min: ed.minHeight() - 20,
      textarea: ta.getBoundingClientRect().height, nodeSize: [...node.size] };
    function boxesTextArea() {
      const w = node.widgets.find((x) => x.name === "boxes");
      if (w.inputEl?.isConnected && w.inputEl.offsetParent) return w.inputEl;
      return document.querySelector('[data-node-id="1"] [data-widget-name="boxes"] textarea');
    }
  });
}

async function editorState(page) {
  return page.evaluate(() => {
    const node = window.app.graph.getNodeById(1);
    const ed = node.cones2BoxEditor;
    const s = ed.state();
    return { ...s, boxesWidget: node.widgets.find((w) => w.name === "boxes").value, focused: document.activeElement?.className,
      canvasPixels: [ed.canvas.width, ed.canvas.height], nodeSize: [...node.size] };
  });
}

async function waitForHistory(promptId) {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const history = await (await fetch(`${url}/api/history/${promptId}`)).json();
    const entry = history[promptId];
    if (entry?.status?.completed || entry?.status?.status_str === "error") return entry;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`prompt ${promptId} did not finish`);
}
