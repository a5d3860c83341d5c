package inject_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustpool/trustpool/compute-agent/internal/inject"
	"github.com/trustpool/trustpool/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

const (
	inst  = "178b0921-8f85-4257-88b6-2e743b5a975c"
	other = "00000000-0000-4000-8000-000000000000"
)

func files(secret []byte) []inject.File {
	return []inject.File{
		{Name: inject.SecretFile, Data: secret, Mode: 0o400},
		{Name: inject.ReceiptFile, Data: []byte(`{"receipt":"r","kid":"k","sig":"s"}`), Mode: 0o644},
	}
}

// checkFiles reads what an injector wrote into dir.
func checkFiles(t *testing.T, dir string, secret []byte) {
	t.Helper()
	for _, f := range files(secret) {
		p := filepath.Join(dir, f.Name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != f.Mode {
			t.Errorf("%s mode %v, want %v", f.Name, fi.Mode().Perm(), f.Mode)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.Data) {
			t.Errorf("%s holds %d bytes, want the %d written", f.Name, len(got), len(f.Data))
		}
	}
}

func TestDirectory(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	d := &inject.Directory{Root: root}
	if ok, err := d.Present(ctx, inst); ok || err != nil {
		t.Errorf("Present before the instance exists = %v, %v", ok, err)
	}
	if err := d.Inject(ctx, inst, files([]byte("s"))); !errors.Is(err, inject.ErrNoInstance) {
		t.Errorf("Inject into a missing instance = %v, want ErrNoInstance", err)
	}
	if _, err := d.Present(ctx, "../etc"); err == nil {
		t.Error("Present accepted a path as instance id")
	}
	if err := os.Mkdir(filepath.Join(root, inst), 0o700); err != nil {
		t.Fatal(err)
	}
	if ok, err := d.Present(ctx, inst); !ok || err != nil {
		t.Errorf("Present = %v, %v", ok, err)
	}
	if o, err := d.Owner(ctx, inst); o != "" || err != nil {
		t.Errorf("Owner without a record = %q, %v; want unknown", o, err)
	}
	if err := os.WriteFile(filepath.Join(root, inst+".owner"), []byte("6f70656e737461636b20342065766572\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, err := d.Owner(ctx, inst); o != "6f70656e737461636b20342065766572" || err != nil {
		t.Errorf("Owner = %q, %v", o, err)
	}
	if err := d.Inject(ctx, inst, files([]byte("first"))); err != nil {
		t.Fatal(err)
	}
	// A second delivery replaces the read-only secret.
	secret := []byte("correct horse battery staple")
	if err := d.Inject(ctx, inst, files(secret)); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, filepath.Join(root, inst), secret)
	entries, _ := os.ReadDir(filepath.Join(root, inst))
	if len(entries) != 2 {
		t.Errorf("instance directory holds %d entries, want the 2 files (no temporary files left)", len(entries))
	}
}

// startGuest runs the real qemu-ga for instance inst, and returns the
// injector and the directory standing in for the guest's /run/trustpool.
func startGuest(t *testing.T) (*inject.QGA, string, *servicetest.QemuGA) {
	t.Helper()
	// Unix socket paths are limited to 108 bytes: keep the directory short
	// (t.TempDir's names grow with the test name).
	sockDir, err := os.MkdirTemp("", "qga") //nolint:usetesting // see above
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	ga := servicetest.StartQemuGA(t, filepath.Join(sockDir, inst+".sock"))
	guestDir := filepath.Join(t.TempDir(), "run", "trustpool")
	return &inject.QGA{Dialer: &inject.SocketDialer{Dir: sockDir}, GuestDir: guestDir}, guestDir, ga
}

// TestQGA runs the qemu-guest-agent injector against the real qemu-ga:
// presence, the files with their modes, a payload larger than one write,
// a stale reply left by an earlier client, and failures.
func TestQGA(t *testing.T) {
	ctx := t.Context()
	q, guestDir, ga := startGuest(t)
	if ok, err := q.Present(ctx, inst); !ok || err != nil {
		t.Fatalf("Present = %v, %v", ok, err)
	}
	if ok, err := q.Present(ctx, other); ok || err != nil {
		t.Errorf("Present(another instance) = %v, %v; want false", ok, err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(ga.Socket), inst+".owner"), []byte("p1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, err := q.Owner(ctx, inst); o != "p1" || err != nil {
		t.Errorf("Owner = %q, %v", o, err)
	}
	secret := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48000 bytes: two guest-file-write calls
	if err := q.Inject(ctx, inst, files(secret)); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, guestDir, secret)
	if fi, err := os.Stat(guestDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("guest directory mode %v, %v; want 0700 (created under umask 077)", fi.Mode().Perm(), err)
	}

	// An earlier client sent a command and left without reading the reply.
	dir := filepath.Dir(ga.Socket)
	c, err := net.Dial("unix", ga.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(`{"execute":"guest-info"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	secret2 := []byte("second secret")
	if err := q.Inject(ctx, inst, files(secret2)); err != nil {
		t.Fatalf("Inject after a stale client: %v", err)
	}
	checkFiles(t, guestDir, secret2)

	// Into another instance: not here.
	if err := q.Inject(ctx, other, files(secret2)); !errors.Is(err, inject.ErrNoInstance) {
		t.Errorf("Inject(another instance) = %v, want ErrNoInstance", err)
	}
	// A guest directory that cannot be made: the agent's error, no file.
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := &inject.QGA{Dialer: &inject.SocketDialer{Dir: dir}, GuestDir: filepath.Join(blocker, "trustpool")}
	if err := bad.Inject(ctx, inst, files(secret2)); !errors.Is(err, inject.ErrGuestAgent) || !strings.Contains(err.Error(), "exited") {
		t.Errorf("Inject into an impossible directory = %v, want a guest agent error", err)
	}
	if _, err := os.Stat(filepath.Join(blocker, "trustpool", inject.SecretFile)); err == nil {
		t.Error("a secret file exists after a failed injection")
	}
}

// TestQGAProtocolErrors: replies the agent sends for bad commands become
// errors naming the agent's class.
func TestQGAProtocolErrors(t *testing.T) {
	ctx := t.Context()
	q, _, _ := startGuest(t)
	ch, err := q.Dialer.Dial(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if _, err := ch.Command(ctx, []byte(`{"execute":"guest-no-such-command"}`)); !errors.Is(err, inject.ErrGuestAgent) || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("unknown command: %v", err)
	}
	// The channel still works after an error reply.
	if _, err := ch.Command(ctx, []byte(`{"execute":"guest-ping"}`)); err != nil {
		t.Errorf("guest-ping after an error: %v", err)
	}
	if _, err := ch.Command(ctx, []byte(`{"execute":"guest-file-open","arguments":{"path":"/nonexistent/dir/f","mode":"w"}}`)); !errors.Is(err, inject.ErrGuestAgent) {
		t.Errorf("open in a missing directory: %v", err)
	}
	ctxDone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := q.Dialer.Dial(ctxDone, inst); err == nil {
		t.Error("Dial with a cancelled context succeeded")
	}
}

// TestLibvirtNoDaemon: without libvirtd the production dialer fails with a
// guest agent error, not "no instance" (which would refuse the launch as if
// the instance were elsewhere).
func TestLibvirtNoDaemon(t *testing.T) {
	d := &inject.LibvirtDialer{Socket: filepath.Join(t.TempDir(), "libvirt-sock")}
	_, err := d.Dial(t.Context(), inst)
	if !errors.Is(err, inject.ErrGuestAgent) || errors.Is(err, inject.ErrNoInstance) {
		t.Errorf("Dial without libvirtd = %v, want ErrGuestAgent", err)
	}
}
