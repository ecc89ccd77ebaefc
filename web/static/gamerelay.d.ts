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
  /** WebSocket constructor. Default globalThis.WebSocket. */
  WebSocket?: { new (url: string): WebSocket };
}

export declare const defaults: Readonly<Required<Omit<Options, "WebSocket">> & { WebSocket: undefined }>;

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
  [field: string]: unknown;
}

/** A client joined or left (a system message in the log). */
export interface PresenceMessage extends GameMessage {
  type: "presence";
  event: "join" | "leave";
  client: string;
  role: Role;
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
  /** The `since` this join was sent with. */
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
 * "closed" (a pending create()/join() ended with the connection), "superseded". */
export declare class GameRelayError extends Error {
  readonly code: string;
  /** For "gap": the msg_id expected and the one received. */
  readonly expected?: number;
  readonly got?: number;
}

export interface EventMap {
  message: GameMessage;
  presence: PresenceMessage;
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
  readonly options: Required<Omit<Options, "WebSocket">> & Pick<Options, "WebSocket">;
  readonly state: State;
  readonly game: string | undefined;
  readonly token: string | undefined;
  readonly role: Role | undefined;
  readonly clientId: string | undefined;
  /** The last msg_id delivered; the `since` of the next (re)join. */
  readonly lastMsgId: number;
  readonly head: number;
  readonly stats: { connects: number; reconnects: number; duplicates: number; gaps: number };

  /** Creates a game (where the server allows it) and joins it as a player. */
  create(): Promise<Created & Joined>;
  /** Joins a game; the token decides player or spectator. */
  join(p: { game: string; token?: string; since?: number }): Promise<Joined>;
  /** Sends a game message; false (nothing sent) unless joined. */
  send(msg: { type: string; [field: string]: unknown }): boolean;
  /** Closes for good; no reconnect. */
  close(): void;
  /** Subscribes; returns the unsubscribe function. */
  on<K extends keyof EventMap>(type: K, fn: (detail: EventMap[K], event: CustomEvent<EventMap[K]>) => void): () => void;
}

export declare function connect(url?: string, options?: Options): GameRelay;

export default GameRelay;
