package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/service"
	"github.com/trustpool/trustpool/compute-agent/agent"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func logger(t testing.TB, prefix string) *slog.Logger {
	t.Helper()
	if os.Getenv("TRUSTPOOL_TEST_LOGS") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("c", prefix)
}

// env is one deployment: broker, Keystone, attestation service, agents.
type env struct {
	t        *testing.T
	rabbit   *servicetest.Rabbit
	ks       *servicetest.KeystoneServer
	dir      string
	rootsDir string
	cfg      service.Config
	svc      *service.Service
	stopSvc  func()
	verdicts *collector
	admin    string
	member   string
}

var userSeq sync.Mutex

func newEnv(t *testing.T, interval time.Duration) *env {
	t.Helper()
	return newEnvOn(t, interval, servicetest.RabbitMQ(t))
}

// newEnvOn is newEnv on the given broker (e.g. a private node).
func newEnvOn(t *testing.T, interval time.Duration, rabbit *servicetest.Rabbit) *env {
	t.Helper()
	e := &env{t: t, rabbit: rabbit, ks: servicetest.Keystone(t), dir: t.TempDir()}
	e.rootsDir = filepath.Join(e.dir, "ek-roots")
	if err := os.MkdirAll(e.rootsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	svcUser, svcPW := "tp-svc-"+name, "svc-pw"
	userSeq.Lock()
	e.ks.CreateUser(t, servicetest.KeystoneUser{Name: svcUser, Password: svcPW, Project: "service", Roles: []string{"service", "admin"}})
	e.ks.CreateUser(t, servicetest.KeystoneUser{Name: "tp-member-" + name, Password: "m-pw", Project: "demo-" + name, Roles: []string{"member", "reader"}})
	userSeq.Unlock()
	e.admin = e.ks.AdminToken(t)
	e.member = e.ks.Token(t, "tp-member-"+name, "m-pw", "demo-"+name)

	cfg := service.DefaultConfig()
	cfg.Default.TransportURL = e.rabbit.URL
	cfg.Default.Host = "controller"
	cfg.Database.Connection = "sqlite:///" + filepath.Join(e.dir, "attestation.db")
	cfg.Keys.VerdictSigningKey = filepath.Join(e.dir, "keys", "verdict.key")
	cfg.Keys.CreateVerdictSigningKey = true // as DevStack sets it; restarts reuse the key
	cfg.Keys.LaunchKey = filepath.Join(e.dir, "keys", "launch.key")
	cfg.Keys.CreateLaunchKey = true
	cfg.Keys.PolicySigningKey = filepath.Join(e.dir, "keys", "policy-signing.key")
	cfg.Keys.CreatePolicySigningKey = true
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Keystone.AuthURL, cfg.Keystone.WWWAuthenticateURI = e.ks.URL, e.ks.URL
	cfg.Keystone.Username, cfg.Keystone.Password, cfg.Keystone.UserDomainName = svcUser, svcPW, "Default"
	cfg.Keystone.ProjectName, cfg.Keystone.ProjectDomainName = "service", "Default"
	cfg.Policy.PolicyFile = filepath.Join(e.dir, "policy.yaml")
	cfg.ConfigDir = e.dir
	a := &cfg.Attestation
	a.Interval, a.Jitter, a.QuoteTimeout = interval, interval/10, interval/2
	a.NonceLifetime, a.VerdictValidity, a.HeartbeatInterval = interval, 3*interval, interval
	cfg.Enrollment.RequireEKCert = true
	cfg.Enrollment.EKRootsDir = e.rootsDir
	cfg.Logger = logger(t, "service")
	e.cfg = cfg
	return e
}

// startService starts (or restarts) the attestation service.
func (e *env) startService() {
	t := e.t
	t.Helper()
	svc, err := service.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("service Run() = %v before ready", err)
	case <-time.After(60 * time.Second):
		t.Fatal("service not ready after 60s")
	}
	e.svc = svc
	e.stopSvc = stopper(t, "service", cancel, done)
	t.Cleanup(e.stopSvc)
	if e.verdicts == nil {
		e.verdicts = newCollector(t, e.rabbit.URL, svc.PublicKey())
	}
	// The API is usable once Keystone authentication is set up.
	waitFor(t, 30*time.Second, "API authenticated", func() bool {
		code, _ := e.api("GET", "/v1/hosts", e.admin, nil)
		return code == http.StatusOK
	})
}

// api calls the REST API and returns the status and decoded JSON body.
func (e *env) api(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	if s, ok := body.(string); ok {
		rd = strings.NewReader(s)
	} else if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	// The in-process service's loopback API; gosec's taint analysis
	// cannot tell.
	req, err := http.NewRequest(method, e.svc.APIURL()+path, rd) //nolint:gosec // G704: see above
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req) //nolint:gosec // G704: the service's loopback API
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	_ = json.Unmarshal(b, &out)
	if len(out) == 0 {
		out["raw"] = string(b)
	}
	return resp.StatusCode, out
}

// host is one compute node: a swtpm seeded with a realistic boot, its log
// files and (optionally) a running trustpool-agent.
type host struct {
	name string
	sw   *servicetest.SWTPMServer
	dir  string
	stop func()
	// instances is the agent's directory injector root: <instances>/<id>/
	// is an instance running on this host.
	instances string
	// openTPM, when set, replaces the agent's swtpm connection (fault
	// injection around TPM commands).
	openTPM tpm.Opener
	// transportURL, when set, is the agent's own broker account.
	transportURL string
	// boots counts the host's (simulated) boots: the agent's boot id.
	boots int
	// redeliveryCheck is the agent's [launch] redelivery_check_interval
	// (0: off, so that tests run `launch redeliver` themselves).
	redeliveryCheck time.Duration
}

func (e *env) newHost(name string, v bootseed.Variant) *host {
	t := e.t
	t.Helper()
	h := &host{name: name, sw: servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: true}), dir: t.TempDir()}
	h.instances = filepath.Join(h.dir, "instances")
	if err := os.Mkdir(h.instances, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{h.sw.CACertPath, h.sw.IssuerCertPath} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.rootsDir, fmt.Sprintf("%s-%s.pem", name, filepath.Base(p))), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h.boot(t, v)
	return h
}

// boot seeds the (fresh or restarted) TPM and rewrites the event log.
func (h *host) boot(t testing.TB, v bootseed.Variant) {
	t.Helper()
	c, err := tpm.DialSWTPM(context.Background(), h.sw.ServerAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	log, err := bootseed.Seed(context.Background(), c, v)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "binary_bios_measurements"), log, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (h *host) tpmConfig() tpm.Config {
	return tpm.Config{SWTPM: h.sw.ServerAddr, EventLogPath: filepath.Join(h.dir, "binary_bios_measurements"),
		IMALogPath: filepath.Join(h.dir, "binary_runtime_measurements"), StateDir: filepath.Join(h.dir, "state")}
}

// startAgent runs helper A's trustpool-agent for h.
func (e *env) startAgent(h *host) {
	t := e.t
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.Default.Host = h.name
	cfg.Default.TransportURL = e.rabbit.URL
	if h.transportURL != "" {
		cfg.Default.TransportURL = h.transportURL
	}
	cfg.TPM.SWTPM = h.sw.ServerAddr
	cfg.TPM.EventLog = filepath.Join(h.dir, "binary_bios_measurements")
	cfg.TPM.IMALog = filepath.Join(h.dir, "binary_runtime_measurements")
	cfg.Agent.StateDir = filepath.Join(h.dir, "state")
	cfg.Agent.WatchInterval = 100 * time.Millisecond
	cfg.Agent.RetryInitial, cfg.Agent.RetryMax = 50*time.Millisecond, 500*time.Millisecond
	if h.instances == "" {
		h.instances = filepath.Join(h.dir, "instances")
		if err := os.MkdirAll(h.instances, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Launch.Injector, cfg.Launch.Directory = agent.InjectorDirectory, h.instances
	cfg.Launch.RedeliveryCheckInterval = h.redeliveryCheck
	bootID := fmt.Sprintf("%s-boot-%d", h.name, h.boots)
	cfg.BootID = func() (string, error) { return bootID, nil }
	cfg.OpenTPM = h.openTPM
	cfg.Logger = logger(t, h.name)
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h.stop = stopper(t, "agent "+h.name, cancel, done)
	t.Cleanup(h.stop)
}

// stopper returns a function that stops a component started with
// go func() { done <- x.Run(ctx) }(): it cancels ctx and waits up to 30 s
// for Run to return, reporting an error other than cancellation. Calls
// after the first do nothing.
func stopper(t *testing.T, what string, cancel context.CancelFunc, done <-chan error) func() {
	t.Helper()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("%s Run() = %v", what, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not stop within 30s", what)
			}
		})
	}
}

// collector follows the verdict fanout like a filter shim: every verdict's
// signature is checked with the service's public key; the newest seq per
// host is kept.
type collector struct {
	mu     sync.Mutex
	latest map[string]verdict.Verdict
	at     map[string]time.Time
	bad    int
}

func newCollector(t *testing.T, url string, pub []byte) *collector {
	t.Helper()
	return newCollectorWith(t, url, pub, nil)
}

// newCollectorWith is newCollector with [oslo_messaging_rabbit] options
// (they must match the shims' on the same topic).
func newCollectorWith(t *testing.T, url string, pub []byte, opts *oslo.RabbitOptions) *collector {
	t.Helper()
	c := &collector{latest: map[string]verdict.Verdict{}, at: map[string]time.Time{}}
	vf := verdict.NewVerifier(pub)
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: url, ControlExchange: attestrpc.DefaultControlExchange, Rabbit: opts})
	if err != nil {
		t.Fatal(err)
	}
	srv := oslo.NewServer(tr, oslo.Target{Topic: attestrpc.VerdictsTopic, Server: "test-shim"}, oslo.Endpoint{
		Version: attestrpc.APIVersion,
		Methods: map[string]oslo.Handler{attestrpc.MethodVerdictsChanged: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.VerdictsChangedArgs
			b, _ := json.Marshal(req.Args)
			if err := json.Unmarshal(b, &a); err != nil {
				return nil, err
			}
			now := time.Now()
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, s := range a.Verdicts {
				v, err := vf.Verify(s)
				if err != nil {
					c.bad++
					continue
				}
				if old, ok := c.latest[v.Host]; !ok || v.Seq > old.Seq {
					c.latest[v.Host] = v
					c.at[v.Host] = now
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
		t.Fatal("verdict collector not ready")
	}
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
	return c
}

func (c *collector) get(host string) (verdict.Verdict, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.latest[host]
	return v, c.at[host], ok
}

// wait returns the first verdict for host (newer than afterSeq) that
// satisfies pred.
func (c *collector) wait(t testing.TB, host string, afterSeq uint64, timeout time.Duration, what string, pred func(verdict.Verdict) bool) verdict.Verdict {
	t.Helper()
	var last verdict.Verdict
	waitFor(t, timeout, host+" "+what, func() bool {
		v, _, ok := c.get(host)
		last = v
		return ok && v.Seq > afterSeq && pred(v)
	})
	return last
}

// waitSlack stretches every waitFor timeout.
const waitSlack = 3

func status(s verdict.Status) func(verdict.Verdict) bool {
	return func(v verdict.Verdict) bool { return v.Status == s }
}

// waitFor polls cond until it holds. timeout is only a bound against a hang
// (it never decides a pass): it is stretched by waitSlack, because a loaded
// 2-core CI machine running the race detector can be several times slower
// than the run the timeout was written for.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	timeout *= waitSlack
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
