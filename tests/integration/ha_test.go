package integration

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/compute-agent/agenttest"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// haHosts is the simulated fleet of the multi-instance test.
const haHosts = 150

// HA timing: with lease 2 s the worst hand-over (lease + lease/4 + jitter
// + quote timeout) plus one interval stays below the verdict validity.
const (
	haInterval = 4 * time.Second
	haJitter   = 500 * time.Millisecond
	haLease    = 2 * time.Second
	haQuote    = 1500 * time.Millisecond
	haValidity = 3 * haInterval
)

// quoteLog records every quote request the simulated hosts receive and
// through which reply queue (one per service instance connection).
type quoteLog struct {
	mu  sync.Mutex
	ev  map[string][]quoteEvent
	all int
}

type quoteEvent struct {
	at    time.Time
	reply string
}

func (q *quoteLog) add(host, reply string, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ev[host] = append(q.ev[host], quoteEvent{at: at, reply: reply})
	q.all++
}

// since returns each host's quotes at or after t.
func (q *quoteLog) since(t time.Time) map[string][]quoteEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[string][]quoteEvent{}
	for h, evs := range q.ev {
		for _, e := range evs {
			if !e.at.Before(t) {
				out[h] = append(out[h], e)
			}
		}
	}
	return out
}

// instance is one trustpool-attestation process.
type instance struct {
	name string
	p    *servicetest.Process
	api  string
}

// metric returns the sum of a metric's samples (all labels) at the
// instance's /metrics.
func (in *instance) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get(in.api + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", in.name, err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// builtBinaries holds the daemons built once per test binary (go build
// takes seconds, linking the race runtime more).
var (
	builtMu       sync.Mutex
	builtBinaries = map[string]string{}
)

// buildDaemon builds pkg (relative to the module root) once, with the race
// detector when the tests run with it.
func buildDaemon(t *testing.T, pkg, name string) string {
	t.Helper()
	builtMu.Lock()
	defer builtMu.Unlock()
	if bin, ok := builtBinaries[pkg]; ok {
		return bin
	}
	bin := filepath.Join(servicetest.SharedDir(t, "bin"), name)
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	builtBinaries[pkg] = bin
	return bin
}

func buildService(t *testing.T) string {
	t.Helper()
	return buildDaemon(t, "./attestation-service", "trustpool-attestation")
}

// startInstance runs one service instance named name on dbURL with the
// shared verdict key and the shared launch key (e.dir/launch.key).
func (e *env) startInstance(t *testing.T, bin, name, dbURL, keyPath string) *instance {
	t.Helper()
	port := servicetest.FreePort(t)
	conf := filepath.Join(e.dir, name+".toml")
	k := e.cfg.Keystone
	writeFile(t, conf, fmt.Sprintf(`[DEFAULT]
transport_url = %q
host = %q
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
jitter = %q
quote_timeout = %q
nonce_lifetime = %q
verdict_validity = %q
heartbeat_interval = %q
[enrollment]
ek_roots_dir = %q
[keys]
verdict_signing_key = %q
launch_key = %q
[cluster]
lease = %q
`, e.rabbit.URL, name, dbURL, k.WWWAuthenticateURI, k.AuthURL, k.Username, k.Password, port, haInterval.String(),
		haJitter.String(), haQuote.String(), (2*haInterval).String(), haValidity.String(), haInterval.String(),
		e.rootsDir, keyPath, filepath.Join(e.dir, "launch.key"), haLease.String()))
	in := &instance{name: name, api: fmt.Sprintf("http://127.0.0.1:%d", port),
		p: servicetest.StartProcess(t, name, nil, bin, "-config-file", conf)}
	waitFor(t, 60*time.Second, name+" healthy", func() bool {
		resp, err := http.Get(in.api + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return in
}

// TestSeveralInstances: three service instances (separate processes)
// share one database and one bus. They split the fleet (each host
// attested by one instance per interval, within a small bound), answer
// enrollment RPCs whichever instance receives each step (the challenges
// live in the database), serve REST for every host, keep each host's seq
// strictly increasing, and, when one is killed with SIGKILL, the others
// take its hosts within an interval plus the lease while the real filter
// shim never sees a healthy host's verdict expire.
func TestSeveralInstances(t *testing.T) {
	for _, db := range []string{"mariadb", "postgresql"} {
		t.Run(db, func(t *testing.T) {
			t.Parallel()
			var url string
			if db == "mariadb" {
				url = servicetest.MariaDB(t).URL
			} else {
				url = servicetest.PostgreSQL(t).URL
			}
			severalInstances(t, url)
		})
	}
}

func severalInstances(t *testing.T, dbURL string) {
	t.Helper()
	e := newEnv(t, haInterval)
	bin := buildService(t)
	quotes := &quoteLog{ev: map[string][]quoteEvent{}}
	f := e.newSimFleet(haHosts, func(c *agenttest.Config) {
		c.OnQuote = quotes.add
	})
	keyPath := filepath.Join(e.dir, "verdict.key")
	key, err := verdict.CreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	lkey, err := launch.CreateKey(filepath.Join(e.dir, "launch.key"), launch.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"svc-a", "svc-b", "svc-c"}
	inst := map[string]*instance{}
	for _, n := range names {
		inst[n] = e.startInstance(t, bin, n, dbURL, keyPath)
	}
	// Every instance publishes the one launch key tenants seal to.
	for _, n := range names {
		var keys attestapi.Keys
		if err := json.Unmarshal(restCall(t, inst[n].api, http.MethodGet, "/v1/keys", e.admin, "", http.StatusOK), &keys); err != nil {
			t.Fatal(err)
		}
		if len(keys.LaunchKeys) != 1 || keys.LaunchKeys[0].Fingerprint != lkey.Public().Fingerprint() {
			t.Errorf("%s lists launch keys %+v, want the shared one %s", n, keys.LaunchKeys, lkey.Public().Fingerprint())
		}
	}
	// REST through instance c; the profile is shared through the database.
	prof, err := agenttest.Profile("simfleet", nil, agenttest.IMAFiles(f.files))
	if err != nil {
		t.Fatal(err)
	}
	restCall(t, inst["svc-c"].api, http.MethodPost, "/v1/profiles/import", e.admin, prof, http.StatusOK)

	shim := startShim(t, e, pub)
	f.run(t, 3*time.Minute)
	hosts := make([]string, 0, haHosts)
	for _, h := range f.Hosts() {
		hosts = append(hosts, h.Name)
	}
	waitFor(t, 2*time.Minute, "every host trusted at the shim", func() bool {
		p, err := shim.passes(hosts)
		return err == nil && len(p) == len(hosts)
	})
	// Enrollment crossed instances freely: no activation ever missed its
	// challenge.
	for _, n := range names {
		if v := inst[n].metric(t, `trustpool_enrollment_total{outcome="unknown_challenge"}`); v != 0 {
			t.Errorf("%s: %v enrollments found no challenge", n, v)
		}
	}

	// Steady state: the fleet is split three ways, each host once per
	// interval.
	time.Sleep(haInterval + haLease)
	t0 := time.Now()
	time.Sleep(3 * haInterval)
	window := quotes.since(t0)
	perInstance := map[string]int{}
	total, double := 0, 0
	for _, h := range hosts {
		evs := window[h]
		if len(evs) < 2 {
			t.Errorf("%s quoted %d times in three intervals", h, len(evs))
		}
		for i, ev := range evs {
			perInstance[ev.reply]++
			total++
			if i > 0 && ev.at.Sub(evs[i-1].at) < haInterval/2 {
				double++
			}
		}
	}
	t.Logf("steady state: %d quotes in 3 intervals by %d reply queues %v, %d closer than half an interval", total, len(perInstance), perInstance, double)
	if len(perInstance) != 3 {
		t.Errorf("quotes came through %d reply queues, want 3 (one per instance)", len(perInstance))
	}
	for q, n := range perInstance {
		if n < total/6 {
			t.Errorf("instance with reply queue %s did %d of %d rounds, want about a third", q, n, total)
		}
	}
	if double > total/50 {
		t.Errorf("%d of %d rounds came less than half an interval after the previous one (double attestation)", double, total)
	}
	scheduled := 0.0
	for _, n := range names {
		scheduled += inst[n].metric(t, "trustpool_scheduled_hosts")
	}
	if int(scheduled) != haHosts {
		t.Errorf("instances schedule %v hosts in all, want %d", scheduled, haHosts)
	}

	// REST from any instance sees every host with its verdict.
	var list struct {
		Hosts []struct {
			Name    string `json:"name"`
			Verdict *struct {
				EffectiveStatus string `json:"effective_status"`
			} `json:"verdict"`
		} `json:"hosts"`
	}
	restJSON(t, inst["svc-a"].api, "/v1/hosts", e.admin, &list)
	trusted := 0
	for _, h := range list.Hosts {
		if h.Verdict != nil && h.Verdict.EffectiveStatus == string(verdict.Trusted) {
			trusted++
		}
	}
	if trusted != haHosts {
		t.Errorf("GET /v1/hosts on svc-a: %d of %d hosts trusted", trusted, haHosts)
	}

	// kill -9 of one instance: its hosts move within an interval plus the
	// lease, and no healthy host's verdict expires at the shim meanwhile.
	killed := time.Now()
	inst["svc-b"].p.Kill(t)
	deadline := killed.Add(haInterval + haLease + haLease/4 + haJitter + haQuote)
	failures := 0
	for time.Since(killed) < deadline.Sub(killed)+haInterval {
		p, err := shim.passes(hosts)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != len(hosts) {
			failures++
			for _, h := range hosts {
				if !p[h] {
					t.Errorf("%s not trusted at the shim %v after the kill", h, time.Since(killed).Round(time.Millisecond))
					break
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	if failures > 0 {
		t.Errorf("%d shim polls lacked healthy hosts during the hand-over", failures)
	}
	after := quotes.since(killed)
	late := 0
	for _, h := range hosts {
		got := false
		for _, ev := range after[h] {
			if !ev.at.After(deadline) {
				got = true
				break
			}
		}
		if !got {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d hosts not attested within %v of the kill (interval + lease + refresh + jitter + quote timeout)", late, deadline.Sub(killed))
	}
	scheduled = inst["svc-a"].metric(t, "trustpool_scheduled_hosts") + inst["svc-c"].metric(t, "trustpool_scheduled_hosts")
	if int(scheduled) != haHosts {
		t.Errorf("the survivors schedule %v hosts, want %d", scheduled, haHosts)
	}
	// Every verdict the shim side saw has its own seq per host, whichever
	// instance signed it.
	e.verdicts.mu.Lock()
	bad := e.verdicts.bad
	e.verdicts.mu.Unlock()
	if bad != 0 {
		t.Errorf("%d verdicts did not verify with the shared key", bad)
	}
	checkSeqs(t, e, hosts, inst["svc-c"].api)
}

// checkSeqs reads each host's history through the API: seqs strictly
// increase with time, across instances.
func checkSeqs(t *testing.T, e *env, hosts []string, api string) {
	t.Helper()
	for _, h := range hosts[:20] {
		var hist struct {
			History []struct {
				Seq uint64 `json:"seq"`
			} `json:"history"`
		}
		restJSON(t, api, "/v1/hosts/"+h+"/history", e.admin, &hist)
		for i := 1; i < len(hist.History); i++ {
			// Newest first.
			if hist.History[i].Seq >= hist.History[i-1].Seq {
				t.Errorf("%s history seqs %v not strictly increasing", h, hist.History)
				break
			}
		}
	}
}

func restCall(t *testing.T, api, method, path, token, body string, want int) []byte {
	t.Helper()
	req, err := http.NewRequest(method, api+path, strings.NewReader(body)) //nolint:gosec // G704: a loopback test service
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	resp, err := http.DefaultClient.Do(req) //nolint:gosec // G704: a loopback test service
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, b)
	}
	return b
}

func restJSON(t *testing.T, api, path, token string, out any) {
	t.Helper()
	b := restCall(t, api, http.MethodGet, path, token, "", http.StatusOK)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// startShim runs the real filter shim (built as it ships) pinning pub, and
// a collector on the fanout pinning it too (e.verdicts).
func startShim(t *testing.T, e *env, pub ed25519.PublicKey) *shimClient {
	t.Helper()
	sc := startShimWith(t, e, pub, "")
	e.verdicts = newCollector(t, e.rabbit.URL, pub)
	return sc
}

// startShimWith runs the real filter shim with extra
// [oslo_messaging_rabbit] lines.
func startShimWith(t *testing.T, e *env, pub ed25519.PublicKey, rabbitOpts string) *shimClient {
	t.Helper()
	bin := buildDaemon(t, "./nova-filter-shim", "trustpool-filter-shim")
	pem, err := verdict.MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(e.dir, "verdict.pub.pem")
	writeFile(t, pubPath, string(pem))
	sock := filepath.Join(e.dir, "shim.sock")
	conf := filepath.Join(e.dir, "filter-shim.toml")
	writeFile(t, conf, fmt.Sprintf(`[DEFAULT]
transport_url = %q
host = "test-scheduler"
[filter_shim]
verdict_public_key = %q
socket_path = %q
socket_group = ""
snapshot_file = %q
snapshot_file_group = ""
[oslo_messaging_rabbit]
%s
`, e.rabbit.URL, pubPath, sock, filepath.Join(e.dir, "verdicts.snapshot"), rabbitOpts))
	servicetest.StartProcess(t, "trustpool-filter-shim", nil, bin, "-config-file", conf)
	sc := newShimClient(sock)
	waitFor(t, 60*time.Second, "shim answering", func() bool { _, err := sc.passes([]string{"x"}); return err == nil })
	return sc
}
