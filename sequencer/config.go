package sequencer

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Config configures the ordered log. The zero value is the documented default
// for every field.
type Config struct {
	// Namespace prefixes subjects, streams and buckets. Default "gr".
	Namespace string
	// Partitions is the number of partition streams. Default 1. Changing it
	// on an existing installation remaps games: don't.
	Partitions int
	// Replicas of each partition stream and KV bucket. Default 1; use 3 in
	// production.
	Replicas int
	// MaxAge is how long messages stay in the stream. Default 7 days.
	MaxAge time.Duration
	// MaxMsgsPerGame caps the stored messages of one game (oldest are
	// removed first). Default 1,000,000; -1 means unlimited.
	MaxMsgsPerGame int64
	// DuplicateWindow is how long JetStream remembers idempotency keys.
	// Default 2 minutes.
	DuplicateWindow time.Duration
	// MaxBatch is the most messages of one game sent in one atomic batch.
	// Default 256; at most 1000 (the server's limit).
	MaxBatch int
	// BatchMin is the fewest queued messages of one game sent as an atomic
	// batch; shorter queues go one checked publish at a time. Default 2
	// with Replicas > 1; 64 with Replicas 1, where the server stages every
	// atomic batch in a file store of its own (see docs/benchmarks.md).
	BatchMin int
	// MaxInflightBatches bounds the atomic batches this process keeps in
	// flight per partition (the server allows 50 per stream). Default 32.
	MaxInflightBatches int
	// MaxMessageBytes bounds one message body. Default 64 KiB.
	MaxMessageBytes int
	// RequestTimeout bounds one JetStream read (head, history). Default 5s.
	RequestTimeout time.Duration
	// PublishTimeout bounds one publish attempt: a publish without an ack
	// within it (the stream is electing a leader, or the ack was lost) is
	// retried with the same Nats-Msg-Id. A stream without a leader drops
	// publishes silently, so this, not RequestTimeout, is how long an
	// append waits after a new leader is elected. Default 1s.
	PublishTimeout time.Duration
	// AttemptTimeout is how long a Client waits for one sequencer's answer
	// to an append before asking any other sequencer (with the same
	// idempotency key). Default 1s.
	AttemptTimeout time.Duration
	// LeaseTTL is how long a partition lease lives without renewal; a dead
	// sequencer's partitions are taken over after at most about this long.
	// Default 10s.
	LeaseTTL time.Duration
	// IdleEvict drops the in-memory state of a game with no appends for
	// this long (after writing its head checkpoint). Default 5 minutes.
	IdleEvict time.Duration
	// Instance names this process in leases and idempotency keys. Default:
	// a random id.
	Instance string
	// Logger receives operational logs. Default: slog.Default().
	Logger *slog.Logger
	// Metrics receives counters; nil disables them.
	Metrics *Metrics
}

func (c Config) withDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = wire.DefaultNamespace
	}
	if c.Partitions == 0 {
		c.Partitions = 1
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxAge == 0 {
		c.MaxAge = 7 * 24 * time.Hour
	}
	if c.MaxMsgsPerGame == 0 {
		c.MaxMsgsPerGame = 1_000_000
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 256
	}
	if c.BatchMin == 0 {
		c.BatchMin = 2
		if c.Replicas == 1 {
			c.BatchMin = 64
		}
	}
	if c.MaxInflightBatches == 0 {
		c.MaxInflightBatches = 32
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 10
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = time.Second
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = time.Second
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.IdleEvict == 0 {
		c.IdleEvict = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Partitions < 1 || c.Partitions > 1024:
		return fmt.Errorf("sequencer: Partitions %d: want 1..1024", c.Partitions)
	case c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5:
		return fmt.Errorf("sequencer: Replicas %d: want 1, 3 or 5", c.Replicas)
	case c.MaxAge < time.Minute:
		return fmt.Errorf("sequencer: MaxAge %s: want at least 1m", c.MaxAge)
	case c.MaxMsgsPerGame < -1:
		return fmt.Errorf("sequencer: MaxMsgsPerGame %d: want -1 or positive", c.MaxMsgsPerGame)
	case c.MaxBatch < 1 || c.MaxBatch > 1000:
		return fmt.Errorf("sequencer: MaxBatch %d: want 1..1000", c.MaxBatch)
	case c.BatchMin < 1 || c.BatchMin > c.MaxBatch:
		return fmt.Errorf("sequencer: BatchMin %d: want 1..MaxBatch (%d)", c.BatchMin, c.MaxBatch)
	case c.MaxInflightBatches < 1 || c.MaxInflightBatches > 50:
		return fmt.Errorf("sequencer: MaxInflightBatches %d: want 1..50", c.MaxInflightBatches)
	case c.MaxMessageBytes < 256 || c.MaxMessageBytes > 1<<20-4096:
		return fmt.Errorf("sequencer: MaxMessageBytes %d: want 256..%d", c.MaxMessageBytes, 1<<20-4096)
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("sequencer: LeaseTTL %s: want at least 1s", c.LeaseTTL)
	case c.DuplicateWindow < time.Second:
		return fmt.Errorf("sequencer: DuplicateWindow %s: want at least 1s", c.DuplicateWindow)
	}
	if err := validateToken(c.Namespace); err != nil {
		return fmt.Errorf("sequencer: Namespace: %w", err)
	}
	return nil
}

func validateToken(s string) error {
	if err := wire.ValidateGame(s); err != nil {
		return errors.New("want 1-64 of [A-Za-z0-9_-]")
	}
	return nil
}

func (c Config) names() wire.Names { return wire.Names{NS: c.Namespace} }
