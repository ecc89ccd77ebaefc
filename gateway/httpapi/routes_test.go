package httpapi_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gamerelay/gamerelay/gateway/httpapi"
	"github.com/gamerelay/gamerelay/gateway/httpapi/httpapitest"
	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// fakeAppender fails every append; these tests do not reach the log.
type fakeAppender struct{}

func (fakeAppender) Append(_ context.Context, _ string, _ []byte, _ string) (sequencer.Result, error) {
	return sequencer.Result{}, sequencer.ErrUnavailable
}

// offline is an API whose log is never reached.
func offline(t testing.TB, cfg httpapi.Config) *httptest.Server {
	t.Helper()
	if cfg.Keys == nil {
		cfg.Keys = httpapitest.Keys
	}
	cfg.Appender = fakeAppender{}
	cfg.Reader = sequencer.NewReader(nil, sequencer.Config{})
	api, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return srv
}

// TestOpenAPI: the document is served without a key, is OpenAPI 3.1 JSON,
// lists exactly the operations the API serves, and every $ref resolves.
func TestOpenAPI(t *testing.T) {
	srv := offline(t, httpapi.Config{})
	r := expect(t, call(t, "GET", srv.URL+"/v1/openapi.json", "", ""), http.StatusOK)
	doc := r.body
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi %q, want 3.1.x", v)
	}
	var documented []string
	for path, item := range doc["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			if method != "parameters" {
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	served := httpapi.Routes()
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Fatalf("documented operations %v, served %v", documented, served)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				var target any = doc
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, _ := target.(map[string]any)
					if target = m[part]; target == nil {
						t.Errorf("$ref %s does not resolve", ref)
						return
					}
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	// Every served operation answers something other than 404/405 routing
	// errors (auth comes first).
	for _, op := range served {
		method, path, _ := strings.Cut(op, " ")
		path = strings.ReplaceAll(path, "{id}", "g1")
		if c := call(t, method, srv.URL+path, "", "").code(); c == wire.CodeNotFound || c == wire.CodeMethodNotAllowed {
			t.Errorf("%s answered %s", op, c)
		}
	}
}

// TestRouting: wrong methods get 405 with Allow, unknown paths 404, in JSON.
func TestRouting(t *testing.T) {
	srv := offline(t, httpapi.Config{})
	for _, tc := range []struct{ method, path, allow string }{
		{"GET", "/v1/games", "POST"},
		{"PUT", "/v1/games", "POST"},
		{"DELETE", "/v1/games/g1/messages", "POST, GET, HEAD"},
		{"GET", "/v1/games/g1/end", "POST"},
		{"POST", "/v1/openapi.json", "GET, HEAD"},
	} {
		r := expect(t, call(t, tc.method, srv.URL+tc.path, studioKey, ""), http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed)
		if got := r.header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
	}
	for _, p := range []string{"/v1/", "/v1/games/g1", "/v1/games/g1/messages/3", "/other"} {
		expect(t, call(t, "GET", srv.URL+p, studioKey, ""), http.StatusNotFound, wire.CodeNotFound)
	}
	// Without a token secret creating games is off.
	expect(t, call(t, "POST", srv.URL+"/v1/games", studioKey, ""), http.StatusNotImplemented, wire.CodeCreateDisabled)
}

// TestUnavailable: a log that cannot take the message answers 503
// unavailable with Retry-After, and the failure is logged.
func TestUnavailable(t *testing.T) {
	sys := httpapitest.Start(t, httpapitest.Options{})
	game := createGame(t, sys.URL(), "").body["game"].(string)
	api, err := httpapi.New(httpapi.Config{Keys: httpapitest.Keys, Appender: fakeAppender{}, Reader: sys.Reader,
		TokenSecret: httpapitest.Secret, Timeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	for _, path := range []string{"/v1/games/" + game + "/messages", "/v1/games/" + game + "/end", "/v1/games"} {
		body := `{"type":"x"}`
		if !strings.HasSuffix(path, "messages") {
			body = ""
		}
		r := expect(t, call(t, "POST", srv.URL+path, studioKey, body), http.StatusServiceUnavailable, wire.CodeUnavailable)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("POST %s: no Retry-After", path)
		}
	}
	if h := sys.Head(game); h != 1 {
		t.Fatalf("head %d, want 1", h)
	}
}

// TestMetrics: requests are counted by route and status.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := httpapi.NewMetrics(reg)
	sys := httpapitest.Start(t, httpapitest.Options{API: httpapi.Config{Metrics: m}})
	base := sys.URL()
	game := createGame(t, base, "").body["game"].(string)
	expect(t, publish(t, base, game, `{"type":"x"}`), http.StatusCreated)
	expect(t, call(t, "POST", base+"/v1/games/"+game+"/messages", "", `{"type":"x"}`), http.StatusUnauthorized)
	expect(t, call(t, "PUT", base+"/v1/games", studioKey, ""), http.StatusMethodNotAllowed)
	for _, tc := range []struct {
		route, code string
	}{
		{"POST /v1/games", "201"},
		{"POST /v1/games/{id}/messages", "201"},
		{"POST /v1/games/{id}/messages", "401"},
		{"/v1/games", "405"},
	} {
		if v := promtest.ToFloat64(m.Requests.WithLabelValues(tc.route, tc.code)); v != 1 {
			t.Errorf("requests{route=%q,code=%s} = %v, want 1", tc.route, tc.code, v)
		}
	}
	if n := promtest.CollectAndCount(m.Seconds, "gamerelay_api_request_seconds"); n != 3 {
		t.Errorf("request_seconds has %d series, want 3 routes", n)
	}
}

// TestConfig: invalid configurations are refused, naming the field and
// never the key.
func TestConfig(t *testing.T) {
	reader := sequencer.NewReader(nil, sequencer.Config{})
	ok := httpapi.Config{Keys: map[string]string{"studio": "secret-key-0123456789"}, Appender: fakeAppender{}, Reader: reader}
	if _, err := httpapi.New(ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, tc := range map[string]struct {
		mod  func(*httpapi.Config)
		want string
	}{
		"no keys":      {func(c *httpapi.Config) { c.Keys = nil }, "Keys"},
		"short key":    {func(c *httpapi.Config) { c.Keys = map[string]string{"studio": "short-key"} }, "Keys"},
		"key with tab": {func(c *httpapi.Config) { c.Keys = map[string]string{"studio": "secret-key\t0123456789"} }, "Keys"},
		"bad owner":    {func(c *httpapi.Config) { c.Keys = map[string]string{"stu dio": "secret-key-0123456789"} }, "owner"},
		"shared key": {func(c *httpapi.Config) {
			c.Keys = map[string]string{"a": "secret-key-0123456789", "b": "secret-key-0123456789"}
		}, "same key"},
		"no appender":        {func(c *httpapi.Config) { c.Appender = nil }, "Appender"},
		"no reader":          {func(c *httpapi.Config) { c.Reader = nil }, "Reader"},
		"secret of 31 bytes": {func(c *httpapi.Config) { c.TokenSecret = []byte("secret-key-0123456789-0123456789")[:31] }, "TokenSecret"},
		"tiny body":          {func(c *httpapi.Config) { c.MaxBodyBytes = 10 }, "MaxBodyBytes"},
		"negative ttl":       {func(c *httpapi.Config) { c.TokenTTL = -time.Hour }, "TokenTTL"},
		"negative wait":      {func(c *httpapi.Config) { c.Timeout = -time.Second }, "Timeout"},
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			_, err := httpapi.New(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret-key") {
				t.Fatalf("error %q shows a key", err)
			}
		})
	}
}
