package servicetest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// QemuGA is a real QEMU guest agent (Debian qemu-guest-agent's qemu-ga)
// listening on a unix socket, standing in for the agent inside a VM. It runs
// on this machine, as the test's user: the files it writes and the
// programs it runs (guest-exec) are this machine's, so tests point it at
// paths under t.TempDir().
type QemuGA struct {
	// Socket is the unix socket it listens on.
	Socket string
	// Log is its log file.
	Log string
}

// StartQemuGA starts qemu-ga -m unix-listen on socket (its directory must
// exist); it is stopped when the test ends. -r keeps it serving after a
// client disconnects.
func StartQemuGA(t testing.TB, socket string) *QemuGA {
	t.Helper()
	integration(t, "qemu-ga")
	if err := need("qemu-ga", "qemu-guest-agent"); err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	dir := t.TempDir()
	q := &QemuGA{Socket: socket, Log: filepath.Join(dir, "qga.log")}
	d, err := startDaemon("qemu-ga", filepath.Join(dir, "qga.out"), dir, nil,
		"qemu-ga", "-m", "unix-listen", "-p", socket, "-t", dir, "-l", q.Log, "-r")
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	t.Cleanup(func() {
		if err := d.stop(10 * time.Second); err != nil {
			t.Errorf("servicetest: %v", err)
		}
	})
	if err := waitReady(d, 30*time.Second, func(ctx context.Context) error {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, "unix", socket)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("servicetest: qemu-ga: %v (%s)", err, fmt.Sprint(socket))
	}
	return q
}
