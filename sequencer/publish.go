package sequencer

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// publication is the retry machine of one batch of a game's messages: run
// publishes them, in order, until each is stored or refused for good, and
// leaves each one's outcome in res and errs. Attempts are numbered;
// attempt n > 0 backs off first. A publish waits at most the publish
// timeout, or until deadline if that comes first.
//
// A retry reuses the messages' Nats-Msg-Ids, so JetStream stores each at
// most once — but it remembers them only for its duplicate window. Before a
// message whose first attempt lies more than three quarters of that window
// back is sent again, the game's messages stored since are read from the
// stream leader: if it is among them, that is its outcome; if not, it was
// never stored, and it is sent afresh.
type publication struct {
	a        *Appender
	g        *gameState
	batch    []*pending
	deadline time.Time // bounds each publish besides the publish timeout; zero: no bound
	res      []Result
	errs     []error
}

// attempts says how long run goes on.
type attempts uint8

const (
	untilSettled attempts = iota // until every message is settled or the Appender closes
	justOnce                     // one attempt (an inline append's, on its caller's goroutine)
)

func (a *Appender) newPublication(g *gameState, batch []*pending, deadline time.Time) *publication {
	return &publication{a: a, g: g, batch: batch, deadline: deadline,
		res: make([]Result, len(batch)), errs: make([]error, len(batch))}
}

// settleOne publishes batch[i] on its own, until settled, into res[i] and
// errs[i].
func (p *publication) settleOne(i int) {
	sub := p.a.newPublication(p.g, p.batch[i:i+1], time.Time{})
	sub.run(0, untilSettled)
	p.res[i], p.errs[i] = sub.res[0], sub.errs[0]
}

// run makes attempts from first on and reports whether the batch is
// settled (always, with untilSettled).
func (p *publication) run(first int, n attempts) bool {
	a, g, batch, res, errs := p.a, p.g, p.batch, p.res, p.errs
	for attempt := first; ; attempt++ {
		if n == justOnce && attempt > first {
			return false
		}
		if attempt > 0 && !a.sleep(attempt) {
			for i := range errs {
				errs[i] = errAbandoned
			}
			return true
		}
		if !g.known {
			from := anyReplica
			if attempt > 1 {
				from = theLeader // a replica may trail it
			}
			if err := a.refresh(g, from); err != nil {
				a.retried("head")
				a.log.Debug("sequencer: read head", "game", g.name, "err", err)
				continue
			}
		}
		if a.pastHorizon(batch) {
			found, err := a.verify(g, batch, res)
			if err != nil {
				a.retried("verify")
				a.log.Debug("sequencer: look for a message past the duplicate window", "game", g.name, "err", err)
				continue
			}
			if n := count(found); n > 0 {
				// Stored by an earlier attempt; append what was not.
				var left []*pending
				var at []int
				for i, m := range batch {
					if !found[i] {
						left, at = append(left, m), append(at, i)
					}
				}
				if len(left) > 0 {
					sub := a.newPublication(g, left, time.Time{})
					sub.run(0, untilSettled)
					for j, i := range at {
						res[i], errs[i] = sub.res[j], sub.errs[j]
					}
				}
				return true
			}
			if !g.known {
				continue // verify read the log: re-read the head before publishing
			}
		}
		msgs, ack, ts, err := a.publish(p.deadline, g, batch)
		if err == nil {
			if ack.Duplicate {
				// Only a single publish is answered this way: an earlier
				// attempt stored it, so the head moved without us.
				g.known = false
				st, err := a.duplicate(g, ack.Seq)
				if err != nil {
					a.retried("duplicate_lookup")
					continue
				}
				res[0] = Result{MsgID: st.ID, Seq: st.Seq, TS: st.TS, Duplicate: true}
				a.announceFound(g, st)
				return true
			}
			prevSeq, stored := a.advance(g, batch, ack.Seq, ts, res)
			a.announce(g, msgs, prevSeq, stored)
			return true
		}
		code := errCode(err)
		switch code {
		case int(jetstream.JSErrCodeStreamWrongLastSequence), int(jetstream.JSErrCodeStreamWrongLastSequenceConstant), errCodeLastSeqNotReady:
			g.known = false
			if a.m != nil {
				a.m.Conflicts.WithLabelValues(strconv.Itoa(code)).Inc()
			}
			continue
		case errCodeBatchDuplicate:
			// Part of the batch was stored by an earlier attempt (lost ack)
			// or by another sequencer: settle each message on its own.
			a.retried("batch_duplicate")
			for i := range batch {
				p.settleOne(i)
			}
			return true
		case errCodeBatchIncomplete, errCodeBatchTooMany, errCodeClusterUnavailable:
			g.known = false
			a.retried("batch")
			continue
		case errCodeDupInProcess, errCodeMemberChange:
			// An earlier attempt's copy is still on its way into the
			// stream (or the cluster is changing): the outcome is unknown,
			// and the next attempt is answered as a duplicate or stores it.
			g.known = false
			a.retried("in_process")
			continue
		}
		var ae *apiError
		if errors.As(err, &ae) && ae.Code >= 400 && ae.Code < 500 {
			// Refused for good, e.g. larger than the stream allows.
			if len(batch) > 1 {
				for i := range batch {
					p.settleOne(i)
				}
				return true
			}
			a.log.Warn("sequencer: append refused", "game", g.name, "err", err)
			errs[0] = errorf(wire.CodeInvalidMessage, "refused by the log: %s", ae.Desc)
			return true
		}
		// Timeout, no responders, leader change, lost connection: the
		// outcome is unknown, so re-read the head; the idempotency keys make
		// the retry safe.
		g.known = false
		a.retried("transport")
		a.log.Debug("sequencer: publish", "game", g.name, "err", err, "attempt", attempt)
	}
}

func count(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// horizon is how long after a message's first publish a retry may rely on
// JetStream's duplicate window to recognise it.
func (a *Appender) horizon() time.Duration { return a.cfg.DuplicateWindow * 3 / 4 }

// pastHorizon reports whether a message of batch was first published more
// than the horizon ago.
func (a *Appender) pastHorizon(batch []*pending) bool {
	for _, p := range batch {
		if !p.since.IsZero() && time.Since(p.since) > a.horizon() {
			return true
		}
	}
	return false
}

// verify looks for batch's messages, by Nats-Msg-Id, among the game's
// messages stored after the head their first publishes started from,
// reading from the stream leader. It fills res for the messages found and
// makes the others count as never sent. g's head is re-read afterwards.
func (a *Appender) verify(g *gameState, batch []*pending, res []Result) (found []bool, err error) {
	want := make(map[string]int, len(batch))
	after := uint64(0)
	for i, p := range batch {
		if p.since.IsZero() {
			continue
		}
		if len(want) == 0 || p.after < after {
			after = p.after
		}
		want[p.key] = i
	}
	found = make([]bool, len(batch))
	var stored []Stored
	for seq := after + 1; len(want) > 0; {
		st, err := a.st.nextFromLeader(a.ctx, g.p, g.name, seq)
		if errors.Is(err, errNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		if i, ok := want[st.key]; ok {
			res[i] = Result{MsgID: st.ID, Seq: st.Seq, TS: st.TS, Duplicate: true}
			found[i] = true
			delete(want, st.key)
			stored = append(stored, st)
		}
		seq = st.Seq + 1
	}
	if a.m != nil {
		a.m.Verified.WithLabelValues(strconv.FormatBool(len(stored) > 0)).Inc()
	}
	for i, p := range batch {
		if !found[i] {
			p.since = time.Time{}
		}
	}
	g.known = false
	for _, st := range stored {
		a.announceFound(g, st)
	}
	return found, nil
}

func (a *Appender) retried(reason string) {
	if a.m != nil {
		a.m.Retries.WithLabelValues(reason).Inc()
	}
}

// sleep backs off before retry attempt n (≥1) with full jitter; false if the
// Appender closed meanwhile.
func (a *Appender) sleep(n int) bool {
	// At most a quarter second: after a stream's leader election the next
	// attempt must not be far behind.
	d := time.Duration(250<<min(n, 10)) * time.Microsecond // 0.5ms … 256ms
	d = time.Duration(rand.Int64N(int64(d))) + 100*time.Microsecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.ctx.Done():
		return false
	}
}

// headSource says who answers a head read.
type headSource uint8

const (
	anyReplica headSource = iota // cheapest; may trail the leader a little
	theLeader                    // never stale
)

// refresh reads the game's head from the stream.
func (a *Appender) refresh(g *gameState, from headSource) error {
	var (
		head Stored
		err  error
	)
	if from == theLeader {
		head, err = a.st.lastFromLeader(a.ctx, g.p, g.name)
	} else {
		head, err = a.st.last(a.ctx, g.p, g.name)
	}
	switch {
	case errors.Is(err, errNotFound):
		// No stored message: a new game, or one whose every message
		// retention removed. The checkpoint keeps numbering going.
		var id uint64
		e, kerr := a.heads.Get(a.ctx, g.name)
		switch {
		case kerr == nil:
			id, _ = strconv.ParseUint(string(e.Value()), 10, 64)
		case !errors.Is(kerr, jetstream.ErrKeyNotFound):
			return kerr
		}
		g.lastSeq, g.lastID, g.pageSeq = 0, id, 0
	case err != nil:
		return err
	default:
		g.lastSeq, g.lastID = head.Seq, head.ID
		if wire.PageStart(head.ID) == head.ID {
			g.pageSeq = head.Seq
		} else {
			g.pageSeq = head.Anchor // PageStart(ID-1) == PageStart(ID)
		}
	}
	g.known = true
	return nil
}

// publish stamps and sends batch: one checked publish, or an atomic batch
// whose first message carries the check.
func (a *Appender) publish(deadline time.Time, g *gameState, batch []*pending) ([]*nats.Msg, *pubAck, int64, error) {
	now := time.Now()
	ts := now.UnixMilli()
	first := g.lastID + 1
	msgs := make([]*nats.Msg, len(batch))
	for i, p := range batch {
		if p.since.IsZero() {
			p.since, p.after = now, g.lastSeq
		}
		id := first + uint64(i)
		// One array holds every header value: one allocation, not four.
		// The append time is in the stamped body only (wire.StampedTS).
		vals := make([]string, 4)
		set := func(h nats.Header, k, v string) {
			vals[len(h)] = v
			h[k] = vals[len(h) : len(h)+1 : len(h)+1]
		}
		h := make(nats.Header, 8)
		set(h, wire.HdrMsgID, strconv.FormatUint(id, 10))
		set(h, nats.MsgIdHdr, p.key)
		if back := anchorBack(id, first); back > 0 {
			set(h, wire.HdrAnchor, "-"+strconv.FormatUint(back, 10))
		} else if id > 1 && g.pageSeq != 0 {
			set(h, wire.HdrAnchor, strconv.FormatUint(g.pageSeq, 10))
		}
		if i == 0 {
			set(h, nats.ExpectedLastSubjSeqHdr, strconv.FormatUint(g.lastSeq, 10))
		}
		msgs[i] = &nats.Msg{Subject: g.subject, Header: h, Data: stamp(make([]byte, 0, len(p.body)+40), p.body, id, ts)}
	}
	start := time.Now()
	var (
		ack *pubAck
		err error
	)
	if len(msgs) == 1 {
		ack, err = a.st.publish(deadline, msgs[0])
	} else {
		select {
		case a.batchSem[g.p] <- struct{}{}:
		case <-a.ctx.Done():
			return nil, nil, ts, ErrClosed
		}
		ack, err = a.st.publishBatch(deadline, nuid.Next(), msgs)
		<-a.batchSem[g.p]
		if err == nil && ack.Count != uint64(len(msgs)) {
			err = errors.New("sequencer: batch ack count mismatch")
		}
	}
	if a.m != nil {
		a.m.AppendLatency.Observe(time.Since(start).Seconds())
		if err == nil {
			a.m.BatchSize.Observe(float64(len(msgs)))
		}
	}
	return msgs, ack, ts, err
}

// anchorBack says how many messages back message id's anchor (the start of
// the page before it) lies when it is in id's batch, which starts at
// msg_id first; 0 when it lies before the batch (the game's first message
// has none).
func anchorBack(id, first uint64) uint64 {
	if id == 1 {
		return 0
	}
	if anchor := wire.PageStart(id - 1); anchor >= first {
		return id - anchor
	}
	return 0
}

// advance records a stored batch whose last message has sequence lastSeq and
// returns the batch as stored, the first message's predecessor in the game
// at sequence prevSeq.
func (a *Appender) advance(g *gameState, batch []*pending, lastSeq uint64, ts int64, res []Result) (prevSeq uint64, stored []Stored) {
	k := uint64(len(batch))
	first, firstSeq := g.lastID+1, lastSeq-(k-1)
	prevSeq, pageSeq := g.lastSeq, g.pageSeq
	stored = make([]Stored, len(batch))
	crossed := false
	for i := range batch {
		id, seq := first+uint64(i), firstSeq+uint64(i)
		res[i] = Result{MsgID: id, Seq: seq, TS: ts}
		stored[i] = Stored{Seq: seq, ID: id, TS: ts}
		// The anchor publish wrote, as an absolute sequence.
		if back := anchorBack(id, first); back > 0 {
			stored[i].Anchor = seq - back
		} else if id > 1 {
			stored[i].Anchor = pageSeq
		}
		if wire.PageStart(id) == id {
			g.pageSeq = seq
			crossed = true
		}
	}
	g.lastID += k
	g.lastSeq = lastSeq
	if a.m != nil {
		a.m.Appended.Add(float64(k))
	}
	if crossed {
		a.mu.Lock()
		a.checkpoints[g.name] = g.lastID
		a.mu.Unlock()
	}
	return prevSeq, stored
}

// duplicate reads the message JetStream recognised a publish as a
// duplicate of, stored at seq.
func (a *Appender) duplicate(g *gameState, seq uint64) (Stored, error) {
	st, err := a.st.bySeq(a.ctx, g.p, seq)
	if err == nil && a.m != nil {
		a.m.Duplicates.Inc()
	}
	return st, err
}
