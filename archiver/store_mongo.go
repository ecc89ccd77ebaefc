package archiver

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// ErrUnknownGame reports a game without any archived message.
var ErrUnknownGame = errors.New("archiver: game not in the archive")

// Archive reads and writes the archive collections of one database. It is
// safe for concurrent use.
type Archive struct {
	// Static after construction.
	msgs      *mongo.Collection
	games     *mongo.Collection
	conflicts *mongo.Collection
}

// NewArchive returns the archive in database of client. Its writes use
// write concern majority with journaling: a write counts as done only when
// a majority of the replica set has it on disk.
func NewArchive(client *mongo.Client, database string) *Archive {
	db := client.Database(database, options.Database().SetWriteConcern(&writeconcern.WriteConcern{
		W: writeconcern.WCMajority, Journal: ptr(true)}))
	return &Archive{msgs: db.Collection(MessagesCollection), games: db.Collection(GamesCollection),
		conflicts: db.Collection(ConflictsCollection)}
}

func ptr[T any](v T) *T { return &v }

// errIndexConflict reports an existing index with our name but another
// definition: a permanent problem an operator must resolve.
var errIndexConflict = errors.New("archiver: conflicting index")

// messageIndexes are the indexes of the messages collection (the games
// collection needs only its _id).
var messageIndexes = []struct {
	name   string
	keys   bson.D
	unique bool
}{
	{"game_msg_id", bson.D{{Key: "game", Value: int32(1)}, {Key: "msg_id", Value: int32(1)}}, true},
	{"ts", bson.D{{Key: "ts", Value: int32(1)}}, false},
	{"type_ts", bson.D{{Key: "type", Value: int32(1)}, {Key: "ts", Value: int32(1)}}, false},
}

// EnsureIndexes creates the archive's indexes that do not exist yet; it is
// idempotent and safe to run from several processes at once. An existing
// index with one of our names but another definition is an error
// (errIndexConflict) that an operator must resolve.
func (a *Archive) EnsureIndexes(ctx context.Context) error {
	specs, err := a.msgs.Indexes().ListSpecifications(ctx)
	if err != nil {
		return fmt.Errorf("archiver: list indexes: %w", err)
	}
	existing := make(map[string]mongo.IndexSpecification, len(specs))
	for _, s := range specs {
		existing[s.Name] = s
	}
	// One index per command: creating several at once, some of which
	// exist, trips FerretDB v1.
	for _, ix := range messageIndexes {
		name := ix.name
		if s, ok := existing[name]; ok {
			keys, _ := bson.Marshal(ix.keys)
			unique := s.Unique != nil && *s.Unique
			if !bytes.Equal(normalizeKeys(s.KeysDocument), keys) || unique != ix.unique {
				return fmt.Errorf("%w: index %s on %s exists with keys %s (unique %v)", errIndexConflict, name, MessagesCollection, s.KeysDocument, unique)
			}
			continue
		}
		im := mongo.IndexModel{Keys: ix.keys, Options: options.Index().SetName(name)}
		if ix.unique {
			im.Options.SetUnique(true)
		}
		if _, err := a.msgs.Indexes().CreateOne(ctx, im); err != nil {
			var ce mongo.CommandError
			// 85 IndexOptionsConflict, 86 IndexKeySpecsConflict.
			if errors.As(err, &ce) && (ce.Code == 85 || ce.Code == 86) {
				return fmt.Errorf("%w: index %s on %s: %v", errIndexConflict, name, MessagesCollection, err)
			}
			return fmt.Errorf("archiver: create index %s: %w", name, err)
		}
	}
	return nil
}

// normalizeKeys re-encodes an index key document with every direction as
// Int32, since servers answer 1 as Int32, Int64 or Double.
func normalizeKeys(raw bson.Raw) []byte {
	elems, err := raw.Elements()
	if err != nil {
		return raw
	}
	d := make(bson.D, 0, len(elems))
	for _, e := range elems {
		v := e.Value()
		if n, ok := v.AsInt64OK(); ok {
			d = append(d, bson.E{Key: e.Key(), Value: int32(n)})
		} else {
			d = append(d, bson.E{Key: e.Key(), Value: v})
		}
	}
	b, err := bson.Marshal(d)
	if err != nil {
		return raw
	}
	return b
}

// isDuplicateKey reports MongoDB's duplicate key error codes.
func isDuplicateKey(code int) bool { return code == 11000 || code == 11001 || code == 12582 }

// insertResult counts what one step of an attempt did.
type insertResult struct {
	inserted, duplicates, fallbacks int
	// conflicts are messages whose (game, msg_id) the archive holds for
	// another stream message: numbers reused (see ConflictsCollection).
	conflicts []*message
}

// errDocumentRefused reports write errors specific to single documents
// (other than duplicate keys).
var errDocumentRefused = errors.New("archiver: MongoDB refused documents")

// insert writes the messages of ms in stateNew with one unordered
// InsertMany, on the unique (game, msg_id) index, and records each one's
// outcome in its state: stateArchived if inserted, stateDuplicate if its
// (game, msg_id) was archived already (Archive.lookup tells from which
// stream message). A document MongoDB refuses for another reason stays in
// stateNew and the insert returns errDocumentRefused, unless its message
// failed twice before (failures ≥ 2): then it is written again without
// its body (raw only, body_error says why). Outcomes are recorded even
// when some documents were refused; on any other failure (timeout,
// connection, write concern) the insert's outcome is unknown and nothing
// is recorded.
func (a *Archive) insert(ctx context.Context, ms []*message) (insertResult, error) {
	var res insertResult
	todo := make([]*message, 0, len(ms))
	for _, m := range ms {
		if m.state == stateNew {
			todo = append(todo, m)
		}
	}
	if len(todo) == 0 {
		return res, nil
	}
	docs := make([]any, len(todo))
	for i, m := range todo {
		body, err := BodyDocument(m.frame)
		if err != nil {
			docs[i] = m.document(nil, err.Error())
		} else {
			docs[i] = m.document(body, "")
		}
	}
	refused, err := a.insertDocs(ctx, todo, docs, &res)
	if err != nil {
		return res, err
	}
	var kept *mongo.BulkWriteError // the first refusal left for a later attempt
	var retry []*message
	docs = docs[:0]
	for i := range refused {
		m := todo[refused[i].Index]
		if m.failures < 2 {
			kept = cmp.Or(kept, &refused[i])
			continue
		}
		retry = append(retry, m)
		docs = append(docs, m.document(nil, "MongoDB refused the body: "+refused[i].Message))
	}
	if len(retry) > 0 {
		before := res.inserted
		refused, err = a.insertDocs(ctx, retry, docs, &res)
		res.fallbacks = res.inserted - before
		if err != nil {
			return res, err
		}
		if len(refused) > 0 {
			return res, fmt.Errorf("%w even without body: %s", errDocumentRefused, refused[0].Message)
		}
	}
	if kept != nil {
		return res, fmt.Errorf("%w: %s", errDocumentRefused, kept.Message)
	}
	return res, nil
}

// insertDocs runs one unordered InsertMany of docs (docs[i] is ms[i]'s),
// sets the states of the messages inserted or found archived already, adds
// them to res and returns the other per-document errors.
func (a *Archive) insertDocs(ctx context.Context, ms []*message, docs []any, res *insertResult) (refused []mongo.BulkWriteError, err error) {
	_, err = a.msgs.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil {
		for _, m := range ms {
			m.state = stateArchived
		}
		res.inserted += len(ms)
		return nil, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return nil, fmt.Errorf("archiver: insert: %w", err)
	}
	failed := make(map[int]bool, len(bwe.WriteErrors))
	for _, we := range bwe.WriteErrors {
		failed[we.Index] = true
		if isDuplicateKey(we.Code) {
			ms[we.Index].state = stateDuplicate
		} else {
			refused = append(refused, we)
		}
	}
	for i, m := range ms {
		if !failed[i] {
			m.state = stateArchived
			res.inserted++
		}
	}
	return refused, nil
}

// lookup finds out, for the messages of ms in stateDuplicate, which stream
// message the archived document with their (game, msg_id) came from: the
// same (partition and sequence; a redelivery, now stateArchived) or another
// (numbers reused, now stateConflict).
//
// It sends one query for all of them, whatever the number of games: an
// $or of {game: G, msg_id: {$in: [...]}}, one branch per game, each of
// which MongoDB answers from the unique (game, msg_id) index. FerretDB v1
// (SQLite) uses no index for any query and reads the whole collection, once
// per query; one query per attempt keeps that to a single pass.
func (a *Archive) lookup(ctx context.Context, ms []*message) (insertResult, error) {
	var res insertResult
	type key struct {
		game string
		id   int64
	}
	var games []string
	ids := make(map[string]bson.A)
	dups := make(map[key]*message)
	for _, m := range ms {
		if m.state != stateDuplicate {
			continue
		}
		if ids[m.game] == nil {
			games = append(games, m.game)
		}
		ids[m.game] = append(ids[m.game], int64(m.id))
		dups[key{m.game, int64(m.id)}] = m
	}
	if len(dups) == 0 {
		return res, nil
	}
	branches := make(bson.A, 0, len(games))
	for _, g := range games {
		branches = append(branches, bson.D{{Key: "game", Value: g}, {Key: "msg_id", Value: bson.D{{Key: "$in", Value: ids[g]}}}})
	}
	filter := branches[0].(bson.D)
	if len(branches) > 1 {
		filter = bson.D{{Key: "$or", Value: branches}}
	}
	cur, err := a.msgs.Find(ctx, filter, options.Find().SetProjection(bson.D{{Key: "_id", Value: 0},
		{Key: "game", Value: 1}, {Key: "msg_id", Value: 1}, {Key: "seq", Value: 1}, {Key: "partition", Value: 1}}))
	if err != nil {
		return res, fmt.Errorf("archiver: look up duplicates: %w", err)
	}
	var docs []struct {
		Game      string `bson:"game"`
		MsgID     int64  `bson:"msg_id"`
		Seq       int64  `bson:"seq"`
		Partition int32  `bson:"partition"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return res, fmt.Errorf("archiver: look up duplicates: %w", err)
	}
	for _, d := range docs {
		m := dups[key{d.Game, d.MsgID}]
		if m == nil || m.state != stateDuplicate {
			continue
		}
		if d.Seq == int64(m.seq) && d.Partition == int32(m.partition) {
			m.state = stateArchived
			res.duplicates++
		} else {
			m.state = stateConflict
			res.conflicts = append(res.conflicts, m)
		}
	}
	for _, m := range ms {
		if m.state == stateDuplicate {
			// Gone since the insert (removed by hand?): insert it again.
			m.state = stateNew
			err = cmp.Or(err, fmt.Errorf("archiver: game %s msg_id %d reported as duplicate but not found", m.game, m.id))
		}
	}
	return res, err
}

// storeConflicts keeps the messages of ms in stateConflict in
// ConflictsCollection, once each, so that none is lost; they become
// stateKept.
func (a *Archive) storeConflicts(ctx context.Context, ms []*message) error {
	var conflicts []*message
	for _, m := range ms {
		if m.state == stateConflict {
			conflicts = append(conflicts, m)
		}
	}
	if len(conflicts) == 0 {
		return nil
	}
	docs := make([]any, 0, len(conflicts))
	for _, m := range conflicts {
		d := bson.D{{Key: "_id", Value: fmt.Sprintf("%s/%d/%d/%d", m.game, m.id, m.partition, m.seq)}}
		docs = append(docs, append(d, m.document(nil, "conflict: (game, msg_id) already archived from another stream message")...))
	}
	_, err := a.conflicts.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if err != nil && errors.As(err, &bwe) && bwe.WriteConcernError == nil {
		for _, we := range bwe.WriteErrors {
			if !isDuplicateKey(we.Code) {
				return fmt.Errorf("archiver: store conflicts: %w", err)
			}
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("archiver: store conflicts: %w", err)
	}
	for _, m := range conflicts {
		m.state = stateKept
	}
	return nil
}

// gameUpdate collects what one batch tells about one game.
type gameUpdate struct {
	partition       int
	firstTS, lastTS int64
	firstID, lastID uint64
	ended           bool  // the batch holds an end message
	endedTS         int64 // the earliest end message's ts
	players         []string
	seenPlayer      map[string]bool
}

func (g *gameUpdate) add(m *message) {
	if g.firstID == 0 { // first message of the batch for this game
		g.firstID, g.lastID, g.firstTS, g.lastTS = m.id, m.id, m.ts, m.ts
	}
	g.firstID, g.lastID = min(g.firstID, m.id), max(g.lastID, m.id)
	g.firstTS, g.lastTS = min(g.firstTS, m.ts), max(g.lastTS, m.ts)
	if p := m.player(); p != "" && !g.seenPlayer[p] {
		if g.seenPlayer == nil {
			g.seenPlayer = make(map[string]bool)
		}
		g.seenPlayer[p] = true
		g.players = append(g.players, p)
	}
	if m.ended() && (!g.ended || m.ts < g.endedTS) {
		g.endedTS, g.ended = m.ts, true
	}
}

// updateGames folds the batch into the games collection. Every operator is
// idempotent ($min, $max, $addToSet), so repeating a batch, or applying
// batches in any order, gives the same result.
func (a *Archive) updateGames(ctx context.Context, games map[string]*gameUpdate) error {
	models := make([]mongo.WriteModel, 0, len(games))
	for game, g := range games {
		minSet := bson.D{
			{Key: "first_ts", Value: bson.DateTime(g.firstTS)},
			{Key: "first_msg_id", Value: int64(g.firstID)},
		}
		if g.ended {
			minSet = append(minSet, bson.E{Key: "ended_at", Value: bson.DateTime(g.endedTS)})
		}
		players := bson.A{}
		for _, p := range g.players {
			players = append(players, p)
		}
		models = append(models, mongo.NewUpdateOneModel().
			SetFilter(bson.D{{Key: "_id", Value: game}}).
			SetUpdate(bson.D{
				{Key: "$min", Value: minSet},
				{Key: "$max", Value: bson.D{
					{Key: "last_ts", Value: bson.DateTime(g.lastTS)},
					{Key: "last_msg_id", Value: int64(g.lastID)},
				}},
				{Key: "$addToSet", Value: bson.D{{Key: "players", Value: bson.D{{Key: "$each", Value: players}}}}},
				{Key: "$setOnInsert", Value: bson.D{{Key: "partition", Value: int32(g.partition)}}},
			}).
			SetUpsert(true))
	}
	if len(models) == 0 {
		return nil
	}
	// A duplicate key here is two archivers upserting a new game at once;
	// the retry finds the document and updates it.
	if _, err := a.games.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
		return fmt.Errorf("archiver: update games: %w", err)
	}
	return nil
}

// Record is one archived message.
type Record struct {
	Game     string
	MsgID    uint64
	TS       time.Time
	ClientID string
	User     string
	Source   string
	Type     string
	// Frame is the exact JSON text clients received.
	Frame []byte
}

type recordDoc struct {
	Game     string        `bson:"game"`
	MsgID    int64         `bson:"msg_id"`
	TS       bson.DateTime `bson:"ts"`
	ClientID string        `bson:"client_id"`
	User     string        `bson:"user"`
	Source   string        `bson:"source"`
	Type     string        `bson:"type"`
	Raw      bson.RawValue `bson:"raw"`
}

func (d *recordDoc) record() (Record, error) {
	r := Record{Game: d.Game, MsgID: uint64(d.MsgID), TS: d.TS.Time().UTC(), ClientID: d.ClientID,
		User: d.User, Source: d.Source, Type: d.Type}
	switch d.Raw.Type {
	case bson.TypeString:
		r.Frame = []byte(d.Raw.StringValue())
	case bson.TypeBinary:
		_, b := d.Raw.Binary()
		r.Frame = b
	default:
		return r, fmt.Errorf("archiver: game %s msg_id %d: raw is BSON type %s", d.Game, d.MsgID, d.Raw.Type)
	}
	return r, nil
}

// Messages calls fn for every archived message of game with
// since < msg_id ≤ upto (upto 0: no upper bound), in msg_id order. It does
// not check that msg_ids are dense; callers that need to, do.
func (a *Archive) Messages(ctx context.Context, game string, since, upto uint64, fn func(Record) error) error {
	return a.messages(ctx, game, since, upto, 0, fn)
}

func (a *Archive) messages(ctx context.Context, game string, since, upto uint64, limit int64, fn func(Record) error) error {
	rng := bson.D{{Key: "$gt", Value: int64(since)}}
	if upto != 0 {
		rng = append(rng, bson.E{Key: "$lte", Value: int64(upto)})
	}
	opts := options.Find().
		SetSort(bson.D{{Key: "msg_id", Value: 1}}).
		SetProjection(bson.D{{Key: "body", Value: 0}, {Key: "_id", Value: 0}}).
		SetBatchSize(500)
	if limit > 0 {
		opts.SetLimit(limit)
	}
	cur, err := a.msgs.Find(ctx, bson.D{{Key: "game", Value: game}, {Key: "msg_id", Value: rng}}, opts)
	if err != nil {
		return fmt.Errorf("archiver: read game %s: %w", game, err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		var d recordDoc
		if err := cur.Decode(&d); err != nil {
			return fmt.Errorf("archiver: read game %s: %w", game, err)
		}
		r, err := d.record()
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("archiver: read game %s: %w", game, err)
	}
	return nil
}

// GameSummary is a document of the games collection.
type GameSummary struct {
	Game       string        `bson:"_id"`
	Partition  int           `bson:"partition"`
	FirstTS    bson.DateTime `bson:"first_ts"`
	LastTS     bson.DateTime `bson:"last_ts"`
	FirstMsgID int64         `bson:"first_msg_id"`
	LastMsgID  int64         `bson:"last_msg_id"`
	Players    []string      `bson:"players"`
	// EndedAt is the ts of the game's first end message (see EndedType);
	// nil while the game has not ended.
	EndedAt *bson.DateTime `bson:"ended_at,omitempty"`
}

// Game returns the summary of game, or ErrUnknownGame.
func (a *Archive) Game(ctx context.Context, game string) (GameSummary, error) {
	var g GameSummary
	err := a.games.FindOne(ctx, bson.D{{Key: "_id", Value: game}}).Decode(&g)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return g, fmt.Errorf("%w: %s", ErrUnknownGame, game)
	}
	if err != nil {
		return g, fmt.Errorf("archiver: read game %s: %w", game, err)
	}
	return g, nil
}
