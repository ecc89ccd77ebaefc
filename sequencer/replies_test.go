package sequencer

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/embednats"
)

// A reply box is reused after a request timed out: the late answer to the
// old request must not be taken for the answer to the new one.
func TestRepliesSkipLateAnswers(t *testing.T) {
	s := embednats.Server(t)
	nc := embednats.Connect(t, s.ClientURL())
	responder := embednats.Connect(t, s.ClientURL())
	release := make(chan struct{})
	if _, err := responder.Subscribe("t.req", func(m *nats.Msg) {
		if string(m.Data) == "slow" {
			<-release
		}
		_ = m.Respond(append([]byte("re:"), m.Data...))
	}); err != nil {
		t.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	r := &replies{nc: nc}
	if _, err := r.request(&nats.Msg{Subject: "t.req", Data: []byte("slow")}, 50*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("slow request: %v, want timeout", err)
	}
	close(release) // the slow answer now arrives at the idle box
	time.Sleep(50 * time.Millisecond)
	for i := 0; i < 3; i++ {
		resp, err := r.request(&nats.Msg{Subject: "t.req", Data: []byte{'a' + byte(i)}}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if want := "re:" + string(rune('a'+i)); string(resp.Data) != want {
			t.Fatalf("request %d got %q, want %q", i, resp.Data, want)
		}
	}
	r.mu.Lock()
	boxes := len(r.free)
	r.mu.Unlock()
	if boxes != 1 {
		t.Fatalf("%d idle boxes after sequential requests, want 1 (reused)", boxes)
	}
	// No responders (no stream for the subject): told at once.
	start := time.Now()
	if _, err := r.request(&nats.Msg{Subject: "t.nobody", Data: []byte("x")}, 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("no responders: %v", err)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatal("no responders reported only at the timeout")
	}
	r.close()
	if _, err := r.request(&nats.Msg{Subject: "t.req", Data: []byte("z")}, time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v, want ErrClosed", err)
	}
}
