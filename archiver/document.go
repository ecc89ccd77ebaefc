package archiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
)

// Collections in the archive database.
const (
	MessagesCollection = "messages"
	GamesCollection    = "games"
	// ConflictsCollection keeps messages whose (game, msg_id) the archive
	// already holds for a different stream message: numbers were reused
	// (the stream was recreated, or the sequencer's head checkpoint was
	// lost). They cannot go into messages; they are kept here, never lost.
	ConflictsCollection = "conflicts"
)

// EndedType is the message type that marks a game as ended in the games
// collection when a trusted sender (client_id empty or absent: the system
// or a backend service) appends it.
const EndedType = "game_ended"

// MaxBodyDepth is the deepest nesting of objects and arrays (the message
// object itself is depth 1) stored as a body document; MongoDB refuses
// documents nested deeper than 100 levels. Deeper messages are archived
// with raw only (see document.bodyError).
const MaxBodyDepth = 90

// errTooDeep reports a body nested deeper than MaxBodyDepth.
var errTooDeep = fmt.Errorf("nested deeper than %d levels", MaxBodyDepth)

// EscapeKey returns the field name under which a JSON object key of a
// message body is stored. MongoDB field names may not start with '$', and
// '.' separates path components, and BSON cannot hold NUL in a name, so:
//
//	\      → \\
//	.      → \_
//	NUL    → \0
//	$      → \$   (only as the first character)
//
// Every other character, including '$' elsewhere, stays as it is; a key
// without any of these characters is stored unchanged. UnescapeKey reverses
// it.
func EscapeKey(k string) string {
	i := 0
	for ; i < len(k); i++ {
		if c := k[i]; c == '\\' || c == '.' || c == 0 || (c == '$' && i == 0) {
			break
		}
	}
	if i == len(k) {
		return k
	}
	var b strings.Builder
	b.Grow(len(k) + 4)
	b.WriteString(k[:i])
	for ; i < len(k); i++ {
		switch c := k[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '.':
			b.WriteString(`\_`)
		case c == 0:
			b.WriteString(`\0`)
		case c == '$' && i == 0:
			b.WriteString(`\$`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ErrBadEscape reports a field name that EscapeKey cannot have produced.
var ErrBadEscape = errors.New("archiver: invalid escaped field name")

// UnescapeKey returns the original JSON key of a body field name written by
// EscapeKey.
func UnescapeKey(k string) (string, error) {
	if strings.IndexByte(k, '\\') < 0 {
		if strings.IndexByte(k, '.') >= 0 || strings.IndexByte(k, 0) >= 0 || strings.HasPrefix(k, "$") {
			return "", fmt.Errorf("%w: %q", ErrBadEscape, k)
		}
		return k, nil
	}
	var b strings.Builder
	b.Grow(len(k))
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '.' || c == 0 || (c == '$' && i == 0):
			return "", fmt.Errorf("%w: %q", ErrBadEscape, k)
		case c != '\\':
			b.WriteByte(c)
			continue
		}
		if i+1 == len(k) {
			return "", fmt.Errorf("%w: %q ends in a lone backslash", ErrBadEscape, k)
		}
		i++
		switch k[i] {
		case '\\':
			b.WriteByte('\\')
		case '_':
			b.WriteByte('.')
		case '0':
			b.WriteByte(0)
		case '$':
			if i != 1 {
				return "", fmt.Errorf("%w: %q: \\$ only at the start", ErrBadEscape, k)
			}
			b.WriteByte('$')
		default:
			return "", fmt.Errorf("%w: %q: unknown escape \\%c", ErrBadEscape, k, k[i])
		}
	}
	return b.String(), nil
}

// BodyDocument converts a JSON object (a stored frame) to the BSON document
// stored as "body":
//
//   - keys are escaped with EscapeKey, at every depth;
//   - a key that occurs more than once keeps its first position and its last
//     value, as JavaScript's JSON.parse does;
//   - a number written without fraction and exponent that fits in int64
//     becomes Int64 ("long"); every other number becomes Double (integers
//     beyond int64 are rounded; beyond the double range they become
//     ±Infinity);
//   - strings, true/false, null, objects and arrays map to their BSON
//     counterparts; escaped lone surrogates (\ud800) become U+FFFD.
//
// The exact text is always kept in "raw"; body is for querying. It fails
// for input that is not a JSON object or that nests deeper than
// MaxBodyDepth.
func BodyDocument(frame []byte) (bson.D, error) {
	dec := json.NewDecoder(bytes.NewReader(frame))
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, jsonobj.ErrNotObject
	}
	doc, err := readObject(dec, 1)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("archiver: data after the JSON object")
	}
	return doc, nil
}

func readValue(dec *json.Decoder, t json.Token, depth int) (any, error) {
	switch v := t.(type) {
	case json.Delim:
		switch v {
		case '{':
			return readObject(dec, depth+1)
		case '[':
			return readArray(dec, depth+1)
		}
		return nil, fmt.Errorf("archiver: unexpected %q", v)
	case json.Number:
		return jsonNumber(string(v)), nil
	case string, bool, nil:
		return v, nil
	}
	return nil, fmt.Errorf("archiver: unexpected JSON token %T", t)
}

func readObject(dec *json.Decoder, depth int) (bson.D, error) {
	if depth > MaxBodyDepth {
		return nil, errTooDeep
	}
	doc := bson.D{}
	var index map[string]int // built only when an object is large
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, ok := kt.(string)
		if !ok {
			return nil, fmt.Errorf("archiver: object key is %T", kt)
		}
		vt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		v, err := readValue(dec, vt, depth)
		if err != nil {
			return nil, err
		}
		k = EscapeKey(k)
		if i, ok := findKey(doc, &index, k); ok {
			doc[i].Value = v
			continue
		}
		doc = append(doc, bson.E{Key: k, Value: v})
		if index != nil {
			index[k] = len(doc) - 1
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, err
	}
	return doc, nil
}

// findKey looks k up in doc: by linear scan while doc is small, then
// through *index, which it builds on first need.
func findKey(doc bson.D, index *map[string]int, k string) (int, bool) {
	if *index == nil {
		if len(doc) < 16 {
			for i := range doc {
				if doc[i].Key == k {
					return i, true
				}
			}
			return 0, false
		}
		*index = make(map[string]int, len(doc)*2)
		for i := range doc {
			(*index)[doc[i].Key] = i
		}
	}
	i, ok := (*index)[k]
	return i, ok
}

func readArray(dec *json.Decoder, depth int) (bson.A, error) {
	if depth > MaxBodyDepth {
		return nil, errTooDeep
	}
	arr := bson.A{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		v, err := readValue(dec, t, depth)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return nil, err
	}
	return arr, nil
}

// jsonNumber applies the number rule of BodyDocument to a valid JSON
// number literal.
func jsonNumber(s string) any {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i
		}
	}
	f, _ := strconv.ParseFloat(s, 64) // ±Inf beyond the double range
	return f
}

// message is one stored game message prepared for the archive.
type message struct {
	game      string
	id        uint64
	ts        int64 // Unix ms
	seq       uint64
	partition int
	frame     []byte

	// Top-level string fields of the frame; has* tell presence.
	clientID, user, source, typ string
	hasUser, hasSource          bool

	// What the archive is known to hold for it, kept across the attempts
	// of its batch. Owned by the partition goroutine archiving the batch.
	state archState
	// failures counts the failed attempts that left it unsettled.
	failures int
}

// archState is what the archive is known to hold for a message.
type archState uint8

const (
	// stateNew: not known to be archived (never inserted by this
	// process, or the insert's answer was lost).
	stateNew archState = iota
	// stateDuplicate: the insert found its (game, msg_id) archived already,
	// from a stream message not known yet (see Archive.lookup).
	stateDuplicate
	// stateArchived: messages holds it, written from this stream message
	// (inserted here, or earlier: a redelivery).
	stateArchived
	// stateConflict: messages holds its (game, msg_id) from another stream
	// message; it still has to be kept in ConflictsCollection.
	stateConflict
	// stateKept: kept in ConflictsCollection.
	stateKept
)

// settled reports whether nothing is left to write for the message but
// its games summary.
func (s archState) settled() bool { return s == stateArchived || s == stateKept }

// player is the identity counted in games.players: the user when the token
// named one, else the connection's client_id; "" for system messages.
func (m *message) player() string {
	if m.user != "" {
		return m.user
	}
	return m.clientID
}

// ended reports whether m marks its game as ended (see EndedType).
func (m *message) ended() bool { return m.typ == EndedType && m.clientID == "" }

// readFields fills the top-level string fields (and ts, if the header
// lacked it) from the frame. A repeated key counts with its last value.
func (m *message) readFields() {
	_ = jsonobj.Scan(m.frame, func(k, v []byte) error {
		var dst *string
		switch {
		case jsonobj.KeyEquals(k, "type"):
			dst = &m.typ
		case jsonobj.KeyEquals(k, "client_id"):
			dst = &m.clientID
		case jsonobj.KeyEquals(k, "user"):
			dst, m.hasUser = &m.user, true
		case jsonobj.KeyEquals(k, "source"):
			dst, m.hasSource = &m.source, true
		case jsonobj.KeyEquals(k, "ts"):
			if m.ts == 0 {
				m.ts, _ = strconv.ParseInt(string(v), 10, 64)
			}
			return nil
		default:
			return nil
		}
		s, ok := jsonobj.StringValue(v)
		if !ok {
			s = string(v) // not a string: keep the JSON text
		}
		*dst = s
		return nil
	})
}

// document returns the messages-collection document for m. With bodyErr
// set, the body is left out and the reason stored as body_error.
func (m *message) document(body bson.D, bodyErr string) bson.D {
	d := make(bson.D, 0, 12)
	d = append(d,
		bson.E{Key: "game", Value: m.game},
		bson.E{Key: "msg_id", Value: int64(m.id)},
		bson.E{Key: "ts", Value: bson.DateTime(m.ts)},
		bson.E{Key: "client_id", Value: m.clientID},
	)
	if m.hasUser {
		d = append(d, bson.E{Key: "user", Value: m.user})
	}
	if m.hasSource {
		d = append(d, bson.E{Key: "source", Value: m.source})
	}
	d = append(d, bson.E{Key: "type", Value: m.typ})
	if bodyErr != "" {
		d = append(d, bson.E{Key: "body_error", Value: bodyErr})
	} else {
		d = append(d, bson.E{Key: "body", Value: body})
	}
	var raw any = string(m.frame)
	if !utf8.Valid(m.frame) {
		raw = bson.Binary{Data: m.frame}
	}
	return append(d,
		bson.E{Key: "raw", Value: raw},
		bson.E{Key: "seq", Value: int64(m.seq)},
		bson.E{Key: "partition", Value: int32(m.partition)},
	)
}
