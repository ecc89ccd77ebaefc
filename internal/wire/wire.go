// Package wire holds what several gamerelay roles must agree on: game ids,
// the game → partition hash, NATS subjects, stream and bucket names, and
// message headers. It has no state; everything in it is safe for concurrent use.
package wire

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
)

// MaxGameLen is the longest accepted game id.
const MaxGameLen = 64

// ErrInvalidGame reports a game id that is empty, too long, or holds
// characters outside [A-Za-z0-9_-] (a game id is one NATS subject token).
var ErrInvalidGame = errors.New("invalid game id")

// ValidateGame checks that id can name a game.
func ValidateGame(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidGame)
	}
	if len(id) > MaxGameLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidGame, MaxGameLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: byte %q at offset %d (allowed: A-Z a-z 0-9 _ -)", ErrInvalidGame, c, i)
		}
	}
	return nil
}

// Partition maps a game id onto one of n partitions: FNV-1a (32 bit) of the
// id, modulo n. Every component computes it the same way.
func Partition(game string, n int) int {
	if n <= 1 {
		return 0
	}
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for i := 0; i < len(game); i++ {
		h ^= uint32(game[i])
		h *= prime32
	}
	return int(h % uint32(n))
}

// DefaultNamespace prefixes every subject, stream and bucket name.
const DefaultNamespace = "gr"

// Names derives every JetStream and NATS name from one namespace, so several
// independent gamerelay installations can share a NATS account.
type Names struct {
	NS string // subject prefix and stream/bucket name prefix; "" means DefaultNamespace
}

func (n Names) ns() string {
	if n.NS == "" {
		return DefaultNamespace
	}
	return n.NS
}

// Stream is the name of partition p's stream: "<ns>_log_<p>".
func (n Names) Stream(p int) string { return n.ns() + "_log_" + strconv.Itoa(p) }

// LogSubject is the subject game messages are stored on: "<ns>.log.<p>.<game>".
func (n Names) LogSubject(p int, game string) string {
	return n.ns() + ".log." + strconv.Itoa(p) + "." + game
}

// LogFilter matches every game of partition p: "<ns>.log.<p>.*".
func (n Names) LogFilter(p int) string { return n.ns() + ".log." + strconv.Itoa(p) + ".*" }

// LiveSubject is where the sequencer publishes the live copy of a stored
// message for the gateways' feeds: "<ns>.live.<p>.<game>".
func (n Names) LiveSubject(p int, game string) string {
	return n.ns() + ".live." + strconv.Itoa(p) + "." + game
}

// LiveFilter matches the live subjects of every game in partition p.
func (n Names) LiveFilter(p int) string { return n.ns() + ".live." + strconv.Itoa(p) + ".*" }

// AppendSubject is the request subject of partition p's sequencer: "<ns>.append.<p>".
func (n Names) AppendSubject(p int) string { return n.ns() + ".append." + strconv.Itoa(p) }

// AppendAnySubject is where any sequencer takes appends for partition p:
// "<ns>.append.any.<p>". Callers use it when the partition's owner does
// not answer (it died, hangs, or is cut off), since correctness rests on
// JetStream's per-subject check, not on who appends.
func (n Names) AppendAnySubject(p int) string { return n.ns() + ".append.any." + strconv.Itoa(p) }

// AppendAnyFilter matches AppendAnySubject of every partition.
func (n Names) AppendAnyFilter() string { return n.ns() + ".append.any.*" }

// AudienceSubject is where gateways publish how many players and spectators
// of a game they host: "<ns>.audience.<p>.<game>".
func (n Names) AudienceSubject(p int, game string) string {
	return n.ns() + ".audience." + strconv.Itoa(p) + "." + game
}

// AudienceAlive is where every gateway announces, every second, that its
// audience counts still hold: "<ns>.audience.alive".
func (n Names) AudienceAlive() string { return n.ns() + ".audience.alive" }

// History is the request subject of the archiver's history API: "<ns>.history".
func (n Names) History() string { return n.ns() + ".history" }

// LeaseBucket is the KV bucket holding partition leases and sequencer heartbeats.
func (n Names) LeaseBucket() string { return n.ns() + "_leases" }

// GamesBucket is the KV bucket recording the games created with tokens,
// which admit only token holders: "<ns>_games".
func (n Names) GamesBucket() string { return n.ns() + "_games" }

// HeadsBucket is the KV bucket holding per-game head checkpoints, so numbering
// continues after retention removed every stored message of an idle game.
func (n Names) HeadsBucket() string { return n.ns() + "_heads" }

// Headers of stored game messages and of append requests.
const (
	// HdrMsgID carries a stored message's msg_id (decimal).
	HdrMsgID = "Gr-Msg-Id"
	// HdrAnchor carries the stream sequence of the first message of the
	// page (PageSize msg_ids) holding msg_id-1: an absolute decimal sequence,
	// or "-d" meaning own sequence minus d. Absent on msg_id 1 and on the
	// first message after the game's stored history was lost to retention.
	HdrAnchor = "Gr-Anchor"
	// HdrSeq and HdrPrev are on a live copy: the stored message's stream
	// sequence, and that of the game's message before it (which a feed
	// compares with its position to spot a gap).
	HdrSeq  = "Gr-Seq"
	HdrPrev = "Gr-Prev"
	// HdrGame names the game in an append request.
	HdrGame = "Gr-Game"
	// HdrIdem carries the caller's idempotency key in an append request;
	// retries with the same key append at most once (within the stream's
	// duplicate window).
	HdrIdem = "Gr-Idem"
	// HdrKey is on a live copy: the key the message was stored under
	// (its Nats-Msg-Id in the stream), which is how an append that asked
	// for no reply recognises its own message.
	HdrKey = "Gr-Key"
	// HdrAck in an append request set to AckLive asks the sequencer not to
	// reply when the message is stored: the caller follows the game and
	// learns the outcome from the live copy (HdrKey). Errors and
	// duplicates are replied all the same.
	HdrAck  = "Gr-Ack"
	AckLive = "live"
)

// PageSize is the number of msg_ids per anchor page (see HdrAnchor).
const PageSize = 128

// PageStart returns the first msg_id of the page holding id (id ≥ 1).
func PageStart(id uint64) uint64 { return (id-1)/PageSize*PageSize + 1 }

// ReservedFields are the top-level fields of a game message that only
// gamerelay sets: the sequencer stamps msg_id and ts, the gateway
// client_id and user, the backend API source.
var ReservedFields = [...]string{"msg_id", "client_id", "ts", "user", "source"}

// ReservedField returns the reserved field that the raw key k (as
// jsonobj.Scan hands it) names, and true. It matches as case-insensitive
// JSON decoders do (Go's encoding/json, .NET), after unescaping: "User",
// "\u0075ser" and "MSG_ID" all name reserved fields, so no client can
// smuggle one past a consumer that reads keys that way.
func ReservedField(k []byte) (string, bool) {
	for _, f := range ReservedFields {
		if jsonobj.KeyFold(k, f) {
			return f, true
		}
	}
	return "", false
}

// ReservedTypes are the message types no client or backend may send: the
// requests of the WebSocket protocol, what only the gateway sends, and the
// system messages of the backend API.
var ReservedTypes = [...]string{"join", "joined", "create", "created", "refresh", "refreshed", "error",
	"presence", "audience", "game_created", "game_ended"}

// IsReservedType reports whether t is one of ReservedTypes.
func IsReservedType(t string) bool {
	for _, r := range ReservedTypes {
		if t == r {
			return true
		}
	}
	return false
}

// StampedTS returns the append time of a stored message from its body,
// which the sequencer stamps to end in `"ts":<Unix ms>}`; ok is false if
// data does not end that way.
func StampedTS(data []byte) (ts int64, ok bool) {
	end := len(data) - 1
	if end < 0 || data[end] != '}' {
		return 0, false
	}
	i := end
	for i > 0 && data[i-1] >= '0' && data[i-1] <= '9' {
		i--
	}
	const key = `"ts":`
	if i == end || end-i > 18 || i < len(key) || string(data[i-len(key):i]) != key {
		return 0, false
	}
	for _, c := range data[i:end] {
		ts = ts*10 + int64(c-'0')
	}
	return ts, true
}
