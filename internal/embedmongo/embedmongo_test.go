package embedmongo

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/gamerelay/gamerelay/internal/testutil"
)

// TestRestartKeepsData stops a server and starts another on the same
// directory and address: the data is still there and a client that was
// connected before works again.
func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	client, err := mongo.Connect(options.Client().ApplyURI(s.URI()).SetServerSelectionTimeout(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	coll := client.Database("t").Collection("c")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: int64(1)}}); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Stop() // idempotent
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "b"}}); err == nil {
		t.Fatal("insert succeeded while the server was stopped")
	}

	s2, err := Start(Options{Dir: dir, Listen: s.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
	if s2.URI() != s.URI() {
		t.Fatalf("restarted on %s, want %s", s2.URI(), s.URI())
	}
	var doc struct {
		N int64 `bson:"n"`
	}
	read := false
	defer func() {
		if !read {
			t.Logf("last read: %v", err)
		}
	}()
	testutil.WaitFor(t, 20*time.Second, "a read after the restart", func() bool {
		err = coll.FindOne(ctx, bson.D{{Key: "_id", Value: "a"}}).Decode(&doc)
		return err == nil
	})
	read = true
	if doc.N != 1 {
		t.Fatalf("n = %d after restart, want 1", doc.N)
	}
}

func TestStartNeedsDir(t *testing.T) {
	if _, err := Start(Options{}); err == nil {
		t.Fatal("Start without Dir succeeded")
	}
}

// TestStartOnUsedAddress fails cleanly (and, under -race, leaves nothing
// for FerretDB's resource tracking to panic about).
func TestStartOnUsedAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if s, err := Start(Options{Dir: t.TempDir(), Listen: l.Addr().String()}); err == nil {
		s.Stop()
		t.Fatal("Start on a used address succeeded")
	}
	runtime.GC() // run finalizers of anything Start left behind
	runtime.GC()
}
