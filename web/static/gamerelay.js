// gamerelay.js — the browser client of the gamerelay wire protocol v1
// (docs/protocol.md). An ES module without dependencies; documented in
// docs/client-js.md, typed in gamerelay.d.ts.
//
// A GameRelay holds one WebSocket joined to one game. It delivers the game's
// messages in msg_id order, each once, and when the connection drops for any
// reason other than close() it reconnects with exponential backoff and
// jitter, joins the same game with the same token and since = the last
// msg_id it delivered, and drops anything it already delivered. Every
// message it sends carries an idempotency key ("idem"): a message not seen
// stored yet is sent again after a resume (once the replay has caught up),
// and the gateway stores it at most once.

/** Default options; see docs/client-js.md. */
export const defaults = Object.freeze({
  reconnect: true, // reconnect after any close except close()
  minDelay: 250, // ms before the first reconnect attempt
  maxDelay: 10000, // ms, upper bound of the backoff
  factor: 2, // backoff multiplier per failed attempt
  jitter: 0.5, // each delay is scaled by a random factor in [1-jitter, 1]
  maxAttempts: Infinity, // consecutive failed attempts before giving up
  maxPending: 1000, // messages sent but not yet seen stored, beyond which send() refuses
  resendDelay: 1000, // ms before a message refused as unavailable (or of unknown outcome) is sent again
  refreshToken: undefined, // async () => a fresh token for the game; called before the token expires
  refreshBefore: 30000, // ms before the token's exp that refreshToken is called
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
    /** The game's audience on every gateway: {players, spectators}, from audience frames. */
    this.audience = undefined;
    /** Counters, for display and tests. */
    this.stats = { connects: 0, reconnects: 0, duplicates: 0, gaps: 0, resent: 0 };

    this._ws = null;
    this._intent = null; // null | "create" | "join": what to do on open
    this._attempt = 0; // consecutive failed attempts
    this._timer = null;
    this._synced = false;
    this._pending = null; // {resolve, reject} of create()/join()
    this._history = undefined; // "history" of the first join only
    // Messages sent (or waiting to be) that have not come back stored:
    // idem → {text, sent, resend}. sent: on the current connection;
    // resend: sent before, so sending again counts in stats.resent.
    this._unseen = new Map();
    this._resendTimer = null;
    this._refreshTimer = null;
    this._refreshing = null; // the running refreshToken() call
  }

  /** How many sent messages have not been seen stored yet. */
  get pending() {
    return this._unseen.size;
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
   * @param {{game: string, token?: string, since?: number, history?: number}} p
   *   history: replay at most the last N messages (first join only; a
   *   resume continues from the last msg_id delivered).
   */
  join({ game, token, since = 0, history }) {
    if (typeof game !== "string" || game === "") throw new TypeError("join: game required");
    if (history !== undefined && (!Number.isInteger(history) || history < 0)) throw new TypeError("join: history must be a non-negative integer");
    this.game = game;
    this.token = token;
    this.lastMsgId = since;
    this._history = history;
    this._begin("join");
    return this._promise();
  }

  /**
   * Sends a game message (a plain object with a string "type"), with an
   * idempotency key: obj.idem if set (1-64 of A-Z a-z 0-9 . _ : -), else a
   * random one, which send() returns. While the client reconnects the
   * message waits; a message not seen stored when a resume has caught up
   * is sent again with its key, and the gateway stores it at most once.
   * Returns false, sending nothing, before create()/join(), after close(),
   * or when options.maxPending messages are still unseen.
   */
  send(obj) {
    if (obj === null || typeof obj !== "object" || typeof obj.type !== "string") {
      throw new TypeError('send: want an object with a string "type"');
    }
    if (!this._intent || this._unseen.size >= this.options.maxPending) return false;
    let idem = obj.idem;
    if (idem === undefined) {
      idem = newIdem();
      obj = { ...obj, idem };
    } else if (typeof idem !== "string" || !/^[A-Za-z0-9._:-]{1,64}$/.test(idem)) {
      throw new TypeError("send: idem must be 1-64 of A-Z a-z 0-9 . _ : -");
    }
    const entry = { text: JSON.stringify(obj), sent: false };
    this._unseen.delete(idem); // a resend of a key goes last
    this._unseen.set(idem, entry);
    if (this.state === "joined" && this._synced && this._ws) {
      this._ws.send(entry.text);
      entry.sent = entry.resend = true;
    }
    return idem;
  }

  /** Closes the connection for good: no reconnect. */
  close() {
    this._intent = null;
    clearTimeout(this._timer);
    this._timer = null;
    clearTimeout(this._resendTimer);
    this._resendTimer = null;
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
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
   * unsubscribes. Events: message, presence, audience, state, joined,
   * created, sync, error, disconnect.
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
      for (const e of this._unseen.values()) e.sent = false;
      if (this._intent === "create") {
        ws.send(JSON.stringify({ type: "create" }));
      } else {
        const j = { type: "join", game: this.game, since: this.lastMsgId };
        if (this.token) j.token = this.token;
        if (this._history !== undefined) j.history = this._history;
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
        this._history = undefined; // resumes continue from lastMsgId
        this._scheduleRefresh();
        if (typeof m.since === "number" && m.since > this.lastMsgId) {
          // "history" bounded the replay: it starts after m.since.
          this.lastMsgId = m.since;
        }
        this._setState("joined");
        const detail = { game: m.game, clientId: m.client_id, role: m.role, head: m.head, since: this.lastMsgId };
        this._emit("joined", detail);
        const p = this._pending;
        this._pending = null;
        if (p) p.resolve(this._created ? { ...this._created, ...detail } : detail);
        this._maybeSynced();
        return;
      }
      case "refreshed":
        this._emit("refreshed", { exp: m.exp });
        this._scheduleRefresh();
        return;
      case "audience":
        this.audience = { players: m.players, spectators: m.spectators };
        this._emit("audience", { game: m.game, players: m.players, spectators: m.spectators });
        return;
      case "error": {
        const err = new GameRelayError(m.code, m.message, m.idem !== undefined ? { idem: m.idem } : undefined);
        if (m.idem !== undefined && this._unseen.has(m.idem)) {
          this._refused(m.idem, err);
          return;
        }
        if (this.state === "joined") {
          this._emit("error", err);
          if (m.code === "token_expired" && this.options.refreshToken) {
            // The gateway closes the connection now; rejoin with a fresh token.
            this._refresh(false);
          }
          return;
        }
        // An answer to our join or create.
        this._emit("error", err);
        if (m.code === "token_expired" && this.options.refreshToken) {
          // Our token ran out while away: get a fresh one, join with it.
          detach(ws);
          if (this._ws === ws) this._ws = null;
          try {
            ws.close(1000, "refreshing token");
          } catch {
            // already closed
          }
          this._refresh(false).then((ok) => (ok ? this._scheduleReconnect() : this._giveUp(err)));
          return;
        }
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

  // _scheduleRefresh arms the call of options.refreshToken before the
  // token expires.
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    const exp = tokenExp(this.token);
    if (!this.options.refreshToken || !exp) return;
    const wait = Math.max(0, exp * 1000 - Date.now() - this.options.refreshBefore);
    this._refreshTimer = setTimeout(() => this._refresh(true), wait);
  }

  // _refresh asks the page for a fresh token; with send set, hands it to
  // the gateway on the open connection. Resolves true if it got one.
  _refresh(send) {
    if (this._refreshing) return this._refreshing;
    this._refreshing = (async () => {
      try {
        const t = await this.options.refreshToken();
        if (typeof t !== "string" || t === "") throw new TypeError("refreshToken must return a token");
        this.token = t;
        if (send && this.state === "joined" && this._ws) this._ws.send(JSON.stringify({ type: "refresh", token: t }));
        return true;
      } catch (e) {
        this._emit("error", new GameRelayError("refresh", "refreshToken failed: " + String((e && e.message) || e)));
        return false;
      } finally {
        this._refreshing = null;
      }
    })();
    return this._refreshing;
  }

  // _giveUp ends the client after a join refused for good.
  _giveUp(err) {
    this._intent = null;
    this._fail(err);
    this._setState("closed");
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
    if (typeof m.idem === "string") this._unseen.delete(m.idem); // stored
    this._emit(m.type === "presence" ? "presence" : "message", m);
    this._maybeSynced();
  }

  _maybeSynced() {
    if (!this._synced && this.state === "joined" && this.lastMsgId >= this.head) {
      this._synced = true;
      this._emit("sync", { game: this.game, lastMsgId: this.lastMsgId });
      // The replay has caught up: what is still unseen was not stored
      // before this join (or is on its way): send it (again), same keys.
      this._flushUnseen();
    }
  }

  // _flushUnseen sends the unseen messages not sent on this connection yet.
  _flushUnseen() {
    if (this.state !== "joined" || !this._synced || !this._ws) return;
    for (const e of this._unseen.values()) {
      if (e.sent) continue;
      if (e.resend) this.stats.resent++;
      this._ws.send(e.text);
      e.sent = true;
      e.resend = true;
    }
  }

  // _refused handles an error about one of our messages.
  _refused(idem, err) {
    const e = this._unseen.get(idem);
    switch (err.code) {
      case "unavailable": // not stored: send it again
      case "outcome_unknown": // maybe stored: sending it again is harmless
        e.sent = false;
        this._emit("error", err);
        if (!this._resendTimer) {
          this._resendTimer = setTimeout(() => {
            this._resendTimer = null;
            this._flushUnseen();
          }, this.options.resendDelay);
        }
        return;
    }
    // Refused for good (invalid, forbidden, rate limited, ...).
    this._unseen.delete(idem);
    this._emit("error", err);
  }
}

// tokenExp returns a JWT's exp claim (Unix seconds), read without checking
// the signature (the gateway does that), or 0.
export function tokenExp(token) {
  try {
    const part = String(token).split(".")[1];
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = JSON.parse(json).exp;
    return Number.isInteger(exp) ? exp : 0;
  } catch {
    return 0;
  }
}

// newIdem returns a random idempotency key.
function newIdem() {
  const b = new Uint8Array(12);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
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
