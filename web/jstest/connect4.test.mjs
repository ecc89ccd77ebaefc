// Unit tests of the Connect Four rules (node --test; no dependencies).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as c4 from "../static/connect4.js";

const sit = (seat) => ({ type: "sit", seat });
const drop = (seat, col) => ({ type: "drop", seat, col });

// play returns a game after seats a (Red) and b (Yellow) alternate in cols.
function play(cols) {
  const log = [sit("a"), sit("b")];
  cols.forEach((c, i) => log.push(drop(i % 2 === 0 ? "a" : "b", c)));
  return c4.replay(log);
}

test("first two distinct seats are Red and Yellow", () => {
  const s = c4.replay([sit("a"), sit("a"), sit("b"), sit("c"), sit(""), sit(7), { type: "sit" }]);
  assert.deepEqual(s.seats, ["a", "b"]);
  assert.equal(c4.colorOf(s, "a"), c4.RED);
  assert.equal(c4.colorOf(s, "b"), c4.YELLOW);
  assert.equal(c4.colorOf(s, "c"), -1);
  assert.equal(s.ignored, 5);
});

test("discs stack from the bottom, turns alternate, Red first", () => {
  const s = play([3, 3, 4]);
  assert.equal(c4.boardString(s).split("/").reverse()[0], "...RR..");
  assert.equal(c4.boardString(s).split("/").reverse()[1], "...Y...");
  assert.equal(s.turn, c4.YELLOW);
  assert.equal(s.moves, 3);
});

test("illegal moves are ignored", () => {
  const cases = {
    "before both seats": [sit("a"), drop("a", 0)],
    "wrong turn": [sit("a"), sit("b"), drop("b", 0)],
    "unknown seat": [sit("a"), sit("b"), drop("x", 0)],
    "column out of range": [sit("a"), sit("b"), drop("a", 7), drop("a", -1)],
    "column not an integer": [sit("a"), sit("b"), drop("a", 1.5), drop("a", "1"), drop("a", null)],
    "seat missing": [sit("a"), sit("b"), { type: "drop", col: 0 }],
  };
  for (const [name, log] of Object.entries(cases)) {
    const s = c4.replay(log);
    assert.equal(s.moves, 0, name);
    assert.ok(s.ignored > 0, name);
  }
});

test("full column is ignored", () => {
  const s = play([0, 0, 0, 0, 0, 0]);
  assert.equal(s.moves, 6);
  assert.equal(c4.apply(s, drop("a", 0)), false);
  assert.equal(s.moves, 6);
  assert.equal(c4.legal(s, "a", 0), false);
  assert.equal(c4.legal(s, "a", 1), true);
});

test("wins in every direction", () => {
  const cases = {
    horizontal: { cols: [0, 0, 1, 1, 2, 2, 3], winner: c4.RED },
    vertical: { cols: [6, 0, 6, 0, 6, 0, 6], winner: c4.RED },
    // Yellow wins a rising diagonal 0..3.
    diagonal: { cols: [1, 0, 2, 1, 3, 2, 6, 2, 3, 6, 3, 3], winner: c4.YELLOW },
    // Red wins a falling diagonal from (3,0) to (0,3).
    "anti-diagonal": { cols: [3, 2, 2, 1, 1, 0, 1, 0, 0, 6, 0], winner: c4.RED },
  };
  for (const [name, { cols, winner }] of Object.entries(cases)) {
    const s = play(cols);
    assert.equal(s.winner, winner, name + "\n" + c4.boardString(s));
    assert.equal(s.winLine.length, 4, name);
    assert.ok(c4.over(s));
  }
});

test("no move after the game ended", () => {
  const s = play([0, 1, 0, 1, 0, 1, 0]);
  assert.equal(s.winner, c4.RED);
  const before = c4.boardString(s);
  assert.equal(c4.apply(s, drop("b", 2)), false);
  assert.equal(c4.apply(s, drop("a", 2)), false);
  assert.equal(c4.boardString(s), before);
});

test("draw when the board fills without four in a row", () => {
  // Columns filled in pairs in an order that never makes four.
  const order = [0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 2, 3, 2, 3, 2, 3, 3, 2, 3, 2, 3, 2, 4, 5, 4, 5, 4, 5, 5, 4, 5, 4, 5, 4, 6, 6, 6, 6, 6, 6];
  const s = play(order);
  assert.equal(s.winner, null, c4.boardString(s));
  assert.equal(s.moves, 42);
  assert.ok(s.draw);
  assert.equal(c4.legal(s, s.seats[s.turn], 6), false);
});

test("every client computes the same board from the same log", () => {
  // A random log with junk in it, folded twice, once message by message.
  let seed = 42;
  const rnd = (n) => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % n);
  const seats = ["a", "b", "c"];
  const log = [];
  for (let i = 0; i < 300; i++) {
    const k = rnd(10);
    if (k === 0) log.push(sit(seats[rnd(3)]));
    else if (k === 1) log.push({ type: "chat", text: "hi" });
    else log.push(drop(seats[rnd(3)], rnd(9) - 1));
  }
  const a = c4.replay(log);
  const b = c4.newGame();
  for (const m of log) c4.apply(b, JSON.parse(JSON.stringify(m)));
  assert.deepEqual(a, b);
});
