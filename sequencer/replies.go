package sequencer

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// errConnLost reports that the connection dropped while a request waited
// for its answer: the answer cannot come any more, and whether the request
// reached the server is unknown.
var errConnLost = errors.New("sequencer: NATS connection lost while waiting for an answer")

// replies hands out reply subjects for publishes, each group backed by a
// channel subscription of its own, so an ack goes from nats.go's reader
// straight to the goroutine waiting for it. nats.go's own requests share
// one response subscription whose goroutine passes each answer on through
// a map under the connection's lock: profiles of pingpong showed that
// hand-off and those locks on every append.
//
// A box's channel holds a few messages, not the 65,536 of a synchronous
// subscription: a burst of concurrent appends makes one box each, and the
// boxes kept for reuse must stay small.
type replies struct {
	// Static after construction.
	nc *nats.Conn

	mu sync.Mutex
	// Guarded by mu.
	free    []*replyBox
	closed  bool
	lost    chan struct{} // closed when the connection drops; then replaced
	status  chan nats.Status
	watchWG sync.WaitGroup
}

// replyBox is one subscription to <inbox>.*; it serves one request at a
// time, each on a reply subject (<inbox>.<n>) of its own, so an answer
// that arrives after its request timed out is recognised and skipped.
type replyBox struct {
	sub    *nats.Subscription
	ch     chan *nats.Msg
	prefix string // <inbox>.
	n      uint64 // requests made through this box
	timer  *time.Timer
}

// maxFreeReplyBoxes bounds the idle subscriptions kept for reuse: about
// the number of appends in flight at once (one per busy game).
const maxFreeReplyBoxes = 256

// replyBoxLen is the channel capacity of a box: its one answer, plus late
// answers of earlier requests, which are skipped.
const replyBoxLen = 4

// get returns an idle box (or a new one) and the channel that closes if
// the connection drops while the caller waits.
func (r *replies) get() (*replyBox, <-chan struct{}, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil, ErrClosed
	}
	if r.lost == nil {
		r.watchLocked()
	}
	lost := r.lost
	if n := len(r.free); n > 0 {
		b := r.free[n-1]
		r.free[n-1] = nil
		r.free = r.free[:n-1]
		r.mu.Unlock()
		return b, lost, nil
	}
	r.mu.Unlock()
	prefix := r.nc.NewInbox() + "."
	ch := make(chan *nats.Msg, replyBoxLen)
	sub, err := r.nc.ChanSubscribe(prefix+"*", ch)
	if err != nil {
		return nil, nil, err
	}
	return &replyBox{sub: sub, ch: ch, prefix: prefix}, lost, nil
}

// watchLocked starts the goroutine that tells waiting requests when the
// connection drops. r.mu is held.
func (r *replies) watchLocked() {
	r.lost = make(chan struct{})
	r.status = r.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	status := r.status
	r.watchWG.Add(1)
	go func() {
		defer r.watchWG.Done()
		for st := range status {
			r.mu.Lock()
			close(r.lost)
			r.lost = make(chan struct{})
			r.mu.Unlock()
			if st == nats.CLOSED {
				return // for good: publishes fail from now on
			}
		}
	}()
}

func (r *replies) put(b *replyBox) {
	r.mu.Lock()
	if !r.closed && len(r.free) < maxFreeReplyBoxes {
		r.free = append(r.free, b)
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	_ = b.sub.Unsubscribe()
}

// request publishes m with a reply subject of its own and waits up to d
// for the answer: nats.ErrTimeout if none came, nats.ErrNoResponders if
// nothing listens on m's subject, errConnLost if the connection dropped.
func (r *replies) request(m *nats.Msg, d time.Duration) (*nats.Msg, error) {
	resp, _, err := r.requestOr(nil, m, d, nil)
	return resp, err
}

// errAltClosed: the channel requestOr also waited on was closed.
var errAltClosed = errors.New("sequencer: stopped waiting for the live copy")

// requestOr is request that also ends when done is closed (with
// context.Canceled) or when alt yields a message, which it returns instead
// of an answer (a nil *nats.Msg); errAltClosed if alt is closed.
func (r *replies) requestOr(done <-chan struct{}, m *nats.Msg, d time.Duration, alt <-chan Stored) (*nats.Msg, Stored, error) {
	b, lost, err := r.get()
	if err != nil {
		return nil, Stored{}, err
	}
	defer r.put(b)
	b.n++
	reply := b.prefix + strconv.FormatUint(b.n, 36)
	m.Reply = reply
	if err := r.nc.PublishMsg(m); err != nil {
		return nil, Stored{}, err
	}
	if b.timer == nil {
		b.timer = time.NewTimer(d)
	} else {
		b.timer.Reset(d)
	}
	defer b.timer.Stop()
	for {
		select {
		case resp := <-b.ch:
			if resp.Subject != reply {
				continue // the late answer to an earlier request of this box
			}
			if len(resp.Data) == 0 && resp.Header.Get("Status") == "503" {
				return nil, Stored{}, nats.ErrNoResponders
			}
			return resp, Stored{}, nil
		case st, ok := <-alt:
			if !ok {
				return nil, Stored{}, errAltClosed
			}
			return nil, st, nil
		case <-b.timer.C:
			return nil, Stored{}, nats.ErrTimeout
		case <-lost:
			return nil, Stored{}, errConnLost
		case <-done:
			return nil, Stored{}, context.Canceled
		}
	}
}

// close unsubscribes the idle boxes and stops watching the connection;
// boxes in use are unsubscribed when their request ends.
func (r *replies) close() {
	r.mu.Lock()
	free, status := r.free, r.status
	r.free, r.closed, r.status = nil, true, nil
	r.mu.Unlock()
	for _, b := range free {
		_ = b.sub.Unsubscribe()
	}
	if status != nil {
		r.nc.RemoveStatusListener(status)
		r.watchWG.Wait()
	}
}
