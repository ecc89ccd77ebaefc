package jsonobj

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

type member struct{ key, value string }

// collect runs Scan and returns the members it reported.
func collect(b []byte) ([]member, error) {
	var got []member
	err := Scan(b, func(k, v []byte) error {
		got = append(got, member{string(k), string(v)})
		return nil
	})
	return got, err
}

func TestScanValid(t *testing.T) {
	tests := map[string]struct {
		in   string
		want []member
	}{
		"empty":              {`{}`, nil},
		"empty with spaces":  {" \t\r\n{ \n } \t\r\n", nil},
		"one member":         {`{"a":1}`, []member{{"a", "1"}}},
		"whitespace trimmed": {"{ \"a\" \t:\n true ,\r\"b\" : null }", []member{{"a", "true"}, {"b", "null"}}},
		"all kinds": {`{"s":"x","n":-1.5e+3,"t":true,"f":false,"z":null,"a":[1,"2",[]],"o":{"p":{}}}`, []member{
			{"s", `"x"`}, {"n", "-1.5e+3"}, {"t", "true"}, {"f", "false"}, {"z", "null"},
			{"a", `[1,"2",[]]`}, {"o", `{"p":{}}`},
		}},
		"nested": {`{"a":{"b":{"c":[{"d":[[],{}]}]}},"e":0}`, []member{
			{"a", `{"b":{"c":[{"d":[[],{}]}]}}`}, {"e", "0"},
		}},
		"arrays": {`{"a":[ 1 , [ 2 , { "x" : [ ] } ] ],"b":[]}`, []member{
			{"a", `[ 1 , [ 2 , { "x" : [ ] } ] ]`}, {"b", "[]"},
		}},
		"numbers": {`{"a":0,"b":-0,"c":10,"d":0.5,"e":-12.25,"f":1e9,"g":1E-9,"h":-0.0e+00,"i":123456789012345678901234567890}`, []member{
			{"a", "0"}, {"b", "-0"}, {"c", "10"}, {"d", "0.5"}, {"e", "-12.25"}, {"f", "1e9"},
			{"g", "1E-9"}, {"h", "-0.0e+00"}, {"i", "123456789012345678901234567890"},
		}},
		"unicode": {`{"héllo":"wörld 日本 😀","€":"\u20ac"}`, []member{
			{"héllo", `"wörld 日本 😀"`}, {"€", `"\u20ac"`},
		}},
		"escapes kept raw": {`{"a\"b\\c\/d\b\f\n\r\t":"\u0000\uD83D\uDE00\ud800"}`, []member{
			{`a\"b\\c\/d\b\f\n\r\t`, `"\u0000\uD83D\uDE00\ud800"`},
		}},
		"long string": {`{"k":"` + strings.Repeat("abcdefgh", 20) + `é"}`, []member{
			{"k", `"` + strings.Repeat("abcdefgh", 20) + `é"`},
		}},
		"duplicate keys in order": {`{"type":"a","x":1,"type":"b","\u0074ype":"c"}`, []member{
			{"type", `"a"`}, {"x", "1"}, {"type", `"b"`}, {`\u0074ype`, `"c"`},
		}},
		"empty key":                 {`{"":""}`, []member{{"", `""`}}},
		"DEL and U+2028 in strings": {"{\"\x7f\":\"\u2028\"}", []member{{"\x7f", "\"\u2028\""}}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := collect([]byte(tt.in))
			if err != nil {
				t.Fatalf("Scan(%q) = %v", tt.in, err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Scan(%q) members\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if err := Scan([]byte(tt.in), nil); err != nil {
				t.Errorf("Scan(%q, nil) = %v", tt.in, err)
			}
		})
	}
}

func TestScanErrors(t *testing.T) {
	tests := map[string]struct {
		in   string
		want error
	}{
		"array":                 {`[1,{"a":2}]`, ErrNotObject},
		"empty array":           {` [] `, ErrNotObject},
		"string":                {`"{}"`, ErrNotObject},
		"number":                {`-1.5e3`, ErrNotObject},
		"zero":                  {`0`, ErrNotObject},
		"true":                  {`true`, ErrNotObject},
		"false":                 {` false`, ErrNotObject},
		"null":                  {"null\n", ErrNotObject},
		"empty input":           {``, ErrInvalid},
		"only whitespace":       {" \t\r\n", ErrInvalid},
		"truncated open":        {`{`, ErrInvalid},
		"truncated key":         {`{"a`, ErrInvalid},
		"truncated colon":       {`{"a"`, ErrInvalid},
		"truncated value":       {`{"a":`, ErrInvalid},
		"truncated after value": {`{"a":1`, ErrInvalid},
		"truncated nested":      {`{"a":[1,{"b":2}`, ErrInvalid},
		"truncated literal":     {`{"a":tru`, ErrInvalid},
		"truncated escape":      {`{"a\`, ErrInvalid},
		"truncated unicode":     {`{"a":"\u12`, ErrInvalid},
		"truncated array value": {`[1,`, ErrInvalid},
		"trailing garbage":      {`{}x`, ErrInvalid},
		"two objects":           {`{}{}`, ErrInvalid},
		"object then space obj": {`{"a":1} {"b":2}`, ErrInvalid},
		"non-object garbage":    {`1 2`, ErrInvalid},
		"literal garbage":       {`{"a":truex}`, ErrInvalid},
		"trailing comma object": {`{"a":1,}`, ErrInvalid},
		"trailing comma array":  {`{"a":[1,]}`, ErrInvalid},
		"trailing comma nested": {`{"a":{"b":1,}}`, ErrInvalid},
		"leading comma":         {`{,"a":1}`, ErrInvalid},
		"double comma":          {`{"a":1,,"b":2}`, ErrInvalid},
		"missing comma":         {`{"a":1 "b":2}`, ErrInvalid},
		"missing colon":         {`{"a" 1}`, ErrInvalid},
		"missing value":         {`{"a":}`, ErrInvalid},
		"bare key":              {`{a:1}`, ErrInvalid},
		"non-string key":        {`{1:1}`, ErrInvalid},
		"single quotes key":     {`{'a':1}`, ErrInvalid},
		"single quotes value":   {`{"a":'b'}`, ErrInvalid},
		"NaN":                   {`{"a":NaN}`, ErrInvalid},
		"Infinity":              {`{"a":-Infinity}`, ErrInvalid},
		"leading zero":          {`{"a":01}`, ErrInvalid},
		"negative leading zero": {`{"a":-012}`, ErrInvalid},
		"plus sign":             {`{"a":+1}`, ErrInvalid},
		"lone minus":            {`{"a":-}`, ErrInvalid},
		"bare fraction":         {`{"a":.5}`, ErrInvalid},
		"empty fraction":        {`{"a":1.}`, ErrInvalid},
		"empty exponent":        {`{"a":1e}`, ErrInvalid},
		"signed empty exponent": {`{"a":1e+}`, ErrInvalid},
		"hex number":            {`{"a":0x1}`, ErrInvalid},
		"invalid UTF-8 value":   {"{\"a\":\"\xff\"}", ErrInvalid},
		"invalid UTF-8 key":     {"{\"\xc3\x28\":1}", ErrInvalid},
		"truncated UTF-8":       {"{\"a\":\"\xe6\x97\"}", ErrInvalid},
		"UTF-8 surrogate":       {"{\"a\":\"\xed\xa0\x80\"}", ErrInvalid},
		"overlong UTF-8":        {"{\"a\":\"\xc0\xaf\"}", ErrInvalid},
		"invalid UTF-8 long":    {"{\"a\":\"" + strings.Repeat("x", 17) + "\x80\"}", ErrInvalid},
		"UTF-8 outside string":  {"{\"a\":1\u00a0}", ErrInvalid},
		"BOM":                   {"\ufeff{}", ErrInvalid},
		"raw newline in string": {"{\"a\":\"x\ny\"}", ErrInvalid},
		"raw tab in key":        {"{\"a\tb\":1}", ErrInvalid},
		"raw NUL in string":     {"{\"a\":\"\x00\"}", ErrInvalid},
		"bad escape":            {`{"a":"\x41"}`, ErrInvalid},
		"bad escape in key":     {`{"\a":1}`, ErrInvalid},
		"escaped single quote":  {`{"a":"\'"}`, ErrInvalid},
		"short unicode escape":  {`{"a":"\u12G4"}`, ErrInvalid},
		"uppercase U escape":    {`{"a":"\U0041"}`, ErrInvalid},
		"unterminated string":   {`{"a":"b}`, ErrInvalid},
		"mismatched brackets":   {`{"a":[}`, ErrInvalid},
		"mismatched braces":     {`{"a":{]}`, ErrInvalid},
		"key in array":          {`{"a":["k":1]}`, ErrInvalid},
		"comment":               {`{/*c*/}`, ErrInvalid},
		"form feed whitespace":  {"{\f}", ErrInvalid},
		"object close only":     {`}`, ErrInvalid},
		"non-object invalid":    {`[1 2]`, ErrInvalid},
		"capital literal":       {`{"a":True}`, ErrInvalid},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := Scan([]byte(tt.in), nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Scan(%q) = %v, want %v", tt.in, err, tt.want)
			}
			if tt.want == ErrInvalid && !strings.Contains(err.Error(), " at offset ") {
				t.Errorf("Scan(%q) = %q, want offset detail", tt.in, err)
			}
			// Our verdict must agree with encoding/json, which lets
			// invalid UTF-8 in strings through.
			if json.Valid([]byte(tt.in)) && utf8.ValidString(tt.in) != (tt.want == ErrNotObject) {
				t.Errorf("encoding/json disagrees about %q", tt.in)
			}
		})
	}
}

func TestScanErrorOffset(t *testing.T) {
	tests := map[string]struct {
		in   string
		want string
	}{
		"trailing garbage": {`{"a":1} x`, "jsonobj: invalid JSON: invalid character 'x' after top-level value at offset 8"},
		"end of input":     {`{"a":[1,`, "jsonobj: invalid JSON: unexpected end of JSON input at offset 8"},
		"control char":     {"{\"a\":\"\x01\"}", "jsonobj: invalid JSON: invalid byte 0x01 in string literal at offset 6"},
		"invalid UTF-8":    {"{\"ab\xff\":1}", "jsonobj: invalid JSON: invalid UTF-8 in string at offset 4"},
		"bad hex":          {`{"a":"\u00zz"}`, `jsonobj: invalid JSON: invalid character 'z' in \u hexadecimal character escape at offset 10`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if err := Scan([]byte(tt.in), nil); err == nil || err.Error() != tt.want {
				t.Errorf("Scan(%q) = %v, want %s", tt.in, err, tt.want)
			}
		})
	}
}

func TestScanDepth(t *testing.T) {
	nest := func(n int) string { // n levels in total
		return "{" + strings.Repeat(`"a":[`, 1) + strings.Repeat("[", n-2) + strings.Repeat("]", n-2) + "]}"
	}
	tests := map[string]struct {
		in   string
		want error
	}{
		"object at limit":      {nest(maxDepth), nil},
		"object over limit":    {nest(maxDepth + 1), ErrInvalid},
		"objects at limit":     {strings.Repeat(`{"a":`, maxDepth) + "1" + strings.Repeat("}", maxDepth), nil},
		"objects over limit":   {strings.Repeat(`{"a":`, maxDepth+1) + "1" + strings.Repeat("}", maxDepth+1), ErrInvalid},
		"array at limit":       {strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth), ErrNotObject},
		"array over limit":     {strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1), ErrInvalid},
		"very deep unbalanced": {`{"a":` + strings.Repeat("[", 1<<20), ErrInvalid},
		"very deep objects":    {strings.Repeat(`{"a":`, 1<<18), ErrInvalid},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if err := Scan([]byte(tt.in), nil); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Scan = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestScanCallbackError(t *testing.T) {
	stop := errors.New("stop")
	calls := 0
	// The input is invalid after the member fn rejects: fn's error wins
	// because Scan stops there.
	err := Scan([]byte(`{"a":1,"b":2,"c":3,}`), func(k, v []byte) error {
		calls++
		if string(k) == "b" {
			return stop
		}
		return nil
	})
	if err != stop || calls != 2 {
		t.Errorf("Scan = %v after %d calls, want stop after 2", err, calls)
	}
}

func TestScanValueIsSubslice(t *testing.T) {
	b := []byte(` { "k" : [1, 2] , "s":"x" } `)
	err := Scan(b, func(k, v []byte) error {
		for _, s := range [][]byte{k, v} {
			off := cap(b) - cap(s)
			if off < 0 || off+len(s) > len(b) || !bytes.Equal(b[off:off+len(s)], s) {
				t.Errorf("%q is not a subslice of the input", s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestKeyEquals(t *testing.T) {
	tests := map[string]struct {
		raw, s string
		want   bool
	}{
		"plain":                    {`type`, "type", true},
		"plain differs":            {`typo`, "type", false},
		"prefix":                   {`typ`, "type", false},
		"longer":                   {`types`, "type", false},
		"empty":                    {``, "", true},
		"empty vs non-empty":       {``, "a", false},
		"escaped letter":           {`\u0074ype`, "type", true},
		"escaped uppercase hex":    {`\u0054ype`, "Type", true},
		"all escaped":              {`\u0074\u0079\u0070\u0065`, "type", true},
		"escaped differs":          {`\u0074ypo`, "type", false},
		"case differs":             {`Type`, "type", false},
		"simple escapes":           {`a\"b\\c\/d\b\f\n\r\t`, "a\"b\\c/d\b\f\n\r\t", true},
		"escaped slash vs raw":     {`\/`, "/", true},
		"utf-8":                    {`wörld`, "wörld", true},
		"escaped non-ASCII":        {`w\u00f6rld`, "wörld", true},
		"surrogate pair":           {`\uD83D\uDE00`, "😀", true},
		"lone high surrogate":      {`\uD800`, "\uFFFD", true},
		"lone low surrogate":       {`\uDC00x`, "\uFFFDx", true},
		"high then high":           {`\uD800\uD83D\uDE00`, "\uFFFD😀", true},
		"lone surrogate vs bytes":  {`\uD800`, "\xed\xa0\x80", false},
		"invalid UTF-8 in s":       {`\uFFFD`, "\xff", false},
		"invalid UTF-8 in raw":     {"\xff", "\xff", false},
		"NUL escape":               {`a\u0000`, "a\x00", true},
		"raw quote is not a key":   {`a"b`, `a"b`, false},
		"raw control char":         {"a\nb", "a\nb", false},
		"bad escape":               {`\x`, "x", false},
		"truncated escape":         {`a\`, `a\`, false},
		"truncated unicode escape": {`\u007`, "\a", false},
		"bad hex":                  {`\u00g4`, "", false},
		"escape vs literal text":   {`\n`, `\n`, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := KeyEquals([]byte(tt.raw), tt.s); got != tt.want {
				t.Errorf("KeyEquals(%q, %q) = %v, want %v", tt.raw, tt.s, got, tt.want)
			}
		})
	}
}

func TestStringValue(t *testing.T) {
	tests := map[string]struct {
		raw  string
		want string
		ok   bool
	}{
		"plain":             {`"move"`, "move", true},
		"empty":             {`""`, "", true},
		"escapes":           {`"hi \u00e9\n\"q\"\\\/"`, "hi é\n\"q\"\\/", true},
		"surrogate pair":    {`"\ud83d\ude00!"`, "😀!", true},
		"lone surrogate":    {`"a\ud800b"`, "a\uFFFDb", true},
		"high then escape":  {`"\ud800\n"`, "\uFFFD\n", true},
		"utf-8":             {`"日本"`, "日本", true},
		"number":            {`12`, "", false},
		"null":              {`null`, "", false},
		"object":            {`{}`, "", false},
		"unterminated":      {`"abc`, "", false},
		"lone quote":        {`"`, "", false},
		"trailing data":     {`"a"b`, "", false},
		"two strings":       {`"a""b"`, "", false},
		"surrounding space": {` "a"`, "", false},
		"invalid UTF-8":     {"\"\xff\"", "", false},
		"control char":      {"\"\t\"", "", false},
		"bad escape":        {`"\q"`, "", false},
		"empty input":       {``, "", false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := StringValue([]byte(tt.raw))
			if got != tt.want || ok != tt.ok {
				t.Errorf("StringValue(%q) = %q, %v, want %q, %v", tt.raw, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// gameMessage is a typical client message of about 200 bytes.
const gameMessage = `{"type":"move","game":"g-7f3a9c21","seq":1042,"col":3,"row":-1,` +
	`"board":[[0,1],[2,0]],"player":{"id":"p_42","name":"Zoë","rating":1512.5},` +
	`"ts":1718000000123,"flags":[true,false,null],"note":"hi \u00e9"}`

func TestScanZeroAllocs(t *testing.T) {
	n := 0
	fn := func(k, v []byte) error {
		if KeyEquals(k, "type") {
			n += len(v)
		}
		return nil
	}
	for _, in := range [][]byte{[]byte(gameMessage), []byte(`{"\u0074ype":"x","a":[[[{"b":"` + strings.Repeat("é", 100) + `"}]]]}`)} {
		allocs := testing.AllocsPerRun(100, func() {
			if err := Scan(in, fn); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Scan(%q) allocates %v times, want 0", in, allocs)
		}
	}
}

func TestConcurrent(t *testing.T) {
	msg := []byte(gameMessage)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				var typ string
				err := Scan(msg, func(k, v []byte) error {
					if KeyEquals(k, "type") {
						typ, _ = StringValue(v)
					}
					return nil
				})
				if err != nil || typ != "move" {
					t.Errorf("Scan = %v, type %q", err, typ)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkScan(b *testing.B) {
	msg := []byte(gameMessage)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	n := 0
	fn := func(k, v []byte) error {
		n += len(k) + len(v)
		return nil
	}
	for b.Loop() {
		if err := Scan(msg, fn); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJSONValid is encoding/json's validator on the same message, for scale.
func BenchmarkJSONValid(b *testing.B) {
	msg := []byte(gameMessage)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if !json.Valid(msg) {
			b.Fatal("invalid")
		}
	}
}

func TestScanUnique(t *testing.T) {
	many := func(n int, dup bool) string {
		var b strings.Builder
		b.WriteString("{")
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"k%d":%d`, i, i)
		}
		if dup {
			b.WriteString(`,"k3":0`)
		}
		b.WriteString("}")
		return b.String()
	}
	for name, tc := range map[string]struct {
		in  string
		dup bool
	}{
		"distinct":               {`{"a":1,"b":2}`, false},
		"plain duplicate":        {`{"type":"joined","type":"chat"}`, true},
		"escaped duplicate":      {`{"type":"a","t\u0079pe":"b"}`, true},
		"both escaped":           {`{"\u0061":1,"\u0061":2}`, true},
		"case differs: distinct": {`{"score":1,"Score":2}`, false},
		"nested duplicates pass": {`{"a":{"x":1,"x":2}}`, false},
		"many keys, duplicate":   {many(100, true), true},
		"many keys, distinct":    {many(100, false), false},
	} {
		t.Run(name, func(t *testing.T) {
			err := ScanUnique([]byte(tc.in), nil)
			if got := errors.Is(err, ErrDuplicateKey); got != tc.dup || (!tc.dup && err != nil) {
				t.Fatalf("ScanUnique(%s) = %v, want duplicate %v", tc.in, err, tc.dup)
			}
		})
	}
}

func TestKeyFold(t *testing.T) {
	for name, tc := range map[string]struct {
		raw, s string
		want   bool
	}{
		"same":          {"user", "user", true},
		"upper":         {"USER", "user", true},
		"mixed":         {"UsEr", "user", true},
		"escaped":       {`\u0055ser`, "user", true},
		"long s":        {"uſer", "user", true},
		"kelvin sign":   {"\u212a", "k", true},
		"other":         {"users", "user", false},
		"prefix":        {"use", "user", false},
		"underscore":    {"MSG_ID", "msg_id", true},
		"dash is not _": {"msg-id", "msg_id", false},
	} {
		t.Run(name, func(t *testing.T) {
			if got := KeyFold([]byte(tc.raw), tc.s); got != tc.want {
				t.Fatalf("KeyFold(%q, %q) = %v, want %v", tc.raw, tc.s, got, tc.want)
			}
		})
	}
}
