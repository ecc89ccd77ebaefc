package httpapi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// System message types the API appends.
const (
	typeGameCreated = "game_created"
	typeGameEnded   = "game_ended"
)

// readBody reads the request body, at most MaxBodyBytes of it.
func (a *API) readBody(r *http.Request) ([]byte, error) {
	max := a.cfg.MaxBodyBytes
	if r.ContentLength > int64(max) {
		return nil, errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge,
			"the body of %d bytes exceeds the limit of %d", r.ContentLength, max)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(max)+1))
	switch {
	case err != nil:
		return nil, errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "reading the body: %v", err)
	case len(b) > max:
		return nil, errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "the body exceeds the limit of %d bytes", max)
	}
	return b, nil
}

// checkObject refuses a body that is not one JSON object, with the codes of
// the WebSocket protocol. fn, if not nil, sees each top-level member.
func checkObject(body []byte, fn func(k, v []byte)) error {
	var err error
	if fn == nil {
		err = jsonobj.ScanUnique(body, nil)
	} else {
		err = jsonobj.ScanUnique(body, func(k, v []byte) error { fn(k, v); return nil })
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jsonobj.ErrNotObject):
		return errorf(http.StatusBadRequest, wire.CodeNotObject, "the body must be a JSON object")
	case errors.Is(err, jsonobj.ErrDuplicateKey):
		return errorf(http.StatusBadRequest, wire.CodeInvalidMessage, "%s: each field may appear once", strings.TrimPrefix(err.Error(), "jsonobj: "))
	default:
		return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "%v", err)
	}
}

// typeRule says whether a body carries its "type".
type typeRule uint8

const (
	typeRequired typeRule = iota // a game message: the body's "type" is its type
	typeSetByAPI                 // the API sets the type: the body has none
)

// checkMessage validates a game message as the gateway validates a
// player's, with the same codes in the same order of precedence: one JSON
// object, each key once, with a string "type" that is
// not reserved, and none of the fields gamerelay sets. With typeSetByAPI
// the object must have no "type" at all.
func checkMessage(body []byte, rule typeRule) error {
	var (
		typ      []byte // the "type" member's value; keys are unique (checkObject)
		reserved []byte
	)
	err := checkObject(body, func(k, v []byte) {
		if jsonobj.KeyEquals(k, "type") {
			typ = v
			return
		}
		if f, ok := wire.ReservedField(k); ok && reserved == nil {
			reserved = []byte(f)
		}
	})
	switch {
	case err != nil:
		return err
	case rule == typeSetByAPI && typ != nil:
		return errorf(http.StatusBadRequest, wire.CodeInvalidMessage, `leave out "type": the API sets it`)
	case rule == typeRequired && typ == nil:
		return errorf(http.StatusBadRequest, wire.CodeMissingType, `a message needs a string field "type"`)
	}
	if typ != nil {
		t, ok := jsonobj.StringValue(typ)
		if !ok {
			return errorf(http.StatusBadRequest, wire.CodeMissingType, `"type" must be a string`)
		}
		if wire.IsReservedType(t) {
			return errorf(http.StatusBadRequest, wire.CodeReservedType, "type %s is sent only by gamerelay", strconv.Quote(t))
		}
	}
	if reserved != nil {
		return errorf(http.StatusBadRequest, wire.CodeReservedField, "field %s is set by gamerelay", strconv.Quote(string(reserved)))
	}
	return nil
}

// members returns what lies between the braces of a validated object,
// without surrounding whitespace ("" for {}).
func members(obj []byte) []byte {
	start, end := bytes.IndexByte(obj, '{'), bytes.LastIndexByte(obj, '}')
	return bytes.TrimSpace(obj[start+1 : end])
}

// systemBody builds the object {"type":typ,<fields>,"client_id":"","source":owner}
// (typ "" leaves "type" to fields, which then holds at least it).
func systemBody(typ string, fields []byte, owner string) []byte {
	b := make([]byte, 0, len(fields)+len(owner)+64)
	b = append(b, '{')
	if typ != "" {
		b = append(b, `"type":`...)
		b = strconv.AppendQuote(b, typ)
		if len(fields) > 0 {
			b = append(b, ',')
		}
	}
	b = append(b, fields...)
	b = append(b, `,"client_id":"","source":`...)
	b = strconv.AppendQuote(b, owner) // owners are [A-Za-z0-9_-]: the same in JSON
	return append(b, '}')
}

// maxIdemLen bounds an Idempotency-Key.
const maxIdemLen = 255

// idempotencyKey returns the request's Idempotency-Key header ("" if none).
func idempotencyKey(r *http.Request) (string, error) {
	vals := r.Header.Values("Idempotency-Key")
	if len(vals) == 0 {
		return "", nil
	}
	k := vals[0]
	switch {
	case len(vals) > 1:
		return "", errorf(http.StatusBadRequest, wire.CodeInvalidMessage, "send one Idempotency-Key header")
	case k == "" || len(k) > maxIdemLen || !utf8.ValidString(k):
		return "", errorf(http.StatusBadRequest, wire.CodeInvalidMessage, "Idempotency-Key: want 1-%d bytes of UTF-8", maxIdemLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] == 0x7f {
			return "", errorf(http.StatusBadRequest, wire.CodeInvalidMessage, "Idempotency-Key: control characters are not allowed")
		}
	}
	return k, nil
}
