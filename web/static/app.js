// app.js — the Connect Four page. The game is the log: this page folds the
// messages it receives (in msg_id order, from gamerelay.js) through the
// rules in connect4.js and draws the result, so players and spectators on
// any gateway show the same board. Links carry the game and token in the URL
// fragment (#game=G&join=T or #game=G&watch=T), which browsers never send to
// the server.

import { GameRelay } from "/gamerelay.js";
import * as c4 from "/connect4.js";

const $ = (id) => document.getElementById(id);
const el = {
  newGame: $("new-game"),
  joinLink: $("join-link"),
  watchLink: $("watch-link"),
  hint: $("hint"),
  status: $("status"),
  board: $("board"),
  you: $("you"),
  connection: $("connection"),
  audience: $("audience"),
  gameId: $("game-id"),
};

// Exposed for debugging in the console and for the end-to-end test.
const demo = {
  client: null,
  game: null, // {game, join?, watch?}
  state: c4.newGame(),
  seat: null, // this tab's seat id in the current game
  joins: 0, // joined frames received (1 + successful resumes)
  errors: [], // error events: {code, message}
  fatal: null, // a join refused for good
};
window.gamerelayDemo = demo;

const cells = []; // cells[col][row]
const columns = [];

function buildBoard() {
  for (let c = 0; c < c4.COLS; c++) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "column";
    b.dataset.testid = "column-" + c;
    b.dataset.col = String(c);
    b.setAttribute("aria-label", "Drop a disc in column " + (c + 1));
    b.addEventListener("click", () => drop(c));
    cells[c] = [];
    for (let r = 0; r < c4.ROWS; r++) {
      const d = document.createElement("div");
      d.className = "cell";
      d.dataset.row = String(r);
      d.dataset.col = String(c);
      d.dataset.disc = "";
      b.appendChild(d);
      cells[c][r] = d;
    }
    columns.push(b);
    el.board.appendChild(b);
  }
}

function randomID() {
  const b = new Uint8Array(9);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// seatFor returns this tab's seat in game, kept in sessionStorage so that a
// reload of the tab keeps its seat (and another tab gets its own).
function seatFor(game) {
  const key = "gamerelay.c4.seat." + game;
  try {
    let s = sessionStorage.getItem(key);
    if (!s) {
      s = randomID();
      sessionStorage.setItem(key, s);
    }
    return s;
  } catch {
    return randomID();
  }
}

function pageURL(params) {
  return location.origin + location.pathname + location.search + "#" + new URLSearchParams(params).toString();
}

function parseHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const game = p.get("game");
  if (!game) return null;
  if (p.get("join")) return { game, join: p.get("join") };
  if (p.get("watch")) return { game, watch: p.get("watch") };
  return { game }; // anonymous play, where the server allows it
}

function sameSession(a, b) {
  return a && b && a.game === b.game && a.join === b.join && a.watch === b.watch;
}

function reset() {
  if (demo.client) demo.client.close();
  demo.client = null;
  demo.game = null;
  demo.state = c4.newGame();
  demo.seat = null;
  demo.joins = 0;
  demo.errors = [];
  demo.fatal = null;
}

function newClient() {
  const client = new GameRelay();
  client.on("state", render);
  client.on("created", (c) => {
    demo.game = { game: c.game, join: c.join, watch: c.watch };
    demo.seat = seatFor(c.game);
    // The creator's tab now holds the player link: a reload rejoins.
    history.replaceState(null, "", pageURL({ game: c.game, join: c.join }));
    render();
  });
  client.on("joined", () => {
    demo.joins++;
    render();
  });
  client.on("message", (m) => {
    c4.apply(demo.state, m);
    render();
  });
  client.on("presence", render);
  client.on("audience", render); // how many play and watch, on every gateway
  client.on("sync", () => {
    // Caught up with the log: take a seat if this tab is a player without
    // one and a seat is free. A second "sit" by the same seat is ignored.
    if (client.role === "player" && c4.colorOf(demo.state, demo.seat) < 0 && demo.state.seats.length < 2) {
      client.send({ type: "sit", seat: demo.seat });
    }
    render();
  });
  client.on("error", (e) => {
    demo.errors.push({ code: e.code, message: e.message });
    console.warn("gamerelay:", e.code, e.message);
  });
  demo.client = client;
  return client;
}

function newGame() {
  reset();
  history.replaceState(null, "", location.pathname + location.search);
  const client = newClient();
  client.create().catch((e) => fatal(client, e));
  render();
}

function start(sess) {
  reset();
  demo.game = sess;
  demo.seat = sess.watch ? null : seatFor(sess.game);
  const client = newClient();
  client.join({ game: sess.game, token: sess.join || sess.watch }).catch((e) => fatal(client, e));
  render();
}

// fatal shows why client's create or join failed for good (unless the page
// has moved on to another client since).
function fatal(client, e) {
  if (demo.client !== client) return;
  demo.fatal = e;
  render();
}

function drop(col) {
  const client = demo.client;
  if (!client || client.state !== "joined" || !c4.legal(demo.state, demo.seat, col)) return;
  client.send({ type: "drop", col, seat: demo.seat });
}

const connectionText = {
  idle: "not connected",
  connecting: "connecting…",
  open: "connected, joining…",
  joined: "connected",
  reconnecting: "reconnecting…",
  closed: "closed",
};

function renderConnection() {
  const client = demo.client;
  const st = client ? client.state : "idle";
  el.connection.dataset.state = st;
  el.connection.dataset.joins = String(demo.joins);
  el.connection.dataset.reconnects = String(client ? client.stats.reconnects : 0);
  let text = connectionText[st] || st;
  if (st === "reconnecting" && client) text = `reconnecting… (attempt ${client.stats.reconnects})`;
  el.connection.textContent = text;
}

function renderAudience() {
  const a = demo.client && demo.client.audience;
  el.audience.dataset.players = a ? String(a.players) : "";
  el.audience.dataset.spectators = a ? String(a.spectators) : "";
  el.audience.textContent = a ? `${a.players} playing · ${a.spectators} watching` : "";
}

function render() {
  const s = demo.state;
  const g = demo.game;
  const client = demo.client;
  const myColor = demo.seat ? c4.colorOf(s, demo.seat) : -1;
  const isPlayer = !!(client && client.role === "player" && demo.seat);
  const myTurn = isPlayer && client.state === "joined" && !c4.over(s) && s.seats.length === 2 && myColor === s.turn;

  // Links.
  if (g && g.join) {
    el.joinLink.href = pageURL({ game: g.game, join: g.join });
    el.joinLink.hidden = false;
  } else {
    el.joinLink.hidden = true;
    el.joinLink.removeAttribute("href");
  }
  if (g && g.watch) {
    el.watchLink.href = pageURL({ game: g.game, watch: g.watch });
    el.watchLink.hidden = false;
  } else {
    el.watchLink.hidden = true;
    el.watchLink.removeAttribute("href");
  }
  for (const a of [el.joinLink, el.watchLink]) {
    a.target = "_blank";
    a.rel = "noopener noreferrer";
  }
  el.gameId.textContent = g ? "game " + g.game : "";
  el.hint.hidden = !!g && s.seats.length === 2;

  // Board.
  const win = new Set((s.winLine || []).map(([r, c]) => r + ":" + c));
  for (let c = 0; c < c4.COLS; c++) {
    for (let r = 0; r < c4.ROWS; r++) {
      const v = s.board[r][c];
      const d = cells[c][r];
      const disc = v === c4.RED ? "R" : v === c4.YELLOW ? "Y" : "";
      if (d.dataset.disc !== disc) d.dataset.disc = disc;
      d.classList.toggle("win", win.has(r + ":" + c));
    }
    columns[c].classList.toggle("playable", myTurn && s.board[c4.ROWS - 1][c] === -1);
  }
  el.board.dataset.position = c4.boardString(s);
  el.board.dataset.moves = String(s.moves);
  el.board.dataset.myTurn = String(myTurn);
  el.board.dataset.lastMsgId = String(client ? client.lastMsgId : 0);

  // Status.
  const st = el.status;
  const turnName = c4.colorName[s.turn];
  st.dataset.turn = !c4.over(s) && s.seats.length === 2 ? turnName.toLowerCase() : "";
  st.dataset.winner = s.winner === null ? "" : c4.colorName[s.winner].toLowerCase();
  st.dataset.draw = String(s.draw);
  st.dataset.myTurn = String(myTurn);
  let text;
  if (demo.fatal) {
    text = "Cannot join this game: " + (demo.fatal.message || demo.fatal.code);
  } else if (!g) {
    text = client ? "Creating a game…" : "No game yet.";
  } else if (s.winner !== null) {
    text = c4.colorName[s.winner] + " wins!";
    if (myColor >= 0) text += myColor === s.winner ? " You win." : " You lose.";
  } else if (s.draw) {
    text = "Draw: the board is full.";
  } else if (s.seats.length < 2) {
    text = isPlayer ? "Waiting for a second player: send them the Join link." : "Waiting for players…";
  } else if (myTurn) {
    text = turnName + "'s turn: your move.";
  } else if (myColor >= 0) {
    text = turnName + "'s turn: waiting for your opponent.";
  } else {
    text = turnName + "'s turn.";
  }
  st.textContent = text;

  // Who am I.
  if (!g) el.you.textContent = "";
  else if (myColor >= 0) el.you.textContent = "You play " + c4.colorName[myColor] + ".";
  else if (isPlayer && s.seats.length === 2) el.you.textContent = "Both seats are taken: you are watching.";
  else if (client && client.role === "spectator") el.you.textContent = "You are watching.";
  else el.you.textContent = "";

  renderConnection();
  renderAudience();
}

buildBoard();
el.newGame.addEventListener("click", newGame);
window.addEventListener("hashchange", () => {
  const sess = parseHash();
  if (sess && !sameSession(sess, demo.game)) start(sess);
});
const initial = parseHash();
if (initial) start(initial);
render();
