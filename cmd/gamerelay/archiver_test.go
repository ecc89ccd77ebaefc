package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gamerelay/gamerelay/internal/admin"
	"github.com/gamerelay/gamerelay/internal/embedmongo"
	"github.com/gamerelay/gamerelay/internal/embednats"
	"github.com/gamerelay/gamerelay/internal/testutil"
	"github.com/gamerelay/gamerelay/sequencer"
)

// appendFrames provisions the log on the NATS server at url, appends the
// bodies to game and returns the stored frames in msg_id order.
func appendFrames(t *testing.T, url string, game string, bodies []string) [][]byte {
	t.Helper()
	ctx := context.Background()
	nc := embednats.Connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := sequencer.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := sequencer.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	app, err := sequencer.NewAppender(ctx, nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	for _, b := range bodies {
		if _, err := app.Append(ctx, game, []byte(b), ""); err != nil {
			t.Fatalf("append %s: %v", b, err)
		}
	}
	var frames [][]byte
	r := sequencer.NewReader(nc, cfg)
	head, _, err := r.Head(ctx, game)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Range(ctx, game, 0, head.ID, nil, func(m sequencer.Stored) error {
		frames = append(frames, m.Data)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return frames
}

// exportWhenComplete runs `gamerelay export` until it exports want
// messages (the archiver may still be catching up) and returns its output.
func exportWhenComplete(t *testing.T, want int, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	var code int
	complete := false
	defer func() {
		if !complete {
			t.Logf("last export: exit %d, stderr %s", code, errb.String())
		}
	}()
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("an export of %d messages", want), func() bool {
		out.Reset()
		errb.Reset()
		code = run(append([]string{"export"}, args...), &out, &errb)
		return code == 0 && strings.Contains(errb.String(), fmt.Sprintf(": %d messages", want))
	})
	complete = true
	return out.String()
}

var testBodies = []string{
	`{"type":"chat","text":"hello, \"world\"\nsecond line","client_id":"c1","user":"ann"}`,
	`{"type":"move","x":1,"client_id":"c2"}`,
	"{\"type\":\"pretty\",\n \"client_id\": \"\"}",
	`{"type":"x","$where":1,"a.b":{"$c":[1,2.5,"s",null,true]}}`,
	`{"type":"game_ended","client_id":""}`,
}

// TestArchiverAndExportCommands runs `gamerelay archiver` against embedded
// NATS and FerretDB, then `gamerelay export` in both formats, and checks
// the exit codes of bad invocations.
func TestArchiverAndExportCommands(t *testing.T) {
	ns := embednats.Server(t)
	ms := embedmongo.Run(t)
	frames := appendFrames(t, ns.ClientURL(), "e2e", testBodies)

	adm := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runArchiver(ctx, []string{"--nats", ns.ClientURL(), "--mongo", ms.URI(), "--admin", adm,
			"--batch-wait", "20ms", "--log-level", "warn"}, io.Discard, io.Discard)
	}()
	waitReady(t, "http://"+adm+"/readyz", done)

	// jsonl: the frames, one per line, exactly (the pretty one compacted).
	got := exportWhenComplete(t, len(frames), "--mongo", ms.URI(), "--game", "e2e")
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != len(frames) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(frames), got)
	}
	for i, l := range lines {
		want := string(frames[i])
		if strings.Contains(want, "\n") {
			var c bytes.Buffer
			if err := json.Compact(&c, frames[i]); err != nil {
				t.Fatal(err)
			}
			want = c.String()
		}
		if l != want {
			t.Fatalf("line %d:\n got %s\nwant %s", i+1, l, want)
		}
	}

	// csv into a file, the URI read from a file.
	out := filepath.Join(t.TempDir(), "e2e.csv")
	uriFile := filepath.Join(t.TempDir(), "mongo-uri")
	if err := os.WriteFile(uriFile, []byte(ms.URI()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	exportWhenComplete(t, len(frames), "--mongo-uri-file", uriFile, "--db", "gamerelay", "--game", "e2e", "--format", "csv", "--out", out)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(frames)+1 || strings.Join(rows[0], ",") != "msg_id,ts,client_id,user,type,body" {
		t.Fatalf("csv rows %q", rows)
	}
	for i, row := range rows[1:] {
		ts, err := time.Parse(time.RFC3339Nano, row[1])
		if err != nil || !strings.HasSuffix(row[1], "Z") || len(row[1]) != len("2006-01-02T15:04:05.000Z") {
			t.Fatalf("row %d ts %q: %v", i+1, row[1], err)
		}
		if row[0] != strconv.Itoa(i+1) || row[5] != string(frames[i]) ||
			!bytes.Contains(frames[i], []byte(`"ts":`+strconv.FormatInt(ts.UnixMilli(), 10))) {
			t.Fatalf("row %d = %q, frame %s", i+1, row, frames[i])
		}
	}
	if rows[1][2] != "c1" || rows[1][3] != "ann" || rows[1][4] != "chat" || rows[2][3] != "" || rows[5][4] != "game_ended" {
		t.Fatalf("csv columns: %q", rows[1:])
	}

	resp, err := http.Get("http://" + adm + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"gamerelay_archiver_archived_total 5", "gamerelay_archiver_batch_size_count", "gamerelay_archiver_write_errors_total 0"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("metrics lack %q", m)
		}
	}

	for name, tc := range map[string]struct {
		args []string
		code int
		msg  string
	}{
		"unknown game":     {[]string{"export", "--mongo", ms.URI(), "--game", "nope"}, 1, "game not in the archive: nope"},
		"no game":          {[]string{"export", "--mongo", ms.URI()}, 2, "--game"},
		"bad game":         {[]string{"export", "--mongo", ms.URI(), "--game", "a.b"}, 2, "--game"},
		"bad format":       {[]string{"export", "--mongo", ms.URI(), "--game", "e2e", "--format", "xml"}, 2, "--format"},
		"no mongo":         {[]string{"export", "--game", "e2e"}, 2, "--mongo"},
		"bad mongo uri":    {[]string{"export", "--mongo", "postgres://x", "--game", "e2e"}, 2, "--mongo"},
		"archiver help":    {[]string{"archiver", "--help"}, 0, "$GAMERELAY_MONGO"},
		"export help":      {[]string{"export", "--help"}, 0, "$GAMERELAY_FORMAT"},
		"archiver no uri":  {[]string{"archiver"}, 2, "--mongo"},
		"archiver bad cfg": {[]string{"archiver", "--mongo", ms.URI(), "--batch-size", "-1"}, 2, "BatchSize"},
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run(tc.args, &out, &out); code != tc.code || !strings.Contains(out.String(), tc.msg) {
				t.Fatalf("exit %d, want %d; output lacks %q?\n%s", code, tc.code, tc.msg, out.String())
			}
		})
	}
	// A failed export leaves no file behind.
	missing := filepath.Join(t.TempDir(), "nope.jsonl")
	if code := run([]string{"export", "--mongo", ms.URI(), "--game", "nope", "--out", missing}, io.Discard, io.Discard); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if entries, _ := os.ReadDir(filepath.Dir(missing)); len(entries) != 0 {
		t.Fatalf("failed export left %v", entries)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("archiver exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("archiver did not stop")
	}
}

// TestDevArchive runs what `gamerelay dev` runs for the archive: FerretDB
// on a fixed address with its files under --data, the archiver into it,
// and a clean stop that frees the address.
func TestDevArchive(t *testing.T) {
	ns := embednats.Server(t)
	frames := appendFrames(t, ns.ClientURL(), "devgame", testBodies[:2])
	data, addr := t.TempDir(), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	runArch, uri, err := devArchive(ctx, data, addr, ns.ClientURL(), sequencer.Config{}, admin.NewRegistry(), log)
	if err != nil {
		t.Fatal(err)
	}
	if uri != "mongodb://"+addr+"/" {
		t.Fatalf("URI %s, want mongodb://%s/", uri, addr)
	}
	done := make(chan error, 1)
	go func() { done <- runArch(ctx) }()
	got := exportWhenComplete(t, len(frames), "--mongo", uri, "--game", "devgame")
	if want := string(frames[0]) + "\n" + string(frames[1]) + "\n"; got != want {
		t.Fatalf("export:\n%s\nwant\n%s", got, want)
	}
	if _, err := os.Stat(filepath.Join(data, "ferretdb", "gamerelay.sqlite")); err != nil {
		t.Fatalf("archive not under --data: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev archive did not stop")
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s still taken after stop: %v", addr, err)
	}
	l.Close()
	// The address is in use: devArchive fails cleanly.
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, _, err := devArchive(context.Background(), data, addr, ns.ClientURL(), sequencer.Config{}, admin.NewRegistry(), log); err == nil || !strings.Contains(err.Error(), "--mongo-listen") {
		t.Fatalf("devArchive on a used address: %v", err)
	}
}
