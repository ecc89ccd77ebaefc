//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// entry is one stored message of a game, as its partition stream holds it.
type entry struct {
	msgID    uint64
	seq      uint64
	hash     uint64 // FNV-1a of the stored body, which is the frame clients get
	idem     string
	typ      string
	clientID string
}

// ledger is the suite's copy of every game's log, read from the partition
// streams (the source of truth) a little more at each check.
type ledger struct {
	readSeq  [partitions]uint64 // last stream sequence read, per partition
	games    map[string][]entry // in stream order; dense means games[g][i].msgID == i+1
	idems    map[string][]uint64
	seen     map[string]bool   // problems already reported
	problems map[string]string // log problems found while reading, not yet reported
}

func newLedger() *ledger {
	return &ledger{games: map[string][]entry{}, idems: map[string][]uint64{}, seen: map[string]bool{}, problems: map[string]string{}}
}

// head is the last msg_id stored for game (0: none).
func (l *ledger) head(game string) uint64 {
	es := l.games[game]
	if len(es) == 0 {
		return 0
	}
	return es[len(es)-1].msgID
}

// read appends what the streams stored since the last read.
func (l *ledger) read(tp *topology) error {
	nc, js, err := tp.js()
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	names := wire.Names{}
	for p := range partitions {
		s, err := js.Stream(ctx, names.Stream(p))
		if err != nil {
			return fmt.Errorf("stream %s: %w", names.Stream(p), err)
		}
		last := s.CachedInfo().State.LastSeq
		if last <= l.readSeq[p] {
			continue
		}
		c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       l.readSeq[p] + 1,
			AckPolicy:         jetstream.AckNonePolicy,
			FilterSubject:     names.LogFilter(p),
			InactiveThreshold: 30 * time.Second,
			MemoryStorage:     true,
			Replicas:          1,
		})
		if err != nil {
			return fmt.Errorf("consumer on %s: %w", names.Stream(p), err)
		}
		err = l.readFrom(c, p, last)
		_ = s.DeleteConsumer(ctx, c.CachedInfo().Name)
		if err != nil {
			return fmt.Errorf("reading %s: %w", names.Stream(p), err)
		}
	}
	return nil
}

func (l *ledger) readFrom(c jetstream.Consumer, p int, last uint64) error {
	for l.readSeq[p] < last {
		// Exactly what is left, so the fetch does not wait for more.
		batch, err := c.Fetch(int(min(1000, last-l.readSeq[p])), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			l.add(m.Subject(), md.Sequence.Stream, m.Headers().Get(wire.HdrMsgID), m.Data())
			l.readSeq[p] = md.Sequence.Stream
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no message after sequence %d of %d", l.readSeq[p], last)
		}
	}
	return nil
}

func (l *ledger) add(subject string, seq uint64, msgIDHdr string, body []byte) {
	game := subject[strings.LastIndexByte(subject, '.')+1:]
	id, err := strconv.ParseUint(msgIDHdr, 10, 64)
	if err != nil {
		l.problem("log", fmt.Sprintf("%s seq %d: msg_id header %q", game, seq, msgIDHdr))
		return
	}
	var v struct {
		Type     string  `json:"type"`
		Idem     string  `json:"idem"`
		ClientID string  `json:"client_id"`
		MsgID    *uint64 `json:"msg_id"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		l.problem("log", fmt.Sprintf("%s msg_id %d: body not JSON: %v", game, id, err))
	}
	if v.MsgID == nil || *v.MsgID != id {
		l.problem("log", fmt.Sprintf("%s seq %d: header msg_id %d, body %s", game, seq, id, body))
	}
	if h := l.head(game); id != h+1 {
		l.problem("log", fmt.Sprintf("%s: msg_id %d stored (seq %d) after msg_id %d", game, id, seq, h))
	}
	l.games[game] = append(l.games[game], entry{msgID: id, seq: seq, hash: hash(body), idem: v.Idem, typ: v.Type, clientID: v.ClientID})
	if v.Idem != "" {
		l.idems[v.Idem] = append(l.idems[v.Idem], id)
	} else if v.Type != "presence" || v.ClientID != "" {
		l.problem("log", fmt.Sprintf("%s msg_id %d: neither a player's message nor presence: %s", game, id, body))
	}
}

// problem records a problem once; takeProblems hands it to the check of
// the scenario running.
func (l *ledger) problem(kind, what string) {
	key := kind + ": " + what
	if !l.seen[key] {
		l.seen[key] = true
		l.problems[key] = key
	}
}

func (l *ledger) takeProblems() []string {
	var out []string
	for _, p := range l.problems {
		out = append(out, p)
	}
	sort.Strings(out)
	clear(l.problems)
	return out
}

// archiveProgress reads the archiver's per-game summaries (the small
// games collection) and returns the games whose last archived msg_id is
// still below the log's head: a cheap signal of when to compare the
// archive itself.
func (l *ledger) archiveProgress(mc *mongo.Client) (behind []string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cur, err := mc.Database(database).Collection("games").Find(ctx, bson.D{},
		options.Find().SetProjection(bson.D{{Key: "last_msg_id", Value: 1}}))
	if err != nil {
		return nil, err
	}
	var docs []struct {
		Game   string `bson:"_id"`
		LastID int64  `bson:"last_msg_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	last := map[string]int64{}
	for _, d := range docs {
		last[d.Game] = d.LastID
	}
	for g := range l.games {
		if h := l.head(g); last[g] < int64(h) {
			behind = append(behind, fmt.Sprintf("%s at %d of %d", g, last[g], h))
		}
	}
	sort.Strings(behind)
	return behind, nil
}

// archiveDiff compares the whole messages collection with the log read so
// far: every stored message archived exactly once with the same raw text,
// nothing else. FerretDB answers every query on the collection with a
// full scan, so this is one query. It returns the differences, and the
// documents numbered beyond the log read so far (the caller reads the log
// again and calls it again; they may have been stored since).
func (l *ledger) archiveDiff(mc *mongo.Client) (missing []msgRef, wrong []string, beyond int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cur, err := mc.Database(database).Collection("messages").Find(ctx, bson.D{},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 0}, {Key: "game", Value: 1}, {Key: "msg_id", Value: 1}, {Key: "raw", Value: 1}}).
			SetBatchSize(5000))
	if err != nil {
		return nil, nil, 0, err
	}
	defer cur.Close(ctx)
	found := map[string][]int{} // game → times each msg_id (index msg_id-1) is archived
	for g, es := range l.games {
		found[g] = make([]int, len(es))
	}
	for cur.Next(ctx) {
		var d struct {
			Game  string        `bson:"game"`
			MsgID int64         `bson:"msg_id"`
			Raw   bson.RawValue `bson:"raw"`
		}
		if err := cur.Decode(&d); err != nil {
			return nil, nil, 0, err
		}
		es := l.games[d.Game]
		switch {
		case d.MsgID < 1:
			wrong = append(wrong, fmt.Sprintf("%s: msg_id %d archived", d.Game, d.MsgID))
		case d.MsgID > int64(len(es)):
			beyond++
		default:
			found[d.Game][d.MsgID-1]++
			if es[d.MsgID-1].msgID == uint64(d.MsgID) && hash(rawBytes(d.Raw)) != es[d.MsgID-1].hash {
				wrong = append(wrong, fmt.Sprintf("%s msg_id %d: raw differs from the stored message", d.Game, d.MsgID))
			}
		}
	}
	if err := cur.Err(); err != nil {
		return nil, nil, 0, err
	}
	var games []string
	for g := range found {
		games = append(games, g)
	}
	sort.Strings(games)
	for _, g := range games {
		for i, n := range found[g] {
			switch {
			case n == 0:
				missing = append(missing, msgRef{g, uint64(i + 1)})
			case n > 1:
				wrong = append(wrong, fmt.Sprintf("%s msg_id %d archived %d times", g, i+1, n))
			}
		}
	}
	n, err := mc.Database(database).Collection("conflicts").CountDocuments(ctx, bson.D{})
	if err != nil {
		return nil, nil, 0, err
	}
	if n > 0 {
		wrong = append(wrong, fmt.Sprintf("%d documents in conflicts (a msg_id archived for two different messages)", n))
	}
	return missing, wrong, beyond, nil
}

// msgRef names one message of a game.
type msgRef struct {
	game  string
	msgID uint64
}

func (m msgRef) String() string { return m.game + "/" + strconv.FormatUint(m.msgID, 10) }

func rawBytes(v bson.RawValue) []byte {
	if s, ok := v.StringValueOK(); ok {
		return []byte(s)
	}
	if _, b, ok := v.BinaryOK(); ok {
		return b
	}
	return nil
}
