package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestPlacementE2E proves Placement trait mirroring and the revocation
// actions in Nova's real control plane with real Placement:
// nova-filter-shim/python/tests/functional/test_placement_traits.py runs
// Nova's functional-test base in-process (API, conductor, scheduler,
// fake-virt computes host1-host4, python3-placement) and serves its
// Placement and Nova API on loopback behind keystonemiddleware. This test
// runs everything else for real — RabbitMQ, Keystone, one trustpool-agent
// per compute host on its own swtpm, the attestation service — and answers
// the Python test's control API (placementControl): (re)start the service
// against that Nova with the scenario's [placement] / [revocation] settings,
// extend a PCR, restore hosts, stop and start an agent, list the
// notifications the service sent.
//
// The scenarios (one Python test each, Nova booted anew for every test):
// traits follow verdicts on every node of a host; a flavor requiring
// CUSTOM_TRUSTPOOL_TRUSTED lands only on trusted hosts with TrustedFilter
// disabled; nova-compute's concurrent trait sync (409 on both sides) loses
// nobody's traits; a PCR extend removes the traits and disables the compute
// service with a trustpool reason, recovery enables it; an operator's
// disable stays; the mass-revocation brake trips with an alert; traits of a
// verdict that expired while the service was down are removed at restart;
// the periodic reconcile repairs drift.
func TestPlacementE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	py := servicetest.Python(t)
	e := newEnv(t, 2*time.Second)
	names := []string{"host1", "host2", "host3", "host4"}
	builds := map[string]bootseed.Variant{"host1": bootseed.BuildA(), "host2": bootseed.BuildA(),
		"host3": bootseed.BuildA(), "host4": bootseed.BuildB()}
	hosts := map[string]*host{}
	for _, n := range names {
		hosts[n] = e.newHost(n, builds[n])
	}
	e.startService()
	for _, n := range names {
		e.startAgent(hosts[n])
	}
	for _, n := range names {
		e.verdicts.wait(t, n, 0, 60*time.Second, "attested without profiles", status(verdict.Untrusted))
	}
	if code, body := e.api("POST", "/v1/profiles/learn", e.admin, map[string]any{"host": "host1", "name": "baseline"}); code != http.StatusCreated {
		t.Fatalf("learn baseline from host1 = %d %v", code, body)
	}
	for _, n := range names[:3] {
		e.verdicts.wait(t, n, 0, 60*time.Second, "trusted under baseline", status(verdict.Trusted))
	}

	c := &placementControl{t: t, e: e, hosts: hosts, builds: builds, extended: map[string]bool{}, agentDown: map[string]bool{},
		serviceUp: true, reqs: make(chan ctlReq)}
	c.listen(t)
	url := c.serve(t)

	pkgDir, err := filepath.Abs("../../nova-filter-shim/python")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	args := []string{"-m", "unittest", "-v"}
	for _, k := range strings.Fields(os.Getenv("TRUSTPOOL_E2E_K")) {
		args = append(args, "-k", k) // run some scenarios while working on them
	}
	cmd := exec.CommandContext(ctx, py, append(args, "functional.test_placement_traits")...) //nolint:gosec // G702: -k filters from the developer running the test
	cmd.Dir = filepath.Join(pkgDir, "tests")
	cmd.Env = append(os.Environ(),
		"PYTHONPATH="+pkgDir+string(os.PathListSeparator)+cmd.Dir, "PYTHONDONTWRITEBYTECODE=1",
		"TRUSTPOOL_CONTROL_URL="+url, "TRUSTPOOL_KEYSTONE_URL="+e.ks.URL,
		"TRUSTPOOL_KEYSTONE_USER="+e.ks.AdminUser, "TRUSTPOOL_KEYSTONE_PASSWORD="+e.ks.AdminPassword,
		"TRUSTPOOL_KEYSTONE_PROJECT="+e.ks.AdminProject)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Control requests are served here, on the test goroutine, so that the
	// harness may fail the test from them.
	var runErr error
loop:
	for {
		select {
		case r := <-c.reqs:
			r.reply <- c.handle(r)
		case runErr = <-done:
			break loop
		}
	}
	// What failed goes first: a CI report shows the head of a long log.
	if err := servicetest.CheckUnittest(out.Bytes(), 0); err != nil || runErr != nil {
		t.Errorf("python tests failed (exit: %v): %v", runErr, err)
	}
	t.Logf("%s %v:\n%s", py, cmd.Args[1:], out.Bytes())
	if t.Failed() {
		t.FailNow()
	}
	if e.verdicts.bad != 0 {
		t.Errorf("%d verdicts failed signature verification", e.verdicts.bad)
	}
}

// placementControl is the control API of TestPlacementE2E.
type placementControl struct {
	t         *testing.T
	e         *env
	hosts     map[string]*host
	builds    map[string]bootseed.Variant
	extended  map[string]bool
	agentDown map[string]bool
	serviceUp bool
	extends   int
	reqs      chan ctlReq

	mu    sync.Mutex
	notes []ctlNote
}

type ctlNote struct {
	EventType string          `json:"event_type"`
	Priority  string          `json:"priority"`
	Payload   json.RawMessage `json:"payload"`
}

type ctlReq struct {
	method, path string
	query        map[string][]string
	body         []byte
	reply        chan ctlResp
}

type ctlResp struct {
	code int
	body any
}

// serve starts the HTTP side; requests are handed to the test goroutine.
func (c *placementControl) serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := ctlReq{method: r.Method, path: r.URL.Path, query: r.URL.Query(), body: b, reply: make(chan ctlResp, 1)}
		select {
		case c.reqs <- req:
		case <-r.Context().Done():
			return
		}
		var resp ctlResp
		select {
		case resp = <-req.reply:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.code)
		_ = json.NewEncoder(w).Encode(resp.body)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// listen collects the service's notifications.
func (c *placementControl) listen(t *testing.T) {
	t.Helper()
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: c.e.rabbit.URL, ControlExchange: attestrpc.DefaultControlExchange})
	if err != nil {
		t.Fatal(err)
	}
	l := oslo.NewListener(tr, oslo.ListenerConfig{Topic: attestrpc.NotificationTopic, Queue: "placement-e2e-test"},
		func(_ context.Context, n *oslo.Notification) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.notes = append(c.notes, ctlNote{EventType: n.EventType, Priority: n.Priority, Payload: n.Payload})
			return nil
		})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	select {
	case <-l.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("notification listener not ready")
	}
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
}

func (c *placementControl) handle(r ctlReq) ctlResp {
	t := c.t
	t.Helper()
	parts := strings.Split(strings.Trim(r.path, "/"), "/")
	switch {
	case r.method == "POST" && r.path == "/service":
		return c.startService(r.body)
	case r.method == "DELETE" && r.path == "/service":
		c.stopService()
		return ctlResp{200, map[string]any{}}
	case r.method == "POST" && r.path == "/restore":
		c.restore()
		return ctlResp{200, map[string]any{}}
	case r.method == "GET" && r.path == "/notifications":
		c.mu.Lock()
		defer c.mu.Unlock()
		out := []ctlNote{}
		for _, n := range c.notes {
			if ev := r.query["event_type"]; len(ev) == 0 || ev[0] == n.EventType {
				out = append(out, n)
			}
		}
		return ctlResp{200, out}
	case r.method == "DELETE" && r.path == "/notifications":
		c.mu.Lock()
		c.notes = nil
		c.mu.Unlock()
		return ctlResp{200, map[string]any{}}
	case r.method == "POST" && len(parts) >= 3 && parts[0] == "hosts" && c.hosts[parts[1]] != nil:
		h := c.hosts[parts[1]]
		switch strings.Join(parts[2:], "/") {
		case "extend":
			c.extend(h)
			return ctlResp{200, map[string]any{}}
		case "restore":
			c.restoreHost(h)
			return ctlResp{200, map[string]any{}}
		case "agent/stop":
			h.stop()
			c.agentDown[h.name] = true
			v, _, _ := c.e.verdicts.get(h.name)
			return ctlResp{200, map[string]any{"expires_at": float64(v.ExpiresAt.UnixNano()) / 1e9}}
		case "agent/start":
			c.e.startAgent(h)
			delete(c.agentDown, h.name)
			return ctlResp{200, map[string]any{}}
		}
	}
	return ctlResp{404, map[string]any{"error": "no such control operation: " + r.method + " " + r.path}}
}

// startService restarts the attestation service with the scenario's
// settings against the Python test's Placement and Nova API.
func (c *placementControl) startService(body []byte) ctlResp {
	t := c.t
	t.Helper()
	var req struct {
		PlacementURL      string `json:"placement_url"`
		ComputeURL        string `json:"compute_url"`
		NodeLookup        string `json:"node_lookup"`
		Disable           bool   `json:"disable"`
		BrakePercent      int    `json:"brake_percent"`
		BrakeMinHosts     int    `json:"brake_min_hosts"`
		BrakeWindow       string `json:"brake_window"`
		ReconcileInterval string `json:"reconcile_interval"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return ctlResp{400, map[string]any{"error": err.Error()}}
	}
	c.stopService()
	cfg := &c.e.cfg
	cfg.Placement.MirrorTraits = true
	cfg.Placement.EndpointOverride, cfg.Nova.EndpointOverride = req.PlacementURL, req.ComputeURL
	cfg.Placement.NodeLookup = "nova"
	if req.NodeLookup != "" {
		cfg.Placement.NodeLookup = req.NodeLookup
	}
	cfg.Placement.ReconcileInterval = time.Minute
	if req.ReconcileInterval != "" {
		d, err := time.ParseDuration(req.ReconcileInterval)
		if err != nil {
			return ctlResp{400, map[string]any{"error": err.Error()}}
		}
		cfg.Placement.ReconcileInterval = d
	}
	r := &cfg.Revocation
	r.DisableComputeService = req.Disable
	r.BrakePercent, r.BrakeMinHosts, r.BrakeWindow = 100, 3, 10*time.Minute
	if req.BrakePercent > 0 {
		r.BrakePercent = req.BrakePercent
	}
	if req.BrakeMinHosts > 0 {
		r.BrakeMinHosts = req.BrakeMinHosts
	}
	if req.BrakeWindow != "" {
		d, err := time.ParseDuration(req.BrakeWindow)
		if err != nil {
			return ctlResp{400, map[string]any{"error": err.Error()}}
		}
		r.BrakeWindow = d
	}
	c.e.startService()
	c.serviceUp = true
	return ctlResp{200, map[string]any{"api_url": c.e.svc.APIURL()}}
}

func (c *placementControl) stopService() {
	if c.serviceUp {
		c.e.stopSvc()
		c.serviceUp = false
	}
}

// extend extends PCR 7 of h's TPM and waits for the signed untrusted
// verdict.
func (c *placementControl) extend(h *host) {
	t := c.t
	t.Helper()
	before, _, _ := c.e.verdicts.get(h.name)
	c.extends++
	d := sha256.Sum256([]byte(fmt.Sprint("bootkit ", c.extends, " on ", h.name)))
	h.sw.Tool(t, "tpm2_pcrextend", "7:sha256="+hex.EncodeToString(d[:]))
	c.extended[h.name] = true
	c.e.verdicts.wait(t, h.name, before.Seq, 60*time.Second, "untrusted after PCR extend", status(verdict.Untrusted))
}

// restoreHost reboots h's TPM into its build and waits until it is trusted
// again (or, for the untrusted build, attested again).
func (c *placementControl) restoreHost(h *host) {
	t := c.t
	t.Helper()
	before, _, _ := c.e.verdicts.get(h.name)
	h.sw.Stop(t)
	h.sw.Start(t)
	h.boot(t, c.builds[h.name])
	delete(c.extended, h.name)
	c.waitSettled(h, before.Seq)
}

func (c *placementControl) waitSettled(h *host, afterSeq uint64) {
	t := c.t
	t.Helper()
	want := verdict.Trusted
	if h.name == "host4" {
		want = verdict.Untrusted
	}
	c.e.verdicts.wait(t, h.name, afterSeq, 60*time.Second, "settled after restore", status(want))
}

// restore undoes a scenario: TPMs rebooted, agents running, every host back
// in its initial state; a running service keeps running.
func (c *placementControl) restore() {
	t := c.t
	t.Helper()
	if !c.serviceUp {
		c.e.cfg.Placement.MirrorTraits, c.e.cfg.Revocation.DisableComputeService = false, false
		c.e.startService()
		c.serviceUp = true
	}
	for name := range c.agentDown {
		c.e.startAgent(c.hosts[name])
		delete(c.agentDown, name)
	}
	for name := range c.extended {
		c.restoreHost(c.hosts[name])
	}
	now := time.Now()
	for _, h := range c.hosts {
		v, _, _ := c.e.verdicts.get(h.name)
		if !v.ExpiresAt.After(now) || (h.name != "host4" && v.Status != verdict.Trusted) {
			c.waitSettled(h, v.Seq)
		}
	}
}
