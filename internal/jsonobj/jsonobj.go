// Package jsonobj validates JSON objects and walks their top-level members
// without decoding them. Functions are safe for concurrent use; they never
// retain the input.
package jsonobj

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

var (
	// ErrInvalid is wrapped by every error about input that is not valid JSON.
	ErrInvalid = errors.New("jsonobj: invalid JSON")
	// ErrNotObject is returned for valid JSON that is not an object.
	ErrNotObject = errors.New("jsonobj: not a JSON object")
)

// maxDepth is the deepest nesting of objects and arrays Scan accepts; the
// top-level object counts as depth 1.
const maxDepth = 1000

// Scan checks that b is exactly one valid JSON object (RFC 8259; leading and
// trailing whitespace allowed, nothing else after it) and calls fn for each
// top-level member in order with the raw key bytes as they appear between the
// quotes (still escaped) and the raw value bytes (exact slice of b, no
// surrounding whitespace). If fn returns a non-nil error Scan stops and returns it.
// fn may be nil (validation only).
//
// Returns ErrNotObject if b is valid JSON but not an object (array, string,
// number, true/false/null), and an error wrapping ErrInvalid, with the byte
// offset of the problem, for anything else that is not valid JSON: that
// includes invalid UTF-8 in strings (which encoding/json.Valid lets through),
// raw control characters in strings, bad escapes, trailing commas, leading
// zeros and nesting deeper than 1000. Escaped lone surrogates such as \uD800
// are accepted, as encoding/json does.
//
// Scan is single-pass: fn sees each member as soon as it has been read, so it
// may already have been called for earlier members when Scan then finds a
// syntax error later in b. Act on what fn collected only if Scan returns nil.
// Duplicate keys are passed to fn as they come.
func Scan(b []byte, fn func(key, value []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) {
		return syntaxErr(b, i, "looking for beginning of value")
	}
	if b[i] != '{' {
		end, err := skipValue(b, i, 0)
		if err != nil {
			return err
		}
		if end = skipWS(b, end); end != len(b) {
			return syntaxErr(b, end, "after top-level value")
		}
		return ErrNotObject
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			if i >= len(b) || b[i] != '"' {
				return syntaxErr(b, i, "looking for beginning of object key string")
			}
			kEnd, _, err := scanString(b, i)
			if err != nil {
				return err
			}
			key := b[i+1 : kEnd-1]
			i = skipWS(b, kEnd)
			if i >= len(b) || b[i] != ':' {
				return syntaxErr(b, i, "after object key")
			}
			i = skipWS(b, i+1)
			vEnd, err := skipValue(b, i, 1)
			if err != nil {
				return err
			}
			if fn != nil {
				if err := fn(key, b[i:vEnd]); err != nil {
					return err
				}
			}
			i = skipWS(b, vEnd)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			return syntaxErr(b, i, "after object key:value pair")
		}
	}
	if i = skipWS(b, i); i != len(b) {
		return syntaxErr(b, i, "after top-level value")
	}
	return nil
}

// KeyEquals reports whether raw key bytes (as given to fn, possibly containing
// escapes such as \u0074ype) denote the string s. Escapes are decoded exactly
// as encoding/json decodes them, lone surrogates becoming U+FFFD, so a key
// cannot pass for another one by being spelled differently. It reports false
// if raw is not valid JSON string content. The match is exact: note that
// encoding/json.Unmarshal into a struct matches field names case-insensitively.
func KeyEquals(raw []byte, s string) bool {
	i, j := 0, 0
	for i < len(raw) {
		c := raw[i]
		if c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' {
			if j >= len(s) || s[j] != c {
				return false
			}
			i++
			j++
			continue
		}
		r, n := decodeUnit(raw, i)
		if n == 0 {
			return false
		}
		i += n
		sr, sn := utf8.DecodeRuneInString(s[j:])
		if sr != r || (sr == utf8.RuneError && sn < 3) {
			return false // mismatch, end of s, or invalid UTF-8 in s
		}
		j += sn
	}
	return j == len(s)
}

// StringValue returns the unescaped Go string of a raw JSON string value
// (including its quotes, no surrounding whitespace) and true, or "", false if
// raw is not a valid JSON string. Escapes decode as in encoding/json.
func StringValue(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	end, esc, err := scanString(raw, 0)
	if err != nil || end != len(raw) {
		return "", false
	}
	body := raw[1 : end-1]
	if !esc {
		return string(body), true
	}
	var sb strings.Builder
	sb.Grow(len(body))
	for i := 0; i < len(body); {
		if c := body[i]; c != '\\' {
			sb.WriteByte(c)
			i++
			continue
		}
		r, n := decodeUnit(body, i)
		sb.WriteRune(r)
		i += n
	}
	return sb.String(), true
}

// decodeUnit decodes the character or escape sequence at raw[i], which must
// lie inside string content, and returns it with its length in bytes, or
// n == 0 if it is not valid there. An escaped high surrogate followed by an
// escaped low one decodes to their pair; any other escaped surrogate decodes
// to U+FFFD on its own, as in encoding/json.
func decodeUnit(raw []byte, i int) (r rune, n int) {
	c := raw[i]
	switch {
	case c < 0x20 || c == '"':
		return 0, 0
	case c >= utf8.RuneSelf:
		r, n = utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && n == 1 {
			return 0, 0
		}
		return r, n
	case c != '\\':
		return rune(c), 1
	}
	if i+1 >= len(raw) {
		return 0, 0
	}
	switch raw[i+1] {
	case '"', '\\', '/':
		return rune(raw[i+1]), 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r = hex4(raw, i+2)
		if r < 0 {
			return 0, 0
		}
		if !utf16.IsSurrogate(r) {
			return r, 6
		}
		if i+7 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
			if r2 := hex4(raw, i+8); r2 >= 0 {
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					return d, 12
				}
			}
		}
		return utf8.RuneError, 6
	}
	return 0, 0
}

// hex4 returns the value of the four hex digits at b[i:], or -1.
func hex4(b []byte, i int) rune {
	if i+4 > len(b) {
		return -1
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue validates the value starting at b[i], which sits inside depth
// enclosing containers, and returns the offset just past it.
func skipValue(b []byte, i, depth int) (int, error) {
	if i < len(b) && (b[i] == '{' || b[i] == '[') {
		return skipContainer(b, i, depth)
	}
	return scanScalar(b, i)
}

// skipContainer validates the object or array starting at b[i] iteratively,
// keeping one bit per open container (1 = object), and returns the offset
// just past it.
func skipContainer(b []byte, i, depth int) (int, error) {
	var stack [maxDepth/64 + 1]uint64
	n := 0 // containers open in this call
	var err error
value:
	for {
		// A value is expected at b[i].
		if i < len(b) && (b[i] == '{' || b[i] == '[') {
			c := b[i]
			if depth+n >= maxDepth {
				return 0, fmt.Errorf("%w: exceeded max depth %d at offset %d", ErrInvalid, maxDepth, i)
			}
			if c == '{' {
				stack[n/64] |= 1 << (n % 64)
			} else {
				stack[n/64] &^= 1 << (n % 64)
			}
			n++
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == c+2 { // '{'+2 == '}', '['+2 == ']'
				i++
				n--
			} else {
				if c == '{' {
					if i, err = scanKeyColon(b, i); err != nil {
						return 0, err
					}
				}
				continue
			}
		} else if i, err = scanScalar(b, i); err != nil {
			return 0, err
		}
		// A value just ended: close containers until another value is due.
		for n > 0 {
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, syntaxErr(b, i, "")
			}
			obj := stack[(n-1)/64]&(1<<((n-1)%64)) != 0
			switch c := b[i]; {
			case c == ',':
				i = skipWS(b, i+1)
				if obj {
					if i, err = scanKeyColon(b, i); err != nil {
						return 0, err
					}
				}
				continue value
			case obj && c == '}', !obj && c == ']':
				i++
				n--
			case obj:
				return 0, syntaxErr(b, i, "after object key:value pair")
			default:
				return 0, syntaxErr(b, i, "after array element")
			}
		}
		return i, nil
	}
}

// scanKeyColon validates an object key at b[i] and the colon after it, and
// returns the offset of the member value.
func scanKeyColon(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, syntaxErr(b, i, "looking for beginning of object key string")
	}
	i, _, err := scanString(b, i)
	if err != nil {
		return 0, err
	}
	i = skipWS(b, i)
	if i >= len(b) || b[i] != ':' {
		return 0, syntaxErr(b, i, "after object key")
	}
	return skipWS(b, i+1), nil
}

// scanScalar validates the string, number or literal at b[i] and returns the
// offset just past it.
func scanScalar(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, syntaxErr(b, i, "")
	}
	switch c := b[i]; c {
	case '"':
		end, _, err := scanString(b, i)
		return end, err
	case 't':
		return scanLiteral(b, i, "true")
	case 'f':
		return scanLiteral(b, i, "false")
	case 'n':
		return scanLiteral(b, i, "null")
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return scanNumber(b, i)
	}
	return 0, syntaxErr(b, i, "looking for beginning of value")
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	for k := 1; k < len(lit); k++ {
		if i+k >= len(b) || b[i+k] != lit[k] {
			return 0, syntaxErr(b, i+k, "in literal "+lit)
		}
	}
	return i + len(lit), nil
}

// scanNumber validates -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i].
func scanNumber(b []byte, i int) (int, error) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = skipDigits(b, i+1)
	default:
		return 0, syntaxErr(b, i, "in numeric literal")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return 0, syntaxErr(b, i, "after decimal point in numeric literal")
		}
		i = skipDigits(b, i+1)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return 0, syntaxErr(b, i, "in exponent of numeric literal")
		}
		i = skipDigits(b, i+1)
	}
	return i, nil
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// SWAR constants for scanning string content eight bytes at a time.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// scanString validates the string starting with the quote at b[i] and returns
// the offset just past its closing quote and whether it contains escapes.
func scanString(b []byte, i int) (end int, esc bool, err error) {
	i++
	for {
		// Find the next byte that is not plain ASCII (0x20-0x7f but no
		// quote or backslash), eight bytes at a time where possible.
		// While no byte of x has its top bit set, a subtraction borrows
		// into a byte's top bit only from a byte below 0x20 (x-0x20*lsb)
		// or one equal to a quote or backslash (q-lsb, s-lsb, where that
		// byte is 0); borrows only carry upwards, so the lowest flagged
		// byte is the first special one.
		if i+8 <= len(b) {
			x := binary.LittleEndian.Uint64(b[i:])
			q := x ^ ('"' * lsb)
			s := x ^ ('\\' * lsb)
			mask := ((x - 0x20*lsb) | (q - lsb) | (s - lsb) | x) & msb
			if mask == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(mask) >> 3
		} else {
			for i < len(b) && b[i] >= 0x20 && b[i] < utf8.RuneSelf && b[i] != '"' && b[i] != '\\' {
				i++
			}
			if i >= len(b) {
				return 0, false, syntaxErr(b, i, "in string literal")
			}
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, esc, nil
		case c == '\\':
			if i+1 >= len(b) {
				return 0, false, syntaxErr(b, i+1, "in string escape code")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k >= len(b) || !isHex(b[k]) {
						return 0, false, syntaxErr(b, k, "in \\u hexadecimal character escape")
					}
				}
				i += 6
			default:
				return 0, false, syntaxErr(b, i+1, "in string escape code")
			}
			esc = true
		case c < 0x20:
			return 0, false, syntaxErr(b, i, "in string literal")
		default: // c >= utf8.RuneSelf
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return 0, false, fmt.Errorf("%w: invalid UTF-8 in string at offset %d", ErrInvalid, i)
			}
			i += n
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// syntaxErr describes the unexpected byte at b[i], or the end of input.
func syntaxErr(b []byte, i int, context string) error {
	if i >= len(b) {
		return fmt.Errorf("%w: unexpected end of JSON input at offset %d", ErrInvalid, i)
	}
	if context != "" {
		context = " " + context
	}
	c := b[i]
	if c >= 0x20 && c < utf8.RuneSelf {
		return fmt.Errorf("%w: invalid character %q%s at offset %d", ErrInvalid, c, context, i)
	}
	return fmt.Errorf("%w: invalid byte 0x%02x%s at offset %d", ErrInvalid, c, context, i)
}

// ErrDuplicateKey is wrapped by ScanUnique's error for an object that has
// two members with the same key.
var ErrDuplicateKey = errors.New("jsonobj: duplicate key")

// maxLinearKeys is how many keys ScanUnique compares pairwise before it
// switches to a set.
const maxLinearKeys = 32

// ScanUnique is Scan that also refuses an object in which two top-level
// members have the same key after unescaping ({"type":"a","t\u0079pe":"b"}):
// decoders disagree on which one counts. The error wraps ErrDuplicateKey
// and quotes the key.
func ScanUnique(b []byte, fn func(key, value []byte) error) error {
	var (
		seen [maxLinearKeys][]byte
		n    int
		set  map[string]struct{}
	)
	return Scan(b, func(k, v []byte) error {
		switch {
		case set != nil:
			s := unescapeKey(k)
			if _, dup := set[s]; dup {
				return fmt.Errorf("%w %q", ErrDuplicateKey, s)
			}
			set[s] = struct{}{}
		default:
			for _, prev := range seen[:n] {
				if sameKey(prev, k) {
					return fmt.Errorf("%w %q", ErrDuplicateKey, unescapeKey(k))
				}
			}
			if n < maxLinearKeys {
				seen[n] = k
				n++
			} else {
				set = make(map[string]struct{}, 2*maxLinearKeys)
				for _, prev := range seen[:n] {
					set[unescapeKey(prev)] = struct{}{}
				}
				set[unescapeKey(k)] = struct{}{}
			}
		}
		if fn != nil {
			return fn(k, v)
		}
		return nil
	})
}

// sameKey reports whether two raw keys denote the same string.
func sameKey(a, b []byte) bool {
	if bytes.IndexByte(a, '\\') < 0 && bytes.IndexByte(b, '\\') < 0 {
		return bytes.Equal(a, b)
	}
	return unescapeKey(a) == unescapeKey(b)
}

// unescapeKey returns the string a raw key (valid string content, as Scan
// hands it) denotes.
func unescapeKey(k []byte) string {
	if bytes.IndexByte(k, '\\') < 0 {
		return string(k)
	}
	var sb strings.Builder
	sb.Grow(len(k))
	for i := 0; i < len(k); {
		if c := k[i]; c != '\\' {
			sb.WriteByte(c)
			i++
			continue
		}
		r, n := decodeUnit(k, i)
		if n == 0 {
			break
		}
		sb.WriteRune(r)
		i += n
	}
	return sb.String()
}

// KeyFold reports whether raw key bytes denote a string equal to s under
// Unicode case folding, as case-insensitive decoders match member names:
// Go's encoding/json and .NET's read "User", "\u0055ser" and "uſer" (long
// s) as a field named "user". s is ASCII.
func KeyFold(raw []byte, s string) bool {
	ascii := true
	for _, c := range raw {
		if c >= utf8.RuneSelf || c == '\\' {
			ascii = false
			break
		}
	}
	if ascii {
		if len(raw) != len(s) {
			return false
		}
		for i := range raw {
			if lower(raw[i]) != lower(s[i]) {
				return false
			}
		}
		return true
	}
	return strings.EqualFold(unescapeKey(raw), s)
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
