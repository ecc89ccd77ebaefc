// Type declarations for gamerelay.js, the browser client of the gamerelay
// wire protocol v1. See docs/client-js.md.

/** Connection state, reported by the "state" event. */
export type State = "idle" | "connecting" | "open" | "joined" | "reconnecting" | "closed";

export type Role = "player" | "spectator";

export interface Options {
  /** Reconnect after any close except close(). Default true. */
  reconnect?: boolean;
  /** Delay before the first reconnect attempt, ms. Default 250. */
  minDelay?: number;
  /** Upper bound of the backoff, ms. Default 10000. */
  maxDelay?: number;
  /** Backoff multiplier per failed attempt. Default 2. */
  factor?: number;
  /** Each delay is scaled by a random factor in [1 - jitter, 1]. Default 0.5. */
  jitter?: number;
  /** Consecutive failed attempts before giving up ("closed"). Default Infinity. */
  maxAttempts?: number;
  /** Sent messages not yet seen stored, beyond which send() refuses. Default 1000. */
  maxPending?: number;
  /** ms before a message answered unavailable or outcome_unknown is sent again. Default 1000. */
  resendDelay?: number;
  /**
   * Returns a fresh token for the game (from your server). Called `refreshBefore` ms before the
   * token expires (the new one is sent as {"type":"refresh"}), and when a join finds the token expired.
   * Without it a connection ends when its token expires.
   */
  refreshToken?: () => Promise<string> | string;
  /** ms before the token's exp that refreshToken is called. Default 30000. */
  refreshBefore?: number;
  /** WebSocket constructor. Default globalThis.WebSocket. */
  WebSocket?: { new (url: string): WebSocket };
}

export declare const defaults: Readonly<Required<Omit<Options, "WebSocket" | "refreshToken">> & { WebSocket: undefined; refreshToken: undefined }>;

/** A JWT's exp claim (Unix seconds), read without checking its signature; 0 if none. */
export declare function tokenExp(token: string): number;

/** A game message as delivered: the sender's object plus the fields gamerelay sets. */
export interface GameMessage {
  type: string;
  /** Position in the game's log: 1, 2, 3, … with no gaps. */
  msg_id: number;
  /** The sending connection; "" for system and backend messages. */
  client_id: string;
  /** Append time, Unix ms. */
  ts: number;
  /** The token's `sub`, when it names one. */
  user?: string;
  /** The sender's idempotency key (the JS client always sets one). */
  idem?: string;
  [field: string]: unknown;
}

/** One player joining or leaving. */
export interface PresenceEvent {
  event: "join" | "leave";
  /** The player's client_id. */
  client: string;
  /** The player's token `sub`, when it names one. */
  user?: string;
}

/**
 * Players joined or left, in this order (a system message in the log).
 * When more joined or left at once than one message lists (64), `events`
 * is absent and `joins` and `leaves` count them instead.
 */
export interface PresenceMessage extends GameMessage {
  type: "presence";
  /** The joins and leaves, in order; absent when they are counted. */
  events?: PresenceEvent[];
  /** How many players joined, when too many to list. */
  joins?: number;
  /** How many players left, when too many to list. */
  leaves?: number;
}

/** The game's players and spectators on every gateway (not part of the log). */
export interface Audience {
  game: string;
  players: number;
  spectators: number;
}

export interface Created {
  game: string;
  /** Player token. */
  join: string;
  /** Spectator token. */
  watch: string;
}

export interface Joined {
  game: string;
  clientId: string;
  role: Role;
  /** The game's last msg_id when this join happened. */
  head: number;
  /** The msg_id the replay starts after (the join's since, or later with `history`). */
  since: number;
}

export interface Sync {
  game: string;
  lastMsgId: number;
}

export interface Disconnect {
  code: number;
  reason: string;
}

/** A server error frame (code from docs/protocol.md), or a client-side condition:
 * "gap" (a msg_id skipped: reported, then the client resumes), "connect",
 * "closed" (a pending create()/join() ended with the connection), "superseded",
 * "refresh" (refreshToken failed). */
export declare class GameRelayError extends Error {
  readonly code: string;
  /** For errors about a message you sent: its idempotency key. */
  readonly idem?: string;
  /** For "gap": the msg_id expected and the one received. */
  readonly expected?: number;
  readonly got?: number;
}

export interface EventMap {
  message: GameMessage;
  presence: PresenceMessage;
  audience: Audience;
  /** The gateway took the token refreshToken returned; the connection lives until exp (Unix s). */
  refreshed: { exp: number };
  state: State;
  created: Created;
  joined: Joined;
  sync: Sync;
  error: GameRelayError;
  disconnect: Disconnect;
}

export declare function defaultURL(path?: string): string;

export declare class GameRelay extends EventTarget {
  constructor(url?: string, options?: Options);
  readonly url: string;
  readonly options: Required<Omit<Options, "WebSocket" | "refreshToken">> & Pick<Options, "WebSocket" | "refreshToken">;
  readonly state: State;
  readonly game: string | undefined;
  readonly token: string | undefined;
  readonly role: Role | undefined;
  readonly clientId: string | undefined;
  /** The last msg_id delivered; the `since` of the next (re)join. */
  readonly lastMsgId: number;
  readonly head: number;
  /** The latest audience frame's counts. */
  readonly audience: { players: number; spectators: number } | undefined;
  /** Sent messages not yet seen stored. */
  readonly pending: number;
  readonly stats: { connects: number; reconnects: number; duplicates: number; gaps: number; resent: number };

  /** Creates a game (where the server allows it) and joins it as a player. */
  create(): Promise<Created & Joined>;
  /** Joins a game; the token decides player or spectator. `history`: replay at most the last N messages. */
  join(p: { game: string; token?: string; since?: number; history?: number }): Promise<Joined>;
  /**
   * Sends a game message with an idempotency key (`idem`, random unless given) and returns the key;
   * it waits while reconnecting and is sent again after a resume until seen stored.
   * false (nothing sent) before create()/join(), after close(), or with maxPending messages unseen.
   */
  send(msg: { type: string; idem?: string; [field: string]: unknown }): string | false;
  /** Closes for good; no reconnect. */
  close(): void;
  /** Subscribes; returns the unsubscribe function. */
  on<K extends keyof EventMap>(type: K, fn: (detail: EventMap[K], event: CustomEvent<EventMap[K]>) => void): () => void;
}

export declare function connect(url?: string, options?: Options): GameRelay;

export default GameRelay;
