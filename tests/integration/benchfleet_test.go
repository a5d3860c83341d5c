package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"

	_ "github.com/go-sql-driver/mysql" // database/sql driver "mysql"
	_ "github.com/mattn/go-sqlite3"    // database/sql driver "sqlite3"
)

// TestBenchFleet is make bench-fleet: a simulated fleet (simulated TPMs,
// agenttest) against the attestation service and a filter shim, each in
// its own process (go build), on a private RabbitMQ node, for every
// combination of TRUSTPOOL_FLEET_BENCH (host counts, e.g. 1000,5000,10000)
// and TRUSTPOOL_FLEET_DBS (sqlite,mariadb). It measures, over
// TRUSTPOOL_FLEET_WINDOW once every host is trusted and one more interval
// has passed: the service's CPU (% of one core, /proc/PID/stat) and RSS,
// the broker's and the database's CPU, attestations/s (the service's
// rounds counter), history rows/s and database growth per day, and the
// detection latency: from tampering with a host in the simulator to the
// shim refusing it (its local API polled every 5 ms), TRUSTPOOL_FLEET_PROBES
// times spread over the window. Results go to the log and, as Markdown
// rows, to TRUSTPOOL_FLEET_BENCH_OUT. Timings are measurements, not pass
// criteria: the test fails only when the setup does.
func TestBenchFleet(t *testing.T) {
	spec := os.Getenv("TRUSTPOOL_FLEET_BENCH")
	if spec == "" {
		t.Skip("set TRUSTPOOL_FLEET_BENCH=1000,5000,10000 (make bench-fleet)")
	}
	dbs := strings.Split(envOr("TRUSTPOOL_FLEET_DBS", "sqlite,mariadb"), ",")
	interval := envDuration(t, "TRUSTPOOL_FLEET_INTERVAL", 30*time.Second)
	window := envDuration(t, "TRUSTPOOL_FLEET_WINDOW", 2*interval)
	probes, _ := strconv.Atoi(envOr("TRUSTPOOL_FLEET_PROBES", "40"))
	bins := buildBinaries(t)
	var rows []string
	for _, db := range dbs {
		for _, n := range strings.Split(spec, ",") {
			hosts, err := strconv.Atoi(strings.TrimSpace(n))
			if err != nil {
				t.Fatalf("TRUSTPOOL_FLEET_BENCH: %v", err)
			}
			t.Run(fmt.Sprintf("%s/%d", db, hosts), func(t *testing.T) {
				r := benchFleet(t, bins, db, hosts, interval, window, probes)
				rows = append(rows, r.row())
				t.Log(r.row())
			})
		}
	}
	out := os.Getenv("TRUSTPOOL_FLEET_BENCH_OUT")
	if out != "" {
		text := fleetHeader + strings.Join(rows, "\n") + "\n"
		if err := os.WriteFile(out, []byte(text), 0o644); err != nil { //nolint:gosec // G306: a results table
			t.Fatal(err)
		}
	}
}

const fleetHeader = `| hosts | db | interval | attestations/s | service CPU (% of a core) | service CPU per attestation | service RSS | broker CPU | db CPU | shim CPU | simulator CPU | history rows/s | history growth/day (sqlite file) | detection p50 / p99 / max (probes) | load (1 min) before / after |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
`

type fleetResult struct {
	hosts                     int
	db                        string
	interval                  time.Duration
	rate                      float64
	svcCPU, brokerCPU, dbCPU  float64
	shimCPU, simCPU           float64
	rssMB                     float64
	histRate                  float64
	growthPerDay              float64
	fileGrowthPerDay          float64
	p50, p99, pmax            time.Duration
	probes                    int
	loadBefore, loadAfter     float64
	enrollTime, trustedWithin time.Duration
}

func (r fleetResult) row() string {
	perAtt := "-"
	if r.rate > 0 {
		perAtt = fmt.Sprintf("%.2f ms", r.svcCPU/100*1000/r.rate)
	}
	growth := fmt.Sprintf("%.1f MB", r.growthPerDay/1e6)
	if r.db == "sqlite" {
		growth += fmt.Sprintf(" (%.1f MB)", r.fileGrowthPerDay/1e6)
	}
	return fmt.Sprintf("| %d | %s | %v | %.1f | %.1f | %s | %.0f MB | %.1f | %s | %.1f | %.1f | %.2f | %s | %v / %v / %v (%d) | %.2f / %.2f |",
		r.hosts, r.db, r.interval, r.rate, r.svcCPU, perAtt, r.rssMB, r.brokerCPU, dbCPUText(r), r.shimCPU, r.simCPU, r.histRate,
		growth, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.pmax.Round(time.Millisecond), r.probes,
		r.loadBefore, r.loadAfter)
}

func dbCPUText(r fleetResult) string {
	if r.db == "sqlite" {
		return "(in service)"
	}
	return fmt.Sprintf("%.1f", r.dbCPU)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envDuration(t *testing.T, k string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", k, err)
	}
	return d
}

type benchBins struct{ service, shim, sim string }

// buildBinaries builds the service and the shim as they ship (no race
// detector: these are measurements).
func buildBinaries(t *testing.T) benchBins {
	t.Helper()
	dir := t.TempDir()
	b := benchBins{service: filepath.Join(dir, "trustpool-attestation"), shim: filepath.Join(dir, "trustpool-filter-shim"),
		sim: filepath.Join(dir, "fleet-sim")}
	for bin, pkg := range map[string]string{b.service: "./attestation-service", b.shim: "./nova-filter-shim", b.sim: "./tests/cmd/fleet-sim"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return b
}

func loadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// shimClient asks the shim's local API which hosts pass trusted_host.
type shimClient struct{ c *http.Client }

func newShimClient(sock string) *shimClient {
	return &shimClient{c: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: 30 * time.Second}}
}

func (s *shimClient) passes(hosts []string) (map[string]bool, error) {
	body, _ := json.Marshal(map[string]any{"hosts": hosts, "trusted_host": "trusted"})
	resp, err := s.c.Post("http://shim/v1/filter", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("shim: %s: %s", resp.Status, b)
	}
	var out struct {
		Passes []string `json:"passes"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	m := make(map[string]bool, len(out.Passes))
	for _, h := range out.Passes {
		m[h] = true
	}
	return m, nil
}

// rounds is the service's trustpool_attestation_rounds_total, all statuses.
func rounds(t *testing.T, api string) float64 {
	t.Helper()
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "trustpool_attestation_rounds_total{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// dbStats returns the history rows, their payload in bytes (the columns'
// contents: what a day of them adds, before page and index overhead) and,
// for sqlite, the database file's size (the WAL, a bounded journal, left
// out).
func dbStats(t *testing.T, db string, raw *sql.DB, sqlitePath string) (rows int64, payload, file float64) {
	t.Helper()
	if err := raw.QueryRow(`SELECT COUNT(*), COALESCE(SUM(LENGTH(host) + LENGTH(status) + LENGTH(reasons) + LENGTH(profiles)
		+ LENGTH(evidence_digest) + 24), 0) FROM history`).Scan(&rows, &payload); err != nil {
		t.Fatal(err)
	}
	if db == "sqlite" {
		if fi, err := os.Stat(sqlitePath); err == nil {
			file = float64(fi.Size())
		}
	}
	return rows, payload, file
}

func benchFleet(t *testing.T, bins benchBins, db string, hosts int, interval, window time.Duration, probes int) fleetResult {
	t.Helper()
	rabbit := servicetest.NewRabbitMQ(t)
	e := newEnvOn(t, interval, rabbit)
	dir := e.dir
	brokerPID := readPID(t, filepath.Join(rabbit.Dir, "rabbit.pid"))

	var url, sqlitePath string
	dbPID := 0
	var raw *sql.DB
	var err error
	switch db {
	case "sqlite":
		sqlitePath = filepath.Join(dir, "attestation.db")
		url = "sqlite:///" + sqlitePath
		raw, err = sql.Open("sqlite3", "file:"+sqlitePath+"?mode=ro&_busy_timeout=5000")
	case "mariadb":
		m := servicetest.MariaDB(t)
		url, dbPID = m.URL, m.PID
		raw, err = sql.Open("mysql", m.DSN)
	default:
		t.Fatalf("unknown database %q", db)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })

	simDir := filepath.Join(dir, "sim")
	if out, err := exec.Command(bins.sim, "-ca-dir", simDir, "-init", "-ima-files", "50").CombinedOutput(); err != nil {
		t.Fatalf("fleet-sim -init: %v\n%s", err, out)
	}
	roots := filepath.Join(dir, "ek-roots")
	if err := os.MkdirAll(roots, 0o700); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(simDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(roots, "sim.pem"), string(caPEM))
	keyPath := filepath.Join(dir, "verdict.key")
	key, err := verdict.CreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := verdict.MarshalPublicKeyPEM(key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(dir, "verdict.pub.pem")
	if err := os.WriteFile(pubPath, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	apiPort := servicetest.FreePort(t)
	svcConf := filepath.Join(dir, "attestation.toml")
	k := e.cfg.Keystone
	writeFile(t, svcConf, fmt.Sprintf(`[DEFAULT]
transport_url = %q
host = "bench-controller"
[database]
connection = %q
[keystone_authtoken]
www_authenticate_uri = %q
auth_url = %q
auth_type = "password"
username = %q
password = %q
user_domain_name = "Default"
project_name = "service"
project_domain_name = "Default"
[api]
listen = "127.0.0.1:%d"
[attestation]
interval = %q
jitter = "2s"
concurrency = 64
quote_timeout = "5s"
nonce_lifetime = %q
verdict_validity = %q
heartbeat_interval = %q
[enrollment]
ek_roots_dir = %q
[keys]
verdict_signing_key = %q
launch_key = %q
create_launch_key = true
`, rabbit.URL, url, k.WWWAuthenticateURI, k.AuthURL, k.Username, k.Password, apiPort, interval.String(), (2*interval).String(), (3*interval).String(), interval.String(), roots, keyPath,
		filepath.Join(dir, "launch.key")))
	svc := servicetest.StartProcess(t, "trustpool-attestation", nil, bins.service, "-config-file", svcConf)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	waitFor(t, 60*time.Second, "service healthy", func() bool {
		resp, err := http.Get(api + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// The profile the simulated hosts pass, through the API.
	prof, err := os.ReadFile(filepath.Join(simDir, "profile.toml"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "profile imported", func() bool {
		req, _ := http.NewRequest(http.MethodPost, api+"/v1/profiles/import", bytes.NewReader(prof))
		req.Header.Set("X-Auth-Token", e.admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	sock := filepath.Join(dir, "shim.sock")
	shimConf := filepath.Join(dir, "filter-shim.toml")
	writeFile(t, shimConf, fmt.Sprintf(`[DEFAULT]
transport_url = %q
host = "bench-scheduler"
max_message_size = 33554432
[filter_shim]
verdict_public_key = %q
socket_path = %q
socket_group = ""
snapshot_file = %q
snapshot_file_group = ""
max_hosts = 20000
`, rabbit.URL, pubPath, sock, filepath.Join(dir, "verdicts.snapshot")))
	shim := servicetest.StartProcess(t, "trustpool-filter-shim", nil, bins.shim, "-config-file", shimConf)
	sc := newShimClient(sock)
	waitFor(t, 60*time.Second, "shim answering", func() bool { _, err := sc.passes([]string{"x"}); return err == nil })

	start := time.Now()
	sim := startSim(t, bins.sim, filepath.Join(dir, "fleet-sim.log"), "-ca-dir", simDir, "-transport-url", rabbit.URL,
		"-hosts", strconv.Itoa(hosts), "-per-connection", "250", "-ima-files", "50", "-ima-growth", "10m", "-enroll-concurrency", "64")
	sim.waitEnrolled(t, 30*time.Minute)
	r := fleetResult{hosts: hosts, db: db, interval: interval, enrollTime: time.Since(start)}
	names := make([]string, hosts)
	for i := range names {
		names[i] = fmt.Sprintf("sim-%05d", i)
	}
	waitFor(t, 30*time.Minute, "every host trusted at the shim", func() bool {
		p, err := sc.passes(names)
		time.Sleep(time.Second)
		return err == nil && len(p) == hosts
	})
	r.trustedWithin = time.Since(start)
	t.Logf("%d hosts enrolled in %v, all trusted at the shim after %v", hosts, r.enrollTime.Round(time.Second), r.trustedWithin.Round(time.Second))
	time.Sleep(interval)

	// The measurement window.
	r.loadBefore = loadAvg()
	t0 := time.Now()
	svc0, broker0, shim0, sim0 := cpuTicks(t, svc.PID()), cpuTicks(t, brokerPID), cpuTicks(t, shim.PID()), cpuTicks(t, sim.cmd.Process.Pid)
	var db0 int64
	if dbPID != 0 {
		db0 = cpuTicks(t, dbPID)
	}
	rounds0 := rounds(t, api)
	hist0, payload0, file0 := dbStats(t, db, raw, sqlitePath)

	var lat, fanLat []time.Duration
	fan := watchUntrusted(t, rabbit.URL)
	gap := window / time.Duration(probes+1)
	for i := range probes {
		time.Sleep(gap)
		h := names[(i*7919)%len(names)]
		tp := time.Now()
		sim.command(t, "tamper "+h+" ima")
		for {
			p, err := sc.passes([]string{h})
			if err == nil && !p[h] {
				lat = append(lat, time.Since(tp))
				if at, ok := fan.first(h); ok {
					fanLat = append(fanLat, at.Sub(tp))
				}
				break
			}
			if time.Since(tp) > 60*time.Second {
				t.Errorf("%s still trusted at the shim 60 s after tampering", h)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if rest := window - time.Since(t0); rest > 0 {
		time.Sleep(rest)
	}
	el := time.Since(t0).Seconds()
	hz := float64(clockTicks(t))
	pct := func(t0, t1 int64) float64 { return float64(t1-t0) / hz / el * 100 }
	r.svcCPU = pct(svc0, cpuTicks(t, svc.PID()))
	r.brokerCPU = pct(broker0, cpuTicks(t, brokerPID))
	r.shimCPU = pct(shim0, cpuTicks(t, shim.PID()))
	r.simCPU = pct(sim0, cpuTicks(t, sim.cmd.Process.Pid))
	if dbPID != 0 {
		r.dbCPU = pct(db0, cpuTicks(t, dbPID))
	}
	r.rate = (rounds(t, api) - rounds0) / el
	hist1, payload1, file1 := dbStats(t, db, raw, sqlitePath)
	r.histRate = float64(hist1-hist0) / el
	r.growthPerDay = (payload1 - payload0) / el * 86400
	r.fileGrowthPerDay = (file1 - file0) / el * 86400
	r.rssMB = float64(statusKB(t, svc.PID(), "VmRSS")) * 1024 / 1e6
	r.loadAfter = loadAvg()
	slices.Sort(lat)
	slices.Sort(fanLat)
	r.probes = len(lat)
	q := func(l []time.Duration, p float64) time.Duration {
		if len(l) == 0 {
			return 0
		}
		return l[int(math.Ceil(p*float64(len(l))))-1]
	}
	if len(lat) > 0 {
		r.p50, r.p99, r.pmax = q(lat, 0.5), q(lat, 0.99), lat[len(lat)-1]
	}
	t.Logf("detection at the shim: %v", lat)
	t.Logf("untrusted verdict on the fanout (p50 %v, p99 %v): %v", q(fanLat, 0.5), q(fanLat, 0.99), fanLat)
	return r
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// simProc is a fleet-sim process driven through its standard input.
type simProc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	log      string
	in       io.Writer
	lines    chan map[string]any
	enrolled chan struct{}
}

func startSim(t *testing.T, bin, logPath string, args ...string) *simProc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...) //nolint:gosec // G702: the fleet-sim binary this test built
	cmd.Stderr = logf
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	s := &simProc{cmd: cmd, done: make(chan struct{}), log: logPath, in: in,
		lines: make(chan map[string]any, 16), enrolled: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			switch {
			case m["event"] == "enrolled":
				close(s.enrolled)
			case m["command"] != nil:
				s.lines <- m
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

func (s *simProc) waitEnrolled(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-s.enrolled:
	case <-s.done:
		t.Fatalf("fleet-sim exited; log %s", s.log)
	case <-time.After(timeout):
		t.Fatalf("fleet-sim: not every host enrolled after %v; log %s", timeout, s.log)
	}
}

// command sends one command and waits for its answer.
func (s *simProc) command(t *testing.T, line string) map[string]any {
	t.Helper()
	if _, err := io.WriteString(s.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-s.lines:
		if e, ok := m["error"]; ok {
			t.Fatalf("fleet-sim %q: %v", line, e)
		}
		return m
	case <-time.After(60 * time.Second):
		t.Fatalf("fleet-sim %q: no answer", line)
		return nil
	}
}

// untrustedWatch follows the verdict fanout and notes when each host's
// first untrusted verdict arrived (timing only: signatures are the shim's
// business).
type untrustedWatch struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func watchUntrusted(t *testing.T, url string) *untrustedWatch {
	t.Helper()
	w := &untrustedWatch{seen: map[string]time.Time{}}
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: url, ControlExchange: attestrpc.DefaultControlExchange, MaxMessageSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	srv := oslo.NewServer(tr, oslo.Target{Topic: attestrpc.VerdictsTopic, Server: "bench-watch"}, oslo.Endpoint{
		Version: attestrpc.APIVersion,
		Methods: map[string]oslo.Handler{attestrpc.MethodVerdictsChanged: func(_ context.Context, req *oslo.Request) (any, error) {
			now := time.Now()
			var list []verdict.Signed
			if err := json.Unmarshal(req.Args["verdicts"], &list); err != nil {
				return nil, err
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, s := range list {
				if !strings.Contains(s.Verdict, `"untrusted"`) {
					continue
				}
				if v, err := verdict.Unmarshal([]byte(s.Verdict)); err == nil && v.Status == verdict.Untrusted {
					if _, ok := w.seen[v.Host]; !ok {
						w.seen[v.Host] = now
					}
				}
			}
			return nil, nil
		}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	select {
	case <-srv.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("fanout watch not ready")
	}
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
	return w
}

func (w *untrustedWatch) first(host string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.seen[host]
	return at, ok
}
