package token_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gamerelay/gamerelay/gateway/token"
)

// jwksServer serves a JWKS that tests change at will, and counts requests.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64
	mu      sync.Mutex
	handler http.HandlerFunc // guarded by mu
}

func (s *jwksServer) serve(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	h := s.handler
	s.mu.Unlock()
	h(w, r)
}

// set makes the server answer with a set of keys (JWK objects).
func (s *jwksServer) set(keys ...any) {
	body, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	s.setBody(body)
}

func (s *jwksServer) setBody(body []byte) {
	s.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(body)
	})
}

func (s *jwksServer) setHandler(h http.HandlerFunc) {
	s.mu.Lock()
	s.handler = h
	s.mu.Unlock()
}

func newJWKSServer(t *testing.T, keys ...any) *jwksServer {
	s := &jwksServer{}
	s.set(keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// newPipeJWKSServer is a jwksServer reached over in-memory connections, so
// that it can run inside a synctest bubble; client dials it.
func newPipeJWKSServer(keys ...any) (s *jwksServer, client *http.Client, stop func()) {
	s = &jwksServer{}
	s.set(keys...)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	_ = s.Listener.Close()
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	s.Listener = l
	s.Start()
	tr := &http.Transport{DialContext: l.dial}
	return s, &http.Client{Transport: tr}, func() {
		tr.CloseIdleConnections()
		s.Close()
	}
}

type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	srv, cli := net.Pipe()
	select {
	case l.conns <- srv:
		return cli, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "jwks.test:80" }

// JWK forms of public keys.
func jwkOKP(kid string, pub crypto.PublicKey) map[string]any {
	return map[string]any{"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA", "x": enc(pub.(ed25519.PublicKey))}
}

func jwkEC(kid string, pub crypto.PublicKey) map[string]any {
	k := pub.(*ecdsa.PublicKey)
	b, err := k.Bytes()
	if err != nil {
		panic(err)
	}
	n := (len(b) - 1) / 2
	crv := map[int]string{32: "P-256", 48: "P-384"}[n]
	return map[string]any{"kty": "EC", "crv": crv, "kid": kid, "x": enc(b[1 : 1+n]), "y": enc(b[1+n:])}
}

func jwkRSA(kid string, pub crypto.PublicKey) map[string]any {
	k := pub.(*rsa.PublicKey)
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes())}
}

// with returns a copy of a JWK with members set (nil deletes).
func with(jwk map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(jwk))
	for k, v := range jwk {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// signer signs JWS input with any test key, in the JWS form of its
// algorithm.
func signer(key any) func([]byte) []byte {
	switch k := key.(type) {
	case []byte:
		return hs(k)
	case ed25519.PrivateKey:
		return func(msg []byte) []byte { return ed25519.Sign(k, msg) }
	case *ecdsa.PrivateKey:
		return func(msg []byte) []byte {
			sum := sha256.Sum256(msg)
			r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
			if err != nil {
				panic(err)
			}
			n := (k.Curve.Params().BitSize + 7) / 8
			sig := make([]byte, 2*n)
			r.FillBytes(sig[:n])
			s.FillBytes(sig[n:])
			return sig
		}
	case *rsa.PrivateKey:
		return func(msg []byte) []byte {
			sum := sha256.Sum256(msg)
			sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, sum[:])
			if err != nil {
				panic(err)
			}
			return sig
		}
	}
	panic(fmt.Sprintf("key %T", key))
}

func newEd(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestJWKSKeys: which entries of a key set verify tokens. Each ignored
// entry would let its token in if it counted.
func TestJWKSKeys(t *testing.T) {
	k := keys()
	ed2, edStatic := newEd(t), newEd(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	oct := []byte("jwks-oct-secret-0123456789abcdef0123")
	cases := map[string]struct {
		jwk  map[string]any // nil: not in the set
		alg  string
		kid  string
		key  any // signs the token
		want bool
	}{
		"OKP Ed25519":              {jwkOKP("ed", k.ed.Public()), "EdDSA", "ed", k.ed, true},
		"EC P-256":                 {jwkEC("es", k.ec.Public()), "ES256", "es", k.ec, true},
		"RSA 2048":                 {jwkRSA("rs", k.rsa.Public()), "RS256", "rs", k.rsa, true},
		"RSA, alg RS256":           {with(jwkRSA("rs-alg", k.rsa.Public()), "alg", "RS256"), "RS256", "rs-alg", k.rsa, true},
		"no use":                   {with(jwkOKP("no-use", ed2.Public()), "use", nil), "EdDSA", "no-use", ed2, true},
		"unknown members":          {with(jwkOKP("extra", ed2.Public()), "x5t", "abc", "key_ops", []string{"verify"}), "EdDSA", "extra", ed2, true},
		"use enc":                  {with(jwkOKP("enc", ed2.Public()), "use", "enc"), "EdDSA", "enc", ed2, false},
		"kty oct":                  {map[string]any{"kty": "oct", "kid": "oct", "k": enc(oct)}, "HS256", "oct", oct, false},
		"EC P-384":                 {jwkEC("p384", p384.Public()), "ES256", "p384", p384, false},
		"EC P-384 posing as P-256": {with(jwkEC("p384b", p384.Public()), "crv", "P-256"), "ES256", "p384b", p384, false},
		"RSA 1024":                 {jwkRSA("rsa1024", rsa1024.Public()), "RS256", "rsa1024", rsa1024, false},
		"alg RS384 on RSA":         {with(jwkRSA("rs384", k.rsa.Public()), "alg", "RS384"), "RS256", "rs384", k.rsa, false},
		"alg EdDSA on EC":          {with(jwkEC("es-eddsa", k.ec.Public()), "alg", "EdDSA"), "ES256", "es-eddsa", k.ec, false},
		"no kid":                   {with(jwkOKP("", ed2.Public()), "kid", nil), "EdDSA", "", ed2, false},
		"KTY":                      {with(jwkOKP("upper", ed2.Public()), "kty", nil, "KTY", "OKP"), "EdDSA", "upper", ed2, false},
		"x with padding":           {with(jwkOKP("padded", ed2.Public()), "x", enc(ed2.Public().(ed25519.PublicKey))+"="), "EdDSA", "padded", ed2, false},
		"x too short":              {with(jwkOKP("short", ed2.Public()), "x", enc(make([]byte, 31))), "EdDSA", "short", ed2, false},
		"kid a number":             {with(jwkOKP("", ed2.Public()), "kid", 7), "EdDSA", "7", ed2, false},
		"kid also in Keys":         {jwkOKP("static", ed2.Public()), "EdDSA", "static", ed2, false},
		"the Keys entry of a kid":  {nil, "EdDSA", "static", edStatic, true},
		"second entry of a kid":    {jwkOKP("ed", ed2.Public()), "EdDSA", "ed", ed2, false},
	}
	var set []any
	for _, name := range []string{"OKP Ed25519", "EC P-256", "RSA 2048"} { // first: "second entry of a kid" comes later
		set = append(set, cases[name].jwk)
	}
	for name, tc := range cases {
		if tc.jwk != nil && name != "OKP Ed25519" && name != "EC P-256" && name != "RSA 2048" {
			set = append(set, tc.jwk)
		}
	}
	// A duplicate member makes an entry unusable.
	dup := []byte(`{"kty":"OKP","crv":"Ed25519","kid":"dup","x":"` + enc(ed2.Public().(ed25519.PublicKey)) + `","kid":"dup"}`)
	cases["duplicate member"] = struct {
		jwk  map[string]any
		alg  string
		kid  string
		key  any
		want bool
	}{nil, "EdDSA", "dup", ed2, false}
	body, err := json.Marshal(map[string]any{"keys": set})
	if err != nil {
		t.Fatal(err)
	}
	body = bytes.Replace(body, []byte(`"keys":[`), append(append([]byte(`"keys":[`), dup...), ','), 1)

	srv := newJWKSServer(t)
	srv.setBody(body)
	v := newVerifier(t, token.Config{
		Keys:    []token.Key{{ID: "static", Public: edStatic.Public()}},
		JWKSURL: srv.URL,
		Logger:  slog.New(slog.DiscardHandler),
	})
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tok := forge(hKid(tc.alg, tc.kid), cValid, signer(tc.key))
			if tc.kid == "" {
				tok = forge(`{"alg":"`+tc.alg+`"}`, cValid, signer(tc.key))
			}
			_, err := v.Verify(tok, now)
			if tc.want && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.want && err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1 (unknown kids within JWKSMinInterval of it fetch nothing)", n)
	}
}

// logBuf collects log output.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestJWKSRefresh, with the defaults and a fake clock: the periodic
// refresh (5m) follows rotations; an unknown kid fetches at most once per
// 30s however many tokens carry it; Close stops the refresh.
func TestJWKSRefresh(t *testing.T) {
	k := keys()
	edA, edB := newEd(t), newEd(t)
	tokA := forge(hKid("EdDSA", "a"), cValid, signer(edA))
	tokB := forge(hKid("EdDSA", "b"), cValid, signer(edB))
	tokC := forge(hKid("ES256", "c"), cValid, signer(k.ec))
	synctest.Test(t, func(t *testing.T) {
		srv, client, stop := newPipeJWKSServer(jwkOKP("a", edA.Public()))
		defer stop()
		v, err := token.NewVerifier(token.Config{JWKSURL: srv.URL, HTTPClient: client, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		verify := func(tok string, want bool, fetches int64) {
			t.Helper()
			_, err := v.Verify(tok, now)
			if want != (err == nil) {
				t.Fatalf("Verify: %v, want accepted %v", err, want)
			}
			if n := srv.fetches.Load(); n != fetches {
				t.Fatalf("%d fetches, want %d", n, fetches)
			}
		}
		verify(tokA, true, 1)

		// The issuer rotates to b. Within 30s of the last fetch a token
		// with the new kid is refused without a fetch... (In the bubble
		// each time.Sleep moves the fake clock to the moment under test.)
		srv.set(jwkOKP("b", edB.Public()))
		time.Sleep(29 * time.Second)
		verify(tokB, false, 1)
		// ...after that, the first one fetches the set again.
		time.Sleep(time.Second)
		verify(tokB, true, 2)
		verify(tokA, false, 2) // removed from the set

		// Many tokens with unknown kids at once: one fetch at most per 30s.
		unknown := forge(hKid("EdDSA", "nope"), cValid, signer(edA))
		burst := func() {
			var wg sync.WaitGroup
			for range 50 {
				wg.Go(func() {
					if _, err := v.Verify(unknown, now); err == nil {
						t.Error("unknown kid accepted")
					}
				})
			}
			wg.Wait()
		}
		burst()
		verify(tokB, true, 2)
		time.Sleep(30 * time.Second)
		burst()
		verify(tokB, true, 3)

		// The periodic refresh picks up c without any token asking.
		srv.set(jwkOKP("b", edB.Public()), jwkEC("c", k.ec.Public()))
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		verify(tokC, true, 4)

		// Close stops the refresh.
		v.Close()
		time.Sleep(time.Hour)
		synctest.Wait()
		verify(tokC, true, 4)
		verify(tokA, false, 4) // nor does an unknown kid fetch after Close
	})
}

// TestJWKSFailedRefresh: every kind of failed fetch keeps the last good set
// and is logged.
func TestJWKSFailedRefresh(t *testing.T) {
	k := keys()
	good := func() []byte {
		b, _ := json.Marshal(map[string]any{"keys": []any{jwkEC("c", k.ec.Public())}})
		return b
	}()
	// A good set but for a member that makes it larger than 1 MiB.
	oversize := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 1<<20)...), append([]byte(`",`), good[1:]...)...)
	many := []byte(`{"keys":[` + strings.Repeat(`{"kty":"x"},`, 100) + string(good[9:]))
	tokC := forge(hKid("ES256", "c"), cValid, signer(k.ec))
	for name, h := range map[string]http.HandlerFunc{
		"status 500": func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusInternalServerError) },
		"status 404": func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) },
		"not JSON":   func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>")) },
		"not a set":  func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"KEYS":[]}`)) },
		"keys twice": func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write(append([]byte(`{"keys":[],`), good[1:]...))
		},
		"no usable key": func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","kid":"c","k":"c2VjcmV0"}]}`))
		},
		"101 keys": func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(many) },
		"over 1 MiB, Content-Length": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(oversize)))
			_, _ = w.Write(oversize)
		},
		"over 1 MiB, chunked": func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write(oversize[:100])
			w.(http.Flusher).Flush()
			_, _ = w.Write(oversize[100:])
		},
		"slower than JWKSTimeout": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			_, _ = w.Write(good)
		},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, client, stop := newPipeJWKSServer()
				defer stop()
				srv.setBody(good)
				var logs logBuf
				v, err := token.NewVerifier(token.Config{JWKSURL: srv.URL, HTTPClient: client, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				if err != nil {
					t.Fatal(err)
				}
				defer v.Close()
				if _, err := v.Verify(tokC, now); err != nil {
					t.Fatal(err)
				}
				srv.setHandler(h)
				time.Sleep(5*time.Minute + 10*time.Second) // fake clock: past the refresh and its 5s timeout
				synctest.Wait()
				if n := srv.fetches.Load(); n != 2 {
					t.Fatalf("%d fetches, want 2", n)
				}
				if _, err := v.Verify(tokC, now); err != nil {
					t.Fatalf("after a failed refresh: %v", err)
				}
				if !strings.Contains(logs.String(), "JWKS fetch failed") {
					t.Fatalf("nothing logged: %q", logs.String())
				}
			})
		})
	}
}

// TestJWKSStartFailure: a set that cannot be fetched at start is logged,
// not fatal; a token with a kid fetches it again once JWKSMinInterval has
// passed.
func TestJWKSStartFailure(t *testing.T) {
	k := keys()
	tokC := forge(hKid("ES256", "c"), cValid, signer(k.ec))
	synctest.Test(t, func(t *testing.T) {
		srv, client, stop := newPipeJWKSServer()
		defer stop()
		srv.setHandler(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
		v, err := token.NewVerifier(token.Config{JWKSURL: srv.URL, HTTPClient: client, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if _, err := v.Verify(tokC, now); err == nil {
			t.Fatal("accepted without keys")
		}
		srv.set(jwkEC("c", k.ec.Public()))
		time.Sleep(30 * time.Second) // fake clock: JWKSMinInterval passes
		if _, err := v.Verify(tokC, now); err != nil {
			t.Fatal(err)
		}
		if n := srv.fetches.Load(); n != 2 {
			t.Fatalf("%d fetches, want 2", n)
		}
	})
}
