package sdnotify_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/sdnotify"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	sent, err := sdnotify.Notify(path, sdnotify.Ready, sdnotify.Status("serving\nnow"))
	if err != nil || !sent {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	if got, want := read(t, c), "READY=1\nSTATUS=serving now"; got != want {
		t.Errorf("datagram = %q, want %q", got, want)
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := fmt.Sprintf("trustpool-sdnotify-test-%d", os.Getpid())
	c := listen(t, "@"+name)
	if _, err := sdnotify.Notify("@"+name, sdnotify.Stopping); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != "STOPPING=1" {
		t.Errorf("datagram = %q", got)
	}
}

func TestNotifyOutsideSystemd(t *testing.T) {
	sent, err := sdnotify.Notify("", sdnotify.Ready)
	if sent || err != nil {
		t.Errorf("Notify(\"\") = %v, %v; want false, nil", sent, err)
	}
	if _, err := sdnotify.Notify(filepath.Join(t.TempDir(), "missing"), sdnotify.Ready); err == nil {
		t.Error("Notify to a missing socket succeeded")
	}
}
