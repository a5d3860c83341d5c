package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/trustpool/trustpool/attestation-service/internal/cloud"
	"github.com/trustpool/trustpool/attestation-service/internal/engine"
	"github.com/trustpool/trustpool/attestation-service/internal/launcher"
	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/novanotify"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/verdict"
)

// LaunchSection is [launch]: trusted launches.
type LaunchSection struct {
	// Enabled turns trusted launches on (the launch key is then required).
	Enabled bool `toml:"enabled"`
	// NovaNotifications binds launches from Nova's instance.create.end.
	NovaNotifications bool `toml:"nova_notifications"`
	// NovaAPI asks Nova's API ([nova]'s endpoint), with the
	// [keystone_authtoken] service user, where a server named at creation
	// runs and whose it is. Off (a third party runs the service, without a
	// Nova account): the host is found by the hostId the tenant gives.
	NovaAPI bool `toml:"nova_api"`
	// NotificationTransportURL is the broker Nova notifies on, when it is
	// not [DEFAULT] transport_url (oslo's [oslo_messaging_notifications]
	// transport_url in nova.conf).
	NotificationTransportURL string `toml:"notification_transport_url"`
	// NotificationExchange and NotificationTopic are nova.conf's
	// control_exchange and [notifications] versioned_notifications_topics.
	NotificationExchange string `toml:"notification_exchange"`
	NotificationTopic    string `toml:"notification_topic"`
	// NotificationQueue is this service's own queue, bound to
	// <topic>.info on the exchange.
	NotificationQueue string `toml:"notification_queue"`
	// DeliverTimeout bounds the agent's deliver_secret (TPM import,
	// unseal and injection into the instance).
	DeliverTimeout time.Duration `toml:"deliver_timeout"`
	// Concurrency bounds launches processed at once.
	Concurrency int `toml:"concurrency"`
	// MaxRequestLifetime bounds a request's not_after from its creation.
	MaxRequestLifetime time.Duration `toml:"max_request_lifetime"`
	// RedeliveryWantedInterval is the least time between two
	// re-deliveries of one launch that its host's agent asks for
	// (redelivery_wanted); asks in between are dropped. A user's
	// `trustpool launch redeliver` is not limited by it.
	RedeliveryWantedInterval time.Duration `toml:"redelivery_wanted_interval"`
	// RedeliveryUserInterval is the least time between two re-deliveries
	// of one launch that users ask for (POST
	// /v1/launches/{id}/redeliver); requests in between answer 429
	// redelivery_too_soon with Retry-After. Independent of
	// RedeliveryWantedInterval.
	RedeliveryUserInterval time.Duration `toml:"redelivery_user_interval"`
}

// LaunchTiming is the phase timings of one trusted launch that ended
// (Config.LaunchObserver).
type LaunchTiming = launcher.Timing

// DefaultLaunchKey is [keys] launch_key's default.
const DefaultLaunchKey = "/var/lib/trustpool/launch.key"

// DefaultPolicySigningKey is [keys] policy_signing_key's default.
const DefaultPolicySigningKey = "/var/lib/trustpool/policy-signing.key"

func defaultLaunch() LaunchSection {
	return LaunchSection{Enabled: true, NovaNotifications: true, NotificationExchange: novanotify.Exchange, NotificationTopic: novanotify.Topic,
		NotificationQueue: "trustpool-launch", DeliverTimeout: time.Minute, Concurrency: 8, MaxRequestLifetime: 30 * 24 * time.Hour,
		RedeliveryWantedInterval: launcher.DefaultWantedInterval, RedeliveryUserInterval: launcher.DefaultRedeliverInterval}
}

// validateLaunch adds [launch]'s and the launch key's problems.
func (c *Config) validateLaunch(bad func(key, format string, args ...any)) {
	l := c.Launch
	if !l.Enabled {
		return
	}
	if c.Keys.LaunchKey == "" {
		bad("keys.launch_key", "is required when launch.enabled is on")
	}
	if !launch.ValidKEMName(c.Keys.LaunchKeyKEM) {
		bad("keys.launch_key_kem", "%q is not %s or %s", c.Keys.LaunchKeyKEM, launch.KEMMLKEM768X25519, launch.KEMX25519)
	}
	if l.NovaNotifications {
		if l.NotificationExchange == "" || l.NotificationTopic == "" {
			bad("launch.notification_exchange", "and launch.notification_topic are required with launch.nova_notifications")
		}
		if l.NotificationQueue == "" || l.NotificationQueue == l.NotificationTopic+".info" {
			bad("launch.notification_queue", "must name this service's own queue, not %s.info (Nova's consumers read that one)", l.NotificationTopic)
		}
		if l.NotificationTransportURL != "" {
			if _, err := oslo.ParseTransportURL(l.NotificationTransportURL); err != nil {
				bad("launch.notification_transport_url", "%v", err)
			}
		}
	}
	if l.DeliverTimeout <= 0 {
		bad("launch.deliver_timeout", "must be positive")
	}
	if l.Concurrency < 1 || l.Concurrency > 1000 {
		bad("launch.concurrency", "must be 1-1000")
	}
	if l.MaxRequestLifetime < time.Minute {
		bad("launch.max_request_lifetime", "must be at least 1m")
	}
	if l.RedeliveryWantedInterval < time.Second {
		bad("launch.redelivery_wanted_interval", "must be at least 1s")
	}
	if l.RedeliveryUserInterval < time.Second || l.RedeliveryUserInterval > time.Hour {
		bad("launch.redelivery_user_interval", "must be between 1s and 1h")
	}
}

// loadLaunchKey reads the launch key. Tenants pin its public key, so, like
// the verdict key, it is created only when asked: [keys] create_launch_key
// (DevStack sets it) or the create-launch-key command.
func loadLaunchKey(k KeysSection, log *slog.Logger) (*launch.PrivateKey, error) {
	path := k.LaunchKey
	key, err := launch.LoadKey(path)
	switch {
	case err == nil:
		return key, nil
	case !errors.Is(err, launch.ErrNoKey):
		return nil, fmt.Errorf("keys.launch_key: %w", err)
	case !k.CreateLaunchKey:
		return nil, fmt.Errorf("keys.launch_key: %w; create it with `trustpool-attestation create-launch-key %s` "+
			"(or set keys.create_launch_key = true to create it at start, or launch.enabled = false to turn trusted launches off); "+
			"tenants then pin its fingerprint (GET /v1/keys)", err, path)
	}
	key, err = launch.CreateKey(path, k.LaunchKeyKEM)
	if err != nil {
		return nil, fmt.Errorf("keys.launch_key: %w", err)
	}
	log.Warn("created a new launch key (keys.create_launch_key is set); tenants must pin its fingerprint",
		"path", path, "kid", key.Public().KID(), "fingerprint", key.Public().Fingerprint())
	return key, nil
}

// loadPolicyKey reads the policy-signing key. Blobs sealed under it name
// it, so it is created only when asked ([keys] create_policy_signing_key
// or the create-policy-key command); without it (nil, nil) secrets are
// sealed to the quoted PCR values alone. An unusable file stops the
// service.
func loadPolicyKey(k KeysSection, log *slog.Logger) (*policykey.PrivateKey, error) {
	path := k.PolicySigningKey
	if path == "" {
		log.Warn("no policy-signing key (keys.policy_signing_key is empty): launch secrets are sealed to the quoted PCR values and die with any host upgrade")
		return nil, nil
	}
	key, err := policykey.LoadKey(path)
	switch {
	case err == nil:
		return key, nil
	case !errors.Is(err, policykey.ErrNoKey):
		return nil, fmt.Errorf("keys.policy_signing_key: %w", err)
	case !k.CreatePolicySigningKey:
		log.Warn("no policy-signing key: launch secrets are sealed to the quoted PCR values and die with any host upgrade; "+
			"create the key with `trustpool-attestation create-policy-key` to seal them to signed policies", "path", path)
		return nil, nil
	}
	key, err = policykey.CreateKey(path)
	if err != nil {
		return nil, fmt.Errorf("keys.policy_signing_key: %w", err)
	}
	log.Warn("created a new policy-signing key (keys.create_policy_signing_key is set)", "path", path, "kid", key.Public().KID())
	return key, nil
}

// CreatePolicyKeyMain is `trustpool-attestation create-policy-key PATH`:
// it creates the policy-signing key at PATH (mode 0600, never replacing a
// file) and prints its key id, TPM name and public key.
func CreatePolicyKeyMain(args []string, stdout, stderr io.Writer) int {
	fs0 := flag.NewFlagSet("create-policy-key", flag.ContinueOnError)
	fs0.SetOutput(stderr)
	fs0.Usage = func() {
		fmt.Fprintln(stderr, "usage: trustpool-attestation create-policy-key PATH\n\n"+
			"Creates the policy-signing key at PATH ([keys] policy_signing_key): launch secrets are then sealed under\n"+
			"TPM2_PolicyAuthorize by it, and it approves the PCR states of the launch's profile. Run it as the user the\n"+
			"service runs as. An existing file is never replaced: secrets sealed under a key unseal with that key only.")
		fs0.PrintDefaults()
	}
	if err := fs0.Parse(args); err != nil {
		return 2
	}
	if fs0.NArg() != 1 || fs0.Arg(0) == "" {
		fs0.Usage()
		return 2
	}
	path := fs0.Arg(0)
	key, err := policykey.CreateKey(path)
	if errors.Is(err, fs.ErrExist) {
		fmt.Fprintf(stderr, "trustpool-attestation create-policy-key: %s already exists; not replacing it (sealed secrets name it)\n", path)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "trustpool-attestation create-policy-key: %v\n", err)
		return 1
	}
	pub := key.Public()
	fmt.Fprintf(stdout, "created policy-signing key %s (%s; kid %s)\nTPM name %x\n%s", path, policykey.Algorithm, pub.KID(), pub.TPMName(), pub.MarshalPEM())
	return 0
}

// CreateLaunchKeyMain is `trustpool-attestation create-launch-key [-kem
// KEM] PATH`: it creates the HPKE launch key at PATH (mode 0600, never
// replacing a file) and prints its fingerprint and public key.
func CreateLaunchKeyMain(args []string, stdout, stderr io.Writer) int {
	fs0 := flag.NewFlagSet("create-launch-key", flag.ContinueOnError)
	fs0.SetOutput(stderr)
	kem := fs0.String("kem", launch.KEMMLKEM768X25519, "the HPKE KEM: "+launch.KEMMLKEM768X25519+" (ML-KEM-768 + X25519) or "+launch.KEMX25519)
	fs0.Usage = func() {
		fmt.Fprintln(stderr, "usage: trustpool-attestation create-launch-key [-kem KEM] PATH\n\n"+
			"Creates the HPKE launch key at PATH ([keys] launch_key), to which tenants seal their launch secrets, and prints its\n"+
			"fingerprint and public key. Run it as the user the service runs as. An existing file is never replaced.")
		fs0.PrintDefaults()
	}
	if err := fs0.Parse(args); err != nil {
		return 2
	}
	if fs0.NArg() != 1 || fs0.Arg(0) == "" {
		fs0.Usage()
		return 2
	}
	path := fs0.Arg(0)
	key, err := launch.CreateKey(path, *kem)
	if errors.Is(err, fs.ErrExist) {
		fmt.Fprintf(stderr, "trustpool-attestation create-launch-key: %s already exists; not replacing it (tenants pin its fingerprint)\n", path)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "trustpool-attestation create-launch-key: %v\n", err)
		return 1
	}
	pub := key.Public()
	fmt.Fprintf(stdout, "created launch key %s (%s; kid %s)\nfingerprint %s\n%s", path, pub.Suite(), pub.KID(), pub.Fingerprint(), pub.MarshalPEM())
	return 0
}

// launches builds the launcher and the Nova notification listener (nil,
// nil when [launch] is off). The returned function closes what it opened.
func (s *Service) launches(st *store.Store, signer *verdict.Signer, eng *engine.Engine, tr *oslo.Transport,
	pub *publisher, reg *metrics.Registry) (*launcher.Launcher, *oslo.Listener, func(), error) {
	cfg := s.cfg
	l := cfg.Launch
	if !l.Enabled {
		s.log.Info("trusted launches are off (launch.enabled = false)")
		return nil, nil, func() {}, nil
	}
	key, err := loadLaunchKey(cfg.Keys, s.log)
	if err != nil {
		return nil, nil, nil, err
	}
	s.launchPub.Store(key.Public())
	pkey, err := loadPolicyKey(cfg.Keys, s.log)
	if err != nil {
		return nil, nil, nil, err
	}
	var servers launcher.Servers
	if l.NovaAPI {
		s.launchNova = &novaServers{ep: cloud.Endpoint{RegionName: cfg.Nova.RegionName, ValidInterfaces: cfg.Nova.ValidInterfaces,
			EndpointOverride: cfg.Nova.EndpointOverride, Timeout: cfg.Nova.Timeout}, log: s.log}
		servers = s.launchNova
	}
	lr := launcher.New(launcher.Config{Store: st, Key: key, Signer: signer, Issuer: cfg.Default.Issuer, Attester: eng,
		Agents: &launchAgents{c: tr.Client(oslo.Target{Topic: attestrpc.AgentTopic, Version: attestrpc.LaunchVersion}),
			presentTimeout: cfg.Attestation.QuoteTimeout, deliverTimeout: l.DeliverTimeout},
		Servers: servers, Notifier: pub, Concurrency: l.Concurrency, MaxLifetime: l.MaxRequestLifetime,
		Logger: s.log, Metrics: reg, Observer: cfg.LaunchObserver, PolicyKey: pkey, WantedInterval: l.RedeliveryWantedInterval,
		RedeliverInterval: l.RedeliveryUserInterval})
	s.log.Info("trusted launches on", "launch_kid", key.Public().KID(), "suite", key.Public().Suite(),
		"nova_api", servers != nil, "nova_notifications", l.NovaNotifications)
	if !l.NovaNotifications {
		return lr, nil, func() {}, nil
	}
	ntr, closeTr := tr, func() {}
	if l.NotificationTransportURL != "" {
		ntr, err = oslo.NewTransport(oslo.Config{TransportURL: l.NotificationTransportURL, ControlExchange: l.NotificationExchange,
			Rabbit: &cfg.Rabbit, Logger: s.log})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("launch.notification_transport_url: %w", err)
		}
		closeTr = func() { ntr.Close() }
	}
	return lr, novaListener(ntr, l, lr, s.log), closeTr, nil
}

// LaunchPublicKey is the launch key tenants seal to (after Ready; nil with
// launches off).
func (s *Service) LaunchPublicKey() *launch.PublicKey {
	k, _ := s.launchPub.Load().(*launch.PublicKey)
	return k
}

// novaServers asks Nova's API on the service user's session ([nova]'s
// endpoint), once Keystone answered (connect); until then a launch that
// needs it fails with nova_unavailable.
type novaServers struct {
	ep  cloud.Endpoint
	log *slog.Logger

	mu sync.Mutex
	c  *cloud.Compute
}

// errNovaNotReady: Keystone has not answered yet, or the compute endpoint
// is not in its catalog.
var errNovaNotReady = errors.New("nova: no client yet (Keystone not reached, or no compute endpoint)")

func (n *novaServers) Server(ctx context.Context, id string) (*cloud.Server, error) {
	n.mu.Lock()
	c := n.c
	n.mu.Unlock()
	if c == nil {
		return nil, errNovaNotReady
	}
	return c.Server(ctx, id)
}

// connect builds the compute client on the service user's session (from
// the catalog it already has: the first try needs no request, so the
// caller makes it before serving launches), retrying in the background
// while the catalog has no compute endpoint.
func (n *novaServers) connect(ctx context.Context, pc *gophercloud.ProviderClient) {
	if n.try(pc) == nil {
		return
	}
	go n.retry(ctx, pc)
}

func (n *novaServers) try(pc *gophercloud.ProviderClient) error {
	c, err := cloud.NewCompute(pc, n.ep)
	if err == nil {
		n.mu.Lock()
		n.c = c
		n.mu.Unlock()
	}
	return err
}

func (n *novaServers) retry(ctx context.Context, pc *gophercloud.ProviderClient) {
	delay := time.Second
	for {
		err := n.try(pc)
		if err == nil {
			return
		}
		n.log.Error("launch: cannot set up the nova client; retrying", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// launchAgents calls the agents' launch methods (API version 1.1).
type launchAgents struct {
	c              *oslo.Client
	presentTimeout time.Duration
	deliverTimeout time.Duration
}

func (a *launchAgents) InstancePresent(ctx context.Context, host string, args *attestrpc.InstancePresentArgs) (*attestrpc.InstancePresentResult, error) {
	var res attestrpc.InstancePresentResult
	c := a.c.WithTarget(func(t *oslo.Target) { t.Server = host }).WithTimeout(a.presentTimeout)
	if err := c.Call(ctx, nil, attestrpc.MethodInstancePresent, args, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// DeliverSecret asks for API 1.2 when the blob is sealed under
// PolicyAuthorize (1.1 otherwise, so agents of either version take it); an
// agent that does not implement that version (oslo's UnsupportedVersion)
// is an error wrapping launcher.ErrAgentTooOld.
func (a *launchAgents) DeliverSecret(ctx context.Context, host string, args *attestrpc.DeliverSecretArgs) (*attestrpc.DeliverSecretResult, error) {
	var res attestrpc.DeliverSecretResult
	version := attestrpc.LaunchVersion
	if len(args.Blob.AuthorizeKey) > 0 {
		version = attestrpc.AuthorizeVersion
	}
	c := a.c.WithTarget(func(t *oslo.Target) { t.Server, t.Version = host, version }).WithTimeout(a.deliverTimeout)
	if err := c.Call(ctx, nil, attestrpc.MethodDeliverSecret, args, &res); err != nil {
		var re *oslo.RemoteError
		if errors.As(err, &re) && re.Module == oslo.DispatcherModule && re.Class == "UnsupportedVersion" {
			return nil, fmt.Errorf("%w %s: %w", launcher.ErrAgentTooOld, version, err)
		}
		return nil, err
	}
	return &res, nil
}

// RedeliverChallenge and RedeliverSecret ask for API 1.3; an agent that
// does not implement it is an error wrapping launcher.ErrAgentTooOld.
func (a *launchAgents) RedeliverChallenge(ctx context.Context, host string, args *attestrpc.RedeliverChallengeArgs) (*attestrpc.RedeliverChallengeResult, error) {
	var res attestrpc.RedeliverChallengeResult
	if err := a.call(ctx, host, a.presentTimeout, attestrpc.MethodRedeliverChallenge, args, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

func (a *launchAgents) RedeliverSecret(ctx context.Context, host string, args *attestrpc.RedeliverSecretArgs) (*attestrpc.DeliverSecretResult, error) {
	var res attestrpc.DeliverSecretResult
	if err := a.call(ctx, host, a.deliverTimeout, attestrpc.MethodRedeliverSecret, args, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// ForgetSecret casts forget_secret at API 1.3 (an older agent drops it).
func (a *launchAgents) ForgetSecret(ctx context.Context, host string, args *attestrpc.ForgetSecretArgs) error {
	c := a.c.WithTarget(func(t *oslo.Target) { t.Server, t.Version = host, attestrpc.RedeliverVersion })
	return c.Cast(ctx, nil, attestrpc.MethodForgetSecret, args)
}

func (a *launchAgents) call(ctx context.Context, host string, timeout time.Duration, method string, args, res any) error {
	c := a.c.WithTarget(func(t *oslo.Target) { t.Server, t.Version = host, attestrpc.RedeliverVersion }).WithTimeout(timeout)
	if err := c.Call(ctx, nil, method, args, res); err != nil {
		var re *oslo.RemoteError
		if errors.As(err, &re) && re.Module == oslo.DispatcherModule && re.Class == "UnsupportedVersion" {
			return fmt.Errorf("%w %s: %w", launcher.ErrAgentTooOld, attestrpc.RedeliverVersion, err)
		}
		return err
	}
	return nil
}

// novaListener reads Nova's instance.create.end on the service's own queue.
func novaListener(tr *oslo.Transport, l LaunchSection, lr *launcher.Launcher, log *slog.Logger) *oslo.Listener {
	return oslo.NewListener(tr, oslo.ListenerConfig{Exchange: l.NotificationExchange, Topic: l.NotificationTopic,
		Queue: l.NotificationQueue, Priorities: []string{"info"}},
		func(ctx context.Context, n *oslo.Notification) error {
			if n.EventType != novanotify.EventCreateEnd {
				return nil
			}
			ev, err := novanotify.ParseCreateEnd(n.Payload)
			if err != nil {
				// Requeueing cannot fix it.
				log.Warn("dropping an instance.create.end notification", "publisher_id", n.PublisherID, "error", err)
				return nil
			}
			return lr.HandleCreateEnd(ctx, ev)
		})
}
