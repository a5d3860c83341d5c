package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/servicetest"
)

// buildPeer builds tests/cmd/oslo-peer into a temporary directory.
func buildPeer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "oslo-peer")
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/oslo-peer").CombinedOutput()
	if err != nil {
		t.Fatalf("build oslo-peer: %v\n%s", err, out)
	}
	return bin
}

// peerRun runs one oslo-peer command and returns stdout, stderr and the
// exit code.
func peerRun(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("oslo-peer %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// TestPeerCommand drives the oslo-peer command against the Python side:
// call and cast to a Python server (results and remote failures printed as
// JSON), serve for a Python client, notify to a Python listener and listen
// to a Python notifier.
func TestPeerCommand(t *testing.T) {
	skipShort(t)
	r := servicetest.RabbitMQ(t)
	bin := buildPeer(t)
	common := []string{"--transport-url", r.URL, "--exchange", exchange}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()

	t.Run("call-python-server", func(t *testing.T) {
		srv := startPy(t, "server.py", append(common, "--topic", "peer_py", "--server", "pyhost")...)
		srv.waitReady(t)
		target := append(common, "--topic", "peer_py", "--timeout", "30s")

		out, errOut, code := peerRun(t, bin, append([]string{"call"}, append(target, "--method", "echo", "--args", `{"value": {"ü": [1, 2.0, 123456789012345678901234567890]}}`)...)...)
		if code != 0 {
			t.Fatalf("call echo: exit %d, stderr %s", code, errOut)
		}
		if diff := jsonDiff([]byte(`{"ü": [1, 2.0, 123456789012345678901234567890]}`), []byte(out)); diff != "" {
			t.Errorf("call echo output (-want +got):\n%s", diff)
		}

		out, errOut, code = peerRun(t, bin, append([]string{"call"}, append(target, "--method", "fail", "--args", `{"kind": "value", "message": "nope"}`)...)...)
		if code != 1 {
			t.Errorf("call fail: exit %d, want 1", code)
		}
		var got struct{ Error remoteFailure }
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("call fail output %q: %v", out, err)
		}
		if diff := cmp.Diff(remoteFailure{"ValueError", "builtins", "nope"}, got.Error); diff != "" {
			t.Errorf("call fail printed error (-want +got):\n%s", diff)
		}
		if !strings.Contains(errOut, "builtins.ValueError: nope") {
			t.Errorf("call fail stderr %q does not name the remote class", errOut)
		}

		if _, errOut, code := peerRun(t, bin, append([]string{"cast"}, append(target, "--fanout", "--method", "record", "--args", `{"value": "via-peer"}`)...)...); code != 0 {
			t.Fatalf("cast: exit %d, %s", code, errOut)
		}
		for {
			out, errOut, code := peerRun(t, bin, append([]string{"call"}, append(target, "--server", "pyhost", "--method", "recorded")...)...)
			if code != 0 {
				t.Fatalf("call recorded: exit %d, %s", code, errOut)
			}
			if jsonDiff([]byte(`["via-peer"]`), []byte(out)) == "" {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("fanout cast never recorded: %s", out)
			case <-time.After(100 * time.Millisecond):
			}
		}

		_, errOut, code = peerRun(t, bin, "call", "--transport-url", r.URL, "--exchange", exchange,
			"--topic", "peer_nobody", "--method", "echo", "--timeout", "1s")
		if code != 1 || !strings.Contains(errOut, "timeout") {
			t.Errorf("call to nobody: exit %d, stderr %q; want 1 and a timeout", code, errOut)
		}
	})

	t.Run("serve-python-client", func(t *testing.T) {
		cmd := exec.Command(bin, append([]string{"serve"}, append(common, "--topic", "peer_go", "--server", "gohost", "--version", "1.3")...)...)
		stderr := &syncBuffer{}
		dumpOnFailure(t, "oslo-peer serve stderr", stderr)
		cmd.Stderr = stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		line := make(chan string, 1)
		go func() {
			l, _ := bufio.NewReader(out).ReadString('\n')
			line <- l
		}()
		select {
		case l := <-line:
			if l != "ready\n" {
				t.Fatalf("serve printed %q, want ready", l)
			}
		case err := <-exited:
			t.Fatalf("serve exited: %v", err)
		case <-ctx.Done():
			t.Fatal("serve not ready")
		}
		runPythonClient(t, r.URL, "peer_go", "gohost")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("serve on SIGTERM: %v", err)
			}
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			t.Fatal("serve ignored SIGTERM")
		}
	})

	t.Run("notify-and-listen", func(t *testing.T) {
		lis := startPy(t, "listener.py", append(common, "--topic", "peer_notes", "--pool", "py-peer-pool", "--count", "1")...)
		lis.waitReady(t)
		if _, errOut, code := peerRun(t, bin, append([]string{"notify"}, append(common, "--topic", "peer_notes",
			"--publisher-id", "peer:1", "--priority", "error", "--event-type", "peer.test", "--payload", `{"x": "ÿ"}`)...)...); code != 0 {
			t.Fatalf("notify: exit %d, %s", code, errOut)
		}
		var g receivedNotification
		lis.nextJSON(t, ctx, &g)
		if g.Priority != "error" || g.PublisherID != "peer:1" || g.EventType != "peer.test" || jsonDiff([]byte(`{"x": "ÿ"}`), g.Payload) != "" {
			t.Errorf("python listener got %+v", g)
		}
		lis.wait(t, ctx)

		cmd := exec.CommandContext(ctx, bin, append([]string{"listen"}, append(common, "--topic", "peer_notes2", "--queue", "go-peer-pool", "--count", "1")...)...)
		var stdout syncBuffer
		cmd.Stdout = &stdout
		stderr := &syncBuffer{}
		dumpOnFailure(t, "oslo-peer listen stderr", stderr)
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for !strings.HasPrefix(stdout.String(), "ready\n") {
			select {
			case <-ctx.Done():
				t.Fatal("listen not ready")
			case <-time.After(50 * time.Millisecond):
			}
		}
		runPyInput(t, []byte(`[{"priority": "info", "event_type": "py.test", "payload": [1, "ü"]}]`), "notifier.py",
			append(common, "--topic", "peer_notes2", "--publisher-id", "py:1", "--notifications", "-")...)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("listen: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("listen printed %q, want ready and one notification", stdout.String())
		}
		var n receivedNotification
		if err := json.Unmarshal([]byte(lines[1]), &n); err != nil {
			t.Fatal(err)
		}
		if n.Priority != "info" || n.PublisherID != "py:1" || n.EventType != "py.test" || jsonDiff([]byte(`[1, "ü"]`), n.Payload) != "" {
			t.Errorf("oslo-peer listen got %+v", n)
		}
	})
}
