// Package shim is the entry package of trustpool-filter-shim, the relying
// party next to nova-scheduler (docs/ARCHITECTURE.md, "Verdicts" and "Scheduling").
//
// A Shim serves the Nova filter's unix-socket API at once, with every host
// unknown (fail closed). It then follows the attestation service's verdict
// fanout (verdicts_changed on topic trustpool-verdicts, through a private
// fanout queue of an oslo RPC server named after this host) and fetches the
// signed snapshot (get_verdicts on topic trustpool-attestation), retrying
// with capped exponential backoff while the service is unavailable, and
// re-fetching it every resync_interval to repair anything missed while
// disconnected. Every verdict is verified against the pinned public key by
// package trustcache before it is used; see there for what is checked.
//
// Unless [filter_shim] snapshot_file is "", it also keeps the verdict
// snapshot file the Nova filter reads instead of asking over the socket
// (package snapshotfile): written before READY=1 (a file that cannot be
// written stops the shim), then on every kept verdict or health change and
// at least every snapshot_file_interval, and marked "stopped" when the shim
// stops. Its health is "degraded" whenever /healthz is (a change by the
// passing of time, the service falling silent, by the next heartbeat write).
//
// Readiness: READY=1 is sent to systemd once the socket accepts
// connections; STATUS= tells whether the snapshot has been loaded.
//
// Liveness: the service counts as heard from on every get_verdicts answer
// and every verdicts_changed message holding a verdict signed with a
// pinned key no longer ago than the verdict validity (learned from the
// verdicts: the longest expires_at − verified_at seen). Replays of old
// verdicts do not count. /healthz says degraded once nothing was heard for
// longer than that validity.
//
// Dropped verdicts (forged, unsigned, older) are counted exactly in
// /metrics and reported in at most one warning every 10 s.
package shim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/sdnotify"
	"github.com/trustpool/trustpool/internal/verdict"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/localapi"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/snapshotfile"
	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

// Shim is one running filter shim.
type Shim struct {
	cfg   Config
	log   *slog.Logger
	keys  []ed25519.PublicKey
	cache *trustcache.Cache
	api   *localapi.API
	// snap writes the verdict snapshot file; nil when there is none.
	snap *snapshotfile.Writer

	ready            chan struct{}
	snapshotLoaded   atomic.Bool
	subscribed       atomic.Bool
	snapshotFailures atomic.Uint64
	// lastHeard is when the service was last heard from (unix ns, 0:
	// never); validity the longest verdict validity seen (ns).
	lastHeard atomic.Int64
	validity  atomic.Int64
	drops     *dropReport
}

// New checks cfg and loads the pinned public key(s). It does not connect
// or listen; Run does.
func New(cfg Config) (*Shim, error) {
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
	keys, err := LoadPublicKeys(cfg.Shim.VerdictPublicKey)
	if err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Shim{cfg: cfg, log: log, keys: keys, ready: make(chan struct{}), drops: newDropReport(log, dropLogInterval)}
	s.cache = trustcache.New(trustcache.Options{
		Verifier: verdict.NewVerifier(keys...), Now: cfg.Now, MaxAge: cfg.Shim.MaxVerdictAge,
	})
	s.api = localapi.New(localapi.Config{
		Cache: s.cache, State: s.state, Logger: log,
		MaxBodyBytes: cfg.Shim.MaxRequestBytes, MaxHosts: cfg.Shim.MaxHosts,
	})
	if cfg.Shim.SnapshotFile != "" {
		mode, _ := cfg.Shim.FileMode()
		s.snap, err = snapshotfile.New(snapshotfile.Options{
			Path: cfg.Shim.SnapshotFile, Group: cfg.Shim.SnapshotFileGroup, Mode: mode,
			Interval: cfg.Shim.SnapshotFileInterval, MinGap: snapshotMinGap,
			Source: s.cache, Health: s.health, Now: cfg.Now, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("verdict snapshot file: %w", err)
		}
	}
	return s, nil
}

// snapshotMinGap is the shortest time between two writes of the snapshot
// file: a burst of verdicts (a heartbeat's) is one write, and the filter
// parses it once.
const snapshotMinGap = 100 * time.Millisecond

// health is the snapshot file's health field and its detail.
func (s *Shim) health() (string, []string) {
	if p := s.state().Problems(); len(p) > 0 {
		return snapshotfile.HealthDegraded, p
	}
	return snapshotfile.HealthOK, nil
}

// changed tells the snapshot file writer that verdicts or health changed.
func (s *Shim) changed() {
	if s.snap != nil {
		s.snap.Changed()
	}
}

// LoadPublicKeys reads the pinned Ed25519 public key(s) from a PEM file
// holding one or more PUBLIC KEY blocks.
func LoadPublicKeys(path string) ([]ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read verdict public key: %w", err)
	}
	var keys []ed25519.PublicKey
	rest := b
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		k, err := verdict.ParsePublicKeyPEM(pem.EncodeToMemory(block))
		if err != nil {
			return nil, fmt.Errorf("verdict public key %s: %w", path, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 || len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("verdict public key %s: %w", path, verdict.ErrKeyFile)
	}
	return keys, nil
}

// Handler is the local API, for in-process tests.
func (s *Shim) Handler() http.Handler { return s.api }

// Ready is closed once the socket accepts connections.
func (s *Shim) Ready() <-chan struct{} { return s.ready }

// SnapshotLoaded reports whether get_verdicts has answered.
func (s *Shim) SnapshotLoaded() bool { return s.snapshotLoaded.Load() }

func (s *Shim) state() localapi.State {
	st := localapi.State{
		SnapshotLoaded:   s.snapshotLoaded.Load(),
		Subscribed:       s.subscribed.Load(),
		SnapshotFailures: s.snapshotFailures.Load(),
	}
	if s.snap != nil {
		st.SnapshotFileWrites, st.SnapshotFileFailures = s.snap.Stats()
	}
	if ns := s.lastHeard.Load(); ns != 0 {
		st.LastHeard = time.Unix(0, ns)
	}
	if v := time.Duration(s.validity.Load()); v > 0 {
		st.Silent = s.cfg.Now().Sub(st.LastHeard) > v
	}
	return st
}

// heard records that the service was heard from at now.
func (s *Shim) heard(now time.Time) {
	for {
		old := s.lastHeard.Load()
		if old >= now.UnixNano() || s.lastHeard.CompareAndSwap(old, now.UnixNano()) {
			return
		}
	}
}

// learnValidity keeps the longest verdict validity seen.
func (s *Shim) learnValidity(v time.Duration) {
	for {
		old := s.validity.Load()
		if int64(v) <= old || s.validity.CompareAndSwap(old, int64(v)) {
			return
		}
	}
}

// Run listens on the socket, follows the verdicts and serves until ctx is
// done. It returns an error only when it cannot start (socket, broker
// configuration); a missing broker or service is retried forever while
// the API answers every host as unknown.
func (s *Shim) Run(ctx context.Context) error {
	mode, _ := s.cfg.Shim.Mode()
	ln, err := localapi.Listen(localapi.SocketOptions{Path: s.cfg.Shim.SocketPath, Group: s.cfg.Shim.SocketGroup, Mode: mode})
	if err != nil {
		return fmt.Errorf("filter socket: %w", err)
	}
	defer ln.Close()
	tr, err := oslo.NewTransport(oslo.Config{
		TransportURL: s.cfg.Default.TransportURL, ControlExchange: s.cfg.Default.ControlExchange,
		Rabbit: &s.cfg.Rabbit, Logger: s.log, MaxMessageSize: s.cfg.Default.MaxMessageSize,
	})
	if err != nil {
		return fmt.Errorf("message transport: %w", err)
	}
	defer tr.Close()

	if s.snap != nil {
		// The first write shows that the file can be written (group,
		// directory) before the shim reports ready.
		if err := s.snap.WriteNow(); err != nil {
			return fmt.Errorf("verdict snapshot file: %w", err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           s.api,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	var wg sync.WaitGroup
	httpErr := make(chan error, 1)
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			httpErr <- err
			cancel()
		}
	})
	close(s.ready)
	s.log.Info("serving the filter API", "socket", s.cfg.Shim.SocketPath, "group", s.cfg.Shim.SocketGroup, "mode", s.cfg.Shim.SocketMode)
	s.notify(sdnotify.Ready, sdnotify.Status("serving; waiting for the verdict snapshot (every host unknown)"))

	rpc := oslo.NewServer(tr, oslo.Target{Topic: s.cfg.Shim.VerdictsTopic, Server: s.cfg.Default.Host}, oslo.Endpoint{
		Version: "1.0",
		Methods: map[string]oslo.Handler{"verdicts_changed": s.verdictsChanged},
	})
	wg.Go(func() { _ = rpc.Run(ctx) })
	if s.snap != nil {
		wg.Go(func() { s.snap.Run(ctx) })
		s.log.Info("writing the verdict snapshot file", "path", s.cfg.Shim.SnapshotFile, "group", s.cfg.Shim.SnapshotFileGroup,
			"mode", s.cfg.Shim.SnapshotFileMode, "interval", s.cfg.Shim.SnapshotFileInterval)
	}
	wg.Go(func() {
		// Report drops held back by the rate limit.
		t := time.NewTicker(dropLogInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.drops.flush(s.cfg.Now(), false)
			}
		}
	})
	wg.Go(func() {
		select {
		case <-rpc.Ready():
			s.subscribed.Store(true)
			s.changed()
			s.log.Info("following the verdict fanout", "topic", s.cfg.Shim.VerdictsTopic)
		case <-ctx.Done():
			return
		}
		s.snapshotLoop(ctx, tr.Client(oslo.Target{Topic: s.cfg.Shim.AttestationTopic, Version: "1.0"}))
	})

	<-ctx.Done()
	s.notify(sdnotify.Stopping)
	shutCtx, shutCancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer shutCancel()
	_ = srv.Shutdown(shutCtx)
	wg.Wait()
	select {
	case err := <-httpErr:
		return fmt.Errorf("serve filter API: %w", err)
	default:
		return nil
	}
}

func (s *Shim) verdictsChanged(_ context.Context, req *oslo.Request) (any, error) {
	raw, ok := req.Args["verdicts"]
	if !ok {
		s.log.Warn("verdicts_changed without a verdicts argument; ignored")
		return nil, oslo.NewValueError("verdicts_changed: verdicts is required")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		s.log.Warn("verdicts_changed with a verdicts argument that is not a list; ignored", "error", err)
		return nil, oslo.NewValueError("verdicts_changed: verdicts must be a list")
	}
	s.apply("verdicts_changed", list)
	return nil, nil
}

func (s *Shim) apply(source string, list []json.RawMessage) {
	res := s.cache.Apply(list)
	now := s.cfg.Now()
	if res.Authentic > 0 {
		s.learnValidity(res.MaxValidity)
		// Recently signed by the service: it is alive (a replay of an old
		// verdict is not).
		if now.Sub(res.NewestVerifiedAt) <= time.Duration(s.validity.Load()) {
			s.heard(now)
		}
	}
	if res.Accepted > 0 {
		s.changed()
	}
	if len(res.Drops) > 0 {
		s.drops.add(now, source, res.Drops)
	}
	s.log.Debug("applied verdicts", "source", source, "received", len(list), "accepted", res.Accepted, "dropped", len(res.Drops))
}

// snapshotLoop calls get_verdicts until it answers, then again every
// resync interval.
func (s *Shim) snapshotLoop(ctx context.Context, client *oslo.Client) {
	pollLoop(ctx, func(ctx context.Context) error { return s.fetchSnapshot(ctx, client) },
		s.cfg.Shim.ResyncInterval, s.cfg.Shim.SnapshotRetryMax,
		func(err error, retryIn time.Duration) {
			s.snapshotFailures.Add(1)
			s.log.Warn("get_verdicts failed; retrying", "error", err, "retry_in", retryIn)
		})
}

// firstRetry is the first delay after a failed fetch.
const firstRetry = 500 * time.Millisecond

// pollLoop runs fetch until ctx is done: after a success it waits every
// (0: it returns), after a failure it reports the error and retries with
// exponential backoff from firstRetry up to maxDelay, each delay jittered
// to between half and all of it.
func pollLoop(ctx context.Context, fetch func(context.Context) error, every, maxDelay time.Duration, failed func(error, time.Duration)) {
	delay := firstRetry
	for {
		err := fetch(ctx)
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			delay = firstRetry
			if every == 0 {
				return
			}
			wait = every
		default:
			wait = delay/2 + rand.N(delay/2+1) //nolint:gosec // G404: retry jitter, not a secret
			failed(err, wait)
			delay = min(delay*2, maxDelay)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// snapshotReply is get_verdicts' result.
type snapshotReply struct {
	Verdicts []json.RawMessage `json:"verdicts"`
}

func (s *Shim) fetchSnapshot(ctx context.Context, client *oslo.Client) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Shim.SnapshotTimeout)
	defer cancel()
	var reply snapshotReply
	if err := client.Call(ctx, nil, "get_verdicts", nil, &reply); err != nil {
		return err
	}
	if reply.Verdicts == nil {
		return errors.New("get_verdicts: reply has no verdicts list")
	}
	s.heard(s.cfg.Now())
	s.apply("get_verdicts", reply.Verdicts)
	if !s.snapshotLoaded.Swap(true) {
		s.changed()
		s.log.Info("verdict snapshot loaded", "verdicts", len(reply.Verdicts), "hosts", s.cache.Len())
		s.notify(sdnotify.Status(fmt.Sprintf("serving; snapshot loaded (%d hosts)", s.cache.Len())))
	}
	return nil
}

func (s *Shim) notify(states ...string) {
	if _, err := sdnotify.Notify(s.cfg.NotifySocket, states...); err != nil {
		s.log.Warn("systemd notification failed", "error", err)
	}
}
