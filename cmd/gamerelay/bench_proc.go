package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gamerelay/gamerelay/internal/localproc"
)

// suiteProc is one server process of a benchmark suite. It is signalled
// only through the PID of the incarnation it started.
type suiteProc struct {
	// Static after construction.
	name string
	argv func() []string // program and arguments of the next start
	env  []string        // added to the environment (GAMERELAY_* removed)
	log  string          // stdout and stderr of every incarnation, appended; "": discarded and the suite's stderr

	mu   sync.Mutex
	cmd  *exec.Cmd     // current or last incarnation; nil before start
	done chan struct{} // closed when that incarnation has exited
}

// start runs a new incarnation; the previous one must have exited.
func (p *suiteProc) start(sp *localproc.Spawner) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("%s: still running (pid %d)", p.name, p.cmd.Process.Pid)
	}
	argv := p.argv()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(childEnv(), p.env...)
	var logf *os.File
	if p.log == "" {
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	} else {
		var err error
		if logf, err = os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(logf, "=== %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
		cmd.Stdout, cmd.Stderr = logf, logf
	}
	// Own process group: a terminal's ^C reaches only the suite, which
	// stops its servers. Pdeathsig: if the suite dies without stopping
	// them, the kernel kills them (see localproc.Spawner).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := sp.Start(cmd); err != nil {
		if logf != nil {
			logf.Close()
		}
		return fmt.Errorf("%s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		if logf != nil {
			fmt.Fprintf(logf, "=== %s exit: %v\n", time.Now().Format(time.RFC3339Nano), err)
			logf.Close()
		}
		close(done)
	}()
	return nil
}

// pid is the current incarnation's process id, 0 if none runs.
func (p *suiteProc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// running reports whether the current incarnation has not exited.
func (p *suiteProc) running() bool { return p.pid() != 0 }

// stop sends SIGTERM and waits for the exit; after 15 s, SIGKILL.
func (p *suiteProc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || isClosed(done) {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// childEnv is the suite's environment without GAMERELAY_* variables, so
// that only the command lines configure its servers.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GAMERELAY_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitHTTP polls url until it answers with a status below 500, at most
// 30 s; it gives up early if p (when not nil) exits.
func waitHTTP(ctx context.Context, url string, p ...*suiteProc) error {
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		for _, p := range p {
			if !p.running() {
				return fmt.Errorf("%s exited while waiting for %s", p.name, url)
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not ready: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
