package token

import (
	"bytes"
	"encoding/base64"
	"errors"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
)

// alg is a JWS algorithm this package signs and verifies.
type alg uint8

const (
	algHS256 alg = iota + 1
	algEdDSA
	algES256
	algRS256
)

func (a alg) String() string {
	switch a {
	case algHS256:
		return "HS256"
	case algEdDSA:
		return "EdDSA"
	case algES256:
		return "ES256"
	case algRS256:
		return "RS256"
	}
	return "unknown"
}

// parseAlg matches the content of an "alg" header string (between the
// quotes, still escaped) exactly: JWS algorithm names are case-sensitive.
// "none" and every other algorithm are 0.
func parseAlg(raw []byte) alg {
	for a := algHS256; a <= algRS256; a++ {
		if jsonobj.KeyEquals(raw, a.String()) {
			return a
		}
	}
	return 0
}

// isString reports whether v, a valid JSON value, is a string.
func isString(v []byte) bool { return len(v) >= 2 && v[0] == '"' }

// maxTokenBytes bounds the tokens Verify reads.
const maxTokenBytes = 8 << 10

// b64 is the only encoding of a token's parts: base64url without padding,
// with strict decoding, so that unused bits of the last character must be
// zero.
var b64 = base64.RawURLEncoding.Strict()

// decodePart appends the bytes of one base64url part of a token to dst. It
// accepts only the canonical encoding: no padding, no characters of the
// standard alphabet, zero trailing bits, and no line breaks (which the
// base64 decoder would skip). Re-encoding the result gives src back.
func decodePart(dst, src []byte) ([]byte, error) {
	if bytes.ContainsAny(src, "\r\n") {
		return dst, errors.New("line break")
	}
	return b64.AppendDecode(dst, src)
}

// Header members Verify knows, as bits for duplicate detection.
const (
	hAlg = 1 << iota
	hKid
	hTyp
	hCrit
)

var headerNames = [...]struct {
	name string
	bit  int
}{{"alg", hAlg}, {"kid", hKid}, {"typ", hTyp}, {"crit", hCrit}}

// header is what Verify reads from a JOSE header.
type header struct {
	alg    alg
	kid    string
	hasKid bool
}

// parseHeader decodes a JOSE header strictly: member names match exactly,
// no name appears twice, alg is one of ours, kid and typ are strings, and
// crit (extensions the verifier would have to understand) is refused.
// Members it does not know (jku, x5u, jwk and the like) are ignored: keys
// come only from the Verifier's configuration.
func parseHeader(b []byte) (header, error) {
	var h header
	var seen int
	var others members
	err := jsonobj.Scan(b, func(k, v []byte) error {
		bit := 0
		for _, n := range headerNames {
			if jsonobj.KeyEquals(k, n.name) {
				bit = n.bit
				break
			}
		}
		if bit == 0 {
			return others.add(k)
		}
		if seen&bit != 0 {
			return badf("header %s appears twice", memberName(k))
		}
		seen |= bit
		switch bit {
		case hAlg:
			if !isString(v) {
				return badf("header alg: want a string")
			}
			if h.alg = parseAlg(v[1 : len(v)-1]); h.alg == 0 {
				return badf("algorithm: want HS256, EdDSA, ES256 or RS256")
			}
		case hKid:
			s, ok := jsonobj.StringValue(v)
			if !ok || s == "" {
				return badf("header kid: want a non-empty string")
			}
			h.kid, h.hasKid = s, true
		case hTyp:
			if !isString(v) {
				return badf("header typ: want a string")
			}
		case hCrit:
			return badf("header crit: no extension is supported")
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrBadToken):
		return header{}, err
	case err != nil:
		return header{}, badf("header is not a JSON object")
	case seen&hAlg == 0:
		return header{}, badf("no alg header")
	}
	return h, nil
}
