package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gamerelay/gamerelay/backend"
	"github.com/gamerelay/gamerelay/gateway/httpapi/httpapitest"
	"github.com/gamerelay/gamerelay/internal/testutil"
)

// TestStateFile: Save replaces the file atomically and Load reads it back;
// a missing file is an empty state.
func TestStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	st, err := Load(path)
	if err != nil || st.Game != "" || len(st.Events) != 0 {
		t.Fatalf("missing file: %+v, %v", st, err)
	}
	due := time.Now().Add(time.Minute).Round(0)
	st = &State{Game: "g", Events: []*Event{{ID: "a", Type: "x", Due: due, Data: json.RawMessage(`{"n":1}`)}, {ID: "b", Type: "y", Due: due, Sent: true, MsgID: 7}}}
	if err := Save(path, st); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var data bytes.Buffer
	_ = json.Compact(&data, got.Events[0].Data)
	if got.Game != "g" || len(got.Events) != 2 || !got.Events[0].Due.Equal(due) || got.Events[1].MsgID != 7 || data.String() != `{"n":1}` {
		t.Fatalf("loaded %+v", got)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d files, want only the state", len(entries))
	}
}

// TestJobs: jobs files (array or JSON lines) and --event flags; invalid jobs
// are refused before anything is scheduled.
func TestJobs(t *testing.T) {
	dir := t.TempDir()
	lines := filepath.Join(dir, "jobs.jsonl")
	_ = os.WriteFile(lines, []byte(`{"id":"a","type":"x","after":"1s"}
{"id":"b","type":"y","after":"2s","data":{"hp":3}}
`), 0o600)
	array := filepath.Join(dir, "jobs.json")
	_ = os.WriteFile(array, []byte(`[{"id":"a","type":"x","after":"1s"},{"id":"b","type":"y","after":"2s","data":{"hp":3}}]`), 0o600)
	for _, p := range []string{lines, array} {
		jobs, err := readJobs(p)
		if err != nil || len(jobs) != 2 || jobs[1].ID != "b" || string(jobs[1].Data) != `{"hp":3}` {
			t.Fatalf("%s: %+v, %v", p, jobs, err)
		}
	}
	var ev eventFlags
	if err := ev.Set("build-1=construction_complete@30s"); err != nil || ev[0].ID != "build-1" || ev[0].Type != "construction_complete" || ev[0].After != "30s" {
		t.Fatalf("--event: %+v, %v", ev, err)
	}
	if err := ev.Set("nonsense"); err == nil {
		t.Fatal("--event nonsense accepted")
	}
	for _, j := range []Job{
		{ID: "", Type: "x", After: "1s"},
		{ID: "a", Type: "", After: "1s"},
		{ID: "a", Type: "x", After: "soon"},
		{ID: "a", Type: "x", After: "-1s"},
		{ID: "a", Type: "x", After: "1s", Data: json.RawMessage(`[1]`)},
		{ID: "a", Type: "x", After: "1s", Data: json.RawMessage(`{"type":"y"}`)},
	} {
		if _, err := j.validate(); err == nil {
			t.Errorf("job %+v accepted", j)
		}
	}
}

// TestWorkerSurvivesCrashes runs the worker as a real process: it first
// crashes right after sending an event and before recording it, then is
// killed with SIGKILL mid-schedule, then runs to the end. Every event is
// in the game exactly once, with the msg_id the state file records.
func TestWorkerSurvivesCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the worker")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sys := httpapitest.Start(t, httpapitest.Options{})
	c := backend.New(sys.URL(), httpapitest.Keys["studio"])
	g, err := c.CreateGame(context.Background(), backend.CreateGameRequest{ID: "base-7"})
	if err != nil {
		t.Fatal(err)
	}

	const n = 14
	var jobs bytes.Buffer
	for i := range n {
		fmt.Fprintf(&jobs, `{"id":"build-%d","type":"construction_complete","after":"%dms","data":{"slot":%d}}`+"\n", i, 200*i, i)
	}
	jobsPath := filepath.Join(dir, "jobs.jsonl")
	statePath := filepath.Join(dir, "worker.json")
	if err := os.WriteFile(jobsPath, jobs.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(env ...string) (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(bin, "--api", sys.URL(), "--game", g.ID, "--state", statePath, "--jobs", jobsPath)
		cmd.Env = append(os.Environ(), append(env, "GAMERELAY_API_KEY="+httpapitest.Keys["studio"])...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil { // not waited for: the test failed while it ran
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Logf("output of the unfinished run:\n%s", &out)
			}
		})
		return cmd, &out
	}
	sent := func() int {
		st, err := Load(statePath) // never torn: Save renames
		if err != nil {
			t.Fatalf("state file: %v", err)
		}
		k := 0
		for _, e := range st.Events {
			if e.Sent {
				k++
			}
		}
		return k
	}

	// Run 1 crashes after its third send, before recording it.
	cmd, out := start("GAMERELAY_WORKER_CRASH_AFTER_SEND=3")
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("run 1: %v, want exit status 3\n%s", err, out)
	}
	if k := sent(); k != 2 {
		t.Fatalf("run 1 recorded %d events, want 2", k)
	}
	if h := sys.Head(g.ID); h != 4 {
		t.Fatalf("after run 1 the game head is %d, want 4 (game_created + 3 events)", h)
	}

	// Run 2 is killed with SIGKILL once it has recorded half the events.
	cmd, _ = start()
	testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("run 2 to record %d events", n/2), func() bool { return sent() >= n/2 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if k := sent(); k >= n {
		t.Fatalf("run 2 sent everything (%d) before the kill: the test proves nothing", k)
	}

	// Run 3 finishes the schedule.
	cmd, out = start()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run 3: %v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("run 3 did not finish\n%s", out)
	}

	st, err := Load(statePath)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]uint64{}
	for _, e := range st.Events {
		if !e.Sent || e.Failed != "" {
			t.Fatalf("event %+v not sent", e)
		}
		recorded[e.ID] = e.MsgID
	}
	if len(recorded) != n {
		t.Fatalf("state holds %d events, want %d", len(recorded), n)
	}
	seen := map[string]int{}
	for _, raw := range sys.Messages(g.ID) {
		var m struct {
			Type   string `json:"type"`
			Job    string `json:"job"`
			Slot   int    `json:"slot"`
			MsgID  uint64 `json:"msg_id"`
			Source string `json:"source"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		if m.Type != "construction_complete" {
			continue
		}
		seen[m.Job]++
		if recorded[m.Job] != m.MsgID || m.Source != "studio" || m.Job != fmt.Sprintf("build-%d", m.Slot) {
			t.Fatalf("stored %s; the state records msg_id %d", raw, recorded[m.Job])
		}
	}
	for i := range n {
		if id := fmt.Sprintf("build-%d", i); seen[id] != 1 {
			t.Fatalf("event %s appended %d times, want once (all: %v)", id, seen[id], seen)
		}
	}
	if leftovers, _ := filepath.Glob(statePath + ".tmp*"); len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
	if !strings.Contains(out.String(), "every event is sent") {
		t.Fatalf("run 3 output:\n%s", out)
	}
}
