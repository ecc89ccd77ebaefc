package sequencer

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/gamerelay/gamerelay/internal/jsonobj"
	"github.com/gamerelay/gamerelay/internal/wire"
)

// queueGroup is the queue group every sequencer joins on a partition's
// append subject, so a brief double ownership shares the load instead of
// doubling it.
const queueGroup = "gamerelay-sequencer"

// AppendReply is the JSON answer to an append request.
type AppendReply struct {
	MsgID     uint64      `json:"msg_id,omitempty"`
	Seq       uint64      `json:"seq,omitempty"`
	TS        int64       `json:"ts,omitempty"`
	Duplicate bool        `json:"duplicate,omitempty"`
	Error     *ReplyError `json:"error,omitempty"`
}

// ReplyError is a refused append.
type ReplyError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Service runs the sequencer: it provisions the log, holds partition
// leases in a KV bucket, and answers append requests for the partitions it
// owns. Leases only spread the work; any number of Services may append to
// any game safely.
type Service struct {
	// Static after construction.
	nc   *nats.Conn
	cfg  Config
	inst string

	opts []Option // for the Appender
	// leases, if set (tests), wraps the lease bucket.
	leases func(leaseStore) leaseStore

	ready atomic.Bool
	app   atomic.Pointer[Appender]
	owns  atomic.Pointer[[]bool] // partitions owned, replaced on every change

	mu sync.Mutex
	// Guarded by mu.
	owned map[int]*lease
}

// leaseStore is what the Service needs of the lease bucket;
// jetstream.KeyValue implements it.
type leaseStore interface {
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error)
}

type lease struct {
	rev     uint64
	sub     *nats.Subscription
	renewed time.Time // last successful renewal (or take)
}

// NewService returns a Service using nc; Run starts it. opts go to its
// Appender (WithLocalFeeds for a sequencer inside a gateway).
func NewService(nc *nats.Conn, cfg Config, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	inst := cfg.Instance
	if inst == "" {
		inst = nuid.Next()
	}
	return &Service{nc: nc, cfg: cfg, inst: inst, opts: opts, owned: make(map[int]*lease)}, nil
}

// Ready reports whether the Service is provisioned and taking appends.
func (s *Service) Ready() bool { return s.ready.Load() }

// Appender returns the Service's appender once Run has started it, else nil.
func (s *Service) Appender() *Appender { return s.app.Load() }

// Owned returns the partitions whose lease this Service holds.
func (s *Service) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.owned))
	for p := range s.owned {
		out = append(out, p)
	}
	return out
}

// Run provisions the log and serves until ctx ends; then it stops taking
// requests, releases its leases, finishes queued appends (for up to
// drain) and returns.
func (s *Service) Run(ctx context.Context, drain time.Duration) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return err
	}
	if err := Provision(ctx, js, s.cfg); err != nil {
		return err
	}
	bucket, err := js.KeyValue(ctx, s.cfg.names().LeaseBucket())
	if err != nil {
		return err
	}
	var kv leaseStore = bucket
	if s.leases != nil {
		kv = s.leases(bucket)
	}
	app, err := NewAppender(ctx, s.nc, s.cfg, s.opts...)
	if err != nil {
		return err
	}
	s.app.Store(app)
	// Any sequencer takes appends for any partition whose owner does not
	// answer (see Client).
	anySub, err := s.nc.QueueSubscribe(s.cfg.names().AppendAnyFilter(), queueGroup, s.anyHandler)
	if err != nil {
		_ = app.Close(ctx)
		return err
	}
	_ = anySub.SetPendingLimits(-1, 256<<20)
	s.ready.Store(true)
	s.cfg.Logger.Info("sequencer: started", "instance", s.inst, "partitions", s.cfg.Partitions)

	tick := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer tick.Stop()
	for {
		s.balance(ctx, kv)
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}

	s.ready.Store(false)
	_ = anySub.Drain()
	stop, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	s.mu.Lock()
	for p, l := range s.owned {
		_ = l.sub.Drain()
		_ = kv.Delete(stop, leaseKey(p), jetstream.LastRevision(l.rev))
		delete(s.owned, p)
	}
	s.mu.Unlock()
	_ = kv.Delete(stop, "inst."+s.inst)
	s.gaugeLocked()
	err = app.Close(stop)
	s.cfg.Logger.Info("sequencer: stopped", "instance", s.inst)
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("sequencer: drain timed out with appends pending")
	}
	return nil
}

func leaseKey(p int) string { return "lease." + strconv.Itoa(p) }

// balance renews this Service's leases, then takes free partitions or
// gives extra ones back so that each live Service owns its fair share.
func (s *Service) balance(ctx context.Context, kv leaseStore) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LeaseTTL/3)
	defer cancel()
	log := s.cfg.Logger
	if _, err := kv.Put(ctx, "inst."+s.inst, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		log.Warn("sequencer: heartbeat", "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.gaugeLocked()
	for p, l := range s.owned {
		if s.renewLocked(ctx, kv, p, l) {
			continue
		}
		_ = l.sub.Drain()
		delete(s.owned, p)
	}
	live := 0
	if keys, err := kv.ListKeysFiltered(ctx, "inst.*"); err == nil {
		for range keys.Keys() {
			live++
		}
	}
	live = max(live, 1)
	share := (s.cfg.Partitions + live - 1) / live
	for p, l := range s.owned {
		if len(s.owned) <= share {
			break
		}
		log.Info("sequencer: releasing partition for balance", "partition", p, "share", share)
		_ = l.sub.Drain()
		_ = kv.Delete(ctx, leaseKey(p), jetstream.LastRevision(l.rev))
		delete(s.owned, p)
	}
	off := rand.IntN(s.cfg.Partitions)
	for i := 0; i < s.cfg.Partitions && len(s.owned) < share; i++ {
		p := (off + i) % s.cfg.Partitions
		if s.owned[p] != nil {
			continue
		}
		rev, err := kv.Create(ctx, leaseKey(p), []byte(s.inst))
		if err != nil {
			continue // owned by someone else, or NATS trouble: next round
		}
		sub, err := s.nc.QueueSubscribe(s.cfg.names().AppendSubject(p), queueGroup, s.handler(p))
		if err != nil {
			_ = kv.Delete(ctx, leaseKey(p), jetstream.LastRevision(rev))
			continue
		}
		_ = sub.SetPendingLimits(-1, 256<<20)
		s.owned[p] = &lease{rev: rev, sub: sub, renewed: time.Now()}
		log.Info("sequencer: took partition", "partition", p)
	}
}

// renew extends lease l of partition p; false means it is lost. A renewal
// that fails for a transient reason (a timeout, the bucket's stream
// electing a leader) keeps the lease until a whole TTL has passed since
// the last renewal: leases move only when their owner is gone or another
// sequencer holds them. s.mu is held.
func (s *Service) renewLocked(ctx context.Context, kv leaseStore, p int, l *lease) bool {
	log := s.cfg.Logger
	rev, err := kv.Update(ctx, leaseKey(p), []byte(s.inst), l.rev)
	if err == nil {
		l.rev, l.renewed = rev, time.Now()
		return true
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		// The revision moved: another sequencer took the lease, it
		// expired (nothing renewed it for a TTL), or our own renewal was
		// stored but its answer lost. Look.
		e, gerr := kv.Get(ctx, leaseKey(p))
		switch {
		case gerr == nil && string(e.Value()) == s.inst:
			l.rev, l.renewed = e.Revision(), time.Now()
			return true
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			if rev, cerr := kv.Create(ctx, leaseKey(p), []byte(s.inst)); cerr == nil {
				l.rev, l.renewed = rev, time.Now()
				return true
			}
		case gerr != nil && time.Since(l.renewed) < s.cfg.LeaseTTL:
			log.Warn("sequencer: lease renewal uncertain; keeping it", "partition", p, "err", gerr)
			return true
		}
		log.Warn("sequencer: lost partition lease", "partition", p)
		return false
	}
	if time.Since(l.renewed) < s.cfg.LeaseTTL {
		log.Warn("sequencer: lease renewal failed; keeping it", "partition", p, "err", err)
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.LeaseRenewalErrors.Inc()
		}
		return true
	}
	log.Warn("sequencer: lost partition lease: not renewed for a TTL", "partition", p, "err", err)
	return false
}

// gauge publishes the owned partitions (metrics and Owns). s.mu is held.
func (s *Service) gaugeLocked() {
	owns := make([]bool, s.cfg.Partitions)
	for p := range s.owned {
		owns[p] = true
	}
	s.owns.Store(&owns)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.PartitionsOwned.Set(float64(len(s.owned)))
	}
}

// Owns reports whether this Service holds partition p's lease; lock-free.
func (s *Service) Owns(p int) bool {
	o := s.owns.Load()
	return o != nil && p < len(*o) && (*o)[p]
}

func (s *Service) handler(p int) nats.MsgHandler {
	return func(m *nats.Msg) {
		game := m.Header.Get(wire.HdrGame)
		if err := wire.ValidateGame(game); err != nil {
			respond(m, AppendReply{Error: &ReplyError{Code: wire.CodeInvalidGame, Message: err.Error()}})
			return
		}
		if q := wire.Partition(game, s.cfg.Partitions); q != p {
			respond(m, AppendReply{Error: &ReplyError{Code: wire.CodeWrongPartition,
				Message: "game " + game + " belongs to partition " + strconv.Itoa(q)}})
			return
		}
		live := m.Header.Get(wire.HdrAck) == wire.AckLive
		err := s.app.Load().AppendAsync(game, m.Data, m.Header.Get(wire.HdrIdem), func(r Result, err error) {
			if err != nil {
				respond(m, errorReply(err))
				return
			}
			if live && !r.Duplicate {
				return // the live copy answers
			}
			respond(m, AppendReply{MsgID: r.MsgID, Seq: r.Seq, TS: r.TS, Duplicate: r.Duplicate})
		})
		if err != nil {
			respond(m, errorReply(err))
		}
	}
}

// anyHandler serves appends for any partition (AppendAnySubject).
func (s *Service) anyHandler(m *nats.Msg) {
	p, err := strconv.Atoi(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
	if err != nil || p < 0 || p >= s.cfg.Partitions {
		respond(m, AppendReply{Error: &ReplyError{Code: wire.CodeWrongPartition, Message: "no partition " + m.Subject}})
		return
	}
	s.handler(p)(m)
}

func errorReply(err error) AppendReply {
	var e *Error
	if errors.As(err, &e) {
		return AppendReply{Error: &ReplyError{Code: e.Code, Message: err.Error()}}
	}
	return AppendReply{Error: &ReplyError{Code: wire.CodeInternal, Message: err.Error()}}
}

func respond(m *nats.Msg, r AppendReply) {
	var b []byte
	if r.Error == nil {
		b = make([]byte, 0, 80)
		b = append(b, `{"msg_id":`...)
		b = strconv.AppendUint(b, r.MsgID, 10)
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, r.TS, 10)
		if r.Duplicate {
			b = append(b, `,"duplicate":true`...)
		}
		b = append(b, '}')
	} else {
		b, _ = json.Marshal(r)
	}
	_ = m.Respond(b)
}

// decodeReply parses an append reply; the success form by hand.
func decodeReply(data []byte, r *AppendReply) error {
	slow := false
	err := jsonobj.Scan(data, func(k, v []byte) error {
		switch {
		case jsonobj.KeyEquals(k, "msg_id"):
			r.MsgID, _ = strconv.ParseUint(string(v), 10, 64)
		case jsonobj.KeyEquals(k, "seq"):
			r.Seq, _ = strconv.ParseUint(string(v), 10, 64)
		case jsonobj.KeyEquals(k, "ts"):
			r.TS, _ = strconv.ParseInt(string(v), 10, 64)
		case jsonobj.KeyEquals(k, "duplicate"):
			r.Duplicate = string(v) == "true"
		default:
			slow = true
		}
		return nil
	})
	if err != nil || slow || r.MsgID == 0 {
		*r = AppendReply{}
		return json.Unmarshal(data, r)
	}
	return nil
}
