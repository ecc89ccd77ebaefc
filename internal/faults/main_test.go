//go:build faults

package faults

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/gamerelay/gamerelay/internal/embedmongo"
)

// The test binary doubles as the MongoDB-wire server, so the suite can
// stop and kill it like any other process and FerretDB stays out of the
// gamerelay binary: with FAULTS_CHILD=mongo, TestMain runs only the
// embedded FerretDB on FAULTS_MONGO_ADDR with its data in FAULTS_MONGO_DIR.
const (
	childEnvRole      = "FAULTS_CHILD"
	childEnvMongoAddr = "FAULTS_MONGO_ADDR"
	childEnvMongoDir  = "FAULTS_MONGO_DIR"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnvRole) == "mongo" {
		os.Exit(runMongo())
	}
	os.Exit(m.Run())
}

// runMongo serves MongoDB's wire protocol until SIGTERM or SIGINT.
func runMongo() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	s, err := embedmongo.Start(embedmongo.Options{
		Dir:    os.Getenv(childEnvMongoDir),
		Listen: os.Getenv(childEnvMongoAddr),
		Logger: log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults mongo:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "faults mongo: serving on", s.Addr())
	<-sigs
	s.Stop()
	return 0
}
