// Package backend is a small Go client for gamerelay's HTTP API
// (docs/api.md), for studio backend services: create games, publish
// messages into them, read their history, end them. A Client is safe for
// concurrent use. Calls retry network errors and 5xx answers with the same
// Idempotency-Key, a bounded number of times, until their context ends.
package backend

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls one gamerelay installation with one API key.
type Client struct {
	// Static after construction.
	base     string
	key      string
	hc       *http.Client
	attempts int
	backoff  time.Duration
	maxWait  time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: one with a 30s timeout).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithAttempts sets how many times a call is tried in all (default 5; 1
// disables retries).
func WithAttempts(n int) Option { return func(c *Client) { c.attempts = max(n, 1) } }

// WithBackoff sets the wait before the first retry and the longest wait
// (defaults 100ms and 2s); waits double with jitter.
func WithBackoff(first, longest time.Duration) Option {
	return func(c *Client) { c.backoff, c.maxWait = first, max(first, longest) }
}

// New returns a Client for the API at baseURL (the gateway's public URL,
// such as "https://relay.example.com") with the API key key.
func New(baseURL, key string, opts ...Option) *Client {
	c := &Client{
		base:     strings.TrimRight(baseURL, "/"),
		key:      key,
		hc:       &http.Client{Timeout: 30 * time.Second},
		attempts: 5,
		backoff:  100 * time.Millisecond,
		maxWait:  2 * time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Error is an error answer of the API. Code is one of the stable codes of
// docs/api.md ("unknown_game", "reserved_field", "unavailable", …).
type Error struct {
	Status  int    // HTTP status
	Code    string // stable error code
	Message string // for humans
}

func (e *Error) Error() string {
	return fmt.Sprintf("gamerelay: %d %s: %s", e.Status, e.Code, e.Message)
}

// CreateGameRequest describes a game to create.
type CreateGameRequest struct {
	// ID is the requested game id (1-64 of [A-Za-z0-9_-]); "" lets the
	// server choose.
	ID string
	// TTL is the lifetime of the tokens; 0 means the server's default.
	TTL time.Duration
	// Players lists the subs ("user" names) to mint player tokens for.
	Players []string
	// IdempotencyKey makes the create safe to repeat: the same key answers
	// the same game (also after the answer was lost). "" means a random
	// key, which covers this call's own retries.
	IdempotencyKey string
}

// Game is a created game and its tokens.
type Game struct {
	ID             string        `json:"game"`
	PlayerToken    string        `json:"player_token"`    // a player token without sub
	SpectatorToken string        `json:"spectator_token"` // receive only
	Players        []PlayerToken `json:"players"`         // one per requested sub, in order
	Expires        time.Time     `json:"expires"`
}

// PlayerToken is the token of one requested player.
type PlayerToken struct {
	Sub   string `json:"sub"`
	Token string `json:"token"`
}

// Page is a page of a game's history.
type Page struct {
	// Messages are the stored frames, in msg_id order, as clients receive
	// them.
	Messages []json.RawMessage `json:"messages"`
	// Next is the msg_id of the last message in Messages (since if none):
	// the since of the next page.
	Next uint64 `json:"next"`
	// Head is the game's last msg_id when the page was read; the history
	// is read through when Next == Head.
	Head uint64 `json:"head"`
}

// CreateGame creates a game and returns its tokens. A requested ID that
// is taken fails with an *Error of Code "game_exists".
func (c *Client) CreateGame(ctx context.Context, req CreateGameRequest) (Game, error) {
	body := struct {
		ID      string `json:"id,omitempty"`
		TTL     string `json:"ttl,omitempty"`
		Players []struct {
			Sub string `json:"sub"`
		} `json:"players,omitempty"`
	}{ID: req.ID}
	if req.TTL > 0 {
		body.TTL = req.TTL.String()
	}
	for _, s := range req.Players {
		body.Players = append(body.Players, struct {
			Sub string `json:"sub"`
		}{s})
	}
	b, err := json.Marshal(body)
	if err != nil {
		return Game{}, err
	}
	idem := req.IdempotencyKey
	if idem == "" {
		idem = randomKey()
	}
	var g Game
	err = c.do(ctx, http.MethodPost, "/v1/games", b, idem, &g)
	return g, err
}

// Publish appends msg to the game and returns its msg_id. msg is a
// []byte or json.RawMessage holding a JSON object, or anything that
// json.Marshal turns into one; it needs a string "type". Players receive
// it with "client_id":"" and "source" naming the key's owner.
//
// idempotencyKey makes the publish safe to repeat: within the duplicate
// window (2 minutes by default) the same key in the same game appends
// once and answers the same msg_id. "" means a random key, which covers
// this call's own retries.
func (c *Client) Publish(ctx context.Context, game string, msg any, idempotencyKey string) (uint64, error) {
	var b []byte
	switch m := msg.(type) {
	case []byte:
		b = m
	case json.RawMessage:
		b = m
	default:
		var err error
		if b, err = json.Marshal(msg); err != nil {
			return 0, fmt.Errorf("gamerelay: encoding the message: %w", err)
		}
	}
	if idempotencyKey == "" {
		idempotencyKey = randomKey()
	}
	var r struct {
		MsgID uint64 `json:"msg_id"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/games/"+url.PathEscape(game)+"/messages", b, idempotencyKey, &r)
	return r.MsgID, err
}

// Messages returns the game's messages after msg_id since, at most limit
// of them (0 means the server's default, 100; at most 1000).
func (c *Client) Messages(ctx context.Context, game string, since uint64, limit int) (Page, error) {
	q := url.Values{"since": {strconv.FormatUint(since, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p Page
	err := c.do(ctx, http.MethodGet, "/v1/games/"+url.PathEscape(game)+"/messages?"+q.Encode(), nil, "", &p)
	return p, err
}

// End appends the game_ended system message and returns its msg_id. With
// idempotencyKey "" repeated ends within the duplicate window append one
// message.
func (c *Client) End(ctx context.Context, game, idempotencyKey string) (uint64, error) {
	var r struct {
		MsgID uint64 `json:"msg_id"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/games/"+url.PathEscape(game)+"/end", nil, idempotencyKey, &r)
	return r.MsgID, err
}

// do sends one API call, retrying network errors, 429 and 5xx answers.
func (c *Client) do(ctx context.Context, method, path string, body []byte, idem string, out any) error {
	wait := c.backoff
	var answer error // the server's last error answer, kept for when ctx ends mid-request
	for attempt := 1; ; attempt++ {
		retryAfter, err := c.try(ctx, method, path, body, idem, out)
		var e *Error
		if errors.As(err, &e) {
			answer = err
		}
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			if answer != nil && answer != err {
				return errors.Join(answer, err, ctx.Err())
			}
			return errors.Join(err, ctx.Err())
		case errors.As(err, &e) && e.Status != http.StatusTooManyRequests && e.Status < 500:
			return err
		case attempt >= c.attempts:
			return err
		}
		d := wait/2 + rand.N(wait/2+1)
		if retryAfter > d {
			d = min(retryAfter, c.maxWait)
		}
		wait = min(2*wait, c.maxWait)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// maxReply bounds a reply body (a history page is at most about 4 MiB).
const maxReply = 64 << 20

// try makes one attempt; it returns the server's Retry-After, if any.
func (c *Client) try(ctx context.Context, method, path string, body []byte, idem string, out any) (time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("gamerelay: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return 0, fmt.Errorf("gamerelay: %s %s: reading the reply: %w", method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return 0, fmt.Errorf("gamerelay: %s %s: decoding the reply: %w", method, path, err)
		}
		return 0, nil
	}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
	} else {
		e.Code, e.Message = "http_"+strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(data[:min(len(data), 200)]))
	}
	var retryAfter time.Duration
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return retryAfter, e
}

// randomKey is a fresh idempotency key.
func randomKey() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
