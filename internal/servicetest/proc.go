package servicetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Port range for every listener started here: below the Linux ephemeral
// range (32768–60999), so an outgoing connection never takes our port, and
// above the well-known services.
const (
	minPort = 10000
	maxPort = 32000
)

var (
	portMu    sync.Mutex
	handedOut = map[int]bool{}
)

// freePort returns a random port in [minPort, maxPort] that is free on
// 127.0.0.1 right now and that this process has not handed out before.
// Another process may still take it before the daemon binds, so callers
// retry a failed start with new ports.
func freePort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for range 200 {
		p := minPort + rand.IntN(maxPort-minPort+1) //nolint:gosec // G404: a port number needs no unpredictability
		if handedOut[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = l.Close()
		handedOut[p] = true
		return p, nil
	}
	return 0, errors.New("no free port in 10000-32000 on 127.0.0.1")
}

// freePortPair returns two consecutive free ports p, p+1: the swtpm TCTI
// of tpm2-tools finds the control port at the data port plus one.
func freePortPair() (int, error) {
	for range 50 {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		if p == maxPort {
			continue
		}
		portMu.Lock()
		ok := !handedOut[p+1]
		if ok {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
			ok = err == nil
			if ok {
				_ = l.Close()
				handedOut[p+1] = true
			}
		}
		portMu.Unlock()
		if ok {
			return p, nil
		}
	}
	return 0, errors.New("no two consecutive free ports in 10000-32000 on 127.0.0.1")
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}

// spawn starts commands from one goroutine locked to its OS thread for the
// life of the process. Pdeathsig fires when the thread that forked the child
// exits, not the process; a thread that never exits makes it mean "when the
// test process dies".
var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

func startCmd(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for req := range spawnCh {
				req.errc <- req.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnCh <- spawnReq{cmd: cmd, errc: errc}
	return <-errc
}

// daemon is a long-running child process.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // Wait's result, valid after done
	// stopSig asks it to stop (SIGTERM when zero).
	stopSig syscall.Signal
}

// startDaemon starts argv with env added to the environment, output to
// logPath. The child is in its own process group and gets SIGTERM if the
// test process dies.
func startDaemon(name, logPath, dir string, env []string, argv ...string) (*daemon, error) {
	return startDaemonAs(nil, name, logPath, dir, env, argv...)
}

// startDaemonAs is startDaemon with the child running as cred (nil: as
// this process).
func startDaemonAs(cred *syscall.Credential, name, logPath, dir string, env []string, argv ...string) (*daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	// A file, not a pipe: grandchildren such as epmd keep the descriptors
	// open, and Wait would block on a pipe until they exit.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM, Credential: cred}
	if err := startCmd(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// exited reports whether the process has exited.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM (or stopSig) and waits; after timeout it kills the
// whole process group.
func (d *daemon) stop(timeout time.Duration) error {
	if d.exited() {
		return nil
	}
	sig := d.stopSig
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
		return nil
	case <-time.After(timeout):
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
	return fmt.Errorf("stop %s: no exit %s after %s; killed", d.name, timeout, sig)
}

// exitErr turns Wait's result into an error also for a clean exit.
func exitErr(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// logTail returns the end of the daemon's log for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 3000
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(bytes.TrimSpace(b))
}

// waitReady polls ready every 50 ms until it returns nil, the daemon exits
// or timeout passes.
func waitReady(d *daemon, timeout time.Duration, ready func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		last = ready(attempt)
		cancelAttempt()
		if last == nil {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("%s exited before it was ready: %w; log %s:\n%s", d.name, exitErr(d.err), d.logPath, logTail(d.logPath))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w; log %s:\n%s", d.name, timeout, last, d.logPath, logTail(d.logPath))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// run runs a short command and returns its standard output; the error
// includes standard error.
func run(ctx context.Context, env []string, argv ...string) (string, error) {
	return runIn(ctx, "", env, argv...)
}

// runIn is run in directory dir.
func runIn(ctx context.Context, dir string, env []string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", argv[0], err, bytes.TrimSpace(append(stdout.Bytes(), stderr.Bytes()...)))
	}
	return stdout.String(), nil
}

// need checks that an executable exists, naming the Debian package.
func need(path, pkg string) error {
	if _, err := exec.LookPath(path); err != nil {
		return fmt.Errorf("%s not found (Debian package %s; run make deps): %w", path, pkg, err)
	}
	return nil
}
