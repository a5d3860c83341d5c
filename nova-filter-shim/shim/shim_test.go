package shim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/shimtest"
	"github.com/trustpool/trustpool/nova-filter-shim/shim"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// testClock is a settable clock shared with the shim under test.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

type running struct {
	socket string
	client *http.Client
	shim   *shim.Shim
	done   chan error
	waited sync.Once
}

// wait waits for Run to return; it fails the test on an error.
func (r *running) wait(t *testing.T) {
	t.Helper()
	r.waited.Do(func() {
		if err := <-r.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// start runs a shim in-process against url until the test ends.
func start(t *testing.T, url string, edit func(*shim.Config)) *running {
	t.Helper()
	return startCtx(context.Background(), t, url, edit)
}

// startCtx runs a shim until ctx is done or the test ends.
func startCtx(parent context.Context, t *testing.T, url string, edit func(*shim.Config)) *running {
	t.Helper()
	dir := t.TempDir()
	cfg := shim.DefaultConfig()
	cfg.Default.TransportURL = url
	cfg.Default.Host = "scheduler-test"
	cfg.Shim.VerdictPublicKey = shimtest.WritePublicKey(t, dir, shimtest.GoldenKey())
	cfg.Shim.SocketPath = filepath.Join(dir, "shim.sock")
	cfg.Shim.SocketGroup = ""
	cfg.Shim.SnapshotFile = filepath.Join(dir, "verdicts.snapshot")
	cfg.Shim.SnapshotFileGroup = ""
	cfg.Shim.SnapshotRetryMax = time.Second
	if edit != nil {
		edit(&cfg)
	}
	s, err := shim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(parent)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	r := &running{socket: cfg.Shim.SocketPath, shim: s, done: done}
	t.Cleanup(func() {
		cancel()
		r.wait(t)
	})
	select {
	case <-s.Ready():
	case err := <-done:
		r.waited.Do(func() {})
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("shim not ready")
	}
	r.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", cfg.Shim.SocketPath)
		}},
	}
	return r
}

type decision struct {
	Passes   []string          `json:"passes"`
	Rejected map[string]string `json:"rejected"`
}

func (r *running) filter(t *testing.T, hosts []string, trustedHost, profile any) decision {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"hosts": hosts, "trusted_host": trustedHost, "profile": profile})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://shim/v1/filter", bytes.NewReader(body))
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("filter: %d %s", resp.StatusCode, b)
	}
	var d decision
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://shim"+path, nil)
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond (a real broker is asynchronous) for up to 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *running) metric(t *testing.T, line string) bool {
	t.Helper()
	_, m := r.get(t, "/metrics")
	return strings.Contains(m, line+"\n")
}

func TestSnapshotThenFanout(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	now := time.Now().UTC()
	key := shimtest.GoldenKey()
	feeder := shimtest.NewFeeder(t, rabbit.URL)
	// Both verdict formats: a service pinned to format 1 during an
	// upgrade, and format 2 with the versions matched.
	v2 := func(v verdict.Verdict, versions map[string]int) verdict.Verdict {
		v.Format, v.ProfileVersions = verdict.Format2, versions
		return v
	}
	feeder.SetSnapshot(
		shimtest.Sign(t, key, shimtest.Verdict("h-trusted", verdict.Trusted, 1, now, time.Hour, "baseline")),
		shimtest.Sign(t, key, v2(shimtest.Verdict("h-trusted-v2", verdict.Trusted, 1, now, time.Hour, "baseline"), map[string]int{"baseline": 3})),
		shimtest.Sign(t, key, shimtest.Verdict("h-untrusted", verdict.Untrusted, 1, now, time.Hour)),
		shimtest.Forge(t, key, shimtest.Verdict("h-forged", verdict.Untrusted, 1, now, time.Hour), verdict.Trusted),
		shimtest.Unsigned(t, shimtest.Verdict("h-unsigned", verdict.Trusted, 1, now, time.Hour)),
		shimtest.Sign(t, shimtest.OtherKey(), shimtest.Verdict("h-otherkey", verdict.Trusted, 1, now, time.Hour)),
	)
	feeder.Serve(t)
	r := start(t, rabbit.URL, nil)
	eventually(t, "snapshot", r.shim.SnapshotLoaded)
	if code, body := r.get(t, "/healthz"); code != 200 {
		t.Errorf("healthz: %d %s", code, body)
	}
	hosts := []string{"h-trusted", "h-trusted-v2", "h-untrusted", "h-forged", "h-unsigned", "h-otherkey", "h-absent"}
	if diff := cmp.Diff([]string{"h-trusted", "h-trusted-v2"}, r.filter(t, hosts, "trusted", nil).Passes); diff != "" {
		t.Errorf("trusted (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"h-forged", "h-unsigned", "h-otherkey", "h-absent"}, r.filter(t, hosts, "unknown", nil).Passes); diff != "" {
		t.Errorf("unknown (-want +got):\n%s", diff)
	}
	for _, l := range []string{
		`trustpool_filter_shim_verdicts_accepted_total 3`,
		`trustpool_filter_shim_verdicts_dropped_total{reason="bad_signature"} 1`,
		`trustpool_filter_shim_verdicts_dropped_total{reason="unsigned"} 1`,
		`trustpool_filter_shim_verdicts_dropped_total{reason="unknown_kid"} 1`,
	} {
		if !r.metric(t, l) {
			t.Errorf("metrics lack %q", l)
		}
	}

	// The fanout: revoke h-trusted, promote h-untrusted, and try a replay
	// of an older verdict and a forgery; only the valid, newer ones count.
	if err := feeder.Publish(t.Context(),
		shimtest.Sign(t, key, shimtest.Verdict("h-trusted", verdict.Untrusted, 2, now, time.Hour)),
		shimtest.Sign(t, key, v2(shimtest.Verdict("h-untrusted", verdict.Trusted, 2, now, time.Hour, "baseline"), map[string]int{"baseline": 4})),
		shimtest.Sign(t, key, v2(shimtest.Verdict("h-trusted-v2", verdict.Untrusted, 2, now, time.Hour), map[string]int{})),
	); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fanout applied", func() bool { return r.metric(t, `trustpool_filter_shim_verdicts_accepted_total 6`) })
	if err := feeder.Publish(t.Context(),
		shimtest.Sign(t, key, shimtest.Verdict("h-trusted", verdict.Trusted, 1, now, time.Hour, "baseline")),
		shimtest.Forge(t, key, shimtest.Verdict("h-trusted", verdict.Untrusted, 3, now, time.Hour), verdict.Trusted),
	); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replay dropped", func() bool {
		return r.metric(t, `trustpool_filter_shim_verdicts_dropped_total{reason="stale_seq"} 1`) &&
			r.metric(t, `trustpool_filter_shim_verdicts_dropped_total{reason="bad_signature"} 2`)
	})
	if diff := cmp.Diff([]string{"h-untrusted"}, r.filter(t, hosts, nil, "baseline").Passes); diff != "" {
		t.Errorf("after fanout (-want +got):\n%s", diff)
	}
}

func TestFailClosedUntilServiceAnswers(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	now := time.Now().UTC()
	feeder := shimtest.NewFeeder(t, rabbit.URL)
	feeder.SetSnapshot(shimtest.Sign(t, shimtest.GoldenKey(), shimtest.Verdict("h1", verdict.Trusted, 1, now, time.Hour)))
	r := start(t, rabbit.URL, func(c *shim.Config) { c.Shim.SnapshotTimeout = 300 * time.Millisecond })

	// No attestation service yet: the socket answers, every host unknown.
	eventually(t, "a failed get_verdicts", func() bool { return !r.metric(t, `trustpool_filter_shim_snapshot_failures_total 0`) })
	if d := r.filter(t, []string{"h1"}, "trusted", nil); len(d.Passes) != 0 || d.Rejected["h1"] == "" {
		t.Errorf("before the snapshot: %+v, want h1 rejected", d)
	}
	if code, _ := r.get(t, "/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("healthz before the snapshot: %d, want 503", code)
	}

	feeder.Serve(t)
	eventually(t, "snapshot after retry", r.shim.SnapshotLoaded)
	if d := r.filter(t, []string{"h1"}, "trusted", nil); len(d.Passes) != 1 {
		t.Errorf("after the snapshot: %+v, want h1 to pass", d)
	}
	if feeder.Calls() < 1 {
		t.Error("feeder never called")
	}
}

func TestHeartbeatStopsEverythingExpires(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	clk := &testClock{now: time.Now().UTC()}
	now := clk.Now()
	feeder := shimtest.NewFeeder(t, rabbit.URL)
	feeder.SetSnapshot(
		shimtest.Sign(t, shimtest.GoldenKey(), shimtest.Verdict("h1", verdict.Trusted, 1, now, 3*time.Minute, "baseline")),
		shimtest.Sign(t, shimtest.GoldenKey(), shimtest.Verdict("h2", verdict.Trusted, 1, now, time.Hour, "baseline")),
	)
	feeder.Serve(t)
	r := start(t, rabbit.URL, func(c *shim.Config) {
		c.Now = clk.Now
		c.Shim.MaxVerdictAge = 30 * time.Minute
	})
	eventually(t, "snapshot", r.shim.SnapshotLoaded)
	hosts := []string{"h1", "h2"}
	if d := r.filter(t, hosts, nil, "baseline"); len(d.Passes) != 2 {
		t.Fatalf("fresh: %+v", d)
	}
	clk.Set(now.Add(3 * time.Minute))
	if d := r.filter(t, hosts, nil, "baseline"); !cmp.Equal(d.Passes, []string{"h2"}) || !strings.Contains(d.Rejected["h1"], "expired") {
		t.Errorf("after h1's expires_at: %+v", d)
	}
	clk.Set(now.Add(30 * time.Minute))
	if d := r.filter(t, hosts, "trusted", nil); len(d.Passes) != 0 {
		t.Errorf("after max_verdict_age: %+v, want nothing trusted", d)
	}
	if !r.metric(t, `trustpool_filter_shim_hosts{status="expired"} 2`) {
		t.Error("metrics do not count the expired hosts")
	}
}

func TestSystemdReadiness(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start(t, rabbit.URL, func(c *shim.Config) { c.NotifySocket = sock })
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 1024)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); !strings.HasPrefix(got, "READY=1\nSTATUS=") {
		t.Errorf("first notification = %q, want READY=1 and a STATUS", got)
	}
}

func TestSocketGroupMissing(t *testing.T) {
	cfg := shim.DefaultConfig()
	dir := t.TempDir()
	cfg.Default.TransportURL = "rabbit://u:p@127.0.0.1:1/"
	cfg.Shim.VerdictPublicKey = shimtest.WritePublicKey(t, dir, shimtest.GoldenKey())
	cfg.Shim.SocketPath = filepath.Join(dir, "s.sock")
	cfg.Shim.SocketGroup = "no-such-group-trustpool"
	s, err := shim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), `socket group does not exist: "no-such-group-trustpool"`) {
		t.Errorf("Run = %v, want a clear missing-group error", err)
	}
}

func TestBrokerRestartThenResyncRepairs(t *testing.T) {
	rabbit := servicetest.NewRabbitMQ(t)
	now := time.Now().UTC()
	key := shimtest.GoldenKey()
	feeder := shimtest.NewFeeder(t, rabbit.URL)
	feeder.SetSnapshot(shimtest.Sign(t, key, shimtest.Verdict("h1", verdict.Trusted, 1, now, time.Hour)))
	feeder.Serve(t)
	r := start(t, rabbit.URL, func(c *shim.Config) { c.Shim.ResyncInterval = time.Second })
	eventually(t, "snapshot", r.shim.SnapshotLoaded)

	rabbit.StopApp(t)
	// While the broker is away the shim keeps answering from its cache.
	if d := r.filter(t, []string{"h1"}, "trusted", nil); len(d.Passes) != 1 {
		t.Errorf("during the outage: %+v", d)
	}
	rabbit.StartApp(t)
	// A revocation the shim never saw as a cast: the periodic snapshot
	// repairs it.
	feeder.SetSnapshot(shimtest.Sign(t, key, shimtest.Verdict("h1", verdict.Untrusted, 2, now, time.Hour)))
	eventually(t, "resync after the broker restart", func() bool {
		return len(r.filter(t, []string{"h1"}, "untrusted", nil).Passes) == 1
	})
	// And the fanout is followed again.
	eventually(t, "fanout after the broker restart", func() bool {
		if err := feeder.Publish(t.Context(), shimtest.Sign(t, key, shimtest.Verdict("h2", verdict.Trusted, 1, now, time.Hour))); err != nil {
			t.Logf("publish: %v", err)
			return false
		}
		time.Sleep(200 * time.Millisecond)
		return len(r.filter(t, []string{"h2"}, "trusted", nil).Passes) == 1
	})
}

// snapshotFile reads the shim's verdict snapshot file: its header and
// host → status.
func snapshotFile(t *testing.T, path string) (health string, hosts map[string]string) {
	t.Helper()
	h, hosts := snapshotFileDetail(t, path)
	return h.Health, hosts
}

type snapshotHeader struct {
	Health string   `json:"health"`
	Detail []string `json:"detail"`
}

// snapshotFileDetail is snapshotFile with the header's detail.
func snapshotFileDetail(t *testing.T, path string) (snapshotHeader, map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(b), "\n", 3)
	if len(lines) != 3 || lines[0] != "trustpool-filter-snapshot 1" {
		t.Fatalf("not a snapshot: %q", b)
	}
	var h snapshotHeader
	var cols struct {
		Hosts  []string `json:"hosts"`
		Status []string `json:"status"`
	}
	if err := json.Unmarshal([]byte(lines[1]), &h); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[2]), &cols); err != nil {
		t.Fatal(err)
	}
	hosts := map[string]string{}
	for i, name := range cols.Hosts {
		hosts[name] = cols.Status[i]
	}
	return h, hosts
}

// TestSnapshotFileFollowsVerdicts: the file is degraded until the
// verdicts are loaded, then holds the verified verdicts only, follows the
// fanout, and says "stopped" once the shim stops.
func TestSnapshotFileFollowsVerdicts(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	now := time.Now().UTC()
	key := shimtest.GoldenKey()
	feeder := shimtest.NewFeeder(t, rabbit.URL)
	feeder.SetSnapshot(
		shimtest.Sign(t, key, shimtest.Verdict("h-trusted", verdict.Trusted, 1, now, time.Hour, "baseline")),
		shimtest.Forge(t, key, shimtest.Verdict("h-forged", verdict.Untrusted, 1, now, time.Hour), verdict.Trusted),
	)
	var path string
	ctx, stop := context.WithCancel(t.Context())
	r := startCtx(ctx, t, rabbit.URL, func(c *shim.Config) {
		path = c.Shim.SnapshotFile
		// Only a change can write the file within the test's waits, not
		// the heartbeat.
		c.Shim.SnapshotFileInterval = time.Minute
	})
	if health, _ := snapshotFile(t, path); health != "degraded" {
		t.Errorf("before the verdicts: health %q, want degraded", health)
	}
	feeder.Serve(t)
	eventually(t, "snapshot", r.shim.SnapshotLoaded)
	eventually(t, "file healthy", func() bool { h, _ := snapshotFile(t, path); return h == "ok" })
	if _, hosts := snapshotFile(t, path); !cmp.Equal(hosts, map[string]string{"h-trusted": "trusted"}) {
		t.Errorf("hosts %v, want only the verified h-trusted", hosts)
	}
	if err := feeder.Publish(t.Context(), shimtest.Sign(t, key, shimtest.Verdict("h-trusted", verdict.Untrusted, 2, now, time.Hour))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "revocation in the file", func() bool { _, h := snapshotFile(t, path); return h["h-trusted"] == "untrusted" })
	if !r.metric(t, `trustpool_filter_shim_snapshot_file_writes_total{result="error"} 0`) {
		t.Error("write errors counted")
	}
	stop()
	r.wait(t)
	if health, hosts := snapshotFile(t, path); health != "stopped" || len(hosts) != 0 {
		t.Errorf("after stop: %q %v", health, hosts)
	}
}

// TestSnapshotFileHealthyWithoutVerdicts: a cloud without verdicts yet
// still gets a healthy snapshot (every host unknown) once get_verdicts has
// answered; the health change alone writes it.
func TestSnapshotFileHealthyWithoutVerdicts(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	feeder := shimtest.NewFeeder(t, rabbit.URL)
	feeder.SetSnapshot()
	var path string
	r := start(t, rabbit.URL, func(c *shim.Config) {
		path = c.Shim.SnapshotFile
		c.Shim.SnapshotFileInterval = time.Minute
	})
	// Written once the fanout is followed, before get_verdicts answers:
	// from then on only the snapshot's arrival can write the file again.
	eventually(t, "file written after subscribing", func() bool {
		h, _ := snapshotFileDetail(t, path)
		return slices.Equal(h.Detail, []string{"verdict snapshot (get_verdicts) not loaded yet"})
	})
	feeder.Serve(t)
	eventually(t, "snapshot", r.shim.SnapshotLoaded)
	eventually(t, "file healthy", func() bool { h, _ := snapshotFile(t, path); return h == "ok" })
	if _, hosts := snapshotFile(t, path); len(hosts) != 0 {
		t.Errorf("hosts %v, want none", hosts)
	}
}
