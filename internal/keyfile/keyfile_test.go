package keyfile_test

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/keyfile"
)

var (
	errNoKey    = errors.New("no test key file")
	errUnusable = errors.New("unusable test key file")
	format      = keyfile.Format{PEMType: "TEST PRIVATE KEY", NoKey: errNoKey, Unusable: errUnusable}
	der         = []byte("not really DER, but Read does not parse it")
)

// writeFile writes b to name in dir with mode perm, whatever the umask.
func writeFile(t *testing.T, dir, name string, b []byte, perm os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
}

func pemOf(typ string, b []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})
}

// TestRead: each check of Read refuses with the sentinel a caller branches
// on and an error naming the file; a good file yields the block's bytes.
func TestRead(t *testing.T) {
	good := pemOf(format.PEMType, der)
	tests := []struct {
		name    string
		kind    string      // "file" (content, perm), "missing", "directory" or "fifo"
		content []byte      // of a file
		perm    os.FileMode // of a file
		wantErr error       // nil: the read succeeds
		wantMsg string      // in the error besides the path
	}{
		{"good 0600", "file", good, 0o600, nil, ""},
		{"good 0400", "file", good, 0o400, nil, ""},
		{"missing file", "missing", nil, 0, errNoKey, "does not exist"},
		{"group-readable", "file", good, 0o640, errUnusable, "mode 0640, want 0600"},
		{"world-readable", "file", good, 0o604, errUnusable, "mode 0604, want 0600"},
		{"group-writable", "file", good, 0o620, errUnusable, "mode 0620, want 0600"},
		{"others may execute", "file", good, 0o601, errUnusable, "mode 0601, want 0600"},
		{"not PEM", "file", []byte("not a key\n"), 0o600, errUnusable, "no PEM TEST PRIVATE KEY block"},
		{"empty", "file", []byte{}, 0o600, errUnusable, "no PEM TEST PRIVATE KEY block"},
		{"wrong PEM type", "file", pemOf("PRIVATE KEY", der), 0o600, errUnusable, "no PEM TEST PRIVATE KEY block"},
		{"directory", "directory", nil, 0, errUnusable, "not a regular file"},
		{"FIFO", "fifo", nil, 0, errUnusable, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "k")
			switch tt.kind {
			case "file":
				writeFile(t, dir, "k", tt.content, tt.perm)
			case "directory":
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			case "fifo":
				if err := syscall.Mkfifo(path, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// A read that blocks (a FIFO opened without O_NONBLOCK waits
			// for a writer) fails here instead of hanging the test run.
			type result struct {
				b   []byte
				err error
			}
			done := make(chan result, 1)
			go func() {
				b, err := format.Read(path)
				done <- result{b, err}
			}()
			var got result
			select {
			case got = <-done:
			case <-time.After(time.Minute):
				t.Fatalf("Read(%s) blocked", tt.name)
			}
			if tt.wantErr == nil {
				if got.err != nil {
					t.Fatalf("Read = %v", got.err)
				}
				if diff := cmp.Diff(der, got.b); diff != "" {
					t.Errorf("Read bytes (-want +got):\n%s", diff)
				}
				return
			}
			if !errors.Is(got.err, tt.wantErr) || !strings.Contains(got.err.Error(), path) || !strings.Contains(got.err.Error(), tt.wantMsg) {
				t.Errorf("Read = %v, want %v naming %s and saying %q", got.err, tt.wantErr, path, tt.wantMsg)
			}
			if errors.Is(got.err, tt.wantErr) && got.b != nil {
				t.Errorf("Read returned bytes with its error")
			}
		})
	}
}

// tempFiles lists the names in dir other than keep: what Create leaves
// behind.
func tempFiles(t *testing.T, dir, keep string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != keep {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestCreate: Create writes a 0600 file (in a new 0700 directory) that
// Read reads back, never replaces an existing file, and leaves no
// temporary file either way.
func TestCreate(t *testing.T) {
	tests := []struct {
		name     string
		existing []byte // nil: no file at path
	}{
		{"new file, new directory", nil},
		{"existing key", pemOf(format.PEMType, []byte("the old key"))},
		{"existing other file", []byte("something else\n")},
		{"existing empty file", []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			path := filepath.Join(dir, "test.key")
			if tt.existing != nil {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, "test.key", tt.existing, 0o600)
			}
			err := format.Create(path, der)
			if tt.existing != nil {
				if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), path) {
					t.Errorf("Create over an existing file = %v, want fs.ErrExist naming %s", err, path)
				}
				if got, _ := os.ReadFile(path); !bytes.Equal(got, tt.existing) {
					t.Errorf("Create replaced the existing file: %q, was %q", got, tt.existing)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
					fi, err := os.Stat(p)
					if err != nil || fi.Mode().Perm() != want {
						t.Errorf("%s: mode %04o, %v; want %04o", p, fi.Mode().Perm(), err, want)
					}
				}
				got, err := format.Read(path)
				if err != nil || !bytes.Equal(got, der) {
					t.Errorf("Read after Create = %q, %v; want %q", got, err, der)
				}
			}
			if left := tempFiles(t, dir, "test.key"); len(left) != 0 {
				t.Errorf("Create left %v in %s", left, dir)
			}
		})
	}
}

// TestCreateConcurrent: of creators racing for one path exactly one wins,
// the file holds the winner's key whole, and the others get fs.ErrExist.
func TestCreateConcurrent(t *testing.T) {
	const creators = 16
	for round := range 5 {
		dir := t.TempDir()
		path := filepath.Join(dir, "test.key")
		var wg sync.WaitGroup
		errs := make([]error, creators)
		start := make(chan struct{})
		for i := range creators {
			wg.Go(func() {
				<-start
				errs[i] = format.Create(path, fmt.Appendf(nil, "key of creator %d", i))
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: creators %d and %d both created %s", round, winner, i, path)
			case err == nil:
				winner = i
			case !errors.Is(err, fs.ErrExist):
				t.Errorf("round %d: creator %d: %v, want fs.ErrExist", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no creator won", round)
		}
		got, err := format.Read(path)
		if want := fmt.Appendf(nil, "key of creator %d", winner); err != nil || !bytes.Equal(got, want) {
			t.Errorf("round %d: file holds %q, %v; want the winner's %q", round, got, err, want)
		}
		if left := tempFiles(t, dir, "test.key"); len(left) != 0 {
			t.Errorf("round %d: creators left %v", round, left)
		}
	}
}
