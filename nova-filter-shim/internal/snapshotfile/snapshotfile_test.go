package snapshotfile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/snapshotfile"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

var update = flag.Bool("update", false, "rewrite testdata/snapshot-v1.golden")

var t0 = time.Date(2026, 12, 6, 3, 0, 0, 123e6, time.UTC)

func goldenHosts() []trustcache.Held {
	return []trustcache.Held{
		{Host: "compute-1", Status: verdict.Trusted, Profiles: []string{"baseline", "gpu"}, ExpiresAt: t0.Add(time.Hour)},
		{Host: "compute-2", Status: verdict.Untrusted, ExpiresAt: t0.Add(time.Hour)},
		{Host: "compute-3", Status: verdict.Unknown, Profiles: []string{}, ExpiresAt: t0.Add(time.Hour)},
		{Host: "compute-4", Status: verdict.Trusted, Profiles: []string{"baseline"}, ExpiresAt: t0.Add(-time.Minute)},
		{Host: "h\"é\\x", Status: verdict.Trusted, Profiles: []string{"baseline"}, ExpiresAt: t0.Add(time.Hour)},
	}
}

// TestGolden pins the format the Python filter parses
// (trustpool_filter/snapshot.py; its tests read the same file).
func TestGolden(t *testing.T) {
	body, err := snapshotfile.EncodeBody(goldenHosts())
	if err != nil {
		t.Fatal(err)
	}
	got, err := snapshotfile.Encode(snapshotfile.Header{WrittenAt: t0, Interval: 2 * time.Second, Health: snapshotfile.HealthOK}, body, 5)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "snapshot-v1.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil { //nolint:gosec // G306: test data
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("snapshot (-golden +got):\n%s", diff)
	}
}

func TestEncodeBodyRefusesUnsorted(t *testing.T) {
	h := goldenHosts()
	h[0], h[1] = h[1], h[0]
	if _, err := snapshotfile.EncodeBody(h); err == nil {
		t.Error("unsorted hosts encoded")
	}
	h = goldenHosts()
	h[1].Host = h[0].Host
	if _, err := snapshotfile.EncodeBody(h); err == nil {
		t.Error("repeated host encoded")
	}
}

func TestEncodeTooLarge(t *testing.T) {
	_, err := snapshotfile.Encode(snapshotfile.Header{WrittenAt: t0, Interval: time.Second, Health: "ok"}, make([]byte, snapshotfile.MaxBytes), 1)
	if !errors.Is(err, snapshotfile.ErrTooLarge) {
		t.Errorf("Encode of more than MaxBytes = %v, want ErrTooLarge", err)
	}
}

// source is a trust cache stand-in whose verdicts the test sets.
type source struct {
	mu      sync.Mutex
	version uint64
	hosts   []trustcache.Held
}

func (s *source) set(h ...trustcache.Held) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts = h
	s.version++
}

func (s *source) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

func (s *source) AppendHeld(dst []trustcache.Held) ([]trustcache.Held, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(dst, s.hosts...), s.version
}

type header struct {
	WrittenAtMS int64    `json:"written_at_ms"`
	IntervalMS  int64    `json:"interval_ms"`
	Health      string   `json:"health"`
	Detail      []string `json:"detail"`
	Hosts       int      `json:"hosts"`
	BodyBytes   int      `json:"body_bytes"`
}

// read parses a snapshot file as far as these tests need.
func read(t *testing.T, path string) (header, [][4]any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rest, ok := bytes.CutPrefix(b, []byte(snapshotfile.Magic))
	if !ok {
		t.Fatalf("no magic line: %q", b)
	}
	hl, body, _ := bytes.Cut(rest, []byte{'\n'})
	var h header
	if err := json.Unmarshal(hl, &h); err != nil {
		t.Fatal(err)
	}
	if h.BodyBytes != len(body) {
		t.Errorf("body_bytes %d, body %d bytes", h.BodyBytes, len(body))
	}
	var cols struct {
		Hosts       []string         `json:"hosts"`
		Status      []string         `json:"status"`
		ExpiresAtMS []int64          `json:"expires_at_ms"`
		Profiles    map[string][]int `json:"profiles"`
	}
	if err := json.Unmarshal(body, &cols); err != nil {
		t.Fatal(err)
	}
	if h.Hosts != len(cols.Hosts) || len(cols.Status) != len(cols.Hosts) || len(cols.ExpiresAtMS) != len(cols.Hosts) {
		t.Errorf("hosts %d, columns %d/%d/%d", h.Hosts, len(cols.Hosts), len(cols.Status), len(cols.ExpiresAtMS))
	}
	rows := make([][4]any, len(cols.Hosts))
	for i, name := range cols.Hosts {
		rows[i] = [4]any{name, cols.Status[i], cols.ExpiresAtMS[i], []string{}}
	}
	for p, idx := range cols.Profiles {
		for _, i := range idx {
			rows[i][3] = append(rows[i][3].([]string), p)
		}
	}
	return h, rows
}

func newWriter(t *testing.T, src *source, edit func(*snapshotfile.Options)) (*snapshotfile.Writer, string, *health) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "verdicts.snapshot")
	hl := &health{state: snapshotfile.HealthOK}
	o := snapshotfile.Options{Path: path, Mode: 0o640, Interval: time.Hour, Source: src, Health: hl.get}
	if edit != nil {
		edit(&o)
	}
	w, err := snapshotfile.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return w, path, hl
}

type health struct {
	mu     sync.Mutex
	state  string
	detail []string
}

func (h *health) get() (string, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state, h.detail
}

func (h *health) set(s string, d ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state, h.detail = s, d
}

func TestWriteNowModeGroupAndAtomicReplace(t *testing.T) {
	src := &source{}
	src.set(goldenHosts()[:2]...)
	// The process's own group: any user can give a file to it. Root can
	// give it to any group, so the test uses another one then.
	group, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if g, err := user.LookupGroup("nogroup"); err == nil {
			group = g
		}
	}
	w, path, _ := newWriter(t, src, func(o *snapshotfile.Options) { o.Group = group.Name })
	if err := w.WriteNow(); err != nil {
		t.Fatal(err)
	}
	fi1, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := fi1.Sys().(*syscall.Stat_t)
	if fi1.Mode().Perm() != 0o640 || strconv.Itoa(int(st1.Gid)) != group.Gid {
		t.Errorf("file mode %04o gid %d, want 0640 gid %s", fi1.Mode().Perm(), st1.Gid, group.Gid)
	}
	if dfi, err := os.Stat(filepath.Dir(path)); err != nil || dfi.Mode().Perm()&0o022 != 0 {
		t.Errorf("directory %v: writable by group or others, or %v", dfi.Mode(), err)
	}
	h, rows := read(t, path)
	if h.Health != "ok" || len(rows) != 2 || rows[0][0] != "compute-1" || rows[1][1] != "untrusted" {
		t.Errorf("first snapshot: %+v %v", h, rows)
	}
	// A second write replaces the file (a new inode: readers holding the
	// old one see it whole) and leaves no temporary file behind.
	src.set(goldenHosts()[1:3]...)
	if err := w.WriteNow(); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(path)
	if os.SameFile(fi1, fi2) {
		t.Error("the file was rewritten in place, not replaced")
	}
	if _, rows := read(t, path); len(rows) != 2 || rows[0][0] != "compute-2" {
		t.Errorf("second snapshot: %v", rows)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want only the snapshot", len(entries))
	}
	if writes, failures := w.Stats(); writes != 2 || failures != 0 {
		t.Errorf("stats %d/%d, want 2/0", writes, failures)
	}
}

func TestNewRefusesWritableMode(t *testing.T) {
	for _, mode := range []os.FileMode{0o660, 0o642, 0o666} {
		_, err := snapshotfile.New(snapshotfile.Options{Path: "/x", Mode: mode, Interval: time.Second, Source: &source{}, Health: (&health{}).get})
		if err == nil {
			t.Errorf("mode %04o accepted", mode)
		}
	}
}

func TestMissingGroup(t *testing.T) {
	w, _, _ := newWriter(t, &source{}, func(o *snapshotfile.Options) { o.Group = "no-such-group-trustpool" })
	if err := w.WriteNow(); !errors.Is(err, snapshotfile.ErrNoSuchGroup) {
		t.Errorf("WriteNow = %v, want ErrNoSuchGroup", err)
	}
}

// TestRun: a change is written at once (within MinGap), the heartbeat
// rewrites the header only, a health change is written, and stopping
// leaves a "stopped" snapshot without hosts.
func TestRun(t *testing.T) {
	src := &source{}
	src.set(goldenHosts()[:1]...)
	w, path, hl := newWriter(t, src, func(o *snapshotfile.Options) {
		o.Interval = 50 * time.Millisecond
		o.MinGap = 10 * time.Millisecond
	})
	hl.set(snapshotfile.HealthDegraded, "verdict snapshot (get_verdicts) not loaded yet")
	if err := w.WriteNow(); err != nil {
		t.Fatal(err)
	}
	first, _ := read(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()

	waitFor := func(what string, cond func(header, [][4]any) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			h, rows := read(t, path)
			if cond(h, rows) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %+v %v", what, h, rows)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if first.Health != "degraded" || len(first.Detail) != 1 {
		t.Errorf("first: %+v", first)
	}
	waitFor("heartbeat", func(h header, _ [][4]any) bool { return h.WrittenAtMS > first.WrittenAtMS })
	hl.set(snapshotfile.HealthOK)
	src.set(goldenHosts()[:3]...)
	w.Changed()
	waitFor("change", func(h header, rows [][4]any) bool { return h.Health == "ok" && len(rows) == 3 && len(h.Detail) == 0 })
	cancel()
	<-done
	h, rows := read(t, path)
	if h.Health != "stopped" || len(rows) != 0 {
		t.Errorf("after stop: %+v %v", h, rows)
	}
}

// TestWriteFailureCounted: a failed write is counted (the stale file then
// stops the filter). The directory is replaced by a file, which even root
// cannot create files in.
func TestWriteFailureCounted(t *testing.T) {
	src := &source{}
	w, path, _ := newWriter(t, src, func(o *snapshotfile.Options) { o.Interval = 20 * time.Millisecond })
	if err := w.WriteNow(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, failures := w.Stats(); failures > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no failure counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}
