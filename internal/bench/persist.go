package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// persistStream holds what the persisting reference relay stores.
const persistStream = "BENCH_REFERENCE"

// NewJetStreamPersist returns a Reference.Persist that publishes each frame
// to a JetStream stream (created here: R1, file storage, the store's
// defaults, as `gamerelay dev` uses) on nc and waits for the ack, so a
// frame reaches clients only once it is stored.
func NewJetStreamPersist(ctx context.Context, nc *nats.Conn) (func(room string, frame []byte) error, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     persistStream,
		Subjects: []string{"bench.reference.>"},
		Storage:  jetstream.FileStorage,
		Replicas: 1,
		MaxAge:   time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: create stream %s: %w", persistStream, err)
	}
	safe := strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_")
	return func(room string, frame []byte) error {
		resp, err := nc.Request("bench.reference."+safe.Replace(room), frame, 5*time.Second)
		if err != nil {
			return err
		}
		// A publish ack is {"stream":..,"seq":N}; an error carries "error".
		if !bytes.Contains(resp.Data, []byte(`"seq"`)) || bytes.Contains(resp.Data, []byte(`"error"`)) {
			return errors.New("bench: publish refused: " + string(resp.Data))
		}
		return nil
	}, nil
}
