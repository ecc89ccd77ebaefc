// Command worker schedules delayed events into a gamerelay game: the
// "build completes in N seconds" pattern. It takes jobs such as
// {"id":"build-42","type":"construction_complete","after":"30s"}, keeps
// its schedule and what it has sent in a state file, and publishes each
// event once it is due through the HTTP API, with the job id as the
// Idempotency-Key. Killed at any point and restarted, it sends every due
// event exactly once (see README.md for the one assumption). It exits when
// every scheduled event is sent.
//
//	go run ./examples/worker --api http://localhost:8080 --key KEY --game G \
//	    --state worker.json --jobs jobs.json --event build-43=construction_complete@45s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gamerelay/gamerelay/backend"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// eventFlags collects repeated --event id=type@after flags.
type eventFlags []Job

func (e *eventFlags) String() string { return fmt.Sprint(len(*e), " events") }

func (e *eventFlags) Set(s string) error {
	id, rest, ok1 := strings.Cut(s, "=")
	typ, after, ok2 := strings.Cut(rest, "@")
	if !ok1 || !ok2 {
		return errors.New("want id=type@after, such as build-42=construction_complete@30s")
	}
	*e = append(*e, Job{ID: id, Type: typ, After: after})
	return nil
}

func run(args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	api := fs.String("api", "http://localhost:8080", "gamerelay base URL (the gateway's public listener)")
	key := fs.String("key", os.Getenv("GAMERELAY_API_KEY"), "API key (default $GAMERELAY_API_KEY)")
	game := fs.String("game", "", "game to publish into (required)")
	statePath := fs.String("state", "worker.json", "state file: the schedule and what was sent")
	jobsPath := fs.String("jobs", "", "jobs file: a JSON array or JSON lines of {\"id\",\"type\",\"after\",\"data\"}")
	var events eventFlags
	fs.Var(&events, "event", "a job as id=type@after (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *game == "" || *key == "" {
		return errors.New("--game and --key are required")
	}
	jobs := []Job(events)
	if *jobsPath != "" {
		js, err := readJobs(*jobsPath)
		if err != nil {
			return err
		}
		jobs = append(js, jobs...)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := &Worker{
		Client: backend.New(*api, *key),
		Game:   *game,
		Path:   *statePath,
		Log:    slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	if n, err := strconv.Atoi(os.Getenv("GAMERELAY_WORKER_CRASH_AFTER_SEND")); err == nil {
		w.crashAfterSend = n
	}
	return w.Run(ctx, jobs, time.Now())
}

// Job is a command: send an event of Type into the game After from when
// the worker first sees the job. ID names the event; a job whose ID is
// already scheduled is ignored, so the same jobs can be given again.
type Job struct {
	ID    string          `json:"id"`
	Type  string          `json:"type"`
	After string          `json:"after"`          // Go duration: "30s", "5m"
	Data  json.RawMessage `json:"data,omitempty"` // optional object: more fields of the event
}

// Event is a scheduled job in the state file.
type Event struct {
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	Data   json.RawMessage `json:"data,omitempty"`
	Due    time.Time       `json:"due"`
	Sent   bool            `json:"sent,omitempty"`
	MsgID  uint64          `json:"msg_id,omitempty"`
	Failed string          `json:"failed,omitempty"` // refused by the API for good
}

// State is what the worker persists.
type State struct {
	Game   string   `json:"game"`
	Events []*Event `json:"events"`
}

func readJobs(path string) ([]Job, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var jobs []Job
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if t := strings.TrimSpace(string(b)); strings.HasPrefix(t, "[") {
		if err := dec.Decode(&jobs); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return jobs, nil
	}
	for dec.More() {
		var j Job
		if err := dec.Decode(&j); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// validate checks a job before it is scheduled.
func (j Job) validate() (time.Duration, error) {
	after, err := time.ParseDuration(j.After)
	switch {
	case j.ID == "" || len(j.ID) > 200:
		return 0, fmt.Errorf("job %q: id: want 1-200 bytes", j.ID)
	case j.Type == "":
		return 0, fmt.Errorf("job %s: type is required", j.ID)
	case err != nil || after < 0:
		return 0, fmt.Errorf("job %s: after %q: want a duration such as 30s", j.ID, j.After)
	}
	if len(j.Data) > 0 {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(j.Data, &fields); err != nil {
			return 0, fmt.Errorf("job %s: data must be a JSON object", j.ID)
		}
		if _, ok := fields["type"]; ok {
			return 0, fmt.Errorf("job %s: data must not hold \"type\"", j.ID)
		}
		if _, ok := fields["job"]; ok {
			return 0, fmt.Errorf("job %s: data must not hold \"job\"", j.ID)
		}
	}
	return after, nil
}

// Worker sends scheduled events. It runs on one goroutine.
type Worker struct {
	Client *backend.Client
	Game   string
	Path   string
	Log    *slog.Logger

	crashAfterSend int // test hook: exit abruptly after this many sends, before recording the last one
	sends          int
}

// Run schedules jobs (due from now), then sends every event as it falls
// due, recording each in the state file, until all are sent or ctx ends.
func (w *Worker) Run(ctx context.Context, jobs []Job, now time.Time) error {
	// A crash during Save may leave its temporary file behind.
	if stale, _ := filepath.Glob(w.Path + ".tmp*"); len(stale) > 0 {
		for _, f := range stale {
			_ = os.Remove(f)
		}
	}
	st, err := Load(w.Path)
	if err != nil {
		return err
	}
	switch {
	case st.Game == "":
		st.Game = w.Game
	case st.Game != w.Game:
		return fmt.Errorf("%s holds the schedule of game %s, not %s", w.Path, st.Game, w.Game)
	}
	added := 0
	for _, j := range jobs {
		after, err := j.validate()
		if err != nil {
			return err
		}
		if slices.ContainsFunc(st.Events, func(e *Event) bool { return e.ID == j.ID }) {
			continue // scheduled by an earlier run: its due time stands
		}
		st.Events = append(st.Events, &Event{ID: j.ID, Type: j.Type, Data: j.Data, Due: now.Add(after)})
		added++
	}
	if added > 0 {
		if err := Save(w.Path, st); err != nil {
			return err
		}
		w.Log.Info("scheduled", "events", added)
	}
	for {
		e := next(st)
		if e == nil {
			w.Log.Info("every event is sent")
			return nil
		}
		if d := time.Until(e.Due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		id, err := w.Client.Publish(ctx, w.Game, e.body(), e.ID)
		var apiErr *backend.Error
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500 && apiErr.Status != http.StatusTooManyRequests:
			// Refused for good (say unknown_game): record it, go on.
			w.Log.Error("event refused", "event", e.ID, "err", err)
			e.Failed = apiErr.Code + ": " + apiErr.Message
		case err != nil:
			w.Log.Warn("send failed; retrying", "event", e.ID, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		default:
			w.sends++
			if w.sends == w.crashAfterSend {
				os.Exit(3) // the crash between sending and recording
			}
			e.Sent, e.MsgID = true, id
			w.Log.Info("sent", "event", e.ID, "type", e.Type, "msg_id", id)
		}
		if err := Save(w.Path, st); err != nil {
			return err
		}
	}
}

// next returns the earliest unsent event, or nil.
func next(st *State) *Event {
	var best *Event
	for _, e := range st.Events {
		if e.Sent || e.Failed != "" {
			continue
		}
		if best == nil || e.Due.Before(best.Due) || e.Due.Equal(best.Due) && e.ID < best.ID {
			best = e
		}
	}
	return best
}

// body is the game message of an event: its data fields plus "type" and
// "job" (the event id, so clients can tell events apart).
func (e *Event) body() map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	if len(e.Data) > 0 {
		_ = json.Unmarshal(e.Data, &m)
	}
	m["type"], _ = json.Marshal(e.Type)
	m["job"], _ = json.Marshal(e.ID)
	return m
}

// Load reads the state file; a missing file is an empty state.
func Load(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &st, nil
}

// Save replaces the state file atomically: it writes a temporary file in
// the same directory, syncs it, renames it over the old one and syncs the
// directory. A crash leaves the old state or the new one, never a mix.
func Save(path string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
