package sequencer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/internal/testutil"
)

// A game is created once MarkCreated returned: the next Created says so.
func TestGamesCreated(t *testing.T) {
	e := newEnv(t, testConfig())
	g, err := OpenGames(context.Background(), e.conn(), e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if c, err := g.Created(ctx, "lobby"); err != nil || c {
		t.Fatalf("before: created %v, %v", c, err)
	}
	if err := g.MarkCreated(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	if c, err := g.Created(ctx, "lobby"); err != nil || !c {
		t.Fatalf("after: created %v, %v; want true", c, err)
	}
	if c, err := g.Created(ctx, "other"); err != nil || c {
		t.Fatalf("another game: created %v, %v", c, err)
	}
}

// A crowd joining one game shares the reads in flight instead of making
// one each.
func TestGamesCreatedSharesReads(t *testing.T) {
	e := newEnv(t, testConfig())
	g, err := OpenGames(context.Background(), e.conn(), e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.MarkCreated(context.Background(), "crowd"); err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int32
	release := make(chan struct{})
	g.readFn = func(ctx context.Context, game string) (bool, error) {
		reads.Add(1)
		<-release
		return g.read(ctx, game)
	}
	const n = 50
	var wg sync.WaitGroup
	var started atomic.Int32
	results := make(chan bool, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Add(1)
			c, err := g.Created(context.Background(), "crowd")
			if err != nil {
				t.Error(err)
			}
			results <- c
		}()
	}
	testutil.WaitFor(t, 5*time.Second, "every caller started and the first read began", func() bool {
		return started.Load() == n && reads.Load() >= 1
	})
	close(release)
	wg.Wait()
	close(results)
	for c := range results {
		if !c {
			t.Fatal("a caller was told the created game was not created")
		}
	}
	if r := reads.Load(); r >= n {
		t.Fatalf("%d reads for %d concurrent callers: not shared", r, n)
	}
	t.Logf("%d reads for %d callers", reads.Load(), n)
}
