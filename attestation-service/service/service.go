// Package service is the attestation service's composition root
// (trustpool-attestation): it builds the store, the verdict signer, the
// oslo.messaging transport, the attestation engine, the scheduler, the RPC
// server on trustpool-attestation (register_host, activate_credential,
// measurements_changed, get_verdicts), the verdict fanout and heartbeat, the
// Keystone-protected REST API, the trusted-launch launcher with its launch
// key and its listener of Nova's instance notifications (launch.go) and,
// when configured, the verdict actions on the [keystone_authtoken] service
// user's session (actions.go: Placement traits, compute service disables),
// and runs them until its context ends.
//
// Tests start it in-process with New(cfg) and Run(ctx); Ready, APIURL,
// PublicKey and LaunchPublicKey let them find it.
package service

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/api"
	"github.com/trustpool/trustpool/attestation-service/internal/cluster"
	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/launcher"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/sched"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/jsondecode"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/sdnotify"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/keystone-auth/authtoken"
	"github.com/trustpool/trustpool/keystone-auth/credentials"
	kpolicy "github.com/trustpool/trustpool/keystone-auth/policy"
)

// Service is a running attestation service.
type Service struct {
	cfg    Config
	log    *slog.Logger
	ready  chan struct{}
	apiURL atomic.Value // string
	pub    ed25519.PublicKey
	// launchPub is the launch public key (*launch.PublicKey).
	launchPub atomic.Value
	// launchNova is the launcher's Nova client ([launch] nova_api; nil when
	// off), connected once Keystone answers.
	launchNova *novaServers
}

// New checks cfg and returns a Service; Run starts it.
func New(cfg Config) (*Service, error) {
	if err := errors.Join(cfg.Validate(), cfg.Keystone.Validate(), cfg.Rabbit.Validate()); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Default.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("host name: %w", err)
		}
		cfg.Default.Host = h
	}
	return &Service{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}, nil
}

// Ready is closed once the RPC server consumes and the API listens.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// APIURL is the REST API's base URL (after Ready).
func (s *Service) APIURL() string { v, _ := s.apiURL.Load().(string); return v }

// PublicKey is the verdict public key (after Ready).
func (s *Service) PublicKey() ed25519.PublicKey { return s.pub }

// Run runs the service until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	cfg := s.cfg
	a := cfg.Attestation
	st, err := store.Open(ctx, cfg.Database.Connection)
	if err != nil {
		return err
	}
	defer st.Close()
	key, err := loadSigningKey(cfg.Keys, s.log)
	if err != nil {
		return err
	}
	signer := verdict.NewSigner(key)
	if cfg.UpgradeLevels.Verdict == verdict.Format1 {
		s.log.Info("signed verdicts pinned to format 1 (upgrade_levels.verdict): they do not name profile versions; remove the pin once every filter shim is upgraded")
	}
	s.pub = signer.Public()
	pubPEM, err := verdict.MarshalPublicKeyPEM(signer.Public())
	if err != nil {
		return err
	}
	var roots, inter *x509.CertPool
	if cfg.Enrollment.RequireEKCert {
		if roots, inter, err = loadEKRoots(cfg.Enrollment.EKRootsDir); err != nil {
			return err
		}
	}
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: cfg.Default.TransportURL, ControlExchange: cfg.Default.ControlExchange,
		Rabbit: &cfg.Rabbit, Logger: s.log, MaxMessageSize: cfg.Default.MaxMessageSize})
	if err != nil {
		return fmt.Errorf("messaging: %w", err)
	}
	defer tr.Close()

	reg := metrics.New()
	var sc *sched.Scheduler
	var acts *actions
	ms := cluster.New(cluster.Config{Name: cfg.Default.Host, KID: signer.KID(), PublicKeyPEM: string(pubPEM),
		Lease: cfg.Cluster.Lease, Store: st, Logger: s.log,
		// Hosts handed over here get their Placement traits at once.
		OnChange: func(cluster.View) { acts.ownersChanged() }})
	if gap := cfg.HandOverGap(); a.Interval+gap >= a.VerdictValidity {
		s.log.Warn("with several instances, a crashed instance's hosts may be handed over after their verdicts expired at the shims: keep cluster.lease + lease/4 + jitter + quote_timeout + interval below verdict_validity",
			"hand_over", gap.String(), "interval", a.Interval.String(), "verdict_validity", a.VerdictValidity.String())
	}
	// A host this instance does not own is attested here once when a
	// trigger reaches it (a measurements_changed cast, attest-now); its
	// owner keeps its interval.
	trigger := func(h string) {
		if ms.Owns(h) {
			sc.Trigger(h)
		} else {
			sc.TriggerOnce(h)
		}
	}
	var eng *engine.Engine
	notifier := oslo.NewNotifier(tr, "trustpool-attestation."+cfg.Default.Host, attestrpc.NotificationTopic)
	// pubr publishes verdicts and notifications; launches notify through it
	// whatever [revocation] notifications says of the trust ones.
	pubr := &publisher{fanout: tr.Client(oslo.Target{Topic: attestrpc.VerdictsTopic, Fanout: true}), notifier: notifier}
	acts = newActions(cfg, s.log, st, func() *engine.Engine { return eng }, reg, notifier, mirrorOwner{ms})
	var observer engine.VerdictObserver
	if acts.enabled() {
		observer = acts
	}
	eng = engine.New(engine.Config{
		Issuer: cfg.Default.Issuer, Interval: a.Interval, Jitter: a.Jitter, Validity: a.VerdictValidity, QuoteTimeout: a.QuoteTimeout,
		HeartbeatInterval: a.HeartbeatInterval,
		NonceLifetime:     a.NonceLifetime, PCRs: a.PCRs, RequiredProfiles: a.RequiredProfiles,
		EnrollmentMode: cfg.Enrollment.Mode, RequireEKCert: cfg.Enrollment.RequireEKCert, EKRoots: roots, EKIntermediates: inter,
		AllowMissingEventLog: a.AllowMissingEventLog, VerdictFormat: cfg.UpgradeLevels.Verdict,
		Store: st, Signer: signer, Logger: s.log, Metrics: reg,
		Agents:    &agentClient{c: tr.Client(oslo.Target{Topic: attestrpc.AgentTopic}).WithTimeout(a.QuoteTimeout)},
		Publisher: trustNotifications{on: cfg.Revocation.Notifications, Publisher: pubr},
		Trigger:   trigger,
		Owns:      ms.Owns,
		Observer:  observer,
	})
	lr, nl, closeLaunches, err := s.launches(st, signer, eng, tr, pubr, reg)
	if err != nil {
		return err
	}
	defer closeLaunches()
	sc = sched.New(sched.Config{Interval: a.Interval, Jitter: a.Jitter, Concurrency: a.Concurrency,
		Attest: func(ctx context.Context, host string, triggered bool) time.Time {
			_, err := eng.AttestRound(ctx, host, triggered)
			var recent *engine.RecentlyAttestedError
			switch {
			case err == nil:
			case errors.As(err, &recent):
				// Another instance attested it moments ago: keep its rhythm.
				return recent.At.Add(a.Interval)
			case errors.Is(err, engine.ErrNotEnrolled), errors.Is(err, store.ErrNotFound):
				sc.Remove(host)
			case ctx.Err() == nil:
				s.log.Error("attestation round failed", "host", host, "error", err)
			}
			return time.Time{}
		}})
	reg.NewGaugeFunc("trustpool_scheduled_hosts", "Hosts the scheduler attests.", func() float64 { return float64(sc.Hosts()) })
	reg.NewGaugeFunc("trustpool_cluster_members", "Live service instances sharing the fleet (as this instance sees them).",
		func() float64 { return float64(len(ms.View().Members)) })
	// The first membership heartbeat and placement before serving.
	ms.Refresh(ctx)
	pl := &placement{st: st, sc: sc, ms: ms, interval: a.Interval, jitter: a.Jitter, log: s.log}
	if err := pl.rebalance(ctx); err != nil {
		return err
	}

	rpc := oslo.NewServer(tr, oslo.Target{Topic: attestrpc.ServiceTopic, Server: cfg.Default.Host}, oslo.Endpoint{
		Version: attestrpc.APIVersion,
		Methods: rpcMethods(eng, sc, lr, s.log),
	})

	enf, err := kpolicy.New(kpolicy.Config{Options: cfg.Policy, Defaults: api.Rules(), BaseDir: cfg.ConfigDir,
		OnScopeMismatch: func(m kpolicy.ScopeMismatch) {
			// oslo.policy warns when it lets such a request through; a denied one
			// is only worth a debug line.
			level := slog.LevelWarn
			if m.Enforced {
				level = slog.LevelDebug
			}
			s.log.Log(context.Background(), level, "policy scope mismatch", "rule", m.Rule, "token_scope", m.TokenScope,
				"scope_types", m.ScopeTypes, "enforced", m.Enforced)
		}})
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	auth := &lazyAuth{}
	handler := api.New(api.Config{Engine: eng, Store: st, Policy: enf, Auth: auth.wrap, Metrics: reg, Logger: s.log,
		PublicKeyPEM: pubPEM, KID: signer.KID(), Trigger: trigger, OtherKeys: otherKeys(ms, signer.KID()), Launches: lr, PublicEndpoint: cfg.API.PublicEndpoint,
		Health: func(ctx context.Context) error {
			if err := st.Ping(ctx); err != nil {
				return fmt.Errorf("database: %w", err)
			}
			if !ms.View().Valid {
				return errors.New("cluster: membership lease not renewed")
			}
			select {
			case <-rpc.Ready():
			default:
				return errors.New("messaging: RPC server not consuming")
			}
			return nil
		}})
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api listen: %w", err)
	}
	s.apiURL.Store("http://" + ln.Addr().String())
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	run := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	run("rpc server", func() error { return rpc.Run(ctx) })
	run("cluster membership", func() error { return ms.Run(ctx) })
	run("placement", func() error { pl.run(ctx); return nil })
	run("scheduler", func() error { return sc.Run(ctx) })
	run("api", func() error { return srv.Serve(ln) })
	run("keystone", func() error {
		auth.open(ctx, cfg.Keystone, s.log, func(p *credentials.Provider) {
			if acts.enabled() {
				go acts.connect(ctx, p.ProviderClient())
			}
			if s.launchNova != nil {
				s.launchNova.connect(ctx, p.ProviderClient())
			}
		})
		return nil
	})
	run("housekeeping", func() error { s.housekeeping(ctx, eng, st); return nil })
	acts.run(ctx, run)
	if lr != nil {
		run("launcher", func() error { return lr.Run(ctx) })
	}
	listening := make(chan struct{})
	if nl != nil {
		run("nova notification listener", func() error { return nl.Run(ctx) })
		go func() {
			select {
			case <-nl.Ready():
				close(listening)
			case <-ctx.Done():
			}
		}()
	} else {
		close(listening)
	}
	run("heartbeat", func() error {
		t := time.NewTicker(a.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if err := eng.Heartbeat(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("verdict heartbeat failed", "error", err)
				}
			}
		}
	})
	ready := make(chan struct{})
	go func() {
		for _, c := range []<-chan struct{}{rpc.Ready(), listening} {
			select {
			case <-c:
			case <-ctx.Done():
				return
			}
		}
		close(ready)
	}()
	select {
	case <-ready:
		s.log.Info("attestation service ready", "api", s.APIURL(), "host", cfg.Default.Host, "hosts", sc.Hosts(), "members", ms.View().Members, "kid", signer.KID())
		close(s.ready)
		if _, err := sdnotify.Notify(cfg.NotifySocket, sdnotify.Ready); err != nil {
			s.log.Warn("cannot notify systemd", "error", err)
		}
	case <-ctx.Done():
	}
	<-ctx.Done()
	_, _ = sdnotify.Notify(cfg.NotifySocket, sdnotify.Stopping)
	s.log.Info("attestation service stopping")
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	_ = srv.Shutdown(sctx)
	scancel()
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return ctx.Err()
}

// housekeepingInterval is how often in-memory state that ran out and
// records past their retention are dropped.
const housekeepingInterval = 10 * time.Minute

// housekeeping prunes the engine's in-memory state and the store's history
// and audit records, at start and then every housekeepingInterval.
func (s *Service) housekeeping(ctx context.Context, eng *engine.Engine, st *store.Store) {
	t := time.NewTicker(housekeepingInterval)
	defer t.Stop()
	for {
		ps := eng.Prune(ctx)
		s.log.Debug("pruned engine state", "nonces", ps.Nonces, "challenges", ps.Challenges, "published", ps.Published)
		var hist, audit time.Time
		now := time.Now()
		if d := s.cfg.Database.HistoryRetention; d > 0 {
			hist = now.Add(-d)
		}
		if d := s.cfg.Database.AuditRetention; d > 0 {
			audit = now.Add(-d)
		}
		p, err := st.Prune(ctx, hist, audit)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("pruning history and audit failed", "error", err)
		case p.History > 0 || p.Audit > 0 || p.Brake > 0:
			s.log.Info("pruned records past their retention", "history", p.History, "audit", p.Audit, "revocation_brake", p.Brake)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// rpcMethods are the trustpool-attestation endpoint's methods (lr is nil
// with launches off).
func rpcMethods(eng *engine.Engine, sc *sched.Scheduler, lr *launcher.Launcher, log *slog.Logger) map[string]oslo.Handler {
	enrollErr := func(err error) error {
		if errors.Is(err, engine.ErrEnrollment) {
			return oslo.NewValueError(err.Error())
		}
		log.Error("enrollment failed", "error", err)
		return oslo.NewRemoteError("trustpool.exception", "InternalError", "internal error", nil)
	}
	return map[string]oslo.Handler{
		attestrpc.MethodRegisterHost: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.RegisterHostArgs
			if err := decodeArgs(req, &a); err != nil {
				return nil, err
			}
			res, err := eng.RegisterHost(ctx, &a)
			if err != nil {
				return nil, enrollErr(err)
			}
			return res, nil
		},
		attestrpc.MethodActivateCredential: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.ActivateCredentialArgs
			if err := decodeArgs(req, &a); err != nil {
				return nil, err
			}
			res, err := eng.ActivateCredential(ctx, &a)
			if err != nil {
				return nil, enrollErr(err)
			}
			return res, nil
		},
		attestrpc.MethodMeasurementsChanged: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.MeasurementsChangedArgs
			if err := decodeArgs(req, &a); err != nil {
				return nil, err
			}
			if err := a.Validate(); err != nil {
				return nil, oslo.NewValueError(err.Error())
			}
			// Only enrolled hosts are re-attested: those this instance
			// attests, and once, at once, those another instance does
			// (the cast reached this one).
			if !sc.TriggerKnown(a.Host) {
				if ok, err := eng.IsEnrolled(ctx, a.Host); err == nil && ok {
					sc.TriggerOnce(a.Host)
				}
			}
			return nil, nil
		},
		attestrpc.MethodRedeliveryWanted: func(ctx context.Context, req *oslo.Request) (any, error) {
			var a attestrpc.RedeliveryWantedArgs
			if err := decodeArgs(req, &a); err != nil {
				return nil, err
			}
			if err := a.Validate(); err != nil {
				return nil, oslo.NewValueError(err.Error())
			}
			// Only a trigger (package launcher, wanted.go): the launcher
			// checks the launch is the host's and instance's, limits the
			// rate per launch and runs the re-delivery in the background.
			if lr == nil {
				log.Debug("redelivery_wanted dropped: trusted launches are off", "host", a.Host, "launch_id", a.LaunchID)
				return nil, nil
			}
			lr.RedeliveryWanted(ctx, &a)
			return nil, nil
		},
		attestrpc.MethodGetVerdicts: func(ctx context.Context, req *oslo.Request) (any, error) {
			vs, err := eng.Snapshot(ctx)
			if err != nil {
				log.Error("get_verdicts failed", "error", err)
				return nil, oslo.NewRemoteError("trustpool.exception", "InternalError", "internal error", nil)
			}
			return attestrpc.GetVerdictsResult{Verdicts: vs}, nil
		},
	}
}

// decodeArgs decodes a request's keyword arguments into v; an unknown
// argument or one of the wrong type is a ValueError for the caller (a Python
// endpoint raises TypeError), in words that name no Go type.
func decodeArgs(req *oslo.Request, v any) error {
	b, err := json.Marshal(req.Args)
	if err != nil {
		return oslo.NewValueError("arguments: " + err.Error())
	}
	if err := jsondecode.Strict(b, v); err != nil {
		return oslo.NewValueError("arguments: " + err.Error())
	}
	return nil
}

type agentClient struct{ c *oslo.Client }

func (a *agentClient) Quote(ctx context.Context, host string, args *attestrpc.QuoteArgs) (*attestrpc.QuoteResult, error) {
	var res attestrpc.QuoteResult
	c := a.c.WithTarget(func(t *oslo.Target) { t.Server = host })
	if err := c.Call(ctx, nil, attestrpc.MethodQuote, args, &res); err != nil {
		if errors.Is(err, oslo.ErrInvalidReply) {
			return nil, invalidReply{err}
		}
		return nil, err
	}
	return &res, nil
}

// invalidReply marks a quote answer that arrived but could not be used.
type invalidReply struct{ err error }

func (e invalidReply) Error() string   { return e.err.Error() }
func (e invalidReply) Unwrap() []error { return []error{e.err, engine.ErrInvalidReply} }

type publisher struct {
	fanout   *oslo.Client
	notifier *oslo.Notifier
}

func (p *publisher) PublishVerdicts(ctx context.Context, vs []verdict.Signed) error {
	return p.fanout.Cast(ctx, nil, attestrpc.MethodVerdictsChanged, attestrpc.VerdictsChangedArgs{Verdicts: vs})
}

func (p *publisher) Notify(ctx context.Context, eventType string, payload any) error {
	return p.notifier.Notify(ctx, nil, "INFO", eventType, payload)
}

// lazyAuth holds the Keystone middleware once Keystone could be reached;
// until then authenticated routes answer 503.
type lazyAuth struct {
	mw atomic.Pointer[authtoken.Middleware]
}

func (l *lazyAuth) open(ctx context.Context, opts authtoken.Options, log *slog.Logger, onReady func(*credentials.Provider)) {
	delay := time.Second
	for {
		setup, err := authtoken.Open(ctx, opts, authtoken.OpenConfig{
			OnError: func(r *http.Request, err error) {
				log.Debug("request not authenticated", "path", r.URL.Path, "error", err)
			},
		})
		if err == nil {
			l.mw.Store(setup.Middleware)
			log.Info("keystone authentication ready")
			onReady(setup.Provider)
			return
		}
		log.Warn("keystone not usable yet, retrying", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

func (l *lazyAuth) wrap(next http.Handler) http.Handler {
	var (
		once    sync.Once
		wrapped http.Handler
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mw := l.mw.Load()
		if mw == nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"error": {"code": 503, "title": "Service Unavailable", "message": "keystone authentication not ready", "request_id": %q}}`+"\n",
				w.Header().Get("X-Openstack-Request-Id"))
			return
		}
		once.Do(func() { wrapped = mw.Wrap(next) })
		wrapped.ServeHTTP(w, r)
	})
}

// loadEKRoots reads every PEM certificate in dir: self-signed ones become
// roots, the others intermediates.
func loadEKRoots(dir string) (*x509.CertPool, *x509.CertPool, error) {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("enrollment.ek_roots_dir: %w", err)
	}
	n := 0
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".pem" && ext != ".crt" && ext != ".cer") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, nil, fmt.Errorf("enrollment.ek_roots_dir: %w", err)
		}
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("enrollment.ek_roots_dir: %s: %w", e.Name(), err)
			}
			if c.CheckSignatureFrom(c) == nil {
				roots.AddCert(c)
			} else {
				inter.AddCert(c)
			}
			n++
		}
	}
	if n == 0 {
		return nil, nil, fmt.Errorf("enrollment.ek_roots_dir: no certificates in %s", dir)
	}
	return roots, inter, nil
}
