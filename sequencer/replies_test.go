package sequencer

import (
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
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
	r.mu.Lock()
	box := r.free[0]
	r.mu.Unlock()
	testutil.WaitFor(t, 5*time.Second, "the late answer in the idle box", func() bool { return len(box.ch) == 1 })
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

// A burst of concurrent requests makes a box each; the boxes kept for
// reuse must cost little, so a burst leaves no large heap behind.
func TestRepliesBurstLeavesLittleBehind(t *testing.T) {
	s := embednats.Server(t)
	nc := embednats.Connect(t, s.ClientURL())
	responder := embednats.Connect(t, s.ClientURL())
	release := make(chan struct{})
	var held sync.WaitGroup
	const burst = 300
	held.Add(burst)
	if _, err := responder.Subscribe("t.req", func(m *nats.Msg) {
		// Answer on a goroutine of its own so every request is in flight
		// at once.
		go func() {
			held.Done()
			<-release
			_ = m.Respond([]byte("ok"))
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	r := &replies{nc: nc}
	defer r.close()
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	for i := 0; i < burst; i++ {
		wg.Go(func() {
			if _, err := r.request(&nats.Msg{Subject: "t.req"}, time.Minute); err != nil {
				errs <- err
			}
		})
	}
	held.Wait() // every request reached the responder: burst boxes exist
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r.mu.Lock()
	kept := len(r.free)
	for _, b := range r.free {
		if cap(b.ch) > replyBoxLen {
			t.Errorf("a kept box buffers %d messages", cap(b.ch))
		}
	}
	r.mu.Unlock()
	if kept > maxFreeReplyBoxes {
		t.Fatalf("%d idle boxes kept, want at most %d", kept, maxFreeReplyBoxes)
	}
	// A box with nats.go's default synchronous channel costs 512 KiB: the
	// burst would leave over 100 MiB behind.
	if grew := int64(heap()) - int64(before); grew > 16<<20 {
		t.Fatalf("heap grew by %d KiB after a burst of %d requests", grew>>10, burst)
	}
}

// A request whose connection drops is answered at once: its answer can no
// longer come, and waiting for the timeout would stall the append.
func TestRepliesFailOnLostConnection(t *testing.T) {
	s := embednats.Server(t)
	nc := embednats.Connect(t, s.ClientURL())
	responder := embednats.Connect(t, s.ClientURL())
	got := make(chan struct{})
	if _, err := responder.Subscribe("t.req", func(*nats.Msg) { close(got) }); err != nil {
		t.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	r := &replies{nc: nc}
	defer r.close()
	done := make(chan error, 1)
	go func() {
		_, err := r.request(&nats.Msg{Subject: "t.req"}, time.Hour)
		done <- err
	}()
	<-got // the request reached the server; it is never answered
	s.Shutdown()
	if err := <-done; !errors.Is(err, errConnLost) {
		t.Fatalf("request on a dropped connection: %v, want errConnLost", err)
	}
}
