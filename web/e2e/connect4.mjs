// connect4.mjs — end-to-end test of the Connect Four demo in headless
// Chromium, driven by playwright-core. Run by web/e2e_test.go:
//
//   node web/e2e/connect4.mjs <urlA> <urlB> <outdir>
//
// Player 1 (browser context 1) opens gateway A and creates a game; player 2
// (context 2) opens the join link on gateway A; a spectator (context 3)
// opens the watch link on gateway B. They play to a win by clicking columns.
// Mid-game the script prints "DROP" on stdout and waits for a line on stdin:
// meanwhile the Go test shuts gateway A down (players get close 1001) and
// starts a new one on the same address; the players' pages must resume on
// their own and the game go on. At the end the three boards, read from the
// DOM, must be identical with the same winner; the final board is saved as
// <outdir>/final-board.png. Exits non-zero with a message on any failure.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [urlA, urlB, outDir] = process.argv.slice(2);
if (!urlA || !urlB || !outDir) {
  console.error("usage: node connect4.mjs <urlA> <urlB> <outdir>");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const step = (s) => console.error(`[e2e ${((Date.now() - t0) / 1000).toFixed(1)}s] ${s}`);
const t0 = Date.now();
const TIMEOUT = 15_000;

// Lines from the Go test, on stdin.
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}

const pages = {}; // name -> page
const pageErrors = [];
let browser;

async function main() {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 30_000,
    // Playwright gives each launch a fresh, empty profile (--user-data-dir).
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  step(`chromium ${browser.version()} started`);

  const open = async (name) => {
    const ctx = await browser.newContext({ viewport: { width: 720, height: 860 }, deviceScaleFactor: 1 });
    const page = await ctx.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") console.error(`[${name} console.${m.type()}] ${m.text()}`);
    });
    page.on("pageerror", (e) => pageErrors.push(`${name}: ${e.message}`));
    pages[name] = page;
    return page;
  };

  // Player 1 creates a game on gateway A.
  const p1 = await open("player1");
  await p1.goto(urlA + "/");
  await p1.getByTestId("new-game").click();
  const joinLink = p1.getByTestId("join-link");
  const watchLink = p1.getByTestId("watch-link");
  await joinLink.waitFor({ state: "visible" });
  await watchLink.waitFor({ state: "visible" });
  const joinHref = await joinLink.getAttribute("href");
  const watchHref = await watchLink.getAttribute("href");
  step(`created: join ${redact(joinHref)} watch ${redact(watchHref)}`);
  for (const [what, href, key] of [
    ["join", joinHref, "join"],
    ["watch", watchHref, "watch"],
  ]) {
    const u = new URL(href);
    const h = new URLSearchParams(u.hash.slice(1));
    check(u.search === "", `${what} link has a query string (tokens belong in the fragment): ${redact(href)}`);
    check(h.get("game") && h.get(key), `${what} link lacks game/${key} in its fragment: ${redact(href)}`);
  }
  check(p1.url().includes("#game="), "the creator's URL should carry the game so a reload rejoins");

  // Player 2 joins on gateway A, the spectator watches on gateway B.
  const p2 = await open("player2");
  await p2.goto(joinHref);
  const spec = await open("spectator");
  const w = new URL(watchHref);
  w.host = new URL(urlB).host;
  await spec.goto(w.href);

  // Both players seated: exactly one of them has the move (Red, who sat first).
  const players = [p1, p2];
  await waitAll(players, (p) => statusAttr(p, "turn").then((t) => t === "red"), "both players seated, Red to move");
  const myTurn = await Promise.all(players.map((p) => statusAttr(p, "myTurn")));
  check(myTurn.filter((x) => x === "true").length === 1, `exactly one player should have the move, got ${myTurn}`);
  const red = myTurn[0] === "true" ? p1 : p2;
  const yellow = red === p1 ? p2 : p1;
  step(`Red is ${red === p1 ? "player1" : "player2"}`);
  check((await text(spec, "status")).startsWith("Red's turn"), "the spectator should see Red to move");

  const all = [p1, p2, spec];
  // The audience counts both gateways: two players on A, one spectator on B.
  await waitAll(all, async (p) => (await audienceAttr(p, "players")) === "2" && (await audienceAttr(p, "spectators")) === "1", "2 playing, 1 watching, on every page");
  check((await text(spec, "audience")).includes("1 watching"), "the page should say how many are watching");
  let moves = 0;
  const move = async (page, col) => {
    await page.locator('[data-testid="status"][data-my-turn="true"]').waitFor();
    await page.getByTestId("column-" + col).click();
    moves++;
    await waitAll(all, async (p) => (await boardAttr(p, "moves")) === String(moves), `move ${moves} (column ${col}) on every board`);
    step(`move ${moves}: ${page === red ? "Red" : "Yellow"} in column ${col}`);
  };

  await move(red, 3);
  await move(yellow, 3);
  await move(red, 4);
  await move(yellow, 4);

  // Illegal moves, sent raw past the page's own checks: Yellow out of turn
  // twice, then an unknown seat. Every board must ignore them alike.
  const before = Number(await boardAttr(yellow, "lastMsgId"));
  await yellow.evaluate(() => {
    const d = window.gamerelayDemo;
    d.client.send({ type: "drop", col: 6, seat: d.seat });
    d.client.send({ type: "drop", col: 6, seat: "nobody" });
  });
  await waitAll(all, async (p) => Number(await boardAttr(p, "lastMsgId")) >= before + 2, "the illegal moves delivered");
  check((await boardAttr(spec, "moves")) === String(moves), "an illegal move changed the board");
  await move(red, 2);

  // Drop the players' connections: the Go test restarts gateway A.
  const joinsBefore = await Promise.all(players.map((p) => connAttr(p, "joins")));
  console.log("DROP");
  const line = await stdinLines.next();
  check(!line.done, "stdin closed while waiting for the gateway restart");
  step(`gateway A restarted (${line.value.trim()})`);
  await waitAll(
    players,
    async (p) => (await connAttr(p, "state")) === "joined" && Number(await connAttr(p, "joins")) > Number(joinsBefore[players.indexOf(p)]),
    "players resumed after the drop",
  );
  for (const p of players) {
    check(Number(await connAttr(p, "reconnects")) >= 1, "a player page did not reconnect");
  }
  check((await connAttr(spec, "joins")) === "1", "the spectator on gateway B should not have been disconnected");
  step("players resumed");

  await move(yellow, 2);
  await move(red, 5); // Red: bottom row, columns 2-5

  await waitAll(all, async (p) => (await statusAttr(p, "winner")) === "red", "Red's win on every page");
  // After the restart of gateway A the audience is whole again, with no
  // leftover count from the players' old connections.
  await waitAll(all, async (p) => (await audienceAttr(p, "players")) === "2" && (await audienceAttr(p, "spectators")) === "1", "2 playing, 1 watching after the restart");
  // Nothing more is legal.
  check((await statusAttr(red, "myTurn")) === "false" && (await statusAttr(yellow, "myTurn")) === "false", "no one should have the move after the win");

  // All three boards, read from the DOM cells, are identical.
  const boards = await Promise.all(all.map(readBoard));
  step("final board (top row first):\n" + boards[0].match(/.{7}/g).join("\n"));
  check(boards.every((b) => b === boards[0]), `boards differ:\n${boards.join("\n")}`);
  check(boards[0].match(/.{7}/g)[5] === "..RRRR.", `unexpected bottom row: ${boards[0].match(/.{7}/g)[5]}`);
  const statuses = await Promise.all(all.map((p) => text(p, "status")));
  check(statuses.every((s) => s.startsWith("Red wins!")), `statuses: ${statuses}`);
  check(statuses[all.indexOf(red)].includes("You win") && statuses[all.indexOf(yellow)].includes("You lose"), `player statuses: ${statuses}`);

  // Same log on every page: same ignored count, no gap reported.
  const demo = await Promise.all(all.map((p) => p.evaluate(() => ({ ignored: window.gamerelayDemo.state.ignored, errors: window.gamerelayDemo.errors }))));
  check(demo.every((d) => d.ignored === demo[0].ignored && d.ignored >= 2), `ignored counts: ${demo.map((d) => d.ignored)}`);
  const gaps = demo.flatMap((d) => d.errors.filter((e) => e.code === "gap"));
  check(gaps.length === 0, `gaps reported: ${JSON.stringify(gaps)}`);
  check(pageErrors.length === 0, `page errors: ${pageErrors.join("; ")}`);

  await red.screenshot({ path: join(outDir, "final-board.png") });
  await spec.screenshot({ path: join(outDir, "final-board-spectator.png") });
  step(`screenshots in ${outDir}`);
  console.log("PASS");
}

function redact(href) {
  return String(href).replace(/(join|watch)=[^&]+/g, "$1=…");
}

const text = (p, id) => p.getByTestId(id).innerText();
const statusAttr = (p, a) => p.getByTestId("status").evaluate((e, a) => e.dataset[a], a);
const boardAttr = (p, a) => p.getByTestId("board").evaluate((e, a) => e.dataset[a], a);
const connAttr = (p, a) => p.getByTestId("connection").evaluate((e, a) => e.dataset[a], a);
const audienceAttr = (p, a) => p.getByTestId("audience").evaluate((e, a) => e.dataset[a], a);
const readBoard = (p) =>
  p.getByTestId("board").evaluate((b) => {
    let s = "";
    for (let r = 5; r >= 0; r--) {
      for (let c = 0; c < 7; c++) {
        const d = b.querySelector(`[data-testid="column-${c}"] .cell[data-row="${r}"]`).dataset.disc;
        s += d || ".";
      }
    }
    return s;
  });

// waitAll polls pred on every page until it holds for all, or fails.
async function waitAll(ps, pred, what, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const ok = await Promise.all(ps.map((p) => pred(p).catch(() => false)));
    if (ok.every(Boolean)) return;
    if (Date.now() > deadline) {
      const who = ps.map((p, i) => `${nameOf(p)}=${ok[i]}`).join(" ");
      throw new Failure(`timed out after ${timeout} ms waiting for ${what} (${who})`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function nameOf(page) {
  return Object.keys(pages).find((k) => pages[k] === page) || "?";
}

const watchdog = setTimeout(() => {
  console.error("FAIL: the e2e script took longer than 80 s");
  process.exit(1);
}, 80_000);

try {
  await main();
} catch (e) {
  console.error(`FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
  for (const [name, p] of Object.entries(pages)) {
    try {
      await p.screenshot({ path: join(outDir, `failure-${name}.png`) });
      console.error(`[${name}] status: ${await text(p, "status")} | connection: ${await text(p, "connection")} | board: ${await boardAttr(p, "position")}`);
    } catch {
      // the page may be gone
    }
  }
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  if (browser) await browser.close().catch(() => {});
  process.stdin.destroy();
}
