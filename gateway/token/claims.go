package token

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
)

// Roles a token can grant.
const (
	RolePlayer    = "player"
	RoleSpectator = "spectator"
)

// Claims are what a gamerelay token asserts. Times are Unix seconds
// (NumericDate); zero means absent.
type Claims struct {
	Game string   // the game the token admits to; required
	Role string   // RolePlayer or RoleSpectator; required
	Sub  string   // the user, carried into a player's messages as "user"; optional
	Exp  int64    // expiry; required
	Iat  int64    // issue time; Mint sets it when zero
	Nbf  int64    // not before; optional
	Iss  string   // issuer; optional
	Aud  []string // audience; a single one is written as a string
}

// Errors of Verify. Every error Verify returns wraps exactly one of them,
// with a reason that never contains the token.
var (
	// ErrBadToken: malformed, forged, signed with an unknown key or the
	// wrong algorithm, or claims that fail a check other than time.
	ErrBadToken = errors.New("token: bad token")
	// ErrExpired: the token's exp has passed.
	ErrExpired = errors.New("token: expired")
	// ErrNotYetValid: the token's nbf lies in the future.
	ErrNotYetValid = errors.New("token: not yet valid")
)

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadToken}, args...)...)
}

// Claim members Verify knows, as bits for duplicate detection.
const (
	cGame = 1 << iota
	cRole
	cSub
	cExp
	cIat
	cNbf
	cIss
	cAud
)

var claimNames = [...]struct {
	name string
	bit  int
}{
	{"game", cGame}, {"role", cRole}, {"sub", cSub}, {"exp", cExp},
	{"iat", cIat}, {"nbf", cNbf}, {"iss", cIss}, {"aud", cAud},
}

// parseClaims decodes a claims set strictly: member names match exactly,
// no name appears twice, known members have their JSON type, and game,
// role and exp are present. Members it does not know are ignored.
func parseClaims(b []byte) (Claims, int, error) {
	var c Claims
	var seen int
	var others members
	err := jsonobj.Scan(b, func(k, v []byte) error {
		bit := 0
		for _, n := range claimNames {
			if jsonobj.KeyEquals(k, n.name) {
				bit = n.bit
				break
			}
		}
		if bit == 0 {
			return others.add(k)
		}
		if seen&bit != 0 {
			return badf("claim %s appears twice", memberName(k))
		}
		seen |= bit
		var ok bool
		switch bit {
		case cGame:
			c.Game, ok = jsonobj.StringValue(v)
		case cRole:
			if ok = isString(v); ok {
				switch raw := v[1 : len(v)-1]; {
				case jsonobj.KeyEquals(raw, RolePlayer):
					c.Role = RolePlayer
				case jsonobj.KeyEquals(raw, RoleSpectator):
					c.Role = RoleSpectator
				default:
					return badf("role: want player or spectator")
				}
			}
		case cSub:
			c.Sub, ok = jsonobj.StringValue(v)
		case cIss:
			c.Iss, ok = jsonobj.StringValue(v)
		case cExp:
			c.Exp, ok = numericDate(v)
		case cIat:
			c.Iat, ok = numericDate(v)
		case cNbf:
			c.Nbf, ok = numericDate(v)
		case cAud:
			c.Aud, ok = audience(v)
		}
		if !ok {
			return badf("claim %s: %s", memberName(k), claimTypes[bit])
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrBadToken):
		return Claims{}, 0, err
	case err != nil:
		return Claims{}, 0, badf("claims are not a JSON object")
	case seen&cGame == 0 || c.Game == "":
		return Claims{}, 0, badf("no game claim")
	case seen&cRole == 0:
		return Claims{}, 0, badf("no role claim")
	case seen&cExp == 0:
		return Claims{}, 0, badf("no exp claim")
	}
	return c, seen, nil
}

var claimTypes = map[int]string{
	cGame: "want a string", cRole: "want a string", cSub: "want a string", cIss: "want a string",
	cExp: "want a non-negative integer", cIat: "want a non-negative integer", cNbf: "want a non-negative integer",
	cAud: "want a string or an array of strings",
}

// memberName is a known member's name for an error message: the name it
// matched, never the raw bytes from the token.
func memberName(raw []byte) string {
	for _, n := range claimNames {
		if jsonobj.KeyEquals(raw, n.name) {
			return n.name
		}
	}
	for _, n := range headerNames {
		if jsonobj.KeyEquals(raw, n.name) {
			return n.name
		}
	}
	return "?"
}

// numericDate parses a NumericDate written as a non-negative integer of at
// most 15 digits; fractions, exponents and signs are refused.
func numericDate(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 15 {
		return 0, false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	if len(v) > 1 && v[0] == '0' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// audience parses aud: a string or an array of strings. v is valid JSON.
func audience(v []byte) ([]string, bool) {
	if len(v) > 0 && v[0] == '"' {
		s, ok := jsonobj.StringValue(v)
		return []string{s}, ok
	}
	if len(v) < 2 || v[0] != '[' {
		return nil, false
	}
	out := []string{}
	i := skipWS(v, 1)
	if i < len(v) && v[i] == ']' {
		return out, true
	}
	for {
		if i >= len(v) || v[i] != '"' {
			return nil, false
		}
		end := stringEnd(v, i)
		s, ok := jsonobj.StringValue(v[i:end])
		if !ok {
			return nil, false
		}
		out = append(out, s)
		if i = skipWS(v, end); i >= len(v) {
			return nil, false
		}
		switch v[i] {
		case ',':
			i = skipWS(v, i+1)
		case ']':
			return out, true
		default:
			return nil, false
		}
	}
}

// stringEnd returns the offset just past the JSON string starting at
// v[i], which valid JSON guarantees to be closed.
func stringEnd(v []byte, i int) int {
	for i++; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(v)
}

func skipWS(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
		i++
	}
	return i
}

// members remembers the names of the members of one object that Verify
// does not know, to refuse duplicates among them too. Tokens that carry
// only known members never allocate it.
type members map[string]struct{}

func (m *members) add(raw []byte) error {
	name, ok := keyString(raw)
	if !ok {
		return badf("member name")
	}
	if *m == nil {
		*m = make(members)
	}
	if _, dup := (*m)[name]; dup {
		return badf("a member name appears twice")
	}
	(*m)[name] = struct{}{}
	return nil
}

// keyString decodes raw key bytes as jsonobj.Scan passes them (between the
// quotes, still escaped).
func keyString(raw []byte) (string, bool) {
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	return jsonobj.StringValue(q)
}
