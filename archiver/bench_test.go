package archiver

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/gamerelay/gamerelay/internal/embedmongo"
)

var benchDocs = flag.Int("archiver.docs", 1000, "documents in the messages collection before BenchmarkRedeliveredBatch's batch")

// BenchmarkRedeliveredBatch writes a redelivered batch of 500 messages, all
// archived already by the attempt that failed, into embedded FerretDB
// holding -archiver.docs other documents: the insert, which finds every
// message a duplicate, and the look-up that tells redeliveries from reused
// numbers. "per-game" is that look-up as one query per game; "point" is
// one look-up of a single message. One op is one batch (one look-up for
// "point"); insert-ms and lookup-ms are each step's share.
//
//	go test -run '^$' -bench RedeliveredBatch -benchtime 1x ./archiver/ -args -archiver.docs=160000
func BenchmarkRedeliveredBatch(b *testing.B) {
	ctx := context.Background()
	srv, err := embedmongo.Start(embedmongo.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	client, err := mongo.Connect(options.Client().ApplyURI(srv.URI()))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Disconnect(ctx)
	a := NewArchive(client, "gamerelay")
	if err := a.EnsureIndexes(ctx); err != nil {
		b.Fatal(err)
	}
	seq := uint64(0)
	msg := func(game string, id uint64) *message {
		seq++
		m := &message{game: game, id: id, seq: seq, ts: 1_760_000_000_000 + int64(seq),
			frame: fmt.Appendf(nil, `{"type":"move","col":%d,"client_id":"c%d","user":"p%d","msg_id":%d,"ts":%d}`,
				id%7, id%3, id%3, id, 1_760_000_000_000+int64(seq))}
		m.readFields()
		return m
	}
	var fill []*message
	flush := func() {
		if _, err := a.insert(ctx, fill); err != nil {
			b.Fatal(err)
		}
		fill = fill[:0]
	}
	start := time.Now()
	for i := range *benchDocs {
		fill = append(fill, msg(fmt.Sprintf("g%d", i%100), uint64(i/100+1)))
		if len(fill) == 1000 {
			flush()
		}
	}
	batch := func(games int) []*message {
		var ms []*message
		for g := range games {
			for id := range uint64(500 / games) {
				ms = append(ms, msg(fmt.Sprintf("redelivered%d-%d", games, g), id+1))
			}
		}
		return ms
	}
	// The batches as the failed attempt left them: archived, last.
	batches := map[int][]*message{1: batch(1), 5: batch(5)}
	fill = append(append(fill, batches[1]...), batches[5]...)
	flush()
	b.Logf("%d documents loaded in %v", *benchDocs+1000, time.Since(start).Round(time.Millisecond))

	redelivered := func(games int) []*message {
		ms := make([]*message, 0, 500)
		for _, m := range batches[games] {
			c := *m
			c.state = stateNew
			ms = append(ms, &c)
		}
		return ms
	}
	for _, games := range []int{1, 5} {
		for _, perGame := range []bool{false, true} {
			name := fmt.Sprintf("games=%d", games)
			if perGame {
				name = "per-game/" + name
			}
			b.Run(name, func(b *testing.B) {
				var insert, lookup time.Duration
				for b.Loop() {
					ms := redelivered(games)
					t0 := time.Now()
					if _, err := a.insert(ctx, ms); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					insert += t1.Sub(t0)
					if perGame {
						if n := lookupPerGame(b, a, ms); n != len(ms) {
							b.Fatalf("look-up found %d of %d", n, len(ms))
						}
					} else if res, err := a.lookup(ctx, ms); err != nil || res.duplicates != len(ms) {
						b.Fatalf("look-up: %d redeliveries of %d, %v", res.duplicates, len(ms), err)
					}
					lookup += time.Since(t1)
				}
				b.ReportMetric(float64(insert.Milliseconds())/float64(b.N), "insert-ms")
				b.ReportMetric(float64(lookup.Milliseconds())/float64(b.N), "lookup-ms")
			})
		}
	}
	m := batches[5][0]
	var stored struct {
		ID bson.ObjectID `bson:"_id"`
	}
	if err := a.msgs.FindOne(ctx, bson.D{{Key: "game", Value: m.game}, {Key: "msg_id", Value: int64(m.id)}}).Decode(&stored); err != nil {
		b.Fatal(err)
	}
	for _, p := range []struct {
		name   string
		filter bson.D
	}{
		{"point/game-msg_id", bson.D{{Key: "game", Value: m.game}, {Key: "msg_id", Value: int64(m.id)}}},
		{"point/_id", bson.D{{Key: "_id", Value: stored.ID}}},
	} {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				if n, err := a.msgs.CountDocuments(ctx, p.filter); err != nil || n != 1 {
					b.Fatalf("found %d, %v", n, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "lookup-ms")
		})
	}
}

// lookupPerGame looks the messages up with one query per game, the shape
// of the look-up before it became one query per attempt, and returns how
// many it found.
func lookupPerGame(b *testing.B, a *Archive, ms []*message) int {
	ids := make(map[string]bson.A)
	for _, m := range ms {
		ids[m.game] = append(ids[m.game], int64(m.id))
	}
	n := 0
	for game, in := range ids {
		cur, err := a.msgs.Find(context.Background(), bson.D{{Key: "game", Value: game}, {Key: "msg_id", Value: bson.D{{Key: "$in", Value: in}}}},
			options.Find().SetProjection(bson.D{{Key: "_id", Value: 0}, {Key: "msg_id", Value: 1}, {Key: "seq", Value: 1}, {Key: "partition", Value: 1}}))
		if err != nil {
			b.Fatal(err)
		}
		var docs []bson.Raw
		if err := cur.All(context.Background(), &docs); err != nil {
			b.Fatal(err)
		}
		n += len(docs)
	}
	return n
}
