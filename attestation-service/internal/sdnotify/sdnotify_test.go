package sdnotify_test

import (
	"net"
	"path/filepath"
	"testing"

	"github.com/trustpool/trustpool/attestation-service/internal/sdnotify"
)

func TestNotify(t *testing.T) {
	p := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", p)
	sent, err := sdnotify.Notify(sdnotify.Ready)
	if err != nil || !sent {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Errorf("received %q, %v", buf[:n], err)
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := sdnotify.Notify(sdnotify.Ready); sent || err != nil {
		t.Errorf("Notify without NOTIFY_SOCKET = %v, %v; want false, nil", sent, err)
	}
	if _, err := sdnotify.NotifySocket(filepath.Join(t.TempDir(), "missing"), sdnotify.Ready); err == nil {
		t.Error("Notify to a missing socket succeeded")
	}
}
