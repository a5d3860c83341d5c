// Package agent is trustpool-agent, the attester on every compute node
// (docs/ARCHITECTURE.md, "Enrollment" and "Attestation"): it opens the
// host's TPM, loads or creates its attestation key, enrolls with the
// attestation service over the message bus and then answers the service's quote and ping calls on topic
// trustpool-agent with server = the host name. It watches for measurement
// changes and casts measurements_changed so the service re-attests at once.
// For trusted launches it answers instance_present and deliver_secret
// (package deliver): it unseals a secret sealed to this host's TPM and
// injects it into an instance with the [launch] injector. When the
// instance of a blob it keeps for re-delivery starts (after a host reboot,
// told by the boot id recorded in [agent] state_dir, or stopped and
// started again), it casts redelivery_wanted so the service decides on a
// re-delivery (package keptwatch; [launch] redelivery_check_interval).
//
// Order of Run: the TPM is opened and the AK loaded (created on first start
// and kept, mode 0600, in [agent] state_dir); the RPC server starts
// consuming; systemd is told READY=1 ($NOTIFY_SOCKET, Type=notify);
// enrollment runs (retrying with backoff while the broker or service is away,
// or an operator approval is pending); then the watcher starts. The server
// consumes before enrollment completes so that the service's first quote,
// sent as soon as it has bound the AK, finds the queue. Run returns when its
// context ends (SIGTERM in main), after in-flight calls have finished.
//
// The agent trusts nothing it is sent and proves nothing by itself: the
// service verifies everything it returns. It never logs nonces in full, the
// activation secret, launch secrets or broker passwords (transport URLs are
// logged redacted).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/trustpool/trustpool/compute-agent/internal/attester"
	"github.com/trustpool/trustpool/compute-agent/internal/deliver"
	"github.com/trustpool/trustpool/compute-agent/internal/enroll"
	"github.com/trustpool/trustpool/compute-agent/internal/inject"
	"github.com/trustpool/trustpool/compute-agent/internal/keptwatch"
	"github.com/trustpool/trustpool/compute-agent/internal/watch"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/sdnotify"
	"github.com/trustpool/trustpool/internal/tpm"
)

// Version is the agent version reported to the service.
const Version = "0.1.0"

// Agent is one running trustpool-agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	tpm   *tpm.TPM
	ready chan struct{}

	mu    sync.Mutex
	state string
}

// New checks cfg and returns an agent; it does not touch the TPM or the
// broker yet.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	if err := cfg.Rabbit.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Default.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("DEFAULT.host is not set and the host name is unknown: %w", err)
		}
		cfg.Default.Host = h
	}
	var (
		t   *tpm.TPM
		err error
	)
	if cfg.OpenTPM != nil {
		t, err = tpm.New(cfg.OpenTPM, cfg.tpmConfig())
	} else {
		t, err = tpm.Open(cfg.tpmConfig())
	}
	if err != nil {
		return nil, fmt.Errorf("open TPM: %w", err)
	}
	return &Agent{cfg: cfg, log: log.With("host", cfg.Default.Host), tpm: t, ready: make(chan struct{})}, nil
}

// Host is the host name the agent serves under.
func (a *Agent) Host() string { return a.cfg.Default.Host }

// Ready is closed once the RPC server consumes from the broker.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// State is the enrollment state: "starting", "registering",
// "unreachable", "refused", "activation_failed", "pending_approval" or
// "enrolled".
func (a *Agent) State() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state == "" {
		return "starting"
	}
	return a.state
}

func (a *Agent) setState(s string) {
	a.mu.Lock()
	a.state = s
	a.mu.Unlock()
}

// Run runs the agent until ctx ends (call it once); it then returns ctx's
// error once the RPC server has stopped. Other errors are fatal: a TPM the agent cannot use
// because of its configuration, or a broker configuration it cannot use.
func (a *Agent) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel below
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	ak, err := a.loadKeys(ctx)
	if err != nil {
		return err
	}
	a.log.Info("attestation key loaded", "algorithm", ak.Algorithm, "ak_name", fmt.Sprintf("%x", ak.Name))

	tr, err := oslo.NewTransport(oslo.Config{
		TransportURL: a.cfg.Default.TransportURL, ControlExchange: a.cfg.Default.ControlExchange,
		Rabbit: &a.cfg.Rabbit, Logger: a.log, MaxMessageSize: a.cfg.Default.MaxMessageSize,
	})
	if err != nil {
		return fmt.Errorf("message transport: %w", err)
	}
	defer tr.Close()
	if u, err := oslo.ParseTransportURL(a.cfg.Default.TransportURL); err == nil {
		a.log.Info("connecting to the message bus", "transport_url", u.Redacted(),
			"exchange", a.cfg.Default.ControlExchange)
	}

	att := attester.New(attester.Config{
		TPM: a.tpm, Host: a.cfg.Default.Host, Version: Version, IMA: a.cfg.TPM.IMALog != "",
		Timeout: a.cfg.Agent.QuoteTimeout, Logger: a.log,
	})
	service := tr.Client(oslo.Target{Topic: a.cfg.Agent.ServiceTopic, Version: attestrpc.BaseVersion})
	inj := a.cfg.injector()
	var dlv *deliver.Deliverer
	kw := a.keptWatcher(service, inj, func() *deliver.Deliverer { return dlv })
	dlv, err = deliver.New(deliver.Config{TPM: a.tpm, Injector: inj, StateDir: a.cfg.Agent.StateDir,
		Timeout: a.cfg.Launch.Timeout, OnRedelivered: kw.Redelivered, Logger: a.log})
	if err != nil {
		return err
	}
	srv := oslo.NewServer(tr, oslo.Target{Topic: attestrpc.AgentTopic, Server: a.cfg.Default.Host}, att.Endpoint(), dlv.Endpoint())
	srvErr := make(chan error, 1)
	wg.Go(func() { srvErr <- srv.Run(ctx) })

	select {
	case <-srv.Ready():
	case err := <-srvErr:
		return fmt.Errorf("rpc server: %w", err)
	case <-ctx.Done():
		cancel()
		return ctx.Err()
	}
	close(a.ready)
	a.log.Info("serving", "topic", attestrpc.AgentTopic, "server", a.cfg.Default.Host)
	a.notify("READY=1", "STATUS=serving; registering with the attestation service")

	a.setState("registering")
	err = enroll.Run(ctx, enroll.Config{
		Host: a.cfg.Default.Host, Version: Version, TPM: a.tpm, Service: service,
		CallTimeout: a.cfg.Agent.RPCTimeout,
		Backoff:     enroll.Backoff{Initial: a.cfg.Agent.RetryInitial, Max: a.cfg.Agent.RetryMax},
		OnState: func(state, reason string) {
			a.setState(state)
			a.notify("STATUS=" + statusLine(state, reason))
		},
		Logger: a.log,
	})
	if err == nil && a.cfg.Agent.WatchInterval > 0 {
		w := a.watcher(service)
		wg.Go(func() { _ = w.Run(ctx) })
	}
	if err == nil && a.cfg.Launch.RedeliveryCheckInterval > 0 {
		wg.Go(func() { _ = kw.Run(ctx) })
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-srvErr:
		runErr = fmt.Errorf("rpc server: %w", runErr)
	}
	a.notify("STOPPING=1")
	a.log.Info("stopping")
	cancel()
	if runErr != nil {
		return runErr
	}
	return ctx.Err()
}

// loadKeys reads the EK and loads or creates the AK, retrying while the TPM
// cannot be reached (swtpm not started yet); configuration errors are fatal.
func (a *Agent) loadKeys(ctx context.Context) (*tpm.AK, error) {
	bo := enroll.Backoff{Initial: a.cfg.Agent.RetryInitial, Max: a.cfg.Agent.RetryMax}
	for attempt := 0; ; attempt++ {
		ek, err := a.tpm.EK(ctx)
		var ak *tpm.AK
		if err == nil {
			ak, err = a.tpm.AK(ctx)
		}
		if err == nil {
			a.log.Info("endorsement key read", "algorithm", ek.Algorithm, "ek_certificate", ek.Certificate != nil)
			return ak, nil
		}
		if errors.Is(err, tpm.ErrConfig) || errors.Is(err, tpm.ErrNoEK) || errors.Is(err, tpm.ErrAKState) {
			return nil, fmt.Errorf("TPM: %w", err)
		}
		wait := bo.Delay(attempt)
		a.log.Warn("TPM not usable; retrying", "error", err, "retry_in", wait)
		a.notify("STATUS=waiting for the TPM: " + oneLine(err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (a *Agent) watcher(service *oslo.Client) *watch.Watcher {
	cfg := watch.Config{
		Interval: a.cfg.Agent.WatchInterval,
		Notify: func(ctx context.Context, reason string) error {
			ctx, cancel := context.WithTimeout(ctx, a.cfg.Agent.RPCTimeout)
			defer cancel()
			return service.Cast(ctx, nil, attestrpc.MethodMeasurementsChanged,
				&attestrpc.MeasurementsChangedArgs{Host: a.cfg.Default.Host, Reason: reason})
		},
		Logger: a.log,
	}
	if pcrs := a.cfg.Agent.WatchPCRs; len(pcrs) > 0 {
		cfg.PCRs = func(ctx context.Context) (map[int][]byte, error) {
			return a.tpm.ReadPCRs(ctx, 0x000B, pcrs) // TPM_ALG_SHA256
		}
	}
	if a.cfg.TPM.IMALog != "" {
		cfg.IMA = func(off int64) (int64, error) {
			_, _, next, err := a.tpm.IMALog(off)
			return next, err
		}
	}
	return watch.New(cfg)
}

// keptWatcher watches the instances of kept blobs and casts
// redelivery_wanted (API 1.4) when one starts (package keptwatch), asking
// inj whether an instance runs; dlv returns the deliverer once built (the
// watcher runs after).
func (a *Agent) keptWatcher(service *oslo.Client, inj inject.Injector, dlv func() *deliver.Deliverer) *keptwatch.Watcher {
	ask := service.WithTarget(func(t *oslo.Target) { t.Version = attestrpc.RedeliveryWantedVersion })
	rebooted, settled := a.rebooted()
	return keptwatch.New(keptwatch.Config{
		Interval: a.cfg.Launch.RedeliveryCheckInterval,
		Kept: func() ([]keptwatch.Kept, error) {
			ks, err := dlv().Kept()
			out := make([]keptwatch.Kept, len(ks))
			for i, k := range ks {
				out[i] = keptwatch.Kept{LaunchID: k.LaunchID, InstanceID: k.InstanceID}
			}
			return out, err
		},
		Present: func(ctx context.Context, instanceID string) (bool, error) {
			ctx, cancel := context.WithTimeout(ctx, a.cfg.Agent.RPCTimeout)
			defer cancel()
			return inj.Present(ctx, instanceID)
		},
		Ask: func(ctx context.Context, k keptwatch.Kept) error {
			ctx, cancel := context.WithTimeout(ctx, a.cfg.Agent.RPCTimeout)
			defer cancel()
			return ask.Cast(ctx, nil, attestrpc.MethodRedeliveryWanted,
				&attestrpc.RedeliveryWantedArgs{Host: a.cfg.Default.Host, LaunchID: k.LaunchID, InstanceID: k.InstanceID})
		},
		Rebooted: rebooted,
		Settled:  settled,
		Logger:   a.log,
	})
}

// bootIDFile, in [agent] state_dir, holds the host's boot id at the
// agent's last start.
const bootIDFile = "boot_id"

// rebooted reports whether the host booted since the boot id was last
// recorded, and returns record, which records the current one. The watcher
// calls record only once its first check had an answer for every kept
// blob: an agent restarted before that (a crash, the service still down
// after a power cut) must still see the reboot. Unknown counts as
// rebooted: one needless re-delivery is better than a restarted instance
// left without its secret.
func (a *Agent) rebooted() (rebooted bool, record func()) {
	read := a.cfg.BootID
	if read == nil {
		read = func() (string, error) {
			b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
			return strings.TrimSpace(string(b)), err
		}
	}
	cur, err := read()
	if err != nil || cur == "" {
		a.log.Warn("host boot id unknown: instances of kept launch blobs present now count as started", "error", err)
		return true, func() {}
	}
	path := filepath.Join(a.cfg.Agent.StateDir, bootIDFile)
	prev, err := os.ReadFile(path)
	record = func() {
		if err := os.WriteFile(path, []byte(cur+"\n"), 0o600); err != nil {
			a.log.Warn("cannot record the host boot id", "path", path, "error", err)
		}
	}
	return err != nil || strings.TrimSpace(string(prev)) != cur, record
}

func statusLine(state, reason string) string {
	s := map[string]string{
		attestrpc.StateEnrolled:        "enrolled; serving attestation requests",
		attestrpc.StatePendingApproval: "serving; enrollment pending operator approval",
		enroll.StateUnreachable:        "serving; attestation service unreachable, retrying",
		enroll.StateRefused:            "serving; enrollment refused, retrying",
		enroll.StateActivationFailed:   "serving; TPM refused the enrollment credential, retrying",
	}[state]
	if s == "" {
		s = state
	}
	if reason != "" {
		s += ": " + oneLine(reason)
	}
	return s
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// notify sends sd_notify(3) states to $NOTIFY_SOCKET; nothing outside systemd.
func (a *Agent) notify(states ...string) {
	if _, err := sdnotify.Notify(a.cfg.NotifySocket, states...); err != nil {
		a.log.Warn("sd_notify failed", "error", err)
	}
}
