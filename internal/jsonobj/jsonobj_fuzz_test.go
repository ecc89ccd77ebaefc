package jsonobj

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzScan checks Scan against encoding/json: same verdict (given that
// encoding/json.Valid accepts invalid UTF-8 and nests 10000 deep, and Scan
// does neither) and the same top-level members as a json.Decoder token walk.
func FuzzScan(f *testing.F) {
	seeds := []string{
		gameMessage,
		`{}`, ` { } `, `{"a":1}`, `{"a":{"b":[1,2,{"c":null}]},"d":"e"}`,
		`{"n":[0,-0,1.5,-2e10,3E+2,4e-2,123456789012345678901234567890]}`,
		`{"\u0074ype":"x","type":"y","":""}`,
		`{"s":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00\ud800\udc00x"}`,
		`{"héllo":"wörld 日本 😀"}`, `{"long":"abcdefghijklmnopqrstuvwxyz0123456789"}`,
		`[]`, `"s"`, `1`, `true`, `false`, `null`, `[{"a":1}]`,
		``, `{`, `{}x`, `{}{}`, `{"a":1,}`, `{'a':1}`, `{"a":NaN}`, `{"a":01}`,
		"{\"a\":\"\xff\"}", "{\"a\":\"x\ny\"}", `{"a":"\x"}`, `{"a":"\u12"}`,
		"{\"a\":\"\xed\xa0\x80\"}", `{"a":[}`, `{"a":1 "b":2}`, `{"a" 1}`, `[1,]`,
		"\ufeff{}", "{\"a\":\"abcdefg\\\"\x00\"}",
		strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		type raw struct{ key, value []byte }
		var got []raw
		err := Scan(b, func(k, v []byte) error {
			got = append(got, raw{k, v})
			return nil
		})
		if err2 := Scan(b, nil); (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("Scan with fn = %v, without = %v", err, err2)
		}

		valid := json.Valid(b) && utf8.Valid(b) && nestingDepth(b) <= maxDepth
		isObject := valid && bytes.TrimLeft(b, " \t\r\n")[0] == '{'
		switch {
		case isObject:
			if err != nil {
				t.Fatalf("Scan(%q) = %v, want nil", b, err)
			}
		case valid:
			if err != ErrNotObject {
				t.Fatalf("Scan(%q) = %v, want ErrNotObject", b, err)
			}
			return
		default:
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), " at offset ") {
				t.Fatalf("Scan(%q) = %v, want ErrInvalid with offset", b, err)
			}
			return
		}

		want := decodeMembers(t, b)
		if len(got) != len(want) {
			t.Fatalf("Scan(%q) reported %d members, encoding/json %d", b, len(got), len(want))
		}
		for i, m := range got {
			w := want[i]
			key, ok := StringValue([]byte(`"` + string(m.key) + `"`))
			if !ok || key != w.key {
				t.Errorf("member %d: key %q unescapes to %q, %v; encoding/json has %q", i, m.key, key, ok, w.key)
			}
			if !KeyEquals(m.key, w.key) || KeyEquals(m.key, w.key+"x") {
				t.Errorf("member %d: KeyEquals(%q, %q) wrong", i, m.key, w.key)
			}
			if n := len(m.value); n == 0 || isSpace(m.value[0]) || isSpace(m.value[n-1]) {
				t.Errorf("member %d: value %q is empty or has surrounding whitespace", i, m.value)
			}
			if off := cap(b) - cap(m.value); off < 0 || off+len(m.value) > len(b) || !bytes.Equal(b[off:off+len(m.value)], m.value) {
				t.Errorf("member %d: value %q is not a subslice of the input", i, m.value)
			}
			if !bytes.Equal(compact(t, m.value), compact(t, w.value)) {
				t.Errorf("member %d: value %q, encoding/json has %q", i, m.value, w.value)
			}
			if m.value[0] == '"' {
				var ws string
				if err := json.Unmarshal(m.value, &ws); err != nil {
					t.Fatal(err)
				}
				if s, ok := StringValue(m.value); !ok || s != ws {
					t.Errorf("member %d: StringValue(%q) = %q, %v; encoding/json has %q", i, m.value, s, ok, ws)
				}
			}
		}
	})
}

// FuzzStringValue checks StringValue against json.Unmarshal and KeyEquals
// against StringValue.
func FuzzStringValue(f *testing.F) {
	for _, s := range []string{`"move"`, `""`, `"hi \u00e9\n"`, `"\ud83d\ude00"`, `"\ud800\ud800\udc00"`,
		`"\uDC00"`, "\"\xff\"", `"a`, `"\q"`, `"\u00"`, `"a"b`, `"wörld"`, `"\"\\\/\b\f\n\r\t"`} {
		f.Add([]byte(s), "move")
	}
	f.Fuzz(func(t *testing.T, b []byte, s string) {
		got, ok := StringValue(b)
		wantOK := json.Valid(b) && utf8.Valid(b) && len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"'
		if ok != wantOK {
			t.Fatalf("StringValue(%q) ok = %v, want %v", b, ok, wantOK)
		}
		if ok {
			var want string
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("StringValue(%q) = %q, encoding/json has %q", b, got, want)
			}
			body := b[1 : len(b)-1]
			if !KeyEquals(body, want) || KeyEquals(body, want+"x") || (want != "" && KeyEquals(body, want[:len(want)-1])) {
				t.Fatalf("KeyEquals(%q, %q) wrong", body, want)
			}
		}
		// KeyEquals(raw, s) must mean exactly: raw is string content that
		// unescapes to s.
		sv, svOK := StringValue([]byte(`"` + string(b) + `"`))
		if eq := KeyEquals(b, s); eq != (svOK && sv == s) {
			t.Fatalf("KeyEquals(%q, %q) = %v, StringValue gives %q, %v", b, s, eq, sv, svOK)
		}
	})
}

type decoded struct {
	key   string
	value json.RawMessage
}

// decodeMembers walks the top-level members of the valid JSON object b with
// a json.Decoder.
func decodeMembers(t *testing.T, b []byte) []decoded {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("decoder start: %v, %v", tok, err)
	}
	var out []decoded
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		key, ok := tok.(string)
		if !ok {
			t.Fatalf("decoder key token %v", tok)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, decoded{key, v})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		t.Fatalf("decoder end: %v, %v", tok, err)
	}
	return out
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("json.Compact(%q): %v", b, err)
	}
	return buf.Bytes()
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// nestingDepth returns the deepest nesting of objects and arrays in the valid
// JSON text b.
func nestingDepth(b []byte) int {
	depth, maxD, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			maxD = max(maxD, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return maxD
}

// FuzzScanUnique: ScanUnique accepts exactly what Scan accepts whose
// top-level keys, decoded as encoding/json decodes them, are distinct.
func FuzzScanUnique(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":2}`, `{"type":"joined","type":"chat"}`, `{"type":"a","t\u0079pe":"b"}`,
		`{"score":1,"Score":2}`, `{"a":{"x":1,"x":2}}`, `{"\ud800":1,"\udc00":2}`, `{"\ud800":1,"\ufffd":2}`, `[]`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := ScanUnique(b, nil)
		if Scan(b, nil) != nil {
			if err == nil {
				t.Fatalf("ScanUnique accepted %q, which Scan refuses", b)
			}
			return
		}
		seen := map[string]bool{}
		dup := false
		_ = Scan(b, func(k, _ []byte) error {
			var s string
			if e := json.Unmarshal(append(append([]byte{'"'}, k...), '"'), &s); e != nil {
				t.Fatalf("key %q of %q does not decode: %v", k, b, e)
			}
			dup = dup || seen[s]
			seen[s] = true
			return nil
		})
		if dup != errors.Is(err, ErrDuplicateKey) || (!dup && err != nil) {
			t.Fatalf("ScanUnique(%q) = %v, duplicate keys %v", b, err, dup)
		}
	})
}

// FuzzKeyFold: KeyFold matches a key exactly when encoding/json, which
// matches field names case-insensitively, would decode it into a field of
// that name.
func FuzzKeyFold(f *testing.F) {
	for _, s := range []string{"user", "USER", `\u0055ser`, "uſer", "\u212a", "msg_id", "MSG_ID", "source", "Source", "x"} {
		f.Add([]byte(s), "user")
		f.Add([]byte(s), "k")
		f.Add([]byte(s), "msg_id")
	}
	f.Fuzz(func(t *testing.T, raw []byte, name string) {
		for i := 0; i < len(name); i++ {
			if c := name[i]; !(c >= 'a' && c <= 'z' || c == '_') {
				return // reserved names are lower-case ASCII
			}
		}
		if name == "" || Scan(append(append([]byte(`{"`), raw...), `":1}`...), nil) != nil {
			return
		}
		// encoding/json decodes {"<raw>":1} into the one field named name
		// if and only if it matches that field.
		var v map[string]any
		_ = json.Unmarshal(append(append([]byte(`{"`), raw...), `":1}`...), &v)
		var key string
		for k := range v {
			key = k
		}
		want := strings.EqualFold(key, name)
		if got := KeyFold(raw, name); got != want {
			t.Fatalf("KeyFold(%q, %q) = %v; the key decodes to %q, EqualFold %v", raw, name, got, key, want)
		}
	})
}
