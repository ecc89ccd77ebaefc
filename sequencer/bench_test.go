package sequencer

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/embednats"
)

// benchAppend appends b.N messages spread over games, keeping window
// appends outstanding per game, and reports appends/s.
func benchAppend(b *testing.B, games, window int) {
	s := embednats.Server(b)
	benchAppendOn(b, s.ClientURL(), Config{Partitions: 1, Logger: quiet()}, games, window)
}

func benchAppendOn(b *testing.B, url string, cfg Config, games, window int) {
	nc := embednats.Connect(b, url)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := Provision(ctx, js, cfg); err != nil {
		b.Fatal(err)
	}
	a, err := NewAppender(ctx, nc, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close(ctx)
	msg := []byte(`{"type":"move","col":3,"player":"p1","note":"a typical small game message"}`)
	names := make([]string, games)
	for g := range names {
		names[g] = fmt.Sprintf("bench%d", g)
	}
	sems := make([]chan struct{}, games)
	for g := range sems {
		sems[g] = make(chan struct{}, window)
	}
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g := i % games
		sems[g] <- struct{}{}
		wg.Add(1)
		if err := a.AppendAsync(names[g], msg, "", func(_ Result, err error) {
			if err != nil {
				b.Error(err)
			}
			<-sems[g]
			wg.Done()
		}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

// One hot game: every append after the first waits for the one in flight,
// so throughput comes from atomic batches.
func BenchmarkAppendHotGame(b *testing.B) { benchAppend(b, 1, 512) }

// One game, one message at a time: the latency-bound floor.
func BenchmarkAppendHotGameSerial(b *testing.B) { benchAppend(b, 1, 1) }

// 64 games in parallel: appends of different games are pipelined.
func BenchmarkAppendManyGames(b *testing.B) { benchAppend(b, 64, 8) }

func BenchmarkAppendManyGamesSerial(b *testing.B) { benchAppend(b, 64, 1) }

func benchR3(b *testing.B, games, window int) {
	c := embednats.NewCluster(b, 3)
	benchAppendOn(b, c.URLs(), Config{Partitions: 1, Replicas: 3, Logger: quiet()}, games, window)
}

func BenchmarkAppendR3HotGame(b *testing.B)         { benchR3(b, 1, 512) }
func BenchmarkAppendR3HotGameSerial(b *testing.B)   { benchR3(b, 1, 1) }
func BenchmarkAppendR3ManyGames(b *testing.B)       { benchR3(b, 64, 8) }
func BenchmarkAppendR3ManyGamesSerial(b *testing.B) { benchR3(b, 64, 1) }
