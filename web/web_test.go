package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandlerFiles(t *testing.T) {
	h := Handler()
	tests := map[string]struct {
		path, ctype, contains string
	}{
		"page":       {"/", "text/html; charset=utf-8", `data-testid="board"`},
		"client":     {"/gamerelay.js", "text/javascript; charset=utf-8", "export class GameRelay"},
		"types":      {"/gamerelay.d.ts", "application/typescript; charset=utf-8", "export declare class GameRelay"},
		"app":        {"/app.js", "text/javascript; charset=utf-8", `from "/gamerelay.js"`},
		"game rules": {"/connect4.js", "text/javascript; charset=utf-8", "export function apply"},
		"style":      {"/style.css", "text/css; charset=utf-8", ".board"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res := get(t, h, http.MethodGet, tc.path, nil)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			if got := res.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
			etag := res.Header.Get("ETag")
			if !regexp.MustCompile(`^"[A-Za-z0-9_-]{16}"$`).MatchString(etag) {
				t.Errorf("ETag %q", etag)
			}
			if b := body(t, res); !strings.Contains(b, tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			// Revalidation.
			res = get(t, h, http.MethodGet, tc.path, map[string]string{"If-None-Match": etag})
			if res.StatusCode != http.StatusNotModified {
				t.Errorf("If-None-Match: status %d, want 304", res.StatusCode)
			}
			res = get(t, h, http.MethodHead, tc.path, nil)
			if res.StatusCode != http.StatusOK || body(t, res) != "" {
				t.Errorf("HEAD: status %d", res.StatusCode)
			}
		})
	}
}

func TestHandlerPageHeaders(t *testing.T) {
	res := get(t, Handler(), http.MethodGet, "/", nil)
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if got := res.Header.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("Referrer-Policy %q", got)
	}
	res = get(t, Handler(), http.MethodGet, "/gamerelay.js", nil)
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("gamerelay.js: Access-Control-Allow-Origin %q, want * (importable from any origin)", got)
	}
}

func TestHandlerRefuses(t *testing.T) {
	h := Handler()
	tests := map[string]struct {
		method, path string
		status       int
	}{
		"unknown file":       {http.MethodGet, "/nope.js", http.StatusNotFound},
		"index by name":      {http.MethodGet, "/index.html", http.StatusNotFound},
		"directory":          {http.MethodGet, "/static/", http.StatusNotFound},
		"test file":          {http.MethodGet, "/connect4.test.mjs", http.StatusNotFound},
		"traversal":          {http.MethodGet, "/../web.go", http.StatusNotFound},
		"post":               {http.MethodPost, "/", http.StatusMethodNotAllowed},
		"put on the client":  {http.MethodPut, "/gamerelay.js", http.StatusMethodNotAllowed},
		"delete on the page": {http.MethodDelete, "/", http.StatusMethodNotAllowed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res := get(t, h, tc.method, tc.path, nil)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			if tc.status == http.StatusMethodNotAllowed && res.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q", res.Header.Get("Allow"))
			}
		})
	}
}

// TestPageContract checks the stable test ids of the page and that every
// module the page imports is served.
func TestPageContract(t *testing.T) {
	h := Handler()
	page := body(t, get(t, h, http.MethodGet, "/", nil))
	app := body(t, get(t, h, http.MethodGet, "/app.js", nil))
	for _, id := range []string{"new-game", "join-link", "watch-link", "board", "status", "connection"} {
		if !strings.Contains(page, `data-testid="`+id+`"`) {
			t.Errorf("page lacks data-testid %q", id)
		}
	}
	if !strings.Contains(app, `b.dataset.testid = "column-" + c`) {
		t.Error("app.js no longer names the columns column-0 … column-6")
	}
	refs := regexp.MustCompile(`(?:src|href)="(/[^"]*)"|from "(/[^"]*)"`)
	for _, src := range []string{page, app} {
		for _, m := range refs.FindAllStringSubmatch(src, -1) {
			p := m[1] + m[2]
			if res := get(t, h, http.MethodGet, p, nil); res.StatusCode != http.StatusOK {
				t.Errorf("%s is referenced but answers %d", p, res.StatusCode)
			}
		}
	}
	if strings.Contains(app, "alert(") {
		t.Error("the page must show results in the status element, not alert()")
	}
}
