package servicetest

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// FreePort returns a free port on 127.0.0.1 in 10000–32000 (never the
// ephemeral range) for a program the test starts itself. Another process
// may take it before the program binds; the port is never handed out twice
// by this test process.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	return p
}

// Process is a long-running program a test starts itself, such as a
// Trustpool daemon it has built.
type Process struct {
	d *daemon
	// killed: Kill ended it on purpose.
	killed bool
}

// StartProcess starts argv with env added to the test's environment. Its
// output goes to a log file in a temporary directory. Like the services
// here, it is a direct child that gets SIGTERM if the test process dies.
// When the test ends it gets SIGTERM; the test fails if it then does not
// exit with status 0 within 30 seconds (it is killed) or had already exited.
func StartProcess(t testing.TB, name string, env []string, argv ...string) *Process {
	t.Helper()
	dir := t.TempDir()
	d, err := startDaemon(name, filepath.Join(dir, name+".log"), dir, env, argv...)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	p := &Process{d: d}
	t.Cleanup(func() {
		if p.killed {
			return
		}
		if p.Exited() {
			t.Errorf("%s exited before the test ended: %v; log:\n%s", name, exitErr(d.err), p.Log())
			return
		}
		if err := d.stop(30 * time.Second); err != nil {
			t.Errorf("%v; log:\n%s", err, p.Log())
			return
		}
		var ee *exec.ExitError
		if d.err != nil && errors.As(d.err, &ee) {
			t.Errorf("%s on SIGTERM: %v; log:\n%s", name, d.err, p.Log())
		}
	})
	return p
}

// PID is the program's process id (for /proc measurements).
func (p *Process) PID() int { return p.d.cmd.Process.Pid }

// Kill ends the program with SIGKILL (a crash, kill -9) and waits for it;
// the test then expects no clean exit.
func (p *Process) Kill(t testing.TB) {
	t.Helper()
	p.killed = true
	if err := p.d.cmd.Process.Kill(); err != nil {
		t.Fatalf("servicetest: kill %s: %v", p.d.name, err)
	}
	<-p.d.done
}

// Exited reports whether the program has exited.
func (p *Process) Exited() bool { return p.d.exited() }

// Log returns the end of the program's output (the last 3000 bytes).
func (p *Process) Log() string { return logTail(p.d.logPath) }

// String names the program and its log file.
func (p *Process) String() string { return fmt.Sprintf("%s (log %s)", p.d.name, p.d.logPath) }

// SharedDir returns a fresh directory that outlives the calling test and
// is removed by [Main] when the package's tests end: for files several
// tests share, such as a daemon built once per test process.
func SharedDir(t testing.TB, name string) string {
	t.Helper()
	d, err := sharedDir(name)
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	return d
}
