package sequencer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Provision creates or updates the partition streams and KV buckets. It is
// idempotent and safe to run from every process at once.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	names := cfg.names()
	for p := 0; p < cfg.Partitions; p++ {
		sc := streamConfig(cfg, p)
		if err := retry(ctx, func() error {
			_, err := js.CreateOrUpdateStream(ctx, sc)
			return err
		}); err != nil {
			return fmt.Errorf("sequencer: provision stream %s: %w", sc.Name, err)
		}
	}
	for _, kc := range []jetstream.KeyValueConfig{
		{Bucket: names.LeaseBucket(), TTL: cfg.LeaseTTL, History: 1, Replicas: cfg.Replicas, Storage: jetstream.FileStorage,
			Description: "gamerelay partition leases and sequencer heartbeats"},
		{Bucket: names.HeadsBucket(), History: 1, Replicas: cfg.Replicas, Storage: jetstream.FileStorage,
			Description: "gamerelay per-game last msg_id checkpoints"},
		{Bucket: names.GamesBucket(), History: 1, Replicas: cfg.Replicas, Storage: jetstream.FileStorage,
			Description: "gamerelay games created with tokens (closed to anonymous players)"},
	} {
		if err := retry(ctx, func() error {
			_, err := js.CreateOrUpdateKeyValue(ctx, kc)
			return err
		}); err != nil {
			return fmt.Errorf("sequencer: provision bucket %s: %w", kc.Bucket, err)
		}
	}
	return nil
}

func streamConfig(cfg Config, p int) jetstream.StreamConfig {
	names := cfg.names()
	return jetstream.StreamConfig{
		Name:               names.Stream(p),
		Description:        fmt.Sprintf("gamerelay game log, partition %d of %d", p, cfg.Partitions),
		Subjects:           []string{names.LogFilter(p)},
		Storage:            jetstream.FileStorage,
		Replicas:           cfg.Replicas,
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardOld,
		MaxAge:             cfg.MaxAge,
		MaxMsgsPerSubject:  cfg.MaxMsgsPerGame,
		MaxMsgSize:         int32(cfg.MaxMessageBytes + 1024),
		Duplicates:         cfg.DuplicateWindow,
		AllowDirect:        true,
		AllowAtomicPublish: true,
		DenyDelete:         true,
		DenyPurge:          false,
	}
}

// retry runs f until it succeeds, ctx ends, or 10 attempts failed: several
// processes provisioning at once can briefly collide.
func retry(ctx context.Context, f func() error) error {
	var err error
	for i := 0; i < 10; i++ {
		if err = f(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(time.Duration(50*(i+1)) * time.Millisecond):
		}
	}
	return err
}
