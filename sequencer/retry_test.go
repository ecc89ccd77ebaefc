package sequencer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// The Appender's retry machine against an in-memory log with JetStream's
// rules (fakeLog), on the synctest clock: every path where an attempt's
// outcome is unknown or refused, checked for exactly one stored copy of
// every message, dense numbers, and the outcome each caller is told.

const retryWindow = 2 * time.Second

// retryAppender returns an Appender over log with a duplicate window of
// retryWindow; it is closed when f returns.
func withRetryAppender(t *testing.T, f func(a *Appender, log *fakeLog)) {
	synctest.Test(t, func(t *testing.T) {
		log := newFakeLog(retryWindow)
		cfg := Config{Partitions: 1, BatchMin: 2, DuplicateWindow: retryWindow, Logger: quiet(), Metrics: NewMetrics(nil)}.withDefaults()
		a := newAppender(cfg, log, &fakeHeads{}, &fakeLive{})
		defer func() { _ = a.Close(context.Background()) }()
		f(a, log)
	})
}

func tbody(i int) []byte { return []byte(fmt.Sprintf(`{"type":"m","i":%d}`, i)) }

// onlyFirst fails the first publish that fault is asked about.
func onlyFirst(ff fakeFault) func([]*nats.Msg) fakeFault {
	done := false
	return func([]*nats.Msg) fakeFault {
		if done {
			return fakeFault{}
		}
		done = true
		return ff
	}
}

// appendAll queues bodies i..j on game g at once (one batch), and waits
// for every outcome.
func appendAll(t *testing.T, a *Appender, game string, bodies [][]byte, keys []string) ([]Result, []error) {
	t.Helper()
	res := make([]Result, len(bodies))
	errs := make([]error, len(bodies))
	var wg sync.WaitGroup
	for i, b := range bodies {
		wg.Add(1)
		key := ""
		if keys != nil {
			key = keys[i]
		}
		if err := a.AppendAsync(game, b, key, func(r Result, err error) {
			res[i], errs[i] = r, err
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	return res, errs
}

func checkIDs(t *testing.T, log *fakeLog, game string, want int) {
	t.Helper()
	ids, keys := log.game(0, game)
	if len(ids) != want {
		t.Fatalf("%d messages stored, want %d (keys %v)", len(ids), want, keys)
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("stored msg_ids %v: not dense from 1", ids)
		}
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Fatalf("key %s stored twice", k)
		}
		seen[k] = true
	}
}

// An ack lost after the message was stored: the retry is answered as a
// duplicate with the stored msg_id, and the head is re-read, so the next
// append is not refused by the check.
func TestRetryLostAck(t *testing.T) {
	withRetryAppender(t, func(a *Appender, log *fakeLog) {
		log.setFault(onlyFirst(fakeFault{err: nats.ErrTimeout, after: true}))
		r, err := a.Append(context.Background(), "g", tbody(1), "k1")
		if err != nil || r.MsgID != 1 || !r.Duplicate {
			t.Fatalf("append after a lost ack: %+v, %v; want msg_id 1 as a duplicate", r, err)
		}
		_, conflicts := log.counts()
		r, err = a.Append(context.Background(), "g", tbody(2), "k2")
		if err != nil || r.MsgID != 2 || r.Duplicate {
			t.Fatalf("next append: %+v, %v", r, err)
		}
		if _, c := log.counts(); c != conflicts {
			t.Fatalf("the append after a duplicate was refused by the check %d times: the head was not re-read", c-conflicts)
		}
		checkIDs(t, log, "g", 2)
	})
}

// The ack was lost and the retry reached the stream while the first copy
// was still being stored (10158, "duplicate message id is in process", seen
// on R3 when a node hangs): that is no refusal; the next retry is answered
// as a duplicate.
func TestRetryDuplicateInProcess(t *testing.T) {
	withRetryAppender(t, func(a *Appender, log *fakeLog) {
		calls := 0
		log.setFault(func([]*nats.Msg) fakeFault {
			calls++
			switch calls {
			case 1:
				return fakeFault{err: nats.ErrTimeout, after: true}
			case 2:
				return fakeFault{err: &apiError{Code: 409, ErrCode: 10158, Desc: "duplicate message id is in process"}}
			}
			return fakeFault{}
		})
		r, err := a.Append(context.Background(), "g", tbody(1), "k1")
		if err != nil || r.MsgID != 1 || !r.Duplicate {
			t.Fatalf("append answered 10158 on its retry: %+v, %v; want msg_id 1 as a duplicate", r, err)
		}
		if calls < 3 {
			t.Fatalf("%d publishes, want a retry after 10158", calls)
		}
		checkIDs(t, log, "g", 1)
	})
}

// A batch whose ack was lost: its retry holds keys already stored (10201)
// and is settled message by message, each as the duplicate it is.
func TestRetryBatchLostAck(t *testing.T) {
	withRetryAppender(t, func(a *Appender, log *fakeLog) {
		// The first message's publish waits until the four are queued
		// behind it, so that they go as one batch: the one whose ack is
		// lost.
		entered, release := make(chan struct{}), make(chan struct{})
		first := true
		log.setFault(func(msgs []*nats.Msg) fakeFault {
			switch {
			case first:
				first = false
				close(entered)
				<-release
			case len(msgs) > 1:
				log.fault = nil // only this one
				return fakeFault{err: errConnLost, after: true}
			}
			return fakeFault{}
		})
		var wg sync.WaitGroup
		res, errs := make([]Result, 5), make([]error, 5)
		enqueue := func(i int) {
			wg.Add(1)
			if err := a.AppendAsync("g", tbody(i), fmt.Sprintf("k%d", i), func(r Result, err error) {
				res[i], errs[i] = r, err
				wg.Done()
			}); err != nil {
				t.Fatal(err)
			}
		}
		enqueue(0)
		<-entered
		for i := 1; i < 5; i++ {
			enqueue(i)
		}
		close(release)
		wg.Wait()
		if errs[0] != nil || res[0].MsgID != 1 || res[0].Duplicate {
			t.Fatalf("first message: %+v, %v; want msg_id 1", res[0], errs[0])
		}
		for i := 1; i < 5; i++ {
			if errs[i] != nil || res[i].MsgID != uint64(i+1) || !res[i].Duplicate {
				t.Fatalf("message %d: %+v, %v; want msg_id %d as a duplicate", i, res[i], errs[i], i+1)
			}
		}
		checkIDs(t, log, "g", 5)
	})
}

// Another writer appended in between (10071), or a check is in flight on a
// replicated stream (10164): the head is re-read and numbering continues.
func TestRetryConflicts(t *testing.T) {
	withRetryAppender(t, func(a *Appender, log *fakeLog) {
		if _, err := a.Append(context.Background(), "g", tbody(1), ""); err != nil {
			t.Fatal(err)
		}
		log.appendForeign(0, "g") // msg_id 2, unknown to the Appender
		r, err := a.Append(context.Background(), "g", tbody(2), "")
		if err != nil || r.MsgID != 3 {
			t.Fatalf("append after a foreign message: %+v, %v; want msg_id 3", r, err)
		}
		if _, c := log.counts(); c != 1 {
			t.Fatalf("%d conflicts, want 1", c)
		}
		log.setFault(onlyFirst(fakeFault{err: &apiError{Code: 400, ErrCode: 10164, Desc: "wrong last sequence"}}))
		r, err = a.Append(context.Background(), "g", tbody(3), "")
		if err != nil || r.MsgID != 4 {
			t.Fatalf("append after 10164: %+v, %v; want msg_id 4", r, err)
		}
		checkIDs(t, log, "g", 4)
	})
}

// A refusal for good (4xx) of one message of a batch fails that message
// only; the others are stored, in order.
func TestRetryBatchOneRefused(t *testing.T) {
	withRetryAppender(t, func(a *Appender, log *fakeLog) {
		bad := `"i":3`
		log.setFault(func(msgs []*nats.Msg) fakeFault {
			for _, m := range msgs {
				if strings.Contains(string(m.Data), bad) {
					return fakeFault{err: &apiError{Code: 400, ErrCode: 10054, Desc: "message size exceeds maximum allowed"}}
				}
			}
			return fakeFault{}
		})
		bodies := [][]byte{tbody(1), tbody(2), tbody(3), tbody(4), tbody(5)}
		res, errs := appendAll(t, a, "g", bodies, nil)
		var e *Error
		if !errors.As(errs[2], &e) || e.Code != wire.CodeInvalidMessage {
			t.Fatalf("the refused message: %v, want invalid_message", errs[2])
		}
		var got []uint64
		for i, r := range res {
			if i != 2 {
				if errs[i] != nil {
					t.Fatalf("message %d: %v", i, errs[i])
				}
				got = append(got, r.MsgID)
			}
		}
		if !slices.Equal(got, []uint64{1, 2, 3, 4}) {
			t.Fatalf("msg_ids of the others: %v, want 1..4 in order", got)
		}
		checkIDs(t, log, "g", 4)
	})
}

// Idempotency keys belong to their game: the same key in two games of one
// partition appends two messages (JetStream deduplicates per stream).
func TestRetryKeysScopedByGame(t *testing.T) {
	withRetryAppender(t, func(a *Appender, log *fakeLog) {
		r1, err1 := a.Append(context.Background(), "one", tbody(1), "same")
		r2, err2 := a.Append(context.Background(), "two", tbody(2), "same")
		if err1 != nil || err2 != nil || r1.Duplicate || r2.Duplicate || r1.MsgID != 1 || r2.MsgID != 1 {
			t.Fatalf("same key in two games: %+v %v / %+v %v", r1, err1, r2, err2)
		}
		checkIDs(t, log, "one", 1)
		checkIDs(t, log, "two", 1)
		// Within one game the key still deduplicates.
		r3, err := a.Append(context.Background(), "one", tbody(3), "same")
		if err != nil || !r3.Duplicate || r3.MsgID != 1 {
			t.Fatalf("same key again in one game: %+v, %v", r3, err)
		}
	})
}

// The log is unreachable for longer than JetStream remembers keys, after an
// attempt that was stored: a blind retry would store a second copy once the
// key is forgotten. The Appender looks for its message first and finds it.
func TestRetryPastTheDuplicateWindowFindsTheStoredMessage(t *testing.T) {
	withRetryAppender(t, func(a *Appender, log *fakeLog) {
		start := time.Now()
		log.setFault(func([]*nats.Msg) fakeFault {
			switch {
			case log.publishes == 1:
				return fakeFault{err: nats.ErrTimeout, after: true} // stored, ack lost
			case time.Since(start) < 2*retryWindow:
				return fakeFault{err: nats.ErrNoResponders} // the stream is away
			}
			return fakeFault{}
		})
		r, err := a.Append(context.Background(), "g", tbody(1), "k")
		if err != nil || r.MsgID != 1 || !r.Duplicate {
			t.Fatalf("append: %+v, %v; want msg_id 1, found stored", r, err)
		}
		checkIDs(t, log, "g", 1)
		if got := readCounter(t, a.m.Verified.WithLabelValues("true")); got != 1 {
			t.Fatalf("verified (found) %v times, want 1", got)
		}
		r, err = a.Append(context.Background(), "g", tbody(2), "k2")
		if err != nil || r.MsgID != 2 {
			t.Fatalf("next append: %+v, %v", r, err)
		}
	})
}

// The same, but the first attempt was never stored: the Appender finds
// nothing and sends the message afresh, once.
func TestRetryPastTheDuplicateWindowSendsAfresh(t *testing.T) {
	withRetryAppender(t, func(a *Appender, log *fakeLog) {
		start := time.Now()
		log.setFault(func([]*nats.Msg) fakeFault {
			if time.Since(start) < 2*retryWindow {
				return fakeFault{err: nats.ErrTimeout}
			}
			return fakeFault{}
		})
		r, err := a.Append(context.Background(), "g", tbody(1), "k")
		if err != nil || r.MsgID != 1 || r.Duplicate {
			t.Fatalf("append: %+v, %v; want msg_id 1, stored now", r, err)
		}
		checkIDs(t, log, "g", 1)
		if got := readCounter(t, a.m.Verified.WithLabelValues("false")); got < 1 {
			t.Fatal("the Appender retried past the window without looking for its message")
		}
	})
}

func readCounter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	return promtest.ToFloat64(c)
}

// A key another Appender stored (a gateway retried its message through
// another sequencer): the answer is a duplicate, and this Appender's head,
// which did not know that message, is re-read, so its next append is not
// refused by the check.
func TestRetryDuplicateFromAnotherAppender(t *testing.T) {
	withRetryAppender(t, func(b *Appender, log *fakeLog) {
		a := newAppender(b.cfg, log, &fakeHeads{}, &fakeLive{})
		defer func() { _ = a.Close(context.Background()) }()
		if _, err := b.Append(context.Background(), "g", tbody(1), "k1"); err != nil {
			t.Fatal(err)
		}
		if r, err := a.Append(context.Background(), "g", tbody(2), "k2"); err != nil || r.MsgID != 2 {
			t.Fatalf("other appender: %+v, %v", r, err)
		}
		r, err := b.Append(context.Background(), "g", tbody(2), "k2")
		if err != nil || r.MsgID != 2 || !r.Duplicate {
			t.Fatalf("retry through b: %+v, %v; want msg_id 2 as a duplicate", r, err)
		}
		_, conflicts := log.counts()
		r, err = b.Append(context.Background(), "g", tbody(3), "k3")
		if err != nil || r.MsgID != 3 {
			t.Fatalf("next append: %+v, %v", r, err)
		}
		if _, c := log.counts(); c != conflicts {
			t.Fatal("the append after a duplicate was refused by the check: the head was not re-read")
		}
		checkIDs(t, log, "g", 3)
	})
}
