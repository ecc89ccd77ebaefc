package sequencer

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// replies hands out reply subjects for publishes, each group backed by a
// synchronous subscription of its own, so an ack goes from nats.go's reader
// straight to the goroutine waiting for it. nats.go's own requests share
// one response subscription whose goroutine passes each answer on through
// a map under the connection's lock: profiles of pingpong showed that
// hand-off and those locks on every append.
type replies struct {
	// Static after construction.
	nc *nats.Conn

	mu sync.Mutex
	// Guarded by mu.
	free   []*replyBox
	closed bool
}

// replyBox is one subscription to <inbox>.*; it serves one request at a
// time, each on a reply subject (<inbox>.<n>) of its own, so an answer
// that arrives after its request timed out is recognised and skipped.
type replyBox struct {
	sub    *nats.Subscription
	prefix string // <inbox>.
	n      uint64 // requests made through this box
}

// maxFreeReplyBoxes bounds the idle subscriptions kept for reuse: about
// the number of appends in flight at once (one per busy game).
const maxFreeReplyBoxes = 256

func (r *replies) get() (*replyBox, error) {
	r.mu.Lock()
	if n := len(r.free); n > 0 {
		b := r.free[n-1]
		r.free = r.free[:n-1]
		r.mu.Unlock()
		return b, nil
	}
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	prefix := r.nc.NewInbox() + "."
	sub, err := r.nc.SubscribeSync(prefix + "*")
	if err != nil {
		return nil, err
	}
	return &replyBox{sub: sub, prefix: prefix}, nil
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
// nothing listens on m's subject.
func (r *replies) request(m *nats.Msg, d time.Duration) (*nats.Msg, error) {
	b, err := r.get()
	if err != nil {
		return nil, err
	}
	defer r.put(b)
	b.n++
	reply := b.prefix + strconv.FormatUint(b.n, 36)
	m.Reply = reply
	if err := r.nc.PublishMsg(m); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nats.ErrTimeout
		}
		resp, err := b.sub.NextMsg(left)
		switch {
		case errors.Is(err, nats.ErrTimeout):
			return nil, nats.ErrTimeout
		case err != nil:
			return nil, err
		case resp.Subject == reply:
			return resp, nil
		}
		// The late answer to an earlier request of this box: skip it.
	}
}

// close unsubscribes the idle boxes; boxes in use are unsubscribed when
// their request ends.
func (r *replies) close() {
	r.mu.Lock()
	free := r.free
	r.free, r.closed = nil, true
	r.mu.Unlock()
	for _, b := range free {
		_ = b.sub.Unsubscribe()
	}
}
