package httpapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// FuzzCheckMessage: whatever checkMessage accepts is a JSON object with a
// string, unreserved "type" and no reserved field, as encoding/json reads
// it; the body appended for it is valid JSON carrying the same members plus
// client_id "" and source.
func FuzzCheckMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"move","to":[1,2]}`, `{"type":"x","type":"presence"}`, `{"type":"game\u005fended"}`,
		`{"type":"x","\u006dsg_id":1}`, `{"a":1}`, `[1]`, `{"type":7}`, ` {"type":"x"} `, `{"type":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if checkMessage(body, typeRequired) != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted %q: %v", body, err)
		}
		typ, ok := m["type"].(string)
		if !ok || wire.IsReservedType(typ) {
			t.Fatalf("accepted %q with type %v", body, m["type"])
		}
		for k := range m {
			for _, f := range wire.ReservedFields {
				if strings.EqualFold(k, f) {
					t.Fatalf("accepted %q with %s", body, k)
				}
			}
		}
		var out map[string]any
		sys := systemBody("", members(body), "studio")
		if err := json.Unmarshal(sys, &out); err != nil {
			t.Fatalf("appended body %q of %q: %v", sys, body, err)
		}
		if out["client_id"] != "" || out["source"] != "studio" || out["type"] != typ || len(out) != len(m)+2 {
			t.Fatalf("appended body %q of %q", sys, body)
		}
	})
}
