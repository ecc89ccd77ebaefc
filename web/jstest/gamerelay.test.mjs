// Unit tests of the JS client against a scripted fake WebSocket (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { GameRelay, tokenExp } from "../static/gamerelay.js";

// FakeWS plays the gateway: the test opens it, feeds it frames and closes it.
class FakeWS {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    FakeWS.all.push(this);
  }
  send(s) {
    this.sent.push(JSON.parse(s));
  }
  close(code, reason) {
    this.closed = { code, reason };
  }
  // test side
  open() {
    this.onopen?.({});
  }
  recv(obj) {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }
  serverClose(code = 1001) {
    this.closed = { code };
    this.onclose?.({ code, reason: "" });
  }
}

const last = () => FakeWS.all[FakeWS.all.length - 1];
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
const msg = (id, extra = {}) => ({ type: "move", client_id: "x", ts: 1, msg_id: id, ...extra });

function newClient(opts = {}) {
  FakeWS.all = [];
  const c = new GameRelay("ws://gw.test/ws", { WebSocket: FakeWS, minDelay: 1, maxDelay: 5, ...opts });
  const seen = { states: [], messages: [], presence: [], errors: [], joined: [], created: [], sync: [] };
  c.on("state", (s) => seen.states.push(s));
  c.on("message", (m) => seen.messages.push(m.msg_id));
  c.on("presence", (m) => seen.presence.push(m.msg_id));
  c.on("error", (e) => seen.errors.push(e.code));
  c.on("joined", (j) => seen.joined.push(j));
  c.on("created", (x) => seen.created.push(x));
  c.on("sync", (x) => seen.sync.push(x.lastMsgId));
  return { c, seen };
}

async function waitFor(cond, what) {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await tick(2);
  }
  assert.fail("timed out waiting for " + what);
}

test("join: joined, replay in order, duplicates dropped, presence separate", async () => {
  const { c, seen } = newClient();
  const p = c.join({ game: "g1", token: "T", since: 0 });
  assert.equal(c.state, "connecting");
  last().open();
  assert.deepEqual(last().sent, [{ type: "join", game: "g1", token: "T", since: 0 }]);
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "player", head: 2, since: 0 });
  const j = await p;
  assert.equal(j.role, "player");
  assert.equal(c.state, "joined");
  assert.deepEqual(seen.sync, []);
  last().recv({ type: "presence", events: [{ event: "join", client: "c0" }], client_id: "", msg_id: 1, ts: 1 });
  last().recv(msg(2));
  assert.deepEqual(seen.sync, [2]);
  last().recv(msg(2));
  last().recv(msg(1));
  last().recv(msg(3));
  assert.deepEqual(seen.messages, [2, 3]);
  assert.deepEqual(seen.presence, [1]);
  assert.equal(c.stats.duplicates, 2);
  assert.equal(c.lastMsgId, 3);
  const idem = c.send({ type: "move", to: 1 });
  assert.match(idem, /^[0-9a-f]{24}$/);
  assert.deepEqual(last().sent[1], { type: "move", to: 1, idem });
  assert.deepEqual(seen.states, ["connecting", "open", "joined"]);
  c.close();
  assert.equal(c.state, "closed");
});

test("reconnects after a drop and resumes from the last msg_id", async () => {
  const { c, seen } = newClient();
  c.join({ game: "g1", token: "T" });
  last().open();
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "player", head: 0 });
  last().recv(msg(1));
  last().recv(msg(2));
  const first = last();
  first.serverClose(1001);
  assert.equal(c.state, "reconnecting");
  await waitFor(() => FakeWS.all.length === 2, "second connection");
  // A frame from the old socket is ignored.
  first.recv(msg(3));
  last().open();
  assert.deepEqual(last().sent, [{ type: "join", game: "g1", token: "T", since: 2 }]);
  last().recv({ type: "joined", game: "g1", client_id: "c2", role: "player", head: 3 });
  last().recv(msg(3));
  last().recv(msg(4));
  assert.deepEqual(seen.messages, [1, 2, 3, 4]);
  assert.equal(seen.joined.length, 2);
  assert.ok(seen.states.includes("reconnecting"));
  assert.equal(c.state, "joined");
  c.close();
});

test("a gap is reported and triggers a resume", async () => {
  const { c, seen } = newClient();
  c.join({ game: "g1" });
  last().open();
  assert.deepEqual(last().sent, [{ type: "join", game: "g1", since: 0 }], "no token: anonymous");
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "player", head: 0 });
  last().recv(msg(1));
  last().recv(msg(3));
  assert.deepEqual(seen.errors, ["gap"]);
  assert.equal(last().closed.code, 4000);
  await waitFor(() => FakeWS.all.length === 2, "resume connection");
  last().open();
  assert.equal(last().sent[0].since, 1);
  last().recv({ type: "joined", game: "g1", client_id: "c2", role: "player", head: 3 });
  last().recv(msg(2));
  last().recv(msg(3));
  assert.deepEqual(seen.messages, [1, 2, 3]);
  assert.equal(c.stats.gaps, 1);
  c.close();
});

test("create: created, then reconnects join the created game with the player token", async () => {
  const { c, seen } = newClient();
  const p = c.create();
  last().open();
  assert.deepEqual(last().sent, [{ type: "create" }]);
  last().recv({ type: "created", game: "new1", join: "PJ", watch: "SW" });
  last().recv({ type: "joined", game: "new1", client_id: "c1", role: "player", head: 1 });
  const r = await p;
  assert.equal(r.game, "new1");
  assert.equal(r.join, "PJ");
  assert.equal(r.watch, "SW");
  assert.deepEqual(seen.created, [{ game: "new1", join: "PJ", watch: "SW" }]);
  last().recv({ type: "presence", events: [{ event: "join", client: "c1" }], client_id: "", msg_id: 1, ts: 1 });
  last().serverClose(1006);
  await waitFor(() => FakeWS.all.length === 2, "reconnect");
  last().open();
  assert.deepEqual(last().sent, [{ type: "join", game: "new1", token: "PJ", since: 1 }]);
  c.close();
});

test("a refused join rejects and does not reconnect", async () => {
  const { c, seen } = newClient();
  const p = c.join({ game: "g1", token: "bad" });
  last().open();
  last().recv({ type: "error", code: "bad_token", message: "signature" });
  await assert.rejects(p, (e) => e.code === "bad_token");
  assert.equal(c.state, "closed");
  await tick(20);
  assert.equal(FakeWS.all.length, 1);
  assert.deepEqual(seen.errors, ["bad_token"]);
});

test("a transient join error retries", async () => {
  const { c } = newClient();
  const p = c.join({ game: "g1", token: "T" });
  last().open();
  last().recv({ type: "error", code: "unavailable", message: "try again" });
  await waitFor(() => FakeWS.all.length === 2, "retry");
  c.close();
  await assert.rejects(p, (e) => e.code === "closed");
});

test("errors while joined are reported; the connection stays", () => {
  const { c, seen } = newClient();
  c.join({ game: "g1" });
  last().open();
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "spectator", head: 0 });
  last().recv({ type: "error", code: "forbidden", message: "spectators cannot send" });
  assert.deepEqual(seen.errors, ["forbidden"]);
  assert.equal(c.state, "joined");
  assert.equal(last().closed, null);
  c.close();
});

test("close() is final", async () => {
  const { c } = newClient();
  c.join({ game: "g1" });
  last().open();
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "player", head: 0 });
  c.close();
  assert.equal(last().closed.code, 1000);
  last().serverClose(1000);
  await tick(20);
  assert.equal(FakeWS.all.length, 1);
  assert.equal(c.state, "closed");
});

test("backoff grows exponentially with jitter, up to maxDelay and maxAttempts", async () => {
  const delays = [];
  const realSetTimeout = globalThis.setTimeout;
  globalThis.setTimeout = (fn, d) => {
    delays.push(d);
    return realSetTimeout(fn, 0);
  };
  try {
    const { c } = newClient({ minDelay: 100, maxDelay: 1000, factor: 2, jitter: 0.5, maxAttempts: 6 });
    const p = c.join({ game: "g1" });
    p.catch(() => {});
    for (let i = 0; i < 7; i++) {
      await waitFor(() => FakeWS.all.length === i + 1, "attempt " + i);
      last().serverClose(1006);
    }
    await assert.rejects(p);
    assert.equal(c.state, "closed");
    const mine = delays.filter((d) => d >= 50);
    const bases = [100, 200, 400, 800, 1000, 1000];
    assert.equal(mine.length, bases.length, String(mine));
    mine.forEach((d, i) => assert.ok(d >= bases[i] * 0.5 && d <= bases[i], `delay ${i}: ${d} not in [${bases[i] / 2}, ${bases[i]}]`));
  } finally {
    globalThis.setTimeout = realSetTimeout;
  }
});

test("http and relative URLs become WebSocket URLs", () => {
  const a = new GameRelay("https://example.test/ws", { WebSocket: FakeWS });
  assert.equal(a.url, "wss://example.test/ws");
  const b = new GameRelay("http://example.test:8080/ws", { WebSocket: FakeWS });
  assert.equal(b.url, "ws://example.test:8080/ws");
});

test("messages carry keys; unseen ones are sent again after a resume, once the replay caught up", async () => {
  const { c } = newClient();
  assert.equal(c.send({ type: "early" }), false, "send before join()");
  c.join({ game: "g1", token: "T" });
  const queued = c.send({ type: "a" }); // before joined: waits
  last().open();
  assert.equal(last().sent.length, 1, "only the join before sync");
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "player", head: 1, since: 0 });
  assert.equal(last().sent.length, 1, "still replaying");
  last().recv(msg(1));
  assert.deepEqual(last().sent[1], { type: "a", idem: queued }, "sent once synced");
  const b = c.send({ type: "b", idem: "mine-2" });
  assert.equal(b, "mine-2");
  assert.equal(c.pending, 2);
  last().recv(msg(2, { type: "a", idem: queued })); // a is stored
  assert.equal(c.pending, 1);
  last().serverClose(1001); // b's outcome unknown
  await waitFor(() => FakeWS.all.length === 2, "resume");
  last().open();
  last().recv({ type: "joined", game: "g1", client_id: "c2", role: "player", head: 2, since: 2 });
  // Synced at once (head 2 = last seen): b goes again, same key.
  assert.deepEqual(last().sent[1], { type: "b", idem: "mine-2" });
  assert.equal(c.stats.resent, 1);
  last().recv(msg(3, { type: "b", idem: "mine-2" }));
  assert.equal(c.pending, 0);
  assert.throws(() => c.send({ type: "x", idem: "no spaces" }), TypeError);
  c.close();
});

test("a message stored before the resume is seen in the replay and not sent again", async () => {
  const { c } = newClient();
  c.join({ game: "g1" });
  last().open();
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "player", head: 0, since: 0 });
  const k = c.send({ type: "m" });
  last().serverClose(1006);
  await waitFor(() => FakeWS.all.length === 2, "resume");
  last().open();
  last().recv({ type: "joined", game: "g1", client_id: "c2", role: "player", head: 1, since: 0 });
  last().recv(msg(1, { type: "m", idem: k })); // in the replay
  assert.equal(last().sent.length, 1, "nothing resent");
  assert.equal(c.pending, 0);
  c.close();
});

test("errors naming a message: unavailable and outcome_unknown send it again; others drop it", async () => {
  const { c, seen } = newClient({ resendDelay: 1 });
  c.join({ game: "g1" });
  last().open();
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "player", head: 0, since: 0 });
  const k1 = c.send({ type: "m" });
  const k2 = c.send({ type: "bad", msg_id: 3 });
  last().recv({ type: "error", code: "outcome_unknown", message: "?", idem: k1 });
  last().recv({ type: "error", code: "reserved_field", message: "no", idem: k2 });
  assert.deepEqual(seen.errors, ["outcome_unknown", "reserved_field"]);
  assert.equal(c.pending, 1);
  await waitFor(() => last().sent.length === 4, "resend of k1");
  assert.deepEqual(last().sent[3].idem, k1);
  c.close();
});

test("history bounds the first join's replay; joined.since moves lastMsgId; audience frames", async () => {
  const { c } = newClient();
  const aud = [];
  c.on("audience", (a) => aud.push(a));
  c.join({ game: "g1", history: 10 });
  last().open();
  assert.deepEqual(last().sent, [{ type: "join", game: "g1", since: 0, history: 10 }]);
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "spectator", head: 50, since: 40 });
  assert.equal(c.lastMsgId, 40);
  last().recv(msg(41));
  assert.equal(c.stats.gaps, 0);
  last().recv({ type: "audience", game: "g1", players: 2, spectators: 7 });
  assert.deepEqual(aud, [{ game: "g1", players: 2, spectators: 7 }]);
  assert.deepEqual(c.audience, { players: 2, spectators: 7 });
  last().serverClose(1001);
  await waitFor(() => FakeWS.all.length === 2, "resume");
  last().open();
  assert.deepEqual(last().sent, [{ type: "join", game: "g1", since: 41 }], "a resume continues, without history");
  c.close();
});

const jwt = (exp) => "h." + Buffer.from(JSON.stringify({ game: "g1", exp })).toString("base64url") + ".s";

test("tokenExp reads a JWT's exp", () => {
  assert.equal(tokenExp(jwt(1795320000)), 1795320000);
  assert.equal(tokenExp("not a jwt"), 0);
});

test("refreshToken is called before exp; the fresh token is sent and used to resume", async () => {
  let calls = 0;
  const fresh = jwt(Math.floor(Date.now() / 1000) + 3600);
  const { c } = newClient({ refreshToken: async () => (calls++, fresh), refreshBefore: 60_000 });
  const refreshed = [];
  c.on("refreshed", (r) => refreshed.push(r.exp));
  c.join({ game: "g1", token: jwt(Math.floor(Date.now() / 1000) + 30) }); // expires within refreshBefore
  last().open();
  last().recv({ type: "joined", game: "g1", client_id: "c1", role: "player", head: 0, since: 0 });
  await waitFor(() => last().sent.length === 2, "refresh frame");
  assert.deepEqual(last().sent[1], { type: "refresh", token: fresh });
  assert.equal(calls, 1);
  last().recv({ type: "refreshed", exp: 42 });
  assert.deepEqual(refreshed, [42]);
  last().serverClose(1001);
  await waitFor(() => FakeWS.all.length === 2, "resume");
  last().open();
  assert.equal(last().sent[0].token, fresh, "resumes with the fresh token");
  c.close();
});

test("a join refused as token_expired gets a fresh token and joins again", async () => {
  const fresh = jwt(Math.floor(Date.now() / 1000) + 3600);
  const { c } = newClient({ refreshToken: () => fresh });
  const p = c.join({ game: "g1", token: "old" });
  last().open();
  last().recv({ type: "error", code: "token_expired", message: "expired" });
  await waitFor(() => FakeWS.all.length === 2, "rejoin");
  last().open();
  assert.equal(last().sent[0].token, fresh);
  last().recv({ type: "joined", game: "g1", client_id: "c2", role: "player", head: 0, since: 0 });
  await p;
  c.close();
});
