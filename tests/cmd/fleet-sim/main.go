// Command fleet-sim runs a simulated fleet of compute hosts against an
// attestation service, for load tests and demonstrations: each host runs
// the agent's enrollment and quote code over a SIMULATED TPM (package
// simtpm: software keys, real TPM 2.0 structures; it proves nothing about
// any machine), as a real oslo RPC server on trustpool-agent.<host>, many
// hosts per broker connection (package agenttest).
//
// Usage:
//
//	fleet-sim -ca-dir DIR -init                # create DIR/ca.pem, DIR/ca.key and DIR/profile.toml, then exit
//	fleet-sim -ca-dir DIR -transport-url URL -hosts N [-prefix sim-] [-per-connection 250]
//	          [-ima-growth 10m] [-ima-files 50] [-enroll-concurrency 64] [-stats 10s]
//
// The service must trust DIR/ca.pem (put it in [enrollment] ek_roots_dir)
// and know DIR/profile.toml (trustpool profile import), which the fleet's
// untouched hosts pass: run -init first. Then fleet-sim enrolls every host
// and keeps answering quotes until SIGTERM or SIGINT, printing a JSON
// status line every -stats. Commands on standard input, one per line, each
// answered with a JSON line:
//
//	tamper HOST ima|pcr         an unknown binary runs / PCR 9 is extended outside the log
//	slow HOST DURATION          answer quotes after DURATION (0 = at once)
//	silent HOST on|off          stop / resume answering quotes
//	reboot HOST DOWNTIME        silent for DOWNTIME, new boot, enroll again
//	reregister HOST same|new    enroll again with the same TPM / with new keys
//	stats                       print the status line now
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trustpool/trustpool/compute-agent/agenttest"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/simtpm"
)

type options struct {
	caDir, transportURL, exchange, prefix string
	init                                  bool
	hosts, perConn, imaFiles, enrollConc  int
	imaGrowth, stats                      time.Duration
	debug                                 bool
}

func main() {
	var o options
	fs := flag.NewFlagSet("fleet-sim", flag.ContinueOnError)
	fs.StringVar(&o.caDir, "ca-dir", "", "directory of the simulated EK CA (ca.pem, ca.key) and profile.toml (required)")
	fs.BoolVar(&o.init, "init", false, "create the CA and the profile in -ca-dir, then exit")
	fs.StringVar(&o.transportURL, "transport-url", "", "oslo transport_url of the bus")
	fs.StringVar(&o.exchange, "control-exchange", attestrpc.DefaultControlExchange, "oslo control_exchange")
	fs.IntVar(&o.hosts, "hosts", 100, "number of simulated hosts")
	fs.StringVar(&o.prefix, "prefix", "sim-", "host name prefix (names are PREFIX + 5 digits)")
	fs.IntVar(&o.perConn, "per-connection", 250, "hosts per broker connection")
	fs.IntVar(&o.imaFiles, "ima-files", 50, "files in the profile's IMA allowlist, which the hosts run")
	fs.DurationVar(&o.imaGrowth, "ima-growth", 10*time.Minute, "every host runs one more file this often (0: never)")
	fs.IntVar(&o.enrollConc, "enroll-concurrency", 64, "enrollments in flight")
	fs.DurationVar(&o.stats, "stats", 10*time.Second, "status line interval")
	fs.BoolVar(&o.debug, "debug", false, "log at debug level")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if err := run(o, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fleet-sim:", err)
		os.Exit(1)
	}
}

func run(o options, in io.Reader, out io.Writer) error {
	if o.caDir == "" {
		return errors.New("-ca-dir is required")
	}
	if o.init {
		return initDir(o)
	}
	if o.transportURL == "" {
		return errors.New("-transport-url is required")
	}
	ca, err := loadCA(o.caDir)
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if o.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	f, err := agenttest.New(agenttest.Config{TransportURL: o.transportURL, ControlExchange: o.exchange, Hosts: o.hosts,
		NamePrefix: o.prefix, HostsPerConnection: o.perConn, CA: ca, IMAFiles: agenttest.IMAFiles(o.imaFiles),
		IMAGrowth: o.imaGrowth, EnrollConcurrency: o.enrollConc, Logger: log})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var mu sync.Mutex
	emit := func(v any) {
		mu.Lock()
		fmt.Fprintln(out, fmtJSON(v))
		mu.Unlock()
	}
	byName := map[string]*agenttest.Host{}
	for _, h := range f.Hosts() {
		byName[h.Name] = h
	}
	go func() {
		tk := time.NewTicker(o.stats)
		defer tk.Stop()
		enrolled := f.Enrolled()
		for {
			select {
			case <-ctx.Done():
				return
			case <-enrolled:
				enrolled = nil
				emit(map[string]any{"event": "enrolled", "stats": f.Stats()})
			case <-tk.C:
				emit(f.Stats())
			}
		}
	}()
	go commands(ctx, in, byName, emit, f)
	return f.Run(ctx)
}

// commands reads fault commands until in ends.
func commands(ctx context.Context, in io.Reader, hosts map[string]*agenttest.Host, emit func(any), f *agenttest.Fleet) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		res, err := command(ctx, fields, hosts, f)
		if err != nil {
			emit(map[string]any{"command": fields[0], "error": err.Error()})
			continue
		}
		emit(map[string]any{"command": fields[0], "result": res})
	}
}

func command(ctx context.Context, f []string, hosts map[string]*agenttest.Host, fleet *agenttest.Fleet) (any, error) {
	if f[0] == "stats" {
		return fleet.Stats(), nil
	}
	if len(f) != 3 {
		return nil, fmt.Errorf("usage: %s HOST ARG", f[0])
	}
	h, ok := hosts[f[1]]
	if !ok {
		return nil, fmt.Errorf("no host %q", f[1])
	}
	switch f[0] {
	case "tamper":
		return "tampered", h.Tamper(ctx, f[2])
	case "slow":
		d, err := time.ParseDuration(f[2])
		if err != nil {
			return nil, err
		}
		h.Slow(d)
		return "slow " + d.String(), nil
	case "silent":
		h.Silent(f[2] == "on")
		return "silent " + f[2], nil
	case "reboot":
		d, err := time.ParseDuration(f[2])
		if err != nil {
			return nil, err
		}
		go func() { _ = h.Reboot(ctx, d, nil) }()
		return "rebooting", nil
	case "reregister":
		return h.Reregister(ctx, f[2] == "new")
	default:
		return nil, fmt.Errorf("unknown command %q", f[0])
	}
}

// initDir writes a new CA and the fleet's profile.
func initDir(o options) error {
	if err := os.MkdirAll(o.caDir, 0o700); err != nil {
		return err
	}
	ca, err := simtpm.NewCA(rand.Reader, "Trustpool simulated EK CA (fleet-sim; not a TPM vendor)")
	if err != nil {
		return err
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	prof, err := agenttest.Profile("simfleet", nil, agenttest.IMAFiles(o.imaFiles))
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{"ca.pem": ca.CertPEM, "ca.key": key, "profile.toml": []byte(prof)} {
		if err := os.WriteFile(filepath.Join(o.caDir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func loadCA(dir string) (*simtpm.CA, error) {
	c, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("%w (run fleet-sim -init first)", err)
	}
	k, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, err
	}
	return simtpm.ParseCA(c, k)
}

func fmtJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
