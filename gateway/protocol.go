package gateway

import (
	"errors"
	"strconv"
	"strings"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// protoError is a rejected client frame: answered with an error frame, and
// the connection closed with closeCode if it is not 0.
type protoError struct {
	code      string
	msg       string
	closeCode int
	idem      string // the refused game message's idempotency key, if it had one
}

func (e *protoError) Error() string { return e.code + ": " + e.msg }

func perr(code, msg string) *protoError { return &protoError{code: code, msg: msg} }

// kind says what a client frame asks for.
type kind uint8

const (
	kindGame kind = iota + 1
	kindJoin
	kindCreate
	kindRefresh
)

// request is a decoded client frame.
type request struct {
	kind    kind
	body    []byte // kindGame: the object as sent (validated)
	game    string // kindJoin
	token   string // kindJoin
	since   uint64 // kindJoin
	history int64  // kindJoin: replay at most this many messages; -1: no bound
	idem    string // kindGame: the client's idempotency key; "" if none
}

// maxIdem bounds a client's idempotency key.
const maxIdem = 64

// validIdem reports whether s may be an idempotency key: 1-64 of
// A-Z a-z 0-9 and . _ : -.
func validIdem(s string) bool {
	if len(s) == 0 || len(s) > maxIdem {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// maxHistory bounds the "history" of a join.
const maxHistory = 1_000_000

// decodeRequest validates one text frame from a client. It allocates only
// for join frames.
func decodeRequest(payload []byte) (request, *protoError) {
	var (
		req      request
		typ      []byte
		game     []byte
		room     []byte
		token    []byte
		since    []byte
		history  []byte
		idem     []byte
		reserved []byte
	)
	req.history = -1
	err := jsonobj.ScanUnique(payload, func(k, v []byte) error {
		switch {
		case jsonobj.KeyEquals(k, "type"):
			typ = v
		case jsonobj.KeyEquals(k, "game"):
			game = v
		case jsonobj.KeyEquals(k, "room"):
			room = v
		case jsonobj.KeyEquals(k, "token"):
			token = v
		case jsonobj.KeyEquals(k, "since"):
			since = v
		case jsonobj.KeyEquals(k, "history"):
			history = v
		case jsonobj.KeyEquals(k, "idem"):
			idem = v
		default:
			if reserved == nil {
				if _, ok := wire.ReservedField(k); ok {
					reserved = k
				}
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, jsonobj.ErrNotObject):
		return req, perr(wire.CodeNotObject, "a message must be a JSON object")
	case errors.Is(err, jsonobj.ErrDuplicateKey):
		return req, perr(wire.CodeInvalidMessage, strings.TrimPrefix(err.Error(), "jsonobj: ")+": each field may appear once")
	case err != nil:
		return req, perr(wire.CodeInvalidJSON, err.Error())
	case typ == nil:
		return req, perr(wire.CodeMissingType, `a message needs a string field "type"`)
	}
	t, ok := jsonobj.StringValue(typ)
	if !ok {
		return req, perr(wire.CodeMissingType, `"type" must be a string`)
	}
	switch t {
	case "join":
		req.kind = kindJoin
		g := game
		if g == nil {
			g = room // alias of the classic rooms protocol
		}
		if g == nil {
			return req, perr(wire.CodeInvalidGame, `join needs "game" (or "room")`)
		}
		s, ok := jsonobj.StringValue(g)
		if !ok {
			return req, perr(wire.CodeInvalidGame, `"game" must be a string`)
		}
		if err := wire.ValidateGame(s); err != nil {
			return req, perr(wire.CodeInvalidGame, err.Error())
		}
		req.game = s
		if token != nil && string(token) != "null" {
			if req.token, ok = jsonobj.StringValue(token); !ok {
				return req, perr(wire.CodeBadToken, `"token" must be a string`)
			}
		}
		if since != nil && string(since) != "null" {
			n, err := strconv.ParseUint(string(since), 10, 64)
			if err != nil {
				return req, perr(wire.CodeInvalidMessage, `"since" must be a non-negative integer`)
			}
			req.since = n
		}
		if history != nil && string(history) != "null" {
			n, err := strconv.ParseUint(string(history), 10, 64)
			if err != nil || n > maxHistory {
				return req, perr(wire.CodeInvalidMessage, `"history" must be an integer from 0 to `+strconv.Itoa(maxHistory))
			}
			req.history = int64(n)
		}
		return req, nil
	case "create":
		req.kind = kindCreate
		return req, nil
	case "refresh":
		req.kind = kindRefresh
		if token == nil {
			return req, perr(wire.CodeBadToken, `refresh needs "token"`)
		}
		var ok bool
		if req.token, ok = jsonobj.StringValue(token); !ok || req.token == "" {
			return req, perr(wire.CodeBadToken, `"token" must be a string`)
		}
		return req, nil
	}
	if idem != nil {
		k, ok := jsonobj.StringValue(idem)
		if !ok || !validIdem(k) {
			return req, perr(wire.CodeInvalidMessage, `"idem" must be a string of 1-64 of A-Z a-z 0-9 . _ : -`)
		}
		req.idem = k
	}
	if wire.IsReservedType(t) {
		e := perr(wire.CodeReservedType, "type "+strconv.Quote(t)+" is sent only by gamerelay")
		e.idem = req.idem
		return req, e
	}
	if reserved != nil {
		name, _ := wire.ReservedField(reserved)
		e := perr(wire.CodeReservedField, "field "+strconv.Quote(name)+" is set by gamerelay")
		e.idem = req.idem
		return req, e
	}
	req.kind = kindGame
	req.body = payload
	return req, nil
}

// gameBody returns the client's object with the sender fields appended,
// ready for the sequencer (which adds msg_id and ts).
func gameBody(obj []byte, clientID, user string) []byte {
	end := len(obj) - 1
	for end > 0 && obj[end] != '}' {
		end--
	}
	out := make([]byte, 0, end+len(clientID)+len(user)+48)
	out = append(out, obj[:end]...)
	out = append(out, `,"client_id":`...)
	out = appendJSONString(out, clientID)
	if user != "" {
		out = append(out, `,"user":`...)
		out = appendJSONString(out, user)
	}
	return append(out, '}')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// errorFrame is an error; idem, if not empty, names the game message it
// refers to.
func errorFrame(code, msg, idem string) []byte {
	b := []byte(`{"type":"error","code":`)
	b = appendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	if idem != "" {
		b = append(b, `,"idem":`...)
		b = appendJSONString(b, idem)
	}
	return append(b, '}')
}

func joinedFrame(game, clientID, role string, head, since uint64) []byte {
	b := []byte(`{"type":"joined","game":`)
	b = appendJSONString(b, game)
	b = append(b, `,"client_id":`...)
	b = appendJSONString(b, clientID)
	b = append(b, `,"role":`...)
	b = appendJSONString(b, role)
	b = append(b, `,"head":`...)
	b = strconv.AppendUint(b, head, 10)
	b = append(b, `,"since":`...)
	b = strconv.AppendUint(b, since, 10)
	return append(b, '}')
}

func refreshedFrame(exp int64) []byte {
	b := []byte(`{"type":"refreshed","exp":`)
	b = strconv.AppendInt(b, exp, 10)
	return append(b, '}')
}

func createdFrame(game, join, watch string) []byte {
	b := []byte(`{"type":"created","game":`)
	b = appendJSONString(b, game)
	b = append(b, `,"join":`...)
	b = appendJSONString(b, join)
	b = append(b, `,"watch":`...)
	b = appendJSONString(b, watch)
	return append(b, '}')
}

// presenceBody is the system message announcing players joining and
// leaving, in the order they did.
func presenceBody(events []presenceEvent) []byte {
	b := make([]byte, 0, 64+len(events)*48)
	b = append(b, `{"type":"presence","events":[`...)
	for i, ev := range events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"event":`...)
		b = appendJSONString(b, ev.event)
		b = append(b, `,"client":`...)
		b = appendJSONString(b, ev.client)
		if ev.user != "" {
			b = append(b, `,"user":`...)
			b = appendJSONString(b, ev.user)
		}
		b = append(b, '}')
	}
	return append(b, `],"client_id":""}`...)
}

// presenceCounts is the system message summing up a batch of players'
// joins and leaves too big to list.
func presenceCounts(events []presenceEvent) []byte {
	joins, leaves := 0, 0
	for _, ev := range events {
		if ev.event == "join" {
			joins++
		} else {
			leaves++
		}
	}
	b := make([]byte, 0, 80)
	b = append(b, `{"type":"presence","joins":`...)
	b = strconv.AppendInt(b, int64(joins), 10)
	b = append(b, `,"leaves":`...)
	b = strconv.AppendInt(b, int64(leaves), 10)
	return append(b, `,"client_id":""}`...)
}
