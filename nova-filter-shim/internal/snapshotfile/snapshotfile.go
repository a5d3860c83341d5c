// Package snapshotfile writes the filter shim's verdict snapshot: a file
// the Nova TrustedFilter reads instead of asking the shim over its socket,
// so that a scheduling pass makes no round trip to another process.
//
// The file holds what the shim's trust cache holds (host → status,
// satisfied profiles, effective expiry), the time it was written and the
// shim's health. It is replaced atomically (a temporary file in the same
// directory, given its group and mode before anything is written, then
// renamed into place), at once when the verdicts or the health change (at
// most once per MinGap) and at least every Interval, so a reader can tell a
// live shim from a dead or hung one by the age of written_at.
//
// Format, version 1 (all times are Unix milliseconds, UTC):
//
//	trustpool-filter-snapshot 1\n
//	{"written_at_ms":N,"interval_ms":N,"health":"ok","detail":[],"hosts":N,"body_bytes":N}\n
//	{"hosts":["<host>",...],"status":["trusted"|"untrusted"|"unknown",...],"expires_at_ms":[N,...],
//	 "profiles":{"<profile>":[<index into hosts>,...],...}}\n
//
// The second line is the header; body_bytes counts every byte after it
// (the host list and its newline), and hosts the entries of the list,
// which is sorted by host with each host once. The host list is in
// columns, one array per field and the hosts satisfying each profile as
// indexes, so that the Python reader decodes a handful of arrays instead
// of one small object per host (the allocations of which would wake
// Python's garbage collector in nova-scheduler). health is "ok", "degraded"
// (detail says why: no verdict snapshot yet, fanout not followed, service
// silent) or "stopped" (written when the shim stops). A heartbeat rewrite
// changes only the header, so a reader can keep what it parsed when the
// host list is byte for byte the same.
//
// What this package does not do: decide anything. The reader (the Python
// filter, trustpool_filter/snapshot.py) checks the format strictly, the
// age of written_at, the health and each host's expiry against its own
// clock, and fails closed on any problem. Access control is the file's
// group and mode and its directory's: only the shim's user may create files
// there, so nobody else can replace the file.
package snapshotfile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

// Magic is the first line of a version 1 snapshot.
const Magic = "trustpool-filter-snapshot 1\n"

// MaxBytes bounds a snapshot file; the reader refuses larger ones. About
// 20,000 hosts with a few profiles each take 3 MB.
const MaxBytes = 64 << 20

// Health values of the header.
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded"
	HealthStopped  = "stopped"
)

// ErrTooLarge means the verdicts do not fit in MaxBytes.
var ErrTooLarge = errors.New("snapshot larger than the limit")

// ErrNoSuchGroup means the configured file group does not exist.
var ErrNoSuchGroup = errors.New("snapshot file group does not exist")

// Header is the snapshot's second line.
type Header struct {
	WrittenAt time.Time
	// Interval is the longest the shim waits between two writes.
	Interval time.Duration
	// Health is HealthOK, HealthDegraded or HealthStopped; Detail says why
	// when it is not ok.
	Health string
	Detail []string
}

type wireHeader struct {
	WrittenAtMS int64    `json:"written_at_ms"`
	IntervalMS  int64    `json:"interval_ms"`
	Health      string   `json:"health"`
	Detail      []string `json:"detail"`
	Hosts       int      `json:"hosts"`
	BodyBytes   int      `json:"body_bytes"`
}

type wireBody struct {
	Hosts       []string         `json:"hosts"`
	Status      []verdict.Status `json:"status"`
	ExpiresAtMS []int64          `json:"expires_at_ms"`
	Profiles    map[string][]int `json:"profiles"` // encoded with sorted keys
}

// EncodeBody returns the host list line of hosts, which must be sorted by
// host with each host once (trustcache.Cache.AppendHeld's order).
func EncodeBody(hosts []trustcache.Held) ([]byte, error) {
	w := wireBody{
		Hosts: make([]string, len(hosts)), Status: make([]verdict.Status, len(hosts)),
		ExpiresAtMS: make([]int64, len(hosts)), Profiles: map[string][]int{},
	}
	for i, h := range hosts {
		if i > 0 && hosts[i-1].Host >= h.Host {
			return nil, fmt.Errorf("encode snapshot: hosts not sorted or repeated at %q", h.Host)
		}
		w.Hosts[i], w.Status[i], w.ExpiresAtMS[i] = h.Host, h.Status, h.ExpiresAt.UnixMilli()
		for _, p := range h.Profiles {
			w.Profiles[p] = append(w.Profiles[p], i)
		}
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	return append(b, '\n'), nil
}

// Encode returns the whole file: the magic line, the header for a body of
// n hosts, and the body (from EncodeBody).
func Encode(h Header, body []byte, n int) ([]byte, error) {
	detail := h.Detail
	if detail == nil {
		detail = []string{}
	}
	hb, err := json.Marshal(wireHeader{
		WrittenAtMS: h.WrittenAt.UnixMilli(), IntervalMS: h.Interval.Milliseconds(),
		Health: h.Health, Detail: detail, Hosts: n, BodyBytes: len(body),
	})
	if err != nil {
		return nil, fmt.Errorf("encode snapshot header: %w", err)
	}
	size := len(Magic) + len(hb) + 1 + len(body)
	if size > MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes for %d hosts, at most %d", ErrTooLarge, size, n, MaxBytes)
	}
	out := make([]byte, 0, size)
	out = append(out, Magic...)
	out = append(out, hb...)
	out = append(out, '\n')
	return append(out, body...), nil
}

// Source is what a snapshot holds: the shim's trust cache.
type Source interface {
	Version() uint64
	AppendHeld(dst []trustcache.Held) ([]trustcache.Held, uint64)
}

// Options configures a Writer.
type Options struct {
	// Path of the file. Its directory is created (0755) if missing.
	Path string
	// Group owns the file ("" keeps the process's group). It must exist.
	Group string
	// Mode of the file; it must not let group or others write.
	Mode fs.FileMode
	// Interval is the longest time between two writes (the heartbeat).
	Interval time.Duration
	// MinGap is the shortest time between two writes (changes arriving
	// faster are written together).
	MinGap time.Duration
	// Source gives the verdicts; Health the shim's health and why.
	Source Source
	Health func() (string, []string)
	// Now is the clock of written_at; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Writer keeps the snapshot file up to date.
type Writer struct {
	o       Options
	gid     int
	changed chan struct{}

	// The body of the last Version encoded, reused while it holds.
	body    []byte
	hosts   int
	version uint64
	encoded bool

	writes, failures  atomic.Uint64
	failing, prepared bool
}

// New checks o. It writes nothing and creates nothing; the first write
// (WriteNow) looks the group up and creates the directory.
func New(o Options) (*Writer, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Mode.Perm()&0o022 != 0 {
		return nil, fmt.Errorf("snapshot file mode %04o lets group or others write; the filter refuses such a file", o.Mode.Perm())
	}
	if o.Path == "" || o.Interval <= 0 || o.MinGap < 0 || o.Source == nil || o.Health == nil {
		return nil, errors.New("snapshot writer: Path, Interval, Source and Health are required")
	}
	return &Writer{o: o, gid: -1, changed: make(chan struct{}, 1)}, nil
}

// prepare looks the group up and creates the file's directory, once.
func (w *Writer) prepare() error {
	if w.prepared {
		return nil
	}
	if w.o.Group != "" {
		g, err := user.LookupGroup(w.o.Group)
		if err != nil {
			return fmt.Errorf("%w: %q (create it, or set [filter_shim] snapshot_file_group to the group nova-scheduler runs as, or to \"\" to keep this process's group): %w", ErrNoSuchGroup, w.o.Group, err)
		}
		if w.gid, err = strconv.Atoi(g.Gid); err != nil {
			return fmt.Errorf("group %q has a non-numeric gid %q", w.o.Group, g.Gid)
		}
	}
	// 0755: nova-scheduler, another user, must reach the file inside; only
	// the owner may create or rename files in it.
	if err := os.MkdirAll(filepath.Dir(w.o.Path), 0o755); err != nil { //nolint:gosec // G301: see above
		return fmt.Errorf("create snapshot directory: %w", err)
	}
	w.prepared = true
	return nil
}

// Changed tells the writer that the verdicts or the health changed. It
// never blocks.
func (w *Writer) Changed() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Stats returns how many writes succeeded and failed.
func (w *Writer) Stats() (writes, failures uint64) { return w.writes.Load(), w.failures.Load() }

// WriteNow writes the current state. Not safe for use concurrently with
// Run; call it before.
func (w *Writer) WriteNow() error {
	health, detail := w.o.Health()
	return w.write(health, detail)
}

// Run writes on every change (at most once per MinGap) and at least every
// Interval until ctx is done, then writes a snapshot with health "stopped"
// and no hosts, so that the filter stops at once instead of when the last
// one grows stale. Write errors are logged and counted; a snapshot that is
// not rewritten grows stale and the filter then passes no host.
func (w *Writer) Run(ctx context.Context) {
	t := time.NewTicker(w.o.Interval)
	defer t.Stop()
	last := w.o.Now()
	for {
		select {
		case <-ctx.Done():
			w.stop()
			return
		case <-w.changed:
			if wait := w.o.MinGap - w.o.Now().Sub(last); wait > 0 {
				gap := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					gap.Stop()
					w.stop()
					return
				case <-gap.C:
				}
			}
		case <-t.C:
		}
		select {
		case <-w.changed: // included in this write
		default:
		}
		health, detail := w.o.Health()
		w.report(w.write(health, detail))
		last = w.o.Now()
	}
}

var emptyBody = []byte(`{"hosts":[],"status":[],"expires_at_ms":[],"profiles":{}}` + "\n")

func (w *Writer) stop() {
	b, err := Encode(Header{WrittenAt: w.o.Now(), Interval: w.o.Interval, Health: HealthStopped,
		Detail: []string{"trustpool-filter-shim stopped"}}, emptyBody, 0)
	if err == nil {
		err = w.replace(b)
	}
	w.report(err)
}

func (w *Writer) report(err error) {
	switch {
	case err != nil:
		w.failures.Add(1)
		if !w.failing {
			w.o.Logger.Warn("cannot write the verdict snapshot file; the filter will pass no host once it is stale", "path", w.o.Path, "error", err)
		}
		w.failing = true
	case w.failing:
		w.failing = false
		w.o.Logger.Info("verdict snapshot file written again", "path", w.o.Path)
	}
}

func (w *Writer) write(health string, detail []string) error {
	if !w.encoded || w.o.Source.Version() != w.version {
		held, version := w.o.Source.AppendHeld(nil)
		body, err := EncodeBody(held)
		if err != nil {
			return err
		}
		w.body, w.hosts, w.version, w.encoded = body, len(held), version, true
	}
	b, err := Encode(Header{WrittenAt: w.o.Now(), Interval: w.o.Interval, Health: health, Detail: detail}, w.body, w.hosts)
	if err != nil {
		return err
	}
	return w.replace(b)
}

// replace writes b to a temporary file that already has the final group
// and mode, then renames it over the path.
func (w *Writer) replace(b []byte) error {
	if err := w.prepare(); err != nil {
		return err
	}
	dir, base := filepath.Split(w.o.Path)
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("create temporary snapshot file: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return err
	}
	if w.gid >= 0 {
		if err := f.Chown(-1, w.gid); err != nil {
			return fail(fmt.Errorf("set group %q on the snapshot file: %w", w.o.Group, err))
		}
	}
	if err := f.Chmod(w.o.Mode.Perm()); err != nil {
		return fail(fmt.Errorf("set mode %04o on the snapshot file: %w", w.o.Mode.Perm(), err))
	}
	if _, err := f.Write(b); err != nil {
		return fail(fmt.Errorf("write snapshot file: %w", err))
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write snapshot file: %w", err)
	}
	if err := os.Rename(tmp, w.o.Path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("move snapshot file into place at %s: %w", w.o.Path, err)
	}
	w.writes.Add(1)
	return nil
}
