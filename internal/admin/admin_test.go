package admin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// limitsServer serves h within l on a real listener.
func limitsServer(t *testing.T, l Limits, h http.Handler) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	ts.Config = l.Server(h)
	ts.Start()
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The profiles are served; the command line, which may hold secrets, is not.
func TestPprofWithoutCmdline(t *testing.T) {
	addr := limitsServer(t, Limits{}, Handler(NewRegistry()))
	code, body := get(t, "http://"+addr+"/debug/pprof/cmdline")
	if code != http.StatusNotFound || strings.Contains(body, os.Args[0]) {
		t.Fatalf("/debug/pprof/cmdline: %d %q", code, body)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap", "/debug/pprof/symbol", "/metrics", "/healthz", "/readyz"} {
		if code, _ := get(t, "http://"+addr+path); code != http.StatusOK {
			t.Errorf("%s: %d", path, code)
		}
	}
}

// closedByServer reads from c until the server closes it, skipping any
// response it sends first; it fails if that takes longer than a generous
// deadline (far beyond the limits under test).
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Fatalf("the server did not close the connection: %v", err)
	}
}

func TestLimits(t *testing.T) {
	l := Limits{ReadHeaderTimeout: 100 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond, MaxHeaderBytes: 4 << 10}
	type result struct {
		ctxErr, readErr error
	}
	results := make(chan result, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	// slow outlives the read timeout, after reading the body if any.
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		_, readErr := io.ReadAll(r.Body)
		if readErr == nil {
			time.Sleep(5 * l.ReadTimeout) // the subject: a handler slower than ReadTimeout
		}
		results <- result{r.Context().Err(), readErr}
	})
	addr := limitsServer(t, l, mux)
	dial := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("header too large", func(t *testing.T) {
		c := dial(t)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 16<<10))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
	})
	t.Run("headers never finished", func(t *testing.T) {
		c := dial(t)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n")
		closedByServer(t, c)
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial(t)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("status %d, close %v: want a kept-alive 200", resp.StatusCode, resp.Close)
		}
		closedByServer(t, c)
	})
	t.Run("body announced, never sent", func(t *testing.T) {
		c := dial(t)
		fmt.Fprintf(c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
		closedByServer(t, c)
		r := <-results
		var ne net.Error
		if !errors.As(r.readErr, &ne) || !ne.Timeout() {
			t.Fatalf("the handler's body read ended with %v, want a timeout", r.readErr)
		}
	})
	// A handler running past ReadTimeout keeps its context.
	for name, req := range map[string]string{
		"slow handler":           "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
		"slow handler with body": "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
	} {
		t.Run(name, func(t *testing.T) {
			c := dial(t)
			fmt.Fprint(c, req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if r := <-results; r.ctxErr != nil || r.readErr != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d; the handler's context ended with %v (body read %v)", resp.StatusCode, r.ctxErr, r.readErr)
			}
		})
	}
}
