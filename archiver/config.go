package archiver

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/gamerelay/gamerelay/internal/wire"
)

// Config configures an Archiver. The zero value is the documented default
// for every field.
type Config struct {
	// Namespace prefixes subjects and stream names; it must match the
	// sequencers'. Default "gr".
	Namespace string
	// Partitions is the number of partition streams; it must match the
	// sequencers'. Default 1.
	Partitions int
	// Database is the MongoDB database holding the messages and games
	// collections. Default "gamerelay".
	Database string
	// BatchSize is the most messages fetched and written at once. Default
	// 500; at most 10,000.
	BatchSize int
	// BatchWait is the longest a fetch waits for BatchSize messages before
	// writing what it has. Default 500ms.
	BatchWait time.Duration
	// Durable names the JetStream pull consumer on every partition stream.
	// All archiver replicas of one installation share it, so JetStream
	// splits the work between them. Default "archiver".
	Durable string
	// AckWait is how long JetStream waits for the ack of a delivered message
	// before delivering it again (to any replica). While a batch is being
	// written or retried, the archiver tells JetStream every AckWait/3 that
	// it is still working on it. Default 30s.
	AckWait time.Duration
	// WriteTimeout bounds each MongoDB write of an attempt at a batch (the
	// insert, the conflicts, the games update) and the attempt's look-up
	// of duplicates. After a failed attempt the next one covers at most
	// half as many messages; after a look-up that timed out, the same
	// messages with twice as long for the look-up, up to 16 times
	// WriteTimeout. Default 1m.
	WriteTimeout time.Duration
	// MaxBackoff caps the exponential backoff between failed write attempts
	// (and failed consumer set-ups). Default 10s.
	MaxBackoff time.Duration
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
	if c.Database == "" {
		c.Database = "gamerelay"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.BatchWait == 0 {
		c.BatchWait = 500 * time.Millisecond
	}
	if c.Durable == "" {
		c.Durable = "archiver"
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = time.Minute
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Second
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
	case wire.ValidateGame(c.Namespace) != nil:
		return fmt.Errorf("archiver: Namespace %q: want 1-64 of [A-Za-z0-9_-]", c.Namespace)
	case c.Partitions < 1 || c.Partitions > 1024:
		return fmt.Errorf("archiver: Partitions %d: want 1..1024", c.Partitions)
	case !validDatabase(c.Database):
		return fmt.Errorf("archiver: Database %q: want 1-63 characters without /\\. \"$*<>:|? or spaces", c.Database)
	case c.BatchSize < 1 || c.BatchSize > 10_000:
		return fmt.Errorf("archiver: BatchSize %d: want 1..10000", c.BatchSize)
	case c.BatchWait < time.Millisecond || c.BatchWait > time.Minute:
		return fmt.Errorf("archiver: BatchWait %s: want 1ms..1m", c.BatchWait)
	case wire.ValidateGame(c.Durable) != nil:
		return fmt.Errorf("archiver: Durable %q: want 1-64 of [A-Za-z0-9_-]", c.Durable)
	case c.AckWait < time.Second:
		return fmt.Errorf("archiver: AckWait %s: want at least 1s", c.AckWait)
	case c.WriteTimeout < time.Second:
		return fmt.Errorf("archiver: WriteTimeout %s: want at least 1s", c.WriteTimeout)
	case c.MaxBackoff < 10*time.Millisecond:
		return fmt.Errorf("archiver: MaxBackoff %s: want at least 10ms", c.MaxBackoff)
	}
	return nil
}

// validDatabase applies MongoDB's database name rules.
func validDatabase(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?', 0:
			return false
		}
	}
	return true
}

func (c Config) names() wire.Names { return wire.Names{NS: c.Namespace} }
