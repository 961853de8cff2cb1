// `medseg serve` in Debian's Chromium, driven by playwright-core: open the test series, draw a
// box with the mouse, propagate, read the mL, correct with a negative click, undo it, save.
// Usage: node viewer.mjs MEDSEG_BINARY SERIES_FOLDER SCREENSHOT.png
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const [bin, series, shot] = process.argv.slice(2);
let server = null;
let review = null;
const fail = (msg) => { console.error("browser test FAILED: " + msg); server?.kill(); process.exit(1); };
if (!bin || !series || !shot) fail("usage: node viewer.mjs MEDSEG SERIES SCREENSHOT");

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "medseg-viewer-"));
const served = path.join(tmp, "served");
fs.cpSync(series, path.join(served, "dwi_series"), { recursive: true });

server = spawn(bin, ["serve", served, "--model", "lite-medsam", "--port", "0"],
  { stdio: ["ignore", "pipe", "inherit"] });
const url = await new Promise((ok, bad) => {
  let out = "";
  server.stdout.on("data", (d) => { out += d; const m = /http:\/\/\S+/.exec(out); if (m) ok(m[0]); });
  server.on("exit", (c) => bad(new Error("medseg serve exited with " + c)));
  setTimeout(() => bad(new Error("no URL from medseg serve in 120 s")), 120000);
}).catch((e) => fail(e.message));
if (!url.startsWith("http://127.0.0.1:")) fail("not bound to loopback: " + url);

const userData = fs.mkdtempSync(path.join(os.tmpdir(), "medseg-chromium-"));
const browser = await chromium.launchPersistentContext(userData, {
  executablePath: "/usr/bin/chromium", headless: true, viewport: { width: 1366, height: 768 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"],
});
const page = browser.pages()[0] || await browser.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(e.message));
const status = () => page.locator("#status").textContent();
const waitStatus = async (text, ms = 180000) => {
  await page.waitForFunction((t) => document.querySelector("#status").textContent.includes(t), text, { timeout: ms });
};

try {
  // Without the token: the page is refused.
  const bare = await page.goto(url.split("?")[0]);
  if (bare.status() !== 401) fail("the page without the token answered " + bare.status());

  await page.goto(url);
  await page.getByRole("button", { name: "dwi_series" }).click();
  await waitStatus("opening: done");
  const label = await page.locator("#slicelabel").textContent();
  if (!/slice 6 \/ 11/.test(label)) fail("the middle slice of 12 is shown, got " + label);

  // A box by mouse on the canvas (image pixels 16,16 → 48,48 of the 64 × 64 slice).
  const box = await page.locator("#view").boundingBox();
  const at = (x, y) => [box.x + x * box.width / 64, box.y + y * box.height / 64];
  await page.mouse.move(...at(16, 16));
  await page.mouse.down();
  await page.mouse.move(...at(32, 32), { steps: 4 });
  await page.mouse.move(...at(48, 48), { steps: 4 });
  await page.mouse.up();
  await waitStatus("box: done");
  await page.keyboard.press("p");
  await waitStatus("slices, now slice"); // the progress line while it runs
  await waitStatus("propagating: done");
  const row = await page.locator(".obj").first().textContent();
  if (!/object 1: [\d.]+ mL slices \d+–\d+/.test(row)) fail("the object list after propagation: " + row);
  const ml = parseFloat(/([\d.]+) mL/.exec(row)[1]);
  if (!(ml > 0)) fail("no volume: " + row);

  // A negative click (Shift + click in positive mode) on the shown slice, then undo it.
  await page.keyboard.press("+");
  await page.keyboard.down("Shift");
  await page.mouse.click(...at(32, 32));
  await page.keyboard.up("Shift");
  await waitStatus("click: done");
  await page.keyboard.press("u");
  await waitStatus("undo: done");
  const again = await page.locator(".obj").first().textContent();
  if (again !== row) fail(`undo of the click: ${again} (was ${row})`);

  // Slices by keyboard, then the screenshot and the save.
  await page.keyboard.press("ArrowUp");
  await page.waitForFunction(() => document.querySelector("#slicelabel").textContent.startsWith("slice 7"));
  await page.screenshot({ path: shot });
  await page.keyboard.press("s");
  await waitStatus("saved");
  const saved = path.join(served, "dwi_series.medseg.nii.gz");
  if (!fs.existsSync(saved)) fail("no " + saved + " (status: " + await status() + ")");
  if (errors.length) fail("page errors: " + errors.join("; "));
  console.log(`viewer: ${row.trim()}; saved ${saved}; screenshot ${shot}`);
  await reviewCohort(browser, served);
  console.log("browser test passed");
} catch (e) {
  review?.kill();
  fail(e.message + " (status: " + await status().catch(() => "?") + ")");
} finally {
  await browser.close();
  server.kill();
  review?.kill();
  fs.rmSync(userData, { recursive: true, force: true });
}

// `medseg batch` on the series, then `medseg serve --review` over its output: the case list,
// a case opened and re-run from its box, accepted; review.csv records it.
async function reviewCohort(browser, served) {
  const out = path.join(tmp, "batch");
  const csv = path.join(tmp, "cases.csv");
  fs.writeFileSync(csv, `case_id,input,key_slice,x0,y0,x1,y1\ncase01,${path.join(served, "dwi_series")},6,16,16,48,48\n`);
  const batch = spawn(bin, ["batch", csv, "--output-dir", out], { stdio: "inherit" });
  const code = await new Promise((ok) => batch.on("exit", ok));
  if (code !== 0) fail("medseg batch exited with " + code);
  review = spawn(bin, ["serve", "--review", out, "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
  const rurl = await new Promise((ok, bad) => {
    let o = "";
    review.stdout.on("data", (d) => { o += d; const m = /http:\/\/\S+/.exec(o); if (m) ok(m[0]); });
    setTimeout(() => bad(new Error("no URL from medseg serve --review")), 120000);
  });
  const page = await browser.newPage();
  await page.goto(rurl);
  const rowSel = "#cases tr[data-id=case01]";
  await page.waitForSelector(rowSel);
  const cells = await page.locator(rowSel).textContent();
  if (!/case01[\d.]+\d+–\d+ok/.test(cells)) fail("the case row: " + cells);
  await page.click(rowSel);
  await page.waitForFunction(() => document.querySelector("#status").textContent.includes("case case01: done"), null, { timeout: 180000 });
  await page.click("#accept");
  await page.waitForFunction(() => document.querySelector("#status").textContent.includes("case01: accept"), null, { timeout: 60000 });
  const csvText = fs.readFileSync(path.join(out, "review.csv"), "utf8");
  if (!/^case01,accept,/m.test(csvText)) fail("review.csv: " + csvText);
  console.log("review: " + cells + " → accepted");
  await page.close();
  review.kill();
}
