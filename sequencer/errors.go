package sequencer

import (
	"fmt"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Error is an append refused for a reason the caller can act on. Code is a
// stable wire code (internal/wire); callers compare it or use errors.Is with
// the sentinels below.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return "sequencer: " + e.Msg }

// Is matches errors with the same Code, so errors.Is(err, ErrUnavailable)
// holds for every unavailability, whatever its message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Msg == "" || t.Msg == e.Msg)
}

// Sentinels; match with errors.Is.
var (
	ErrInvalidGame    = &Error{Code: wire.CodeInvalidGame}
	ErrInvalidMessage = &Error{Code: wire.CodeInvalidMessage}
	ErrReservedField  = &Error{Code: wire.CodeReservedField}
	ErrTooLarge       = &Error{Code: wire.CodeTooLarge}
	ErrUnavailable    = &Error{Code: wire.CodeUnavailable}
	ErrClosed         = &Error{Code: wire.CodeUnavailable, Msg: "closed"}
	// ErrOutcomeUnknown: the append was tried, but no answer says whether
	// it was stored. A retry with the same idempotency key is harmless.
	ErrOutcomeUnknown = &Error{Code: wire.CodeOutcomeUnknown}
	// errAbandoned: the Appender closed while retrying a message that an
	// earlier attempt may have stored.
	errAbandoned = &Error{Code: wire.CodeOutcomeUnknown, Msg: "closed while retrying: the message may have been stored"}
)

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}
