package archiver

import (
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
	"github.com/gamerelay/gamerelay/sequencer"
)

func TestEscapeKey(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"plain":             {"score", "score"},
		"empty":             {"", ""},
		"leading dollar":    {"$where", `\$where`},
		"only dollar":       {"$", `\$`},
		"inner dollar":      {"a$b", "a$b"},
		"dot":               {"a.b", `a\_b`},
		"dots":              {"..", `\_\_`},
		"backslash":         {`a\b`, `a\\b`},
		"escape look-alike": {`\_`, `\\_`},
		"nul":               {"a\x00b", `a\0b`},
		"all":               {"$.\\\x00$", `\$\_\\\0$`},
		"unicode":           {"Spieler.ü", `Spieler\_ü`},
	} {
		t.Run(name, func(t *testing.T) {
			got := EscapeKey(tc.in)
			if got != tc.want {
				t.Fatalf("EscapeKey(%q) = %q, want %q", tc.in, got, tc.want)
			}
			back, err := UnescapeKey(got)
			if err != nil || back != tc.in {
				t.Fatalf("UnescapeKey(%q) = %q, %v; want %q", got, back, err, tc.in)
			}
		})
	}
	for _, bad := range []string{`a\`, `\x`, `a\$b`, "a.b", "$x", "a\x00", `\`} {
		if _, err := UnescapeKey(bad); !errors.Is(err, ErrBadEscape) {
			t.Errorf("UnescapeKey(%q) = %v, want ErrBadEscape", bad, err)
		}
	}
}

func FuzzEscapeKey(f *testing.F) {
	for _, s := range []string{"", "$where", "a.b", `a\_b`, "\x00", `\\$`, "ü$."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, k string) {
		e := EscapeKey(k)
		if strings.HasPrefix(e, "$") || strings.ContainsAny(e, ".\x00") {
			t.Fatalf("EscapeKey(%q) = %q is not a safe field name", k, e)
		}
		if back, err := UnescapeKey(e); err != nil || back != k {
			t.Fatalf("round trip of %q: %q, %v", k, back, err)
		}
		// UnescapeKey accepts only what EscapeKey produces.
		if back, err := UnescapeKey(k); err == nil && EscapeKey(back) != k {
			t.Fatalf("UnescapeKey(%q) = %q, which escapes to %q", k, back, EscapeKey(back))
		}
	})
}

func TestBodyDocument(t *testing.T) {
	deep := strings.Repeat(`[`, MaxBodyDepth-1) + strings.Repeat(`]`, MaxBodyDepth-1)
	tooDeep := strings.Repeat(`[`, MaxBodyDepth) + strings.Repeat(`]`, MaxBodyDepth)
	for name, tc := range map[string]struct {
		in   string
		want bson.D
		err  bool
	}{
		"issue example": {
			in: `{"type":"x","$where":1,"a.b":{"$c":[1,2.5,"s",null,true]}}`,
			want: bson.D{{Key: "type", Value: "x"}, {Key: `\$where`, Value: int64(1)},
				{Key: `a\_b`, Value: bson.D{{Key: `\$c`, Value: bson.A{int64(1), 2.5, "s", nil, true}}}}},
		},
		"numbers": {
			in: `{"i":-42,"z":-0,"f":1.0,"e":1e3,"big":9223372036854775807,"bigger":9223372036854775808,"neg":-9223372036854775809,"inf":1e400,"tiny":1e-400}`,
			want: bson.D{{Key: "i", Value: int64(-42)}, {Key: "z", Value: int64(0)}, {Key: "f", Value: 1.0}, {Key: "e", Value: 1000.0},
				{Key: "big", Value: int64(math.MaxInt64)}, {Key: "bigger", Value: 9223372036854775808.0},
				{Key: "neg", Value: -9223372036854775809.0}, {Key: "inf", Value: math.Inf(1)}, {Key: "tiny", Value: 0.0}},
		},
		"duplicate keys: first position, last value": {
			in:   `{"a":1,"b":2,"a":{"x":3}}`,
			want: bson.D{{Key: "a", Value: bson.D{{Key: "x", Value: int64(3)}}}, {Key: "b", Value: int64(2)}},
		},
		"keys equal after escaping stay apart": {
			in:   `{"a.b":1,"a\\_b":2}`,
			want: bson.D{{Key: `a\_b`, Value: int64(1)}, {Key: `a\\_b`, Value: int64(2)}},
		},
		"escaped characters": {
			in:   `{"k\u0000":"\u00fc\n","\ud800":"\ud800"}`,
			want: bson.D{{Key: `k\0`, Value: "ü\n"}, {Key: "\uFFFD", Value: "\uFFFD"}},
		},
		"empty key and containers": {
			in:   `{"":{},"a":[]}`,
			want: bson.D{{Key: "", Value: bson.D{}}, {Key: "a", Value: bson.A{}}},
		},
		"deepest allowed": {in: `{"d":` + deep + `}`, want: nil},
		"too deep":        {in: `{"d":` + tooDeep + `}`, err: true},
		"not an object":   {in: `[1]`, err: true},
		"trailing data":   {in: `{} {}`, err: true},
		"broken":          {in: `{"a":}`, err: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := BodyDocument([]byte(tc.in))
			if tc.err {
				if err == nil {
					t.Fatalf("BodyDocument(%s) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("BodyDocument(%s)\n got %#v\nwant %#v", tc.in, got, tc.want)
			}
			if _, err := bson.Marshal(bson.D{{Key: "body", Value: got}}); err != nil {
				t.Fatalf("not encodable: %v", err)
			}
		})
	}
}

func FuzzBodyDocument(f *testing.F) {
	for _, s := range []string{`{"type":"x","$where":1,"a.b":{"$c":[1,2.5,"s",null,true]}}`, `{"a":1,"a":2}`,
		`{"\u0000":"x"}`, `{"n":-1.5e-7}`, `{}`, `[]`, `{"a":[[[{"b.":null}]]]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := BodyDocument(b)
		if err != nil {
			return
		}
		if _, err := bson.Marshal(bson.D{{Key: "body", Value: doc}}); err != nil {
			t.Fatalf("BodyDocument(%q) not encodable: %v", b, err)
		}
		checkKeys(t, doc)
	})
}

func checkKeys(t *testing.T, v any) {
	switch v := v.(type) {
	case bson.D:
		seen := map[string]bool{}
		for _, e := range v {
			if strings.HasPrefix(e.Key, "$") || strings.ContainsAny(e.Key, ".\x00") || seen[e.Key] {
				t.Fatalf("unsafe or repeated field name %q", e.Key)
			}
			seen[e.Key] = true
			checkKeys(t, e.Value)
		}
	case bson.A:
		for _, x := range v {
			checkKeys(t, x)
		}
	}
}

// TestBadDataArchivedFaithfully appends bodies that MongoDB could not store
// as they are (duplicate keys only nested: the log refuses them at the top
// level) and checks that each is archived: raw byte for byte, body
// with the documented escaping and number rules (or raw only, with
// body_error, when nested too deep), queryable by escaped path.
func TestBadDataArchivedFaithfully(t *testing.T) {
	e := newEnv(t, sequencer.Config{Partitions: 1})
	deep := `{"type":"deep","d":` + strings.Repeat(`[`, 95) + strings.Repeat(`]`, 95) + `}`
	bodies := []string{
		`{"type":"x","$where":1,"a.b":{"$c":[1,2.5,"s",null,true]}}`,
		`{"type":"y","back\\slash":{"$":"only dollar"},"nul\u0000key":1,"nest":{"dup":1,"dup":2},"big":123456789012345678901234567890}`,
		"{\n  \"type\": \"pretty\",\n  \"\": \"empty key\",\n  \"lone\": \"\\ud800\"\n}",
		deep,
	}
	for _, b := range bodies {
		if _, err := e.app.Append(context.Background(), "bad", []byte(b), ""); err != nil {
			t.Fatalf("append %s: %v", b, err)
		}
	}
	frames := e.frames("bad")["bad"]
	e.start(e.config(), nil)
	e.waitCount(int64(len(bodies)))
	g, err := NewArchive(e.client, "gamerelay").Game(context.Background(), "bad")
	if err != nil || g.FirstMsgID != 1 || g.LastMsgID != 4 || len(g.Players) != 0 {
		t.Fatalf("summary %+v, %v", g, err)
	}

	ctx := context.Background()
	coll := e.db.Collection(MessagesCollection)
	body := func(id int64) (bson.D, bson.M) {
		t.Helper()
		var doc bson.M
		if err := coll.FindOne(ctx, bson.D{{Key: "game", Value: "bad"}, {Key: "msg_id", Value: id}}).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		raw, err := bson.Marshal(doc["body"])
		if err != nil {
			return nil, doc
		}
		var d bson.D
		if err := bson.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		return d, doc
	}
	want1 := bson.D{{Key: "type", Value: "x"}, {Key: `\$where`, Value: int64(1)},
		{Key: `a\_b`, Value: bson.D{{Key: `\$c`, Value: bson.A{int64(1), 2.5, "s", nil, true}}}},
		{Key: "msg_id", Value: int64(1)}, {Key: "ts", Value: tsOf(t, frames[0])}}
	if got, _ := body(1); !reflect.DeepEqual(got, want1) {
		t.Fatalf("body 1\n got %#v\nwant %#v", got, want1)
	}
	want2 := bson.D{{Key: "type", Value: "y"}, {Key: `back\\slash`, Value: bson.D{{Key: `\$`, Value: "only dollar"}}},
		{Key: `nul\0key`, Value: int64(1)}, {Key: "nest", Value: bson.D{{Key: "dup", Value: int64(2)}}}, {Key: "big", Value: 1.2345678901234568e29},
		{Key: "msg_id", Value: int64(2)}, {Key: "ts", Value: tsOf(t, frames[1])}}
	if got, _ := body(2); !reflect.DeepEqual(got, want2) {
		t.Fatalf("body 2\n got %#v\nwant %#v", got, want2)
	}
	if got, _ := body(3); got[1].Key != "" || got[2].Value != "\uFFFD" {
		t.Fatalf("body 3 %#v", got)
	}
	if _, doc := body(4); doc["body"] != nil || !strings.Contains(doc["body_error"].(string), "nested deeper") || doc["type"] != "deep" {
		t.Fatalf("deep message stored as %v", doc)
	}
	// Escaped paths are ordinary field paths.
	for _, q := range []bson.D{
		{{Key: `body.\$where`, Value: int64(1)}},
		{{Key: `body.a\_b.\$c`, Value: 2.5}},
		{{Key: `body.back\\slash.\$`, Value: "only dollar"}},
	} {
		if n := e.count(q); n != 1 {
			t.Errorf("query %v matched %d documents, want 1", q, n)
		}
	}
	// raw is the exact frame, whatever the body.
	i := 0
	err = NewArchive(e.client, "gamerelay").Messages(ctx, "bad", 0, 0, func(r Record) error {
		if string(r.Frame) != string(frames[i]) {
			t.Errorf("msg_id %d: raw %q, frame %q", r.MsgID, r.Frame, frames[i])
		}
		i++
		return nil
	})
	if err != nil || i != len(bodies) {
		t.Fatalf("read back %d messages: %v", i, err)
	}
}

func tsOf(t *testing.T, frame []byte) int64 {
	t.Helper()
	var ts int64
	_ = jsonobj.Scan(frame, func(k, v []byte) error {
		if jsonobj.KeyEquals(k, "ts") {
			ts = jsonNumber(string(v)).(int64)
		}
		return nil
	})
	if ts == 0 {
		t.Fatalf("frame %s has no ts", frame)
	}
	return ts
}

func TestConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg   Config
		field string
	}{
		"zero value":     {Config{}, ""},
		"bad namespace":  {Config{Namespace: "a.b"}, "Namespace"},
		"partitions":     {Config{Partitions: -1}, "Partitions"},
		"database":       {Config{Database: "a/b"}, "Database"},
		"batch size":     {Config{BatchSize: 20_000}, "BatchSize"},
		"batch wait":     {Config{BatchWait: time.Hour}, "BatchWait"},
		"durable":        {Config{Durable: "a b"}, "Durable"},
		"ack wait":       {Config{AckWait: time.Millisecond}, "AckWait"},
		"write timeout":  {Config{WriteTimeout: time.Millisecond}, "WriteTimeout"},
		"max backoff":    {Config{MaxBackoff: time.Microsecond}, "MaxBackoff"},
		"all set, valid": {Config{Namespace: "x", Partitions: 8, Database: "games_2025", BatchSize: 1, BatchWait: time.Second, Durable: "arch"}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.field)
			}
		})
	}
}
