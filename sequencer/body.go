package sequencer

import (
	"strconv"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// ValidateBody checks an append body: a JSON object of at most max bytes,
// without duplicate keys, with a string "type" and without "msg_id" or "ts"
// (in any case: see wire.ReservedField), which the sequencer stamps. Other
// reserved fields (client_id, user, source) are set by trusted callers
// (gateway, API) and pass.
func ValidateBody(body []byte, max int) error {
	if len(body) > max {
		return errorf(wire.CodeTooLarge, "message of %d bytes exceeds the limit of %d", len(body), max)
	}
	hasType := false
	err := jsonobj.ScanUnique(body, func(k, v []byte) error {
		if jsonobj.KeyEquals(k, "type") {
			if len(v) == 0 || v[0] != '"' {
				return errorf(wire.CodeInvalidMessage, `"type" must be a string`)
			}
			hasType = true
			return nil
		}
		if f, ok := wire.ReservedField(k); ok && (f == "msg_id" || f == "ts") {
			return errorf(wire.CodeReservedField, "field %q is set by gamerelay", f)
		}
		return nil
	})
	if err != nil {
		if e, ok := err.(*Error); ok {
			return e
		}
		return errorf(wire.CodeInvalidMessage, "%v", err)
	}
	if !hasType {
		return errorf(wire.CodeInvalidMessage, `missing string field "type"`)
	}
	return nil
}

// stamp appends to dst the validated object body with "msg_id" and "ts"
// added as its last members: the frame every client receives.
func stamp(dst, body []byte, id uint64, ts int64) []byte {
	end := len(body) - 1
	for end >= 0 && body[end] != '}' {
		end--
	}
	start := 0
	for start < end && body[start] != '{' {
		start++
	}
	empty := true
	for i := start + 1; i < end; i++ {
		if c := body[i]; c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			empty = false
			break
		}
	}
	dst = append(dst, body[start:end]...)
	if !empty {
		dst = append(dst, ',')
	}
	dst = append(dst, `"msg_id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}
