package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/tests/interop/peer"
)

// exchange is the control exchange every test uses (each test has its own
// vhost, so names never collide between tests).
const exchange = "interop"

// Generous bounds that only stop a hung test; nothing asserts on time.
const (
	readyTimeout = 90 * time.Second
	runTimeout   = 3 * time.Minute
)

func TestMain(m *testing.M) { servicetest.Main(m) }

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs RabbitMQ and python3-oslo.messaging (skipped with -short)")
	}
}

// syncBuffer is a goroutine-safe buffer for logs and stderr.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// dumpOnFailure logs buf at the end of a failed test.
func dumpOnFailure(t *testing.T, name string, buf *syncBuffer) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			s := buf.String()
			if len(s) > 20000 {
				s = "...\n" + s[len(s)-20000:]
			}
			t.Logf("%s:\n%s", name, s)
		}
	})
}

// newTransport returns a Transport closed at the end of the test. Its log
// is shown if the test fails.
func newTransport(t *testing.T, url string) *oslo.Transport {
	t.Helper()
	logs := &syncBuffer{}
	dumpOnFailure(t, "go transport log", logs)
	tr, err := oslo.NewTransport(oslo.Config{
		TransportURL:    url,
		ControlExchange: exchange,
		Logger:          slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("close transport: %v", err)
		}
	})
	return tr
}

// runInBackground runs fn until the test ends; cleanup cancels its context
// and waits for it.
func runInBackground(t *testing.T, name string, fn func(ctx context.Context) error) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(readyTimeout):
			t.Errorf("%s did not stop within %s of its context ending", name, readyTimeout)
		}
	})
	return done
}

// startGoServer serves the peer endpoint on target and waits until it
// consumes.
func startGoServer(t *testing.T, tr *oslo.Transport, target oslo.Target, ep oslo.Endpoint) {
	t.Helper()
	srv := oslo.NewServer(tr, target, ep)
	done := runInBackground(t, "go rpc server", srv.Run)
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("go rpc server stopped before it was ready: %v", err)
	case <-time.After(readyTimeout):
		t.Fatalf("go rpc server not ready after %s", readyTimeout)
	}
}

func peerEndpoint(version string) (oslo.Endpoint, *peer.Recorder) {
	rec := &peer.Recorder{}
	return peer.Endpoint(version, "", rec), rec
}

// pyProc is a long-running Python script (server, listener, caller).
type pyProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	exited chan struct{}
	err    error
}

func pyScript(name string) string { return filepath.Join("py", name) }

// pyEnv keeps Python from writing __pycache__ into the source tree.
func pyEnv() []string { return append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1") }

// startPy starts a Python script; cleanup stops it with SIGTERM (then
// SIGKILL) and reports a non-zero exit.
func startPy(t *testing.T, script string, args ...string) *pyProc {
	t.Helper()
	python := servicetest.Python(t)
	p := &pyProc{
		cmd:    exec.Command(python, append([]string{pyScript(script)}, args...)...),
		lines:  make(chan string, 1024),
		stderr: &syncBuffer{},
		exited: make(chan struct{}),
	}
	dumpOnFailure(t, script+" stderr", p.stderr)
	p.cmd.Env = pyEnv()
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe: %v", err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatalf("stdin pipe: %v", err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", script, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 64<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.stdin.Close()
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
				if p.err != nil {
					t.Errorf("%s did not exit cleanly on SIGTERM: %v", script, p.err)
				}
			case <-time.After(30 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.exited
				t.Errorf("%s ignored SIGTERM for 30s, killed", script)
			}
		}
	})
	return p
}

// next returns the next stdout line.
func (p *pyProc) next(t *testing.T, ctx context.Context) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.exited
			t.Fatalf("python script exited (%v) before printing the expected output", p.err)
		}
		return l
	case <-ctx.Done():
		t.Fatalf("no output from python script: %v", ctx.Err())
	}
	return ""
}

// wait waits for the script to exit by itself and checks it exited 0.
func (p *pyProc) wait(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("python script exited with %v", p.err)
		}
	case <-ctx.Done():
		t.Errorf("python script did not exit: %v", ctx.Err())
	}
}

// send writes v as one JSON line to the script's stdin.
func (p *pyProc) send(t *testing.T, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode command: %v", err)
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("write to python script: %v", err)
	}
}

// waitReady waits for the "ready" line.
func (p *pyProc) waitReady(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for {
		if l := p.next(t, ctx); l == "ready" {
			return
		}
	}
}

// nextJSON decodes the next stdout line into v.
func (p *pyProc) nextJSON(t *testing.T, ctx context.Context, v any) {
	t.Helper()
	l := p.next(t, ctx)
	if err := json.Unmarshal([]byte(l), v); err != nil {
		t.Fatalf("decode python output %q: %v", truncate(l, 300), err)
	}
}

// runPy runs a one-shot Python script and returns its stdout.
func runPy(t *testing.T, script string, args ...string) []byte {
	t.Helper()
	return runPyInput(t, nil, script, args...)
}

// runPyInput is runPy with stdin.
func runPyInput(t *testing.T, stdin []byte, script string, args ...string) []byte {
	t.Helper()
	python := servicetest.Python(t)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, append([]string{pyScript(script)}, args...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = pyEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s", script, truncate(strings.Join(args, " "), 1000), err, truncate(stderr.String(), 20000))
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d bytes)", len(s))
}

// decodeJSON decodes with json.Number, so numbers keep their literal.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

// numberEqual compares JSON numbers as Python would after a round trip:
// integers exactly (any size), floats by value; an integer never equals a
// float (Python's 2.0 must stay a float).
func numberEqual(a, b json.Number) bool {
	isInt := func(n json.Number) bool { return !strings.ContainsAny(string(n), ".eE") }
	if isInt(a) != isInt(b) {
		return false
	}
	if isInt(a) {
		x, ok1 := new(big.Int).SetString(string(a), 10)
		y, ok2 := new(big.Int).SetString(string(b), 10)
		return ok1 && ok2 && x.Cmp(y) == 0
	}
	x, err1 := strconv.ParseFloat(string(a), 64)
	y, err2 := strconv.ParseFloat(string(b), 64)
	return err1 == nil && err2 == nil && x == y
}

var jsonNumbers = cmp.Comparer(numberEqual)

// jsonDiff returns the semantic difference between two JSON texts ("" if
// equal), with numbers compared by numberEqual.
func jsonDiff(want, got []byte) string {
	w, err := decodeJSON(want)
	if err != nil {
		return fmt.Sprintf("want is not JSON: %v", err)
	}
	g, err := decodeJSON(got)
	if err != nil {
		return fmt.Sprintf("got is not JSON (%v): %s", err, truncate(string(got), 200))
	}
	return cmp.Diff(w, g, jsonNumbers)
}
