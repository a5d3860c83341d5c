package agent_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trustpool/trustpool/compute-agent/agent"
	"github.com/trustpool/trustpool/compute-agent/internal/attester"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/evidence"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/tpm/tpmtest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

var quotePCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}

// verifier plays the attestation service: it enrolls the agent (really
// making and checking the credential), records measurements_changed casts,
// and verifies quotes with package evidence.
type verifier struct {
	t      *testing.T
	tr     *oslo.Transport
	ledger *evidence.Ledger

	mu       sync.Mutex
	secret   []byte
	pending  *evidence.Binding
	binding  *evidence.Binding
	enrolled chan struct{}
	changed  chan attestrpc.MeasurementsChangedArgs
	prev     *evidence.Previous
}

func newVerifier(t *testing.T, url string) *verifier {
	t.Helper()
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	v := &verifier{t: t, tr: tr, ledger: evidence.NewLedger(0), enrolled: make(chan struct{}),
		changed: make(chan attestrpc.MeasurementsChangedArgs, 100)}
	srv := oslo.NewServer(tr, oslo.Target{Topic: attestrpc.ServiceTopic, Server: "service-1"}, oslo.Endpoint{
		Version: attestrpc.APIVersion,
		Methods: map[string]oslo.Handler{
			attestrpc.MethodRegisterHost:        v.register,
			attestrpc.MethodActivateCredential:  v.activate,
			attestrpc.MethodMeasurementsChanged: v.measurementsChanged,
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-srv.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("verifier server not ready")
	}
	return v
}

func (v *verifier) register(_ context.Context, req *oslo.Request) (any, error) {
	var args attestrpc.RegisterHostArgs
	if err := attester.DecodeArgs(req.Args, &args); err != nil {
		return nil, err
	}
	ek, err := evidence.ParseEKPublic(args.EKPublic)
	if err != nil {
		return nil, oslo.NewValueError(err.Error())
	}
	ak, err := evidence.ParseAKPublic(args.AKPublic)
	if err != nil {
		return nil, oslo.NewValueError(err.Error())
	}
	secret, cred, err := evidence.MakeCredential(rand.Reader, ek, ak.Name)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.secret, v.pending = secret, &evidence.Binding{EK: ek, AK: ak}
	return &attestrpc.RegisterHostResult{State: attestrpc.StateChallenge, ChallengeID: "c1",
		Credential: &attestrpc.Credential{IDObject: cred.IDObject, EncryptedSecret: cred.EncryptedSecret}}, nil
}

func (v *verifier) activate(_ context.Context, req *oslo.Request) (any, error) {
	var args attestrpc.ActivateCredentialArgs
	if err := attester.DecodeArgs(req.Args, &args); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := evidence.CheckActivation(v.secret, args.Secret); err != nil {
		return nil, oslo.NewValueError("activation failed")
	}
	b := *v.pending
	b.Activated = true
	v.binding = &b
	close(v.enrolled)
	return &attestrpc.ActivateCredentialResult{State: attestrpc.StateEnrolled}, nil
}

func (v *verifier) measurementsChanged(_ context.Context, req *oslo.Request) (any, error) {
	var args attestrpc.MeasurementsChangedArgs
	if err := attester.DecodeArgs(req.Args, &args); err != nil {
		return nil, err
	}
	v.changed <- args
	return nil, nil
}

// quote asks compute-a's agent for evidence for challenge ch (quoting ask,
// the selection actually sent, when not nil).
func (v *verifier) quote(ch evidence.Challenge, ask []int, offsets attestrpc.LogOffsets) *evidence.Evidence {
	v.t.Helper()
	if ask == nil {
		ask = ch.PCRs
	}
	ctx, cancel := context.WithTimeout(v.t.Context(), 30*time.Second)
	defer cancel()
	var res attestrpc.QuoteResult
	c := v.tr.Client(oslo.Target{Topic: attestrpc.AgentTopic, Server: "compute-a", Version: attestrpc.APIVersion})
	if err := c.Call(ctx, nil, attestrpc.MethodQuote, &attestrpc.QuoteArgs{Nonce: ch.Nonce, PCRSelection: ask, LogOffsets: offsets}, &res); err != nil {
		v.t.Fatalf("quote: %v", err)
	}
	return &evidence.Evidence{Attest: res.Attest, Signature: res.Signature, PCRs: res.PCRs, EventLog: res.EventLog,
		IMALog: res.IMALog, IMAOffset: res.IMAOffset, IMAHashSize: res.IMAHashSize}
}

// attest runs one round with compute-a as the service would: issue, quote,
// consume, verify.
func (v *verifier) attest() (*evidence.Evidence, *evidence.Result) {
	v.t.Helper()
	now := time.Now()
	ch, err := v.ledger.Issue(rand.Reader, now, "compute-a", quotePCRs)
	if err != nil {
		v.t.Fatal(err)
	}
	ev := v.quote(ch, nil, v.offsets())
	return ev, v.verify(ch.Nonce, ev, now)
}

func (v *verifier) offsets() attestrpc.LogOffsets {
	if v.prev == nil {
		return attestrpc.LogOffsets{}
	}
	return attestrpc.LogOffsets{IMA: v.prev.IMA.Offset, EventLogDigest: hex.EncodeToString(v.prev.EventLogDigest)}
}

// verify consumes the nonce and verifies; on success the state advances.
func (v *verifier) verify(nonce []byte, ev *evidence.Evidence, now time.Time) *evidence.Result {
	v.t.Helper()
	res, err := v.tryVerify(nonce, ev, now)
	if err != nil {
		v.t.Fatalf("Verify: %v (%s)", err, evidence.Reason(err))
	}
	return res
}

func (v *verifier) tryVerify(nonce []byte, ev *evidence.Evidence, now time.Time) (*evidence.Result, error) {
	ch, err := v.ledger.Consume("compute-a", nonce, now)
	if err != nil && !errors.Is(err, evidence.ErrNonceReused) {
		return nil, err
	}
	v.mu.Lock()
	b := *v.binding
	v.mu.Unlock()
	res, err := evidence.Verify(b, ch, ev, v.prev, evidence.Options{Now: now})
	if err != nil {
		return nil, err
	}
	v.prev = &evidence.Previous{Clock: res.Clock, PCRs: res.PCRs, EventLogDigest: res.EventLogDigest, Boot: res.Boot}
	if res.IMA != nil {
		v.prev.IMA = res.IMA.State
	}
	return res, nil
}

func (v *verifier) waitChanged(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case a := <-v.changed:
			if a.Host != "compute-a" {
				t.Errorf("measurements_changed host %q", a.Host)
			}
			if strings.Contains(a.Reason, want) {
				return
			}
			t.Logf("measurements_changed(%s), waiting for %s", a.Reason, want)
		case <-timeout:
			t.Fatalf("no measurements_changed(%s)", want)
		}
	}
}

// bootedSWTPM starts a swtpm with EK certificates, seeds it with a
// realistic BuildA boot and an IMA list, and returns it with the directory
// holding the logs.
func bootedSWTPM(t *testing.T) (*servicetest.SWTPMServer, string) {
	t.Helper()
	sw := servicetest.SWTPM(t, servicetest.SWTPMOptions{EKCert: true})
	dir := t.TempDir()
	c, err := tpm.DialSWTPM(t.Context(), sw.ServerAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	log, err := bootseed.Seed(t.Context(), c, bootseed.BuildA())
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "binary_bios_measurements"), log, 0o600); err != nil {
		t.Fatal(err)
	}
	measure(t, sw, dir, true, bootseed.IMAFile{Path: "/usr/bin/bash", Content: []byte("bash")})
	return sw, dir
}

func measure(t *testing.T, sw *servicetest.SWTPMServer, dir string, first bool, files ...bootseed.IMAFile) {
	t.Helper()
	c, err := tpm.DialSWTPM(t.Context(), sw.ServerAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	logs, err := bootseed.AppendIMA(c, files, first)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"binary_runtime_measurements": logs.SHA1, "binary_runtime_measurements_sha256": logs.SHA256} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// notifySocket listens where the agent sends sd_notify datagrams.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

func waitNotify(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case m := <-ch:
			if strings.Contains(m, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no sd_notify %s", want)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestAgentOnSWTPM runs the agent against a swtpm seeded with a realistic
// boot, over a real RabbitMQ, with a Go verifier playing the service:
// enrollment, evidence that verifies (full and steady state), a replayed
// nonce and a changed PCR selection refused by the verifier, IMA growth and a
// PCR extend announced by measurements_changed (the extend then failing the
// replay), ping, systemd notifications and a clean stop.
func TestAgentOnSWTPM(t *testing.T) {
	sw, dir := bootedSWTPM(t)
	rabbit := servicetest.RabbitMQ(t)
	v := newVerifier(t, rabbit.URL)
	sock, notes := notifySocket(t)

	cfg := agent.DefaultConfig()
	cfg.Default.Host = "compute-a"
	cfg.Default.TransportURL = rabbit.URL
	cfg.TPM.SWTPM = sw.ServerAddr
	cfg.TPM.EventLog = filepath.Join(dir, "binary_bios_measurements")
	cfg.TPM.IMALog = filepath.Join(dir, "binary_runtime_measurements")
	cfg.Agent.StateDir = filepath.Join(dir, "state")
	cfg.Agent.WatchInterval = 100 * time.Millisecond
	cfg.Agent.RetryInitial, cfg.Agent.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.NotifySocket = sock
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	waitNotify(t, notes, "READY=1")
	select {
	case <-v.enrolled:
	case err := <-done:
		t.Fatalf("Run() = %v before enrollment", err)
	case <-time.After(time.Minute):
		t.Fatal("agent did not enroll")
	}
	waitNotify(t, notes, "STATUS=enrolled")

	// The first round: full event log and IMA list; the verifier accepts.
	ev, res := v.attest()
	if len(ev.EventLog) == 0 || res.Boot == nil || res.Boot.KernelPath != bootseed.BuildA().KernelPath {
		t.Fatalf("first round: event log %d bytes, boot facts %+v", len(ev.EventLog), res.Boot)
	}
	if res.IMA == nil || len(res.IMA.New) != 2 {
		t.Fatalf("first round IMA: %+v", res.IMA)
	}

	// Steady state: the event log is left out, the verifier still accepts.
	ev, _ = v.attest()
	if ev.EventLog != nil {
		t.Errorf("steady state: event log sent (%d bytes)", len(ev.EventLog))
	}

	// A replayed quote: the same nonce answered twice is refused the
	// second time.
	now := time.Now()
	ch, err := v.ledger.Issue(rand.Reader, now, "compute-a", quotePCRs)
	if err != nil {
		t.Fatal(err)
	}
	ev1 := v.quote(ch, nil, v.offsets())
	ev2 := v.quote(ch, nil, v.offsets())
	v.verify(ch.Nonce, ev1, now)
	if _, err := v.tryVerify(ch.Nonce, ev2, now); !errors.Is(err, evidence.ErrNonceReused) {
		t.Errorf("replayed nonce: Verify = %v, want %v", err, evidence.ErrNonceReused)
	}
	// A quote over another selection than the one challenged (as a
	// partial-selection attack would produce) is refused.
	ch, err = v.ledger.Issue(rand.Reader, now, "compute-a", quotePCRs)
	if err != nil {
		t.Fatal(err)
	}
	ev = v.quote(ch, []int{0, 1, 2, 3, 4, 5, 6, 7}, v.offsets())
	if _, err := v.tryVerify(ch.Nonce, ev, now); !errors.Is(err, evidence.ErrPCRSelection) {
		t.Errorf("other PCR selection: Verify = %v, want %v", err, evidence.ErrPCRSelection)
	}

	// IMA growth is announced and the next round verifies the new entry.
	measure(t, sw, dir, false, bootseed.IMAFile{Path: "/usr/bin/python3", Content: []byte("py")})
	v.waitChanged(t, "ima_log_grew")
	_, res = v.attest()
	if res.IMA == nil || len(res.IMA.New) != 1 || res.IMA.New[0].Path() != "/usr/bin/python3" {
		t.Errorf("IMA after growth: %+v", res.IMA)
	}

	// ping.
	var pong attestrpc.PingResult
	pc := v.tr.Client(oslo.Target{Topic: attestrpc.AgentTopic, Server: "compute-a"})
	if err := pc.Call(t.Context(), nil, attestrpc.MethodPing, map[string]any{}, &pong); err != nil || pong.Host != "compute-a" || pong.AgentVersion != agent.Version {
		t.Errorf("ping = %+v, %v", pong, err)
	}

	// A PCR extend behind the event log's back is announced, and the
	// evidence then fails the replay.
	digest := sha256.Sum256([]byte("rootkit"))
	sw.Tool(t, "tpm2_pcrextend", "7:sha256="+hex.EncodeToString(digest[:]))
	v.waitChanged(t, "pcr_changed")
	now = time.Now()
	ch, err = v.ledger.Issue(rand.Reader, now, "compute-a", quotePCRs)
	if err != nil {
		t.Fatal(err)
	}
	ev = v.quote(ch, nil, attestrpc.LogOffsets{})
	var re *evidence.ReplayError
	if _, err := v.tryVerify(ch.Nonce, ev, now); !errors.As(err, &re) || len(re.PCRs) != 1 || re.PCRs[0] != 7 {
		t.Errorf("after extending PCR 7: Verify = %v, want a replay error on PCR 7", err)
	}

	// Clean stop.
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	waitNotify(t, notes, "STOPPING=1")
	st, err := os.Stat(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		t.Errorf("state dir mode %v", st.Mode().Perm())
	}
}

func baseConfig(t *testing.T, url, dir string) agent.Config {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.Default.Host = "compute-a"
	cfg.Default.TransportURL = url
	cfg.TPM.EventLog = filepath.Join(dir, "binary_bios_measurements")
	cfg.TPM.IMALog = filepath.Join(dir, "binary_runtime_measurements")
	cfg.Agent.StateDir = filepath.Join(dir, "state")
	cfg.Agent.RetryInitial, cfg.Agent.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

// start runs a in the background and returns a function that stops it and
// returns Run's error.
func start(t *testing.T, a *agent.Agent) (stop func() error, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan error, 1)
	go func() { ch <- a.Run(ctx) }()
	t.Cleanup(cancel)
	return func() error {
		cancel()
		select {
		case err := <-ch:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after cancel")
			return nil
		}
	}, ch
}

// TestAgentWaitsForTPM: a TPM that is not there yet (swtpm not started) is
// waited for, with systemd told why; the agent then enrolls.
func TestAgentWaitsForTPM(t *testing.T) {
	sw, dir := bootedSWTPM(t)
	sw.Stop(t)
	rabbit := servicetest.RabbitMQ(t)
	v := newVerifier(t, rabbit.URL)
	sock, notes := notifySocket(t)
	cfg := baseConfig(t, rabbit.URL, dir)
	cfg.TPM.SWTPM = sw.ServerAddr
	cfg.TPM.Timeout = time.Second
	cfg.NotifySocket = sock
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop, _ := start(t, a)
	waitNotify(t, notes, "STATUS=waiting for the TPM")
	select {
	case <-a.Ready():
		t.Fatal("ready without a TPM")
	default:
	}
	sw.Start(t)
	waitNotify(t, notes, "READY=1")
	select {
	case <-v.enrolled:
	case <-time.After(time.Minute):
		t.Fatal("agent did not enroll")
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want context.Canceled", err)
	}
}

// TestAgentUnusableAKState: an AK state the configured algorithm cannot
// use is fatal (no silent re-keying, which would need re-enrollment).
func TestAgentUnusableAKState(t *testing.T) {
	sw, dir := bootedSWTPM(t)
	rabbit := servicetest.RabbitMQ(t)
	cfg := baseConfig(t, rabbit.URL, dir)
	cfg.TPM.SWTPM = sw.ServerAddr
	// Create an ECC AK first, as an earlier run would have.
	tp, err := tpm.Open(tpm.Config{SWTPM: sw.ServerAddr, StateDir: cfg.Agent.StateDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.AK(t.Context()); err != nil {
		t.Fatal(err)
	}
	cfg.TPM.AKAlgorithm = tpm.AlgRSA
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, done := start(t, a)
	select {
	case err := <-done:
		if !errors.Is(err, tpm.ErrAKState) {
			t.Errorf("Run() = %v, want %v", err, tpm.ErrAKState)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run kept going with an unusable AK state")
	}
}

// TestAgentInProcessSimulator: the agent runs in-process on an injected TPM
// (the go-tpm-tools simulator), as integration tests of the whole system
// start it, and its evidence verifies.
func TestAgentInProcessSimulator(t *testing.T) {
	sim := tpmtest.Simulator(t)
	dir := t.TempDir()
	c, err := sim.Opener()(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	log, err := bootseed.Seed(t.Context(), c, bootseed.BuildB())
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "binary_bios_measurements"), log, 0o600); err != nil {
		t.Fatal(err)
	}
	rabbit := servicetest.RabbitMQ(t)
	v := newVerifier(t, rabbit.URL)
	cfg := baseConfig(t, rabbit.URL, dir)
	cfg.TPM.Device = ""
	cfg.OpenTPM = sim.Opener()
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop, _ := start(t, a)
	select {
	case <-v.enrolled:
	case <-time.After(time.Minute):
		t.Fatal("agent did not enroll")
	}
	_, res := v.attest()
	if res.Boot == nil || res.Boot.KernelPath != bootseed.BuildB().KernelPath || (res.IMA != nil && len(res.IMA.New) != 0) {
		t.Errorf("boot facts %+v, IMA %+v", res.Boot, res.IMA)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want context.Canceled", err)
	}
}
