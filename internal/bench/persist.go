package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// PersistStream holds what the persisting reference relay stores; with
// several partitions, PersistStream_0 … PersistStream_<n-1> do.
const PersistStream = "BENCH_REFERENCE"

// persistLayout spreads the rooms over partitions streams as gamerelay
// spreads games (wire.Partition), so that a floor measured on a cluster
// has as many RAFT groups, and as much batching per group, as the
// gamerelay installation it is compared with.
type persistLayout struct{ partitions int }

func (l persistLayout) stream(p int) string {
	if l.partitions <= 1 {
		return PersistStream
	}
	return PersistStream + "_" + strconv.Itoa(p)
}

func (l persistLayout) subjects(p int) string {
	if l.partitions <= 1 {
		return "bench.reference.>"
	}
	return "bench.reference." + strconv.Itoa(p) + ".>"
}

// subject is the subject of room's frames.
func (l persistLayout) subject(room string) string {
	if l.partitions <= 1 {
		return roomSubject(room)
	}
	return "bench.reference." + strconv.Itoa(wire.Partition(room, l.partitions)) + "." + subjectSafe.Replace(room)
}

// NewJetStreamPersist returns a Reference.Persist that publishes each frame
// to a JetStream stream (created here with the given replicas, 0 meaning
// 1: file storage, the store's defaults, as `gamerelay dev` uses at R1)
// on nc and waits for the ack, so a frame reaches clients only once it is
// stored.
func NewJetStreamPersist(ctx context.Context, nc *nats.Conn, replicas int) (func(room string, frame []byte) error, error) {
	if err := createPersistStream(ctx, nc, replicas); err != nil {
		return nil, err
	}
	return func(room string, frame []byte) error {
		return storeMsg(nc, roomSubject(room), frame)
	}, nil
}

// roomSubject is the persist stream's subject for room's frames.
func roomSubject(room string) string { return "bench.reference." + subjectSafe.Replace(room) }

var subjectSafe = strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_")

// NewJetStreamCheckedPersist is NewJetStreamPersist with the two checks
// every gamerelay append makes JetStream do: the expected last sequence of
// the room's subject (what keeps gamerelay's numbering gapless with any
// number of sequencers) and a unique Nats-Msg-Id (what makes its retries
// idempotent, in the stream's duplicate window). It is the floor of
// persisting every message as gamerelay's design requires. The rooms are
// spread over partitions streams (at least one) as gamerelay spreads games.
func NewJetStreamCheckedPersist(ctx context.Context, nc *nats.Conn, replicas, partitions int) (func(room string, frame []byte) error, error) {
	layout := persistLayout{partitions}
	for p := range max(partitions, 1) {
		if err := createStream(ctx, nc, replicas, layout.stream(p), layout.subjects(p)); err != nil {
			return nil, err
		}
	}
	var (
		mu   sync.Mutex
		last = map[string]uint64{} // subject → stream sequence of its last frame
		ids  atomic.Uint64
	)
	prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	// The Reference calls this in each room's order, one frame at a time.
	return func(room string, frame []byte) error {
		subject := layout.subject(room)
		mu.Lock()
		prev := last[subject]
		mu.Unlock()
		m := &nats.Msg{Subject: subject, Data: frame, Header: nats.Header{
			"Nats-Expected-Last-Subject-Sequence": {strconv.FormatUint(prev, 10)},
			"Nats-Msg-Id":                         {prefix + strconv.FormatUint(ids.Add(1), 10)},
		}}
		var seq uint64
		for attempt := 0; ; attempt++ {
			resp, err := nc.RequestMsg(m, 5*time.Second)
			if err != nil {
				return err
			}
			seq, err = ackSeq(resp.Data)
			if err == nil {
				break
			}
			// A replicated stream refuses the check while the subject's
			// previous message is still being applied (10164); gamerelay's
			// sequencer publishes again, and so does the floor.
			if !bytes.Contains(resp.Data, []byte(`"err_code":10164`)) || attempt == 100 {
				return err
			}
			time.Sleep(time.Millisecond)
		}
		mu.Lock()
		last[subject] = seq
		mu.Unlock()
		return nil
	}, nil
}

// maxGroupBytes bounds the frames one group commit stores together.
const maxGroupBytes = 1 << 20

// NewJetStreamGroupPersist is NewJetStreamPersist storing by group commit:
// one goroutine stores every frame waiting at that moment, from any room,
// as one JetStream message (each frame preceded by "<room> <length>\n"),
// waits for the ack and releases them all. It measures what persistence
// costs when one store serves several games. It stops when ctx ends.
func NewJetStreamGroupPersist(ctx context.Context, nc *nats.Conn, replicas int) (func(room string, frame []byte) error, error) {
	if err := createPersistStream(ctx, nc, replicas); err != nil {
		return nil, err
	}
	type waiter struct {
		room  string
		frame []byte
		done  chan error
	}
	queue := make(chan waiter, 4096)
	go func() {
		var group []waiter
		var msg []byte
		for {
			select {
			case w := <-queue:
				group = append(group[:0], w)
			case <-ctx.Done():
				return
			}
			size := len(group[0].frame)
		more:
			for size < maxGroupBytes {
				select {
				case w := <-queue:
					group = append(group, w)
					size += len(w.frame)
				default:
					break more
				}
			}
			msg = msg[:0]
			for _, w := range group {
				msg = append(msg, w.room...)
				msg = append(msg, ' ')
				msg = strconv.AppendInt(msg, int64(len(w.frame)), 10)
				msg = append(msg, '\n')
				msg = append(msg, w.frame...)
			}
			err := storeMsg(nc, "bench.reference.group", msg)
			for _, w := range group {
				w.done <- err
			}
		}
	}()
	return func(room string, frame []byte) error {
		w := waiter{room, frame, make(chan error, 1)}
		select {
		case queue <- w:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case err := <-w.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil
}

func createPersistStream(ctx context.Context, nc *nats.Conn, replicas int) error {
	l := persistLayout{1}
	return createStream(ctx, nc, replicas, l.stream(0), l.subjects(0))
}

func createStream(ctx context.Context, nc *nats.Conn, replicas int, name, subjects string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     name,
		Subjects: []string{subjects},
		Storage:  jetstream.FileStorage,
		Replicas: max(replicas, 1),
		MaxAge:   time.Hour,
	})
	if err != nil {
		return fmt.Errorf("bench: create stream %s: %w", name, err)
	}
	// A replicated stream takes publishes once its replicas elected a
	// leader, which may come after its creation was acknowledged.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := js.Stream(ctx, name)
		if err == nil {
			info, err := st.Info(ctx)
			if err == nil && (info.Cluster == nil || info.Cluster.Leader != "" || replicas <= 1) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: stream %s has no leader after 30s", name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// storeMsg publishes data to subject, a subject of the stream, and waits
// for the ack.
func storeMsg(nc *nats.Conn, subject string, data []byte) error {
	resp, err := nc.Request(subject, data, 5*time.Second)
	if err != nil {
		return err
	}
	_, err = ackSeq(resp.Data)
	return err
}

// ackSeq returns the sequence a publish ack ({"stream":..,"seq":N,..})
// gives, or an error for a refusal (one carrying "error").
func ackSeq(ack []byte) (uint64, error) {
	i := bytes.Index(ack, []byte(`"seq":`))
	if i < 0 || bytes.Contains(ack, []byte(`"error"`)) {
		return 0, errors.New("bench: publish refused: " + string(ack))
	}
	digits := ack[i+len(`"seq":`):]
	n := 0
	for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(digits[:n]), 10, 64)
	if err != nil || seq == 0 {
		return 0, errors.New("bench: bad publish ack: " + string(ack))
	}
	return seq, nil
}
