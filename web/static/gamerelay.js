// gamerelay.js — the browser client of the gamerelay wire protocol v1
// (docs/protocol.md). An ES module without dependencies; documented in
// docs/client-js.md, typed in gamerelay.d.ts.
//
// A GameRelay holds one WebSocket joined to one game. It delivers the game's
// messages in msg_id order, each once, and when the connection drops for any
// reason other than close() it reconnects with exponential backoff and
// jitter, joins the same game with the same token and since = the last
// msg_id it delivered, and drops anything it already delivered.

/** Default options; see docs/client-js.md. */
export const defaults = Object.freeze({
  reconnect: true, // reconnect after any close except close()
  minDelay: 250, // ms before the first reconnect attempt
  maxDelay: 10000, // ms, upper bound of the backoff
  factor: 2, // backoff multiplier per failed attempt
  jitter: 0.5, // each delay is scaled by a random factor in [1-jitter, 1]
  maxAttempts: Infinity, // consecutive failed attempts before giving up
  WebSocket: undefined, // WebSocket constructor; default globalThis.WebSocket
});

// Error codes after which joining again cannot help: the join is given up.
const fatalJoinCodes = new Set([
  "auth_required",
  "bad_token",
  "token_expired",
  "unknown_game",
  "invalid_game",
  "invalid_message",
  "create_disabled",
  "forbidden",
]);

/** An error of the gamerelay protocol: a server error frame, or a gap. */
export class GameRelayError extends Error {
  constructor(code, message, extra) {
    super(message);
    this.name = "GameRelayError";
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

/**
 * The WebSocket URL of the gateway that served the current page: ws(s)://host/ws.
 * A relative URL is resolved against the page.
 */
export function defaultURL(path = "/ws") {
  const u = new URL(path, globalThis.location.href);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}

export class GameRelay extends EventTarget {
  /**
   * @param {string} [url] WebSocket URL of a gateway; default: /ws on the
   *   page's own host. http(s) and relative URLs are converted.
   * @param {object} [options] see `defaults`.
   */
  constructor(url, options = {}) {
    super();
    this.url = url ? toWS(url) : defaultURL();
    this.options = { ...defaults, ...options };
    /** "idle"|"connecting"|"open"|"joined"|"reconnecting"|"closed" */
    this.state = "idle";
    /** The game this client is in (after created / join()). */
    this.game = undefined;
    /** The token it joins with (for create: the player token it received). */
    this.token = undefined;
    /** "player" or "spectator", from the last joined frame. */
    this.role = undefined;
    /** This connection's client_id, from the last joined frame. */
    this.clientId = undefined;
    /** The last msg_id delivered: the `since` of the next join. */
    this.lastMsgId = 0;
    /** msg_id of the game's last message when the current join happened. */
    this.head = 0;
    /** Counters, for display and tests. */
    this.stats = { connects: 0, reconnects: 0, duplicates: 0, gaps: 0 };

    this._ws = null;
    this._intent = null; // null | "create" | "join": what to do on open
    this._attempt = 0; // consecutive failed attempts
    this._timer = null;
    this._synced = false;
    this._pending = null; // {resolve, reject} of create()/join()
  }

  /**
   * Creates a game and joins it as a player. Resolves on joined with
   * {game, join, watch, clientId, role, head}.
   */
  create() {
    this._begin("create");
    return this._promise();
  }

  /**
   * Joins a game as a player or spectator (the token decides).
   * @param {{game: string, token?: string, since?: number}} p
   */
  join({ game, token, since = 0 }) {
    if (typeof game !== "string" || game === "") throw new TypeError("join: game required");
    this.game = game;
    this.token = token;
    this.lastMsgId = since;
    this._begin("join");
    return this._promise();
  }

  /**
   * Sends a game message (a plain object with a string "type"). Returns
   * false, sending nothing, unless the client is joined: messages are not
   * queued across reconnects, since the protocol cannot tell whether one
   * sent before a drop was stored. Watch for your own message coming back.
   */
  send(obj) {
    if (obj === null || typeof obj !== "object" || typeof obj.type !== "string") {
      throw new TypeError('send: want an object with a string "type"');
    }
    if (this.state !== "joined" || !this._ws) return false;
    this._ws.send(JSON.stringify(obj));
    return true;
  }

  /** Closes the connection for good: no reconnect. */
  close() {
    this._intent = null;
    clearTimeout(this._timer);
    this._timer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000, "bye");
      } catch {
        // already closed
      }
    }
    this._fail(new GameRelayError("closed", "closed by the client"));
    this._setState("closed");
  }

  /**
   * Subscribes fn(detail, event) to an event; returns a function that
   * unsubscribes. Events: message, presence, state, joined, created, sync, error.
   */
  on(type, fn) {
    const h = (e) => fn(e.detail, e);
    this.addEventListener(type, h);
    return () => this.removeEventListener(type, h);
  }

  // --- internals ---

  _promise() {
    this._fail(new GameRelayError("superseded", "a newer create() or join() replaced this one"));
    return new Promise((resolve, reject) => {
      this._pending = { resolve, reject };
    });
  }

  _fail(err) {
    const p = this._pending;
    this._pending = null;
    if (p) p.reject(err);
  }

  _begin(intent) {
    if (this.state !== "idle" && this.state !== "closed") {
      throw new Error(`${intent}: this client is ${this.state}; use a new GameRelay per game`);
    }
    this._intent = intent;
    this._attempt = 0;
    this._connect();
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit("state", s);
  }

  _connect() {
    this._timer = null;
    const WS = this.options.WebSocket || globalThis.WebSocket;
    this._setState(this.stats.connects === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WS(this.url);
    } catch (err) {
      this._emit("error", new GameRelayError("connect", String(err)));
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this.stats.connects++;
    ws.onopen = () => {
      this._setState("open");
      this._synced = false;
      if (this._intent === "create") {
        ws.send(JSON.stringify({ type: "create" }));
      } else {
        const j = { type: "join", game: this.game, since: this.lastMsgId };
        if (this.token) j.token = this.token;
        ws.send(JSON.stringify(j));
      }
    };
    ws.onmessage = (ev) => this._frame(ws, ev.data);
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._emit("disconnect", { code: ev.code, reason: ev.reason });
      this._scheduleReconnect();
    };
    ws.onerror = () => {}; // a close event follows
  }

  _scheduleReconnect() {
    if (!this._intent || !this.options.reconnect || this._attempt >= this.options.maxAttempts) {
      this._intent = null;
      this._fail(new GameRelayError("closed", "connection closed"));
      this._setState("closed");
      return;
    }
    const o = this.options;
    const base = Math.min(o.maxDelay, o.minDelay * Math.pow(o.factor, this._attempt));
    const delay = base * (1 - o.jitter * Math.random());
    this._attempt++;
    this.stats.reconnects++;
    this._setState("reconnecting");
    this._timer = setTimeout(() => this._connect(), delay);
  }

  // _drop closes ws without giving up: the close handler reconnects.
  _drop(ws, reason) {
    detach(ws);
    if (this._ws === ws) this._ws = null;
    try {
      ws.close(4000, reason);
    } catch {
      // already closed
    }
    this._scheduleReconnect();
  }

  _frame(ws, data) {
    if (this._ws !== ws) return;
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return; // the gateway sends JSON only
    }
    if (m === null || typeof m !== "object") return;
    if (typeof m.msg_id === "number") {
      this._sequenced(ws, m);
      return;
    }
    switch (m.type) {
      case "created":
        this.game = m.game;
        this.token = m.join;
        this._created = { game: m.game, join: m.join, watch: m.watch };
        // From now on a reconnect joins the created game.
        this._intent = "join";
        this._emit("created", this._created);
        return;
      case "joined": {
        this.game = m.game;
        this.role = m.role;
        this.clientId = m.client_id;
        this.head = m.head;
        this._attempt = 0;
        this._setState("joined");
        const detail = { game: m.game, clientId: m.client_id, role: m.role, head: m.head, since: this.lastMsgId };
        this._emit("joined", detail);
        const p = this._pending;
        this._pending = null;
        if (p) p.resolve(this._created ? { ...this._created, ...detail } : detail);
        this._maybeSynced();
        return;
      }
      case "error": {
        const err = new GameRelayError(m.code, m.message);
        if (this.state === "joined") {
          this._emit("error", err);
          return;
        }
        // An answer to our join or create.
        this._emit("error", err);
        if (fatalJoinCodes.has(m.code)) {
          this._intent = null;
          this._fail(err);
          detach(ws);
          this._ws = null;
          try {
            ws.close(1000, "join refused");
          } catch {
            // already closed
          }
          this._setState("closed");
        } else {
          this._drop(ws, "join failed: " + m.code);
        }
        return;
      }
    }
  }

  _sequenced(ws, m) {
    const id = m.msg_id;
    if (id <= this.lastMsgId) {
      this.stats.duplicates++;
      return;
    }
    if (id > this.lastMsgId + 1) {
      this.stats.gaps++;
      this._emit(
        "error",
        new GameRelayError("gap", `missing messages ${this.lastMsgId + 1}..${id - 1}: resuming`, {
          expected: this.lastMsgId + 1,
          got: id,
        }),
      );
      this._drop(ws, "gap");
      return;
    }
    this.lastMsgId = id;
    this._emit(m.type === "presence" ? "presence" : "message", m);
    this._maybeSynced();
  }

  _maybeSynced() {
    if (!this._synced && this.state === "joined" && this.lastMsgId >= this.head) {
      this._synced = true;
      this._emit("sync", { game: this.game, lastMsgId: this.lastMsgId });
    }
  }
}

function toWS(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
}

/** Shorthand: new GameRelay(url, options). */
export function connect(url, options) {
  return new GameRelay(url, options);
}

export default GameRelay;
