// The pack's template browser entries (with thumbnails) and a node's help page, in headless Chromium
// against a running ComfyUI, as a user reaches them: Browse Templates -> the pack's category ->
// the cards and their thumbnails -> open first_guided_image; select its Cones2 Layout Boxes node ->
// the selection toolbox's Info button -> the help panel. Writes what it saw to
// <outdir>/result.json (asserted by tests/integration/test_browser_help_and_templates.py) and
// screenshots to <outdir>; a step it could not do is recorded with the reason, not thrown.
//
// usage: node tests/browser/help_and_templates.mjs <comfyui url> <outdir> <pack folder name>
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { chromium } from "playwright-core";

const [url, outdir, pack] = process.argv.slice(2);
if (!url || !outdir || !pack) {
  console.error("usage: node help_and_templates.mjs <comfyui url> <outdir> <pack folder name>");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
fs.mkdirSync(outdir, { recursive: true });
const result = { steps: [], console: [], templates: null, help: null };
const step = (name) => { result.steps.push(name); console.log(`step: ${name}`); };
const save = () => fs.writeFileSync(path.join(outdir, "result.json"), JSON.stringify(result, null, 1));

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "cones2-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1400, height: 1000 },
  deviceScaleFactor: 1,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

try {
  const page = browser.pages()[0] ?? await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") result.console.push(m.text().slice(0, 400)); });
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.stack ?? e.message}`));
  const fetched = [];
  page.on("response", (r) => {
    const p = new URL(r.url()).pathname;
    if (p.includes(`/${pack}/`)) fetched.push({ path: p, status: r.status() });
  });

  await fetch(`${url}/api/settings`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ "Comfy.TutorialCompleted": true, "Comfy.Minimap.Visible": false,
      "Comfy.Canvas.SelectionToolbox": true }) });
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.app.extensionManager?.command, null,
    { timeout: 120_000 });
  result.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  step("frontend loaded");

  // --- the template browser ---------------------------------------------------------------
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  const category = page.getByText(pack, { exact: true }).first();
  await category.waitFor({ timeout: 30_000 });
  await category.click();
  const card = (name) => page.locator(`[data-testid="template-workflow-${name}"]`);
  await card("first_guided_image").first().waitFor({ timeout: 30_000 });
  step("the pack's templates listed");
  await page.waitForTimeout(500);
  const names = await page.evaluate(() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')]
    .map((e) => e.getAttribute("data-testid").slice("template-workflow-".length))
    .filter((n) => n !== "detail"));
  const cards = {};
  for (const name of names) {
    await card(name).first().scrollIntoViewIfNeeded();
    await page.waitForFunction((n) => [...document.querySelectorAll(`[data-testid="template-workflow-${n}"] img`)]
      .some((i) => i.complete && i.naturalWidth > 0), name, { timeout: 10_000 }).catch(() => {});
    cards[name] = await card(name).first().evaluate((el) => ({
      text: el.innerText,
      images: [...el.querySelectorAll("img")].map((i) => ({
        src: new URL(i.currentSrc || i.src, location.href).pathname, complete: i.complete,
        naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
        shownWidth: Math.round(i.getBoundingClientRect().width), visible: i.checkVisibility?.() ?? true,
      })),
    }));
  }
  result.templates = { names, cards };
  await page.screenshot({ path: path.join(outdir, "templates.png") });
  step("thumbnails read");

  await card("first_guided_image").first().click();
  const detailOpen = page.locator('[data-testid="template-workflow-detail"]');
  await page.waitForTimeout(500);
  if (await detailOpen.count()) {  // newer frontends may show a detail view first
    result.templates.detailView = true;
    await detailOpen.getByRole("button", { name: /open|use|load/i }).first().click();
  }
  await page.waitForFunction(() => window.app.graph.nodes.some((n) => n.type === "Cones2LayoutBoxes"), null,
    { timeout: 30_000 });
  result.templates.loaded = await page.evaluate(() => window.app.graph.nodes.map((n) => n.type).sort());
  step("first_guided_image opened from the template browser");

  // --- the node's help page ----------------------------------------------------------------
  await page.keyboard.press("Escape");
  await page.waitForTimeout(300);
  await page.evaluate(() => {
    const node = window.app.graph.nodes.find((n) => n.type === "Cones2LayoutBoxes");
    const canvas = window.app.canvas;
    canvas.deselectAll?.();
    canvas.selectNode(node);
    canvas.centerOnNode?.(node);
    canvas.setDirty(true, true);
  });
  const info = page.locator('[data-testid="info-button"]');
  await info.first().waitFor({ timeout: 15_000 });
  await info.first().click();
  step("info button clicked");
  const help = page.locator(".node-help-content");
  await page.waitForFunction(() => [...document.querySelectorAll(".node-help-content")]
    .some((e) => e.innerText.includes("Box lines")), null, { timeout: 30_000 });
  result.help = await help.first().evaluate((el) => ({
    text: el.innerText,
    headings: [...el.querySelectorAll("h1, h2, h3")].map((h) => h.innerText.trim()),
    tables: el.querySelectorAll("table").length,
    codeBlocks: el.querySelectorAll("pre code, pre").length,
    links: [...el.querySelectorAll("a")].map((a) => a.getAttribute("href")),
  }));
  await page.screenshot({ path: path.join(outdir, "help.png") });
  step("help page shown");
  result.fetched = fetched;
  save();
} catch (error) {
  result.error = String(error?.stack ?? error);
  try { await browser.pages()[0]?.screenshot({ path: path.join(outdir, "failure.png") }); } catch {}
  save();
  process.exitCode = 1;
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
