package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/bench"
	"github.com/gamerelay/gamerelay/internal/embednats"
)

// The reference relay stores into an external cluster's R3 stream, with
// gamerelay's checks on every publish.
func TestReferenceOnExternalCluster(t *testing.T) {
	cl := embednats.NewCluster(t, 3)
	listen := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runBench(ctx, []string{"--mode", "reference", "--listen", listen, "--persist-nats", cl.URLs(),
			"--persist-replicas", "3", "--persist-checked", "--log-level", "error"}, io.Discard, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reference: %v", err)
		}
	}()
	if err := waitHTTP(ctx, "http://"+listen+"/"); err != nil {
		t.Fatal(err)
	}
	r, err := bench.Run(ctx, bench.Config{URL: "ws://" + listen + "/ws", Mode: "pingpong", Games: 2, Players: 1, Duration: 300 * time.Millisecond})
	if err != nil || !r.OK() || r.Sends == 0 {
		t.Fatalf("pingpong: %v %s", err, r)
	}
	nc := embednats.Connect(t, cl.URLs())
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, bench.PersistStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 || info.State.Msgs < r.Sends {
		t.Fatalf("stream: %d replicas, cluster %+v, %d messages for %d sent", info.Config.Replicas, info.Cluster, info.State.Msgs, r.Sends)
	}
	m, err := st.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(nats.ExpectedLastSubjSeqHdr) == "" || m.Header.Get(nats.MsgIdHdr) == "" {
		t.Fatalf("last stored message lacks the checks: %v", m.Header)
	}
}
