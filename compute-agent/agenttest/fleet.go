// Package agenttest simulates a fleet of compute hosts for scale, load and
// high-availability tests of the attestation service. Each simulated host
// runs the agent's own code — enrollment (register_host,
// TPM2_ActivateCredential, activate_credential) and the quote and ping
// methods — against a simulated TPM (package simtpm: a software model
// emitting real TPM 2.0 structures, NOT a TPM), and is a real oslo RPC
// server on trustpool-agent.<host> over RabbitMQ. Hosts share connections:
// HostsPerConnection hosts per oslo.ServerGroup (one consuming connection)
// and transport (one publishing connection).
//
// What differs from a real agent, on purpose: no TPM device, no files, no
// systemd; a member of a server group consumes only its directed queue
// (trustpool-agent.<host>), not the topic's shared and fanout queues; and
// a change the simulator makes (tampering, IMA growth) is announced with
// measurements_changed at once, where the agent's watcher notices it at
// its next check (agent.watch_interval).
//
// Faults on demand, per host: Tamper (an unknown binary in the IMA list,
// or a PCR extended outside the event log), Slow (answers late), Silent
// (does not answer), Reboot (silent, then a new boot and a new
// enrollment, as an agent restarting after a reboot) and Reregister (the
// agent enrolling again, with the same TPM or with new keys as after a
// board swap).
package agenttest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trustpool/trustpool/compute-agent/internal/attester"
	"github.com/trustpool/trustpool/compute-agent/internal/enroll"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/simtpm"
)

// Version is the agent version simulated hosts report.
const Version = "0.1.0-simulated"

// Config configures a Fleet.
type Config struct {
	// TransportURL and ControlExchange are the bus (as the agents'
	// [DEFAULT] options); Rabbit holds [oslo_messaging_rabbit] (nil:
	// defaults).
	TransportURL    string
	ControlExchange string
	Rabbit          *oslo.RabbitOptions
	// Hosts is the number of hosts, named NamePrefix + index (5 digits).
	Hosts      int
	NamePrefix string
	// HostsPerConnection hosts share one server group and transport
	// (default 250).
	HostsPerConnection int
	// CA issues the simulated EK certificates (nil: none).
	CA *simtpm.CA
	// Boot is every host's measured boot (nil: bootseed.BuildA()).
	Boot *simtpm.Boot
	// IMAFiles are the files hosts "run": IMA growth records them in
	// turn (they belong in the profile's allowlist).
	IMAFiles []bootseed.IMAFile
	// IMAGrowth: every host appends one IMA entry this often, spread over
	// the fleet, and announces it (0: the lists do not grow).
	IMAGrowth time.Duration
	// EnrollConcurrency bounds enrollments in flight (default 32).
	EnrollConcurrency int
	// CallTimeout bounds each call to the service (default 30 s).
	CallTimeout time.Duration
	// OnQuote, when set, is told every quote request a host receives: the
	// host, the caller's reply queue (one per service instance) and when.
	OnQuote func(host, replyQueue string, at time.Time)
	Logger  *slog.Logger
}

// Fleet is a set of simulated hosts.
type Fleet struct {
	cfg    Config
	log    *slog.Logger
	hosts  []*Host
	groups []*oslo.ServerGroup
	trs    []*oslo.Transport

	enrolled atomic.Int64
	ready    chan struct{}
	tampers  atomic.Int64
}

// Host is one simulated host.
type Host struct {
	Name string
	// TPM is its simulated TPM.
	TPM   *simtpm.TPM
	fleet *Fleet
	svc   *oslo.Client

	// slow delays quote answers; silent drops them (nanoseconds, 0: off).
	slow   atomic.Int64
	silent atomic.Bool
	quotes atomic.Int64
	imaIdx atomic.Int64
}

// New creates the hosts and their simulated TPMs; Run connects them.
func New(cfg Config) (*Fleet, error) {
	if cfg.Hosts <= 0 {
		return nil, errors.New("agenttest: no hosts")
	}
	if cfg.HostsPerConnection <= 0 {
		cfg.HostsPerConnection = 250
	}
	if cfg.EnrollConcurrency <= 0 {
		cfg.EnrollConcurrency = 32
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.NamePrefix == "" {
		cfg.NamePrefix = "sim-"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Boot == nil {
		b, err := simtpm.NewBoot(bootseed.BuildA())
		if err != nil {
			return nil, err
		}
		cfg.Boot = b
	}
	f := &Fleet{cfg: cfg, log: log, ready: make(chan struct{})}
	for i := range cfg.Hosts {
		if i%cfg.HostsPerConnection == 0 {
			tr, err := oslo.NewTransport(oslo.Config{TransportURL: cfg.TransportURL, ControlExchange: cfg.ControlExchange,
				Rabbit: cfg.Rabbit, Logger: log})
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("agenttest: %w", err)
			}
			f.trs = append(f.trs, tr)
			f.groups = append(f.groups, oslo.NewServerGroup(tr, attestrpc.AgentTopic))
		}
		name := fmt.Sprintf("%s%05d", cfg.NamePrefix, i)
		tp, err := simtpm.New(simtpm.Config{Rand: rand.Reader, CA: cfg.CA, Label: name, Boot: cfg.Boot, IMA: true})
		if err != nil {
			f.Close()
			return nil, err
		}
		tr := f.trs[len(f.trs)-1]
		h := &Host{Name: name, TPM: tp, fleet: f,
			svc: tr.Client(oslo.Target{Topic: attestrpc.ServiceTopic, Version: attestrpc.APIVersion})}
		f.groups[len(f.groups)-1].Add(name, h.endpoint())
		f.hosts = append(f.hosts, h)
	}
	return f, nil
}

// Close closes the transports (Run does when it returns).
func (f *Fleet) Close() {
	for _, tr := range f.trs {
		_ = tr.Close()
	}
}

// Hosts returns every host.
func (f *Fleet) Hosts() []*Host { return f.hosts }

// Enrolled is closed once every host is enrolled.
func (f *Fleet) Enrolled() <-chan struct{} { return f.ready }

// EnrolledCount is how many hosts finished their first enrollment.
func (f *Fleet) EnrolledCount() int { return int(f.enrolled.Load()) }

// Quotes is the number of quote requests the hosts answered or dropped.
func (f *Fleet) Quotes() int64 {
	var n int64
	for _, h := range f.hosts {
		n += h.quotes.Load()
	}
	return n
}

// Run serves every host, enrolls them all (EnrollConcurrency at a time)
// and grows their IMA lists until ctx is done.
func (f *Fleet) Run(ctx context.Context) error {
	defer f.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, g := range f.groups {
		wg.Go(func() { _ = g.Run(ctx) })
	}
	for _, g := range f.groups {
		select {
		case <-g.Ready():
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
	}
	sem := make(chan struct{}, f.cfg.EnrollConcurrency)
	var ew sync.WaitGroup
	for _, h := range f.hosts {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		ew.Go(func() {
			defer func() { <-sem }()
			if err := h.enroll(ctx); err == nil {
				f.enrolled.Add(1)
			}
		})
	}
	ew.Wait()
	if ctx.Err() == nil {
		close(f.ready)
		f.log.Info("simulated fleet enrolled", "hosts", len(f.hosts))
		if f.cfg.IMAGrowth > 0 && len(f.cfg.IMAFiles) > 0 {
			wg.Go(func() { f.grow(ctx) })
		}
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// grow appends one IMA entry per host every IMAGrowth, spread evenly: a
// tick every second takes the next hosts in turn.
func (f *Fleet) grow(ctx context.Context) {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	perSec := float64(len(f.hosts)) / f.cfg.IMAGrowth.Seconds()
	acc, next := 0.0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		acc += perSec
		for ; acc >= 1; acc-- {
			h := f.hosts[next%len(f.hosts)]
			next++
			i := int(h.imaIdx.Add(1)-1) % len(f.cfg.IMAFiles)
			if err := h.TPM.AppendIMA([]bootseed.IMAFile{f.cfg.IMAFiles[i]}); err == nil {
				go func() { _ = h.announce(ctx, "ima_log_grew") }()
			}
		}
	}
}

// enroll runs the agent's enrollment until the service says enrolled.
func (h *Host) enroll(ctx context.Context) error {
	return enroll.Run(ctx, enroll.Config{
		Host: h.Name, Version: Version, TPM: h.TPM, Service: h.svc, CallTimeout: h.fleet.cfg.CallTimeout,
		Backoff: enroll.Backoff{Initial: 500 * time.Millisecond, Max: 10 * time.Second}, Logger: h.fleet.log.With("host", h.Name),
	})
}

// announce casts measurements_changed, as the agent's watcher does.
func (h *Host) announce(ctx context.Context, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, h.fleet.cfg.CallTimeout)
	defer cancel()
	return h.svc.Cast(ctx, nil, attestrpc.MethodMeasurementsChanged, &attestrpc.MeasurementsChangedArgs{Host: h.Name, Reason: reason})
}

// endpoint is the agent's endpoint with the faults in front of quote.
func (h *Host) endpoint() oslo.Endpoint {
	att := attester.New(attester.Config{TPM: h.TPM, Host: h.Name, Version: Version, IMA: true, Timeout: 30 * time.Second})
	ep := att.Endpoint()
	quote := ep.Methods[attestrpc.MethodQuote]
	ep.Methods[attestrpc.MethodQuote] = func(ctx context.Context, req *oslo.Request) (any, error) {
		h.quotes.Add(1)
		if fn := h.fleet.cfg.OnQuote; fn != nil {
			fn(h.Name, req.ReplyQ, time.Now())
		}
		if h.silent.Load() {
			// No answer: hold the request past any sensible quote
			// timeout, then fail; the caller gave up long before.
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Minute):
			}
			return nil, errors.New("simulated host: silent")
		}
		if d := time.Duration(h.slow.Load()); d > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(d):
			}
		}
		return quote(ctx, req)
	}
	return ep
}

// QuoteCount is how many quote requests the host received.
func (h *Host) QuoteCount() int64 { return h.quotes.Load() }

// Slow makes the host answer quotes after d (0: at once again).
func (h *Host) Slow(d time.Duration) { h.slow.Store(int64(d)) }

// Silent makes the host drop (true) or answer (false) quote requests.
func (h *Host) Silent(on bool) { h.silent.Store(on) }

// Tamper kinds.
const (
	// TamperIMA runs a binary no profile allows: a new IMA entry.
	TamperIMA = "ima"
	// TamperPCR extends PCR 9 outside the event log (a kernel loaded
	// without its measurement being logged).
	TamperPCR = "pcr"
)

// Tamper changes the host's measurements as an attacker would and
// announces the change (measurements_changed) at once.
func (h *Host) Tamper(ctx context.Context, kind string) error {
	n := h.fleet.tampers.Add(1)
	switch kind {
	case TamperIMA:
		// A path outside anything a profile would exclude (such as /tmp/).
		f := bootseed.IMAFile{Path: fmt.Sprintf("/usr/local/sbin/implant-%d", n), Content: []byte(fmt.Sprintf("implant %d", n))}
		if err := h.TPM.AppendIMA([]bootseed.IMAFile{f}); err != nil {
			return err
		}
	case TamperPCR:
		if err := h.TPM.Extend(9, []byte(fmt.Sprintf("unlogged kernel %d", n))); err != nil {
			return err
		}
	default:
		return fmt.Errorf("agenttest: unknown tamper kind %q", kind)
	}
	return h.announce(ctx, "pcr_changed")
}

// Reboot makes the host silent for downtime, reboots its TPM into boot
// (nil: the same boot) and enrolls again, as an agent does when it starts
// after a reboot.
func (h *Host) Reboot(ctx context.Context, downtime time.Duration, boot *simtpm.Boot) error {
	h.Silent(true)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(downtime):
	}
	h.TPM.Reboot(boot)
	h.Silent(false)
	return h.enroll(ctx)
}

// Reregister runs the agent's enrollment again. With newKeys the host
// first gets a new EK and AK (a replaced board or TPM), certified by the
// fleet's CA. It returns the state the service answered.
func (h *Host) Reregister(ctx context.Context, newKeys bool) (string, error) {
	if newKeys {
		if err := h.TPM.ReplaceKeys(h.fleet.cfg.CA, h.Name); err != nil {
			return "", err
		}
	}
	var last string
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := enroll.Run(ctx, enroll.Config{
		Host: h.Name, Version: Version, TPM: h.TPM, Service: h.svc, CallTimeout: h.fleet.cfg.CallTimeout,
		Backoff: enroll.Backoff{Initial: 200 * time.Millisecond, Max: time.Second},
		OnState: func(state, _ string) {
			last = state
			// A pending approval does not end by retrying.
			if state == attestrpc.StatePendingApproval {
				cancel()
			}
		},
		Logger: h.fleet.log.With("host", h.Name),
	})
	if last == attestrpc.StatePendingApproval {
		return last, nil
	}
	return last, err
}

// Stats are counters of the simulated fleet, as JSON for tools.
type Stats struct {
	Hosts    int   `json:"hosts"`
	Enrolled int   `json:"enrolled"`
	Quotes   int64 `json:"quotes"`
}

// Stats returns the fleet's counters.
func (f *Fleet) Stats() Stats {
	return Stats{Hosts: len(f.hosts), Enrolled: f.EnrolledCount(), Quotes: f.Quotes()}
}

// String is the JSON of s (the fleet-sim command's status lines).
func (s Stats) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}
