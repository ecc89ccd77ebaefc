//go:build faults

package faults

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gamerelay/gamerelay/internal/localproc"
)

// proc is one child process of the suite, restartable with the same
// command line. It is signalled only through the PID of the incarnation
// it started; an exit the suite did not cause is recorded as unexpected.
type proc struct {
	// Static after construction.
	name    string
	argv    []string // program and arguments
	env     []string // added to the filtered environment
	logPath string   // stdout and stderr of every incarnation, appended
	sp      *localproc.Spawner

	mu         sync.Mutex
	cmd        *exec.Cmd     // current or last incarnation; nil before start
	done       chan struct{} // closed when that incarnation has exited
	expectExit bool          // the suite killed or stopped it on purpose
	stopped    bool          // SIGSTOPped, not yet continued
	unexpected []string      // exits the suite did not cause, since the last take
}

// start runs a new incarnation; the previous one must have exited.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s: still running (pid %d)", p.name, p.cmd.Process.Pid)
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.argv, " "))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(childEnv(), p.env...)
	// Own process group: a terminal's ^C reaches only the test, which
	// cleans up. Pdeathsig: if the test process dies without cleaning up
	// (a -timeout panic), the kernel kills the children (see localproc.Spawner).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.sp.Start(cmd); err != nil {
		logf.Close()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.expectExit, p.stopped = cmd, done, false, false
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logf, "=== %s exit: %v\n", time.Now().Format(time.RFC3339Nano), err)
		logf.Close()
		p.mu.Lock()
		if !p.expectExit {
			p.unexpected = append(p.unexpected, fmt.Sprintf("%s (pid %d) exited by itself: %v", p.name, cmd.Process.Pid, err))
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// childEnv is the test's environment without GAMERELAY_* variables, so
// that only the command lines configure the processes.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GAMERELAY_") {
			env = append(env, kv)
		}
	}
	return env
}

// running reports whether the current incarnation has not exited.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the current incarnation, by its PID. expectExit
// marks the exit that follows as the suite's doing.
func (p *proc) signal(sig syscall.Signal, expectExit bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s: not started", p.name)
	}
	select {
	case <-p.done:
		return fmt.Errorf("%s: not running", p.name)
	default:
	}
	if expectExit {
		p.expectExit = true
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	return p.cmd.Process.Signal(sig)
}

// wait waits up to d for the current incarnation to exit.
func (p *proc) wait(d time.Duration) error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("%s: still running %v after the signal", p.name, d)
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() error {
	if err := p.signal(syscall.SIGKILL, true); err != nil {
		return err
	}
	return p.wait(10 * time.Second)
}

// term sends SIGTERM and waits up to d for the exit; after that, SIGKILL.
func (p *proc) term(d time.Duration) error {
	if err := p.signal(syscall.SIGTERM, true); err != nil {
		return err
	}
	if err := p.wait(d); err != nil {
		_ = p.kill()
		return err
	}
	return nil
}

// takeUnexpected returns and forgets the unexpected exits so far.
func (p *proc) takeUnexpected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.unexpected
	p.unexpected = nil
	return u
}

// cleanup kills the current incarnation if it still runs (a stopped
// process dies of SIGKILL too).
func (p *proc) cleanup() {
	if p.running() {
		_ = p.kill()
	}
}
