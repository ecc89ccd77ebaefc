package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
)

// jwksSet is the key set of a JWKS URL: fetched at start, refreshed by its
// loop goroutine, and refetched when a token names an unknown kid.
type jwksSet struct {
	// Static after construction.
	url         string
	client      *http.Client
	refresh     time.Duration
	minInterval time.Duration
	timeout     time.Duration
	log         *slog.Logger
	ctx         context.Context // canceled by close
	cancel      context.CancelFunc
	done        chan struct{} // closed when loop returns

	keys atomic.Pointer[map[string]*vkey] // the last good set; nil before one

	mu sync.Mutex
	// Guarded by mu.
	fetching chan struct{} // closed when the running fetch ends; nil when none runs
	last     time.Time     // when the last fetch started
}

func newJWKSSet(cfg Config) *jwksSet {
	ctx, cancel := context.WithCancel(context.Background())
	j := &jwksSet{
		url:         cfg.JWKSURL,
		client:      cfg.HTTPClient,
		refresh:     cfg.JWKSRefresh,
		minInterval: cfg.JWKSMinInterval,
		timeout:     cfg.JWKSTimeout,
		log:         cfg.Logger,
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
	}
	j.update(scheduled)
	go j.loop()
	return j
}

func (j *jwksSet) close() {
	j.cancel()
	<-j.done
}

func (j *jwksSet) loop() {
	defer close(j.done)
	t := time.NewTicker(j.refresh)
	defer t.Stop()
	for {
		select {
		case <-j.ctx.Done():
			return
		case <-t.C:
			j.update(scheduled)
		}
	}
}

// key returns the key with kid, fetching the set again (at most once per
// minInterval) if it has none.
func (j *jwksSet) key(kid string) *vkey {
	if k := j.lookup(kid); k != nil {
		return k
	}
	j.update(unknownKID)
	return j.lookup(kid)
}

func (j *jwksSet) lookup(kid string) *vkey {
	if m := j.keys.Load(); m != nil {
		return (*m)[kid]
	}
	return nil
}

// fetchCause says why the set is fetched.
type fetchCause uint8

const (
	scheduled  fetchCause = iota // at start, and every refresh period
	unknownKID                   // a token named a kid the set lacks
)

// update fetches the set, or waits for the fetch already running. A fetch
// for an unknown kid does nothing within minInterval of the last fetch's
// start, nor after close.
func (j *jwksSet) update(cause fetchCause) {
	j.mu.Lock()
	if ch := j.fetching; ch != nil {
		j.mu.Unlock()
		<-ch
		return
	}
	if cause == unknownKID && (j.ctx.Err() != nil || time.Since(j.last) < j.minInterval) {
		j.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	j.fetching, j.last = ch, time.Now()
	j.mu.Unlock()

	keys, ignored, err := j.fetch()
	if err == nil {
		j.keys.Store(&keys)
	} else if j.ctx.Err() == nil {
		j.log.Warn("token: JWKS fetch failed; keeping the last good key set", "url", j.url, "err", err)
	}
	if ignored > 0 {
		j.log.Debug("token: JWKS keys ignored", "url", j.url, "ignored", ignored)
	}

	j.mu.Lock()
	j.fetching = nil
	j.mu.Unlock()
	close(ch)
}

func (j *jwksSet) fetch() (map[string]*vkey, int, error) {
	ctx, cancel := context.WithTimeout(j.ctx, j.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	if resp.ContentLength > maxJWKSBytes {
		return nil, 0, fmt.Errorf("response of %d bytes exceeds %d", resp.ContentLength, maxJWKSBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, 0, err
	}
	if len(body) > maxJWKSBytes {
		return nil, 0, fmt.Errorf("response exceeds %d bytes", maxJWKSBytes)
	}
	return parseJWKS(body)
}

// parseJWKS reads a JSON Web Key Set (RFC 7517 §5) and returns its usable
// signature keys by kid and how many entries it ignored. Entries without
// kid, with a use other than "sig", with an alg other than the one their
// key type implies, of other key types or curves (including "oct"), or
// malformed, are ignored; of entries sharing a kid the first counts. A set
// without a usable key is an error.
func parseJWKS(body []byte) (map[string]*vkey, int, error) {
	var raw []byte
	found := false
	err := jsonobj.Scan(body, func(k, v []byte) error {
		if !jsonobj.KeyEquals(k, "keys") {
			return nil
		}
		if found {
			return errors.New(`"keys" appears twice`)
		}
		found, raw = true, v
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("JWKS: %w", err)
	}
	var entries []json.RawMessage
	if !found || raw[0] != '[' || json.Unmarshal(raw, &entries) != nil {
		return nil, 0, errors.New(`JWKS: want an object with a "keys" array`)
	}
	if len(entries) > maxJWKSKeys {
		return nil, 0, fmt.Errorf("JWKS: %d keys, more than %d", len(entries), maxJWKSKeys)
	}
	keys := make(map[string]*vkey, len(entries))
	ignored := 0
	for _, e := range entries {
		kid, k := parseJWK(e)
		if k == nil {
			ignored++
			continue
		}
		if _, dup := keys[kid]; dup {
			ignored++
			continue
		}
		keys[kid] = k
	}
	if len(keys) == 0 {
		return nil, ignored, fmt.Errorf("JWKS: no usable key among %d", len(entries))
	}
	return keys, ignored, nil
}

// parseJWK returns one usable key of a set, or nil.
func parseJWK(b []byte) (string, *vkey) {
	names := [...]string{"kty", "crv", "kid", "use", "alg", "x", "y", "n", "e"}
	var vals [len(names)]string
	var seen int
	var others members
	err := jsonobj.Scan(b, func(k, v []byte) error {
		for i, n := range names {
			if !jsonobj.KeyEquals(k, n) {
				continue
			}
			if seen&(1<<i) != 0 {
				return errors.New("duplicate")
			}
			seen |= 1 << i
			s, ok := jsonobj.StringValue(v)
			if !ok {
				return errors.New("type")
			}
			vals[i] = s
			return nil
		}
		return others.add(k)
	})
	if err != nil {
		return "", nil
	}
	kty, crv, kid, use, algName := vals[0], vals[1], vals[2], vals[3], vals[4]
	x, y, n, e := vals[5], vals[6], vals[7], vals[8]
	if kid == "" || (seen&(1<<3) != 0 && use != "sig") {
		return "", nil
	}
	var pub crypto.PublicKey
	switch {
	case kty == "OKP" && crv == "Ed25519":
		xb, ok := jwkBytes(x)
		if !ok || len(xb) != ed25519.PublicKeySize {
			return "", nil
		}
		pub = ed25519.PublicKey(xb)
	case kty == "EC" && crv == "P-256":
		xb, ok1 := jwkBytes(x)
		yb, ok2 := jwkBytes(y)
		if !ok1 || !ok2 || len(xb) != 32 || len(yb) != 32 {
			return "", nil
		}
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, xb...), yb...))
		if err != nil {
			return "", nil
		}
		pub = k
	case kty == "RSA":
		nb, ok1 := jwkBytes(n)
		eb, ok2 := jwkBytes(e)
		if !ok1 || !ok2 || len(eb) == 0 || len(eb) > 4 {
			return "", nil
		}
		var exp int
		for _, c := range eb {
			exp = exp<<8 | int(c)
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: exp}
	default:
		return "", nil
	}
	k, err := publicVKey(pub)
	if err != nil || (seen&(1<<4) != 0 && algName != k.alg.String()) {
		return "", nil
	}
	return kid, k
}

// jwkBytes decodes a base64url member of a JWK (canonical, no padding).
func jwkBytes(s string) ([]byte, bool) {
	b, err := decodePart(nil, []byte(s))
	return b, err == nil && len(b) > 0
}
