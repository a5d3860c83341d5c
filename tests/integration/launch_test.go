package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/trustpool/trustpool/cli/commands"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestapi/attestapitest"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/importblob"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/policykey"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/tpm"
	"github.com/trustpool/trustpool/internal/verdict"
)

// newUUID is a random instance id.
func newUUID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// startInstance makes an instance of project run on h: the directory
// injector's record of it and the owner the hypervisor records ("": none),
// what Nova's fake virt driver's hook writes in the Nova test.
func (h *host) startInstance(t *testing.T, project string) string {
	t.Helper()
	id := newUUID(t)
	if err := os.Mkdir(filepath.Join(h.instances, id), 0o700); err != nil {
		t.Fatal(err)
	}
	if project != "" {
		if err := os.WriteFile(filepath.Join(h.instances, id+".owner"), []byte(project), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// delivered returns what h's instance received ("" when nothing).
func (h *host) delivered(t *testing.T, instance string) (secret, receipt []byte) {
	t.Helper()
	secret, _ = os.ReadFile(filepath.Join(h.instances, instance, launch.SecretFile))
	receipt, _ = os.ReadFile(filepath.Join(h.instances, instance, launch.ReceiptFile))
	return secret, receipt
}

// pcrHook is a TPM transport that extends a PCR just before the next
// TPM2_Import it carries, when armed: the host's state changes between the
// service's quote and the agent's unseal.
type pcrHook struct {
	transport.TPMCloser
	armed *atomic.Bool
}

func (p pcrHook) Send(cmd []byte) ([]byte, error) {
	if len(cmd) >= 10 && tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) == tpm2.TPMCCImport && p.armed.CompareAndSwap(true, false) {
		if err := bootseed.Apply(p.TPMCloser, []bootseed.Extend{{PCR: 7, Digests: map[eventlog.Alg][]byte{
			eventlog.SHA256: eventlog.SHA256.Sum([]byte("changed between quote and unseal")),
		}}}); err != nil {
			return nil, err
		}
	}
	return p.TPMCloser.Send(cmd)
}

// tenant is a project member using the trustpool CLI.
type tenant struct {
	name, project, user string
	cloud               []string
}

// launchEvents collects the service's trustpool.launch.* notifications.
type launchEvents struct {
	mu  sync.Mutex
	got map[string][]map[string]any // launch id → payloads
}

func (le *launchEvents) wait(t *testing.T, id, event string) map[string]any {
	t.Helper()
	var found map[string]any
	waitFor(t, 30*time.Second, event+" for "+id, func() bool {
		le.mu.Lock()
		defer le.mu.Unlock()
		for _, p := range le.got[id] {
			if p["event_type"] == event {
				found = p
				return true
			}
		}
		return false
	})
	return found
}

func listenLaunchEvents(t *testing.T, e *env) *launchEvents {
	t.Helper()
	le := &launchEvents{got: map[string][]map[string]any{}}
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: e.rabbit.URL, ControlExchange: attestrpc.DefaultControlExchange})
	if err != nil {
		t.Fatal(err)
	}
	l := oslo.NewListener(tr, oslo.ListenerConfig{Topic: attestrpc.NotificationTopic, Queue: "test-launch-events"},
		func(_ context.Context, n *oslo.Notification) error {
			if !strings.HasPrefix(n.EventType, "trustpool.launch.") {
				return nil
			}
			var p map[string]any
			if err := json.Unmarshal(n.Payload, &p); err != nil {
				return err
			}
			p["event_type"] = n.EventType
			le.mu.Lock()
			id, _ := p["launch_id"].(string)
			le.got[id] = append(le.got[id], p)
			le.mu.Unlock()
			return nil
		})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	select {
	case <-l.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("launch event listener not ready")
	}
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
	return le
}

// novaBus publishes instance.create.end as Nova does (messagingv2 on
// exchange nova, versioned_notifications.info): here to play a Nova that
// says what the test wants, which the bus allows anyone with broker
// credentials to do.
type novaBus struct {
	tr *oslo.Transport
}

func newNovaBus(t *testing.T, e *env) *novaBus {
	t.Helper()
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: e.rabbit.URL, ControlExchange: "nova"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return &novaBus{tr: tr}
}

// createEnd publishes an InstanceCreatePayload (the fields of Nova 26's
// version 1.12) for instance in project on host, naming launchID.
func (n *novaBus) createEnd(t *testing.T, instance, project, host, launchID string) {
	t.Helper()
	now := time.Now().UTC().Format("2006-01-02T15:04:05Z")
	payload := map[string]any{
		"nova_object.name": "InstanceCreatePayload", "nova_object.namespace": "nova", "nova_object.version": "1.12",
		"nova_object.data": map[string]any{
			"uuid": instance, "tenant_id": project, "user_id": "u", "host": host, "node": host, "host_name": "vm", "display_name": "vm",
			"state": "active", "power_state": "running", "task_state": nil, "metadata": map[string]string{"trustpool_launch": launchID},
			"image_uuid": "155d900f-4e14-4e4c-a73d-069cbf4541e6", "key_name": nil, "fault": nil, "launched_at": now, "created_at": now,
			"updated_at": now, "keypairs": []any{}, "tags": []any{}, "trusted_image_certificates": nil, "instance_name": "instance-00000001",
			"locked": false, "locked_reason": nil, "auto_disk_config": "MANUAL", "block_devices": []any{}, "availability_zone": "nova",
			"ip_addresses": []any{}, "flavor": map[string]any{"nova_object.name": "FlavorPayload", "nova_object.data": map[string]any{"name": "trusted"}},
		},
	}
	notifier := oslo.NewNotifier(n.tr, "nova-compute:"+host, "versioned_notifications")
	if err := notifier.Notify(t.Context(), map[string]any{"project_id": project}, "INFO", "instance.create.end", payload); err != nil {
		t.Fatal(err)
	}
}

// launchTest is the deployment of TestLaunch: a third-party service (no
// Nova credentials: launches are bound by notifications or by hostId),
// three hosts, two tenant projects, the trustpool CLI.
type launchTest struct {
	t                    *testing.T
	e                    *env
	hosts                map[string]*host
	cli                  *cli
	a, b, reader         tenant
	admin                []string
	fingerprint, keyFile string
	events               *launchEvents
	nova                 *novaBus
	dir                  string
	// name is the test's name, in the tenants' project names.
	name string
	// redelivered is when a user's re-delivery of a launch last returned
	// (redeliver waits out userRedeliveryInterval from then).
	redelivered map[string]time.Time
}

// with returns lt for a subtest: its helpers fail t, not the parent test.
func (lt *launchTest) with(t *testing.T) *launchTest {
	t.Helper()
	c := *lt
	c.t = t
	c.cli = &cli{t: t, bin: lt.cli.bin, env: lt.cli.env}
	return &c
}

// launch runs `trustpool launch create` for tn and returns the launch.
func (lt *launchTest) create(tn tenant, secretFile, profile string, extra ...string) attestapi.Launch {
	lt.t.Helper()
	args := append(slices.Clone(tn.cloud), "launch", "create", "--profile", profile, "--secret-file", secretFile,
		"--launch-key-fingerprint", lt.fingerprint, "-f", "json")
	return launchJSON(lt.t, lt.cli.ok(append(args, extra...)...))
}

// launchJSON decodes `launch create|show -f json` output.
func launchJSON(t *testing.T, out string) attestapi.Launch {
	t.Helper()
	m := jsonOut[map[string]any](t, out)
	l := attestapi.Launch{ID: fmt.Sprint(m["id"]), State: fmt.Sprint(m["state"]), InstanceID: fmt.Sprint(m["instance_id"]),
		HostID: fmt.Sprint(m["host_id"]), ProjectID: fmt.Sprint(m["project_id"]), Profile: fmt.Sprint(m["profile"])}
	if rs, ok := m["reasons"].([]any); ok {
		for _, r := range rs {
			l.Reasons = append(l.Reasons, fmt.Sprint(r))
		}
	}
	if h, ok := m["host"].(string); ok {
		l.Host = h
	}
	return l
}

// ended waits until launch id of tn has ended and returns it.
func (lt *launchTest) ended(tn tenant, id string) attestapi.Launch {
	lt.t.Helper()
	var l attestapi.Launch
	waitFor(lt.t, 60*time.Second, "launch "+id+" to end", func() bool {
		l = launchJSON(lt.t, lt.cli.ok(append(slices.Clone(tn.cloud), "launch", "show", id, "-f", "json")...))
		return launch.Final(l.State)
	})
	return l
}

// refused checks that a launch ended in state with reason code and that
// no host's instance received anything.
func (lt *launchTest) refused(l attestapi.Launch, state, code string) {
	lt.t.Helper()
	if l.State != state || len(l.Reasons) != 1 || !strings.HasPrefix(l.Reasons[0], code) {
		lt.t.Errorf("launch %s: %s %v, want %s with reason %s", l.ID, l.State, l.Reasons, state, code)
	}
	for _, h := range lt.hosts {
		if s, r := h.delivered(lt.t, l.InstanceID); s != nil || r != nil {
			lt.t.Errorf("launch %s (%s) delivered something to %s", l.ID, code, h.name)
		}
	}
	ev := map[string]string{launch.StateRefused: attestrpc.EventLaunchRefused, launch.StateFailed: attestrpc.EventLaunchFailed}[state]
	p := lt.events.wait(lt.t, l.ID, ev)
	if rs, _ := p["reasons"].([]any); len(rs) != 1 || !strings.HasPrefix(fmt.Sprint(rs[0]), code) {
		lt.t.Errorf("%s notification of %s: reasons %v, want %s", ev, l.ID, p["reasons"], code)
	}
	// The receipt of a refusal verifies too, and says so.
	if out := lt.cli.run(nil, append(slices.Clone(lt.a.cloud), "launch", "verify", l.ID, "--public-key", lt.keyFile, "--state", state)...); out.code != 0 &&
		l.ProjectID == lt.a.project {
		lt.t.Errorf("verify the %s receipt of %s: exit %d %s", state, l.ID, out.code, out.stderr)
	}
}

// start starts the service and lt's hosts' agents, learns profile
// baseline from host1 (and makes profile strict, which no host
// satisfies), waits until every host is trusted, and makes the tenants
// (a, b: members of their projects; reader: a reader of a's project) and
// the CLI, which pins the launch key and the verdict key.
func (lt *launchTest) start() {
	t, e := lt.t, lt.e
	t.Helper()
	e.startService()
	for _, h := range lt.hosts {
		e.startAgent(h)
	}
	lt.events = listenLaunchEvents(t, e)
	lt.nova = newNovaBus(t, e)
	for n := range lt.hosts {
		e.verdicts.wait(t, n, 0, 60*time.Second, "attested", status(verdict.Untrusted))
	}
	if code, body := e.api("POST", "/v1/profiles/learn", e.admin, map[string]any{"host": "host1", "name": "baseline"}); code != http.StatusCreated {
		t.Fatalf("learn baseline = %d %v", code, body)
	}
	strict := map[string]any{"name": "strict", "pcrs": map[string]any{"0": []string{strings.Repeat("00", 32)}}}
	if code, body := e.api("POST", "/v1/profiles", e.admin, strict); code != http.StatusCreated {
		t.Fatalf("create strict = %d %v", code, body)
	}
	for n := range lt.hosts {
		e.verdicts.wait(t, n, 0, 60*time.Second, "trusted", status(verdict.Trusted))
	}

	// Tenants and the CLI.
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	lt.name = name
	user := func(who string, roles ...string) tenant {
		tn := tenant{name: who, user: "tp-" + who + "-" + name}
		project := "launch-" + who + "-" + name
		if who == "reader" {
			project = "launch-a-" + name
		}
		_, tn.project = e.ks.CreateUser(t, servicetest.KeystoneUser{Name: tn.user, Password: "pw", Project: project, Roles: roles})
		tn.cloud = []string{"--os-cloud", who}
		return tn
	}
	userSeq.Lock()
	lt.a, lt.b, lt.reader = user("a", "member", "reader"), user("b", "member", "reader"), user("reader", "reader")
	userSeq.Unlock()
	proxy := attestapitest.NewProxy(t, attestapitest.NewValidator(t), e.svc.APIURL())
	clouds := "clouds:\n"
	for _, tn := range []tenant{lt.a, lt.b, lt.reader} {
		project := "launch-" + tn.name + "-" + name
		if tn.name == "reader" {
			project = "launch-a-" + name
		}
		clouds += fmt.Sprintf("  %s:\n    auth:\n      auth_url: %s\n      username: %s\n      password: pw\n      project_name: %s\n"+
			"      user_domain_name: Default\n      project_domain_name: Default\n", tn.name, e.ks.URL, tn.user, project)
	}
	clouds += fmt.Sprintf("  admin:\n    auth:\n      auth_url: %s\n      username: %s\n      password: %s\n      project_name: %s\n"+
		"      user_domain_name: Default\n      project_domain_name: Default\n", e.ks.URL, e.ks.AdminUser, e.ks.AdminPassword, e.ks.AdminProject)
	cloudsFile := filepath.Join(lt.dir, "clouds.yaml")
	if err := os.WriteFile(cloudsFile, []byte(clouds), 0o600); err != nil {
		t.Fatal(err)
	}
	lt.cli = &cli{t: t, bin: buildCLI(t), env: []string{"OS_CLIENT_CONFIG_FILE=" + cloudsFile, "OS_ATTESTATION_URL=" + proxy.URL}}
	lt.admin = []string{"--os-cloud", "admin"}
	// Out of band, the tenant learned the launch key's fingerprint and the
	// verdict key (the operator published them).
	lt.fingerprint = e.svc.LaunchPublicKey().Fingerprint()
	keyPEM, err := verdict.MarshalPublicKeyPEM(e.svc.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	lt.keyFile = filepath.Join(lt.dir, "verdict-key.pem")
	if err := os.WriteFile(lt.keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := lt.cli.ok(append(slices.Clone(lt.a.cloud), "key", "list", "--use", "launch", "-f", "value", "-c", "Fingerprint")...); strings.TrimSpace(out) != lt.fingerprint {
		t.Fatalf("key list --use launch = %q, want %s", out, lt.fingerprint)
	}
}

// TestLaunch is the trusted launch end to end against RabbitMQ, Keystone,
// the attestation service and three swtpm agents with the directory
// injector, tenants using the trustpool binary through a proxy that holds
// every request and answer to docs/api/openapi.yaml. The service has no
// Nova account, as when a third party runs it: launches are bound by
// instance.create.end notifications or by the hostId the tenant gives.
//
// Positive: --server binding with a hostId delivers; the receipt verifies
// with the CLI (from the API and from the file the instance received);
// prove in the instance and check at the tenant agree; a notification binds
// and delivers. Negative, each with its reason and no delivery: PCR
// extended before sealing (refused host_untrusted), PCR extended between
// quote and unseal (failed pcr_mismatch), profile not satisfied, host not
// enrolled, Nova naming a host that does not run the instance
// (instance_not_present), an instance of another project on the host
// (instance_not_in_project) or whose owner only a notification names
// (owner_unknown), a sealed request replayed by another project
// (project_mismatch) and by its own (replayed), not_after passed at
// creation and before binding (expired), a second binding notification
// (ignored) and a deliver_secret replayed on the bus to the agent
// (replayed; re-aimed at another instance: invalid_blob), a receipt altered
// after signing (verify fails), another project's member (not found).
func TestLaunch(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newEnv(t, 5*time.Second)
	lt := &launchTest{t: t, e: e, hosts: map[string]*host{}, dir: t.TempDir()}
	var armed atomic.Bool
	for _, n := range []string{"host1", "host2", "host3"} {
		lt.hosts[n] = e.newHost(n, bootseed.BuildA())
	}
	h3 := lt.hosts["host3"]
	h3.openTPM = func(ctx context.Context) (transport.TPMCloser, error) {
		c, err := tpm.DialSWTPM(ctx, h3.sw.ServerAddr, 10*time.Second)
		if err != nil {
			return nil, err
		}
		return pcrHook{TPMCloser: c, armed: &armed}, nil
	}
	lt.start()
	name := lt.name
	secret := []byte("correct horse battery staple: the data volume's LUKS passphrase")
	secretFile := filepath.Join(lt.dir, "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	h1, h2 := lt.hosts["host1"], lt.hosts["host2"]

	var delivered attestapi.Launch
	t.Run("server binding by hostId delivers, receipt verifies, proof checks", func(t *testing.T) {
		lt := lt.with(t)
		inst := h1.startInstance(t, lt.a.project)
		hostID := launch.HostID(lt.a.project, "host1") // what Nova shows the tenant
		delivered = lt.create(lt.a, secretFile, "baseline", "--server", inst, "--host-id", hostID, "--wait", "--public-key", lt.keyFile)
		if delivered.State != launch.StateDelivered || delivered.InstanceID != inst || delivered.HostID != hostID || delivered.Host != "" {
			t.Fatalf("launch = %+v", delivered)
		}
		got, receipt := h1.delivered(t, inst)
		if !bytes.Equal(got, secret) {
			t.Fatalf("instance received %q, want the tenant's secret", got)
		}
		if fi, err := os.Stat(filepath.Join(h1.instances, inst, launch.SecretFile)); err != nil || fi.Mode().Perm() != 0o400 {
			t.Errorf("secret file mode %v, %v; want 0400", fi.Mode().Perm(), err)
		}
		// The receipt from the API: signed, this launch, instance, hostId,
		// profile, project, delivered.
		rec := jsonOut[map[string]any](t, lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "verify", delivered.ID, "--public-key", lt.keyFile,
			"--server", inst, "--host-id", hostID, "--profile", "baseline", "-f", "json")...))
		// The policy covers the PCRs the profile pins (learned: 0-7, and 8-9
		// for the kernel facts).
		if rec["signature"] != "valid" || rec["state"] != "delivered" || fmt.Sprint(rec["pcrs"]) != "[0 1 2 3 4 5 6 7 8 9]" || rec["pcr_policy_digest"] == "" {
			t.Errorf("verified receipt %v", rec)
		}
		// Sealed under PolicyAuthorize by the service's published
		// policy-signing key (the agent speaks RPC API 1.2).
		pemText := lt.cli.ok(append(slices.Clone(lt.a.cloud), "key", "list", "--use", "policy", "--long", "-f", "value", "-c", "Public Key")...)
		if want := authorizePolicyOf(t, pemText); rec["pcr_policy_digest"] != want {
			t.Errorf("receipt pcr_policy_digest %v, want PolicyAuthorize by the policy-signing key %s", rec["pcr_policy_digest"], want)
		}
		// The tenant checks that with the CLI, pinning that key.
		policyPEM := filepath.Join(lt.dir, "policy-key.pem")
		if err := os.WriteFile(policyPEM, []byte(pemText), 0o600); err != nil {
			t.Fatal(err)
		}
		if rec := jsonOut[map[string]any](t, lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "verify", delivered.ID, "--public-key", lt.keyFile,
			"--policy-key", policyPEM, "-f", "json")...)); rec["policy_key"] == "" || rec["policy_key"] == nil {
			t.Errorf("receipt verified under the policy key names none: %v", rec)
		}
		// The receipt in the instance: the sealing's, verified offline.
		rf := filepath.Join(lt.dir, "instance-receipt.json")
		if err := os.WriteFile(rf, receipt, 0o600); err != nil {
			t.Fatal(err)
		}
		lt.cli.ok("launch", "verify", "--receipt-file", rf, "--public-key", lt.keyFile, "--server", inst)
		// Altered after signing: verify fails.
		altered := bytes.Replace(receipt, []byte(`\"profile\":\"baseline\"`), []byte(`\"profile\":\"gpu\"`), 1)
		if bytes.Equal(altered, receipt) {
			t.Fatal("could not alter the receipt")
		}
		if err := os.WriteFile(rf, altered, 0o600); err != nil {
			t.Fatal(err)
		}
		lt.cli.fails(commands.ExitError, []string{"receipt does not verify", "signature is invalid"},
			"launch", "verify", "--receipt-file", rf, "--public-key", lt.keyFile)
		// Prove inside the instance, check at the tenant.
		challenge := newUUID(t)
		proof := strings.TrimSpace(lt.cli.ok("launch", "prove", "--secret-file", filepath.Join(h1.instances, inst, launch.SecretFile), "--challenge", challenge))
		lt.cli.ok("launch", "check", "--secret-file", secretFile, "--challenge", challenge, "--proof", proof)
		wrong := filepath.Join(lt.dir, "wrong-secret")
		if err := os.WriteFile(wrong, []byte("not the secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		lt.cli.fails(commands.ExitError, []string{"does not hold this secret"}, "launch", "check", "--secret-file", wrong,
			"--challenge", challenge, "--proof", proof)
		if p := lt.events.wait(t, delivered.ID, attestrpc.EventLaunchDelivered); p["host"] != "host1" || p["instance_id"] != inst {
			t.Errorf("delivered notification %v", p)
		}
	})

	t.Run("storage protection: the delivered key unlocks the tenant's LUKS volume", func(t *testing.T) {
		lt := lt.with(t)
		if _, err := exec.LookPath("cryptsetup"); err != nil {
			t.Fatalf("cryptsetup not found (Debian package cryptsetup-bin; run make deps): %v", err)
		}
		// The tenant formats their data volume with a fresh random key and
		// keeps the key only as a launch secret.
		key := make([]byte, 64)
		if _, err := rand.Read(key); err != nil {
			t.Fatal(err)
		}
		keyFile, volume := filepath.Join(lt.dir, "volume.key"), filepath.Join(lt.dir, "volume.img")
		if err := os.WriteFile(keyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(volume, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(volume, 32<<20); err != nil {
			t.Fatal(err)
		}
		cryptsetup := func(args ...string) error {
			out, err := exec.CommandContext(t.Context(), "cryptsetup", args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("cryptsetup %s: %w: %s", strings.Join(args, " "), err, out)
			}
			return nil
		}
		// PBKDF2 with few iterations keeps the test fast; the recipe in
		// docs uses cryptsetup's defaults.
		if err := cryptsetup("luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
			"--key-file", keyFile, volume); err != nil {
			t.Fatal(err)
		}
		inst := h1.startInstance(t, lt.a.project)
		l := lt.create(lt.a, keyFile, "baseline", "--server", inst, "--host-id", launch.HostID(lt.a.project, "host1"), "--wait")
		if l.State != launch.StateDelivered {
			t.Fatalf("launch %+v", l)
		}
		// Inside the instance: the delivered secret opens the volume's key
		// slot. (cryptsetup open --test-passphrase checks exactly that; a
		// real instance then runs cryptsetup open and mounts, which needs
		// the device mapper this test machine lacks.)
		delivered := filepath.Join(h1.instances, inst, launch.SecretFile)
		if err := cryptsetup("open", "--test-passphrase", "--key-file", delivered, volume); err != nil {
			t.Errorf("the delivered secret does not unlock the volume: %v", err)
		}
		// Any other secret (here: the other launches') does not.
		if err := cryptsetup("open", "--test-passphrase", "--key-file", secretFile, volume); err == nil {
			t.Error("another secret unlocks the volume")
		}
	})

	t.Run("notification binds and delivers; a second one is ignored", func(t *testing.T) {
		lt := lt.with(t)
		l := lt.create(lt.a, secretFile, "baseline")
		if l.State != launch.StatePending {
			t.Fatalf("launch without a server: %+v", l)
		}
		inst := h1.startInstance(t, lt.a.project)
		lt.nova.createEnd(t, inst, lt.a.project, "host1", l.ID)
		if l = lt.ended(lt.a, l.ID); l.State != launch.StateDelivered {
			t.Fatalf("launch %+v", l)
		}
		if got, _ := h1.delivered(t, inst); !bytes.Equal(got, secret) {
			t.Errorf("instance received %q", got)
		}
		before := len(jsonOut[map[string]any](t, lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "show", l.ID, "-f", "json")...))["history"].([]any))
		lt.nova.createEnd(t, inst, lt.a.project, "host1", l.ID)
		time.Sleep(2 * time.Second)
		after := jsonOut[map[string]any](t, lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "show", l.ID, "-f", "json")...))
		if after["state"] != "delivered" || len(after["history"].([]any)) != before {
			t.Errorf("after a second notification: %v (history %d entries before)", after, before)
		}
		if b, _ := os.ReadFile(filepath.Join(h1.dir, "state", "launches.log")); bytes.Count(b, []byte(l.ID)) != 1 {
			t.Errorf("the agent took launch %s %d times", l.ID, bytes.Count(b, []byte(l.ID)))
		}
	})

	t.Run("sealed request replayed", func(t *testing.T) {
		lt := lt.with(t)
		// The tenant's sealed request, as a copy on the wire would be.
		req, err := launch.NewRequest(secret, "baseline", lt.a.project, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := launch.Seal(e.svc.LaunchPublicKey(), req)
		if err != nil {
			t.Fatal(err)
		}
		body := attestapi.LaunchCreate{KID: e.svc.LaunchPublicKey().KID(), Sealed: sealed}
		tokA := e.ks.Token(t, lt.a.user, "pw", "launch-a-"+name)
		tokB := e.ks.Token(t, lt.b.user, "pw", "launch-b-"+name)
		if code, out := e.api("POST", "/v1/launches", tokB, body); code != http.StatusBadRequest || !strings.HasPrefix(errMsg(out), launch.ReasonProjectMismatch) {
			t.Errorf("another project's replay = %d %v, want 400 project_mismatch", code, out)
		}
		if code, out := e.api("POST", "/v1/launches", tokA, body); code != http.StatusCreated {
			t.Fatalf("first use = %d %v", code, out)
		}
		if code, out := e.api("POST", "/v1/launches", tokA, body); code != http.StatusConflict || !strings.HasPrefix(errMsg(out), "replayed") {
			t.Errorf("second use = %d %v, want 409 replayed", code, out)
		}
		// Expired at creation.
		old, err := launch.NewRequest(secret, "baseline", lt.a.project, time.Now().Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		sealedOld, _ := launch.Seal(e.svc.LaunchPublicKey(), old)
		time.Sleep(1100 * time.Millisecond)
		if code, out := e.api("POST", "/v1/launches", tokA, attestapi.LaunchCreate{KID: body.KID, Sealed: sealedOld}); code != http.StatusBadRequest ||
			!strings.HasPrefix(errMsg(out), launch.ReasonExpired) {
			t.Errorf("expired request = %d %v, want 400 expired", code, out)
		}
	})

	t.Run("not_after passes before binding", func(t *testing.T) {
		lt := lt.with(t)
		l := lt.create(lt.a, secretFile, "baseline", "--not-after", "2s")
		inst := h1.startInstance(t, lt.a.project)
		time.Sleep(2500 * time.Millisecond)
		lt.nova.createEnd(t, inst, lt.a.project, "host1", l.ID)
		l = lt.ended(lt.a, l.ID)
		l.InstanceID = inst
		lt.refused(l, launch.StateRefused, launch.ReasonExpired)
	})

	t.Run("host not enrolled", func(t *testing.T) {
		lt := lt.with(t)
		l := lt.create(lt.a, secretFile, "baseline")
		lt.nova.createEnd(t, newUUID(t), lt.a.project, "ghost", l.ID)
		lt.refused(lt.ended(lt.a, l.ID), launch.StateRefused, "host_not_enrolled")
	})

	t.Run("Nova names a host that does not run the instance", func(t *testing.T) {
		lt := lt.with(t)
		l := lt.create(lt.a, secretFile, "baseline")
		inst := h2.startInstance(t, lt.a.project) // it runs on host2
		lt.nova.createEnd(t, inst, lt.a.project, "host1", l.ID)
		lt.refused(lt.ended(lt.a, l.ID), launch.StateRefused, attestrpc.ReasonInstanceNotPresent)
	})

	t.Run("an instance of another project on the host", func(t *testing.T) {
		lt := lt.with(t)
		inst := h1.startInstance(t, lt.b.project)
		l := lt.create(lt.a, secretFile, "baseline", "--server", inst, "--host-id", launch.HostID(lt.a.project, "host1"))
		lt.refused(lt.ended(lt.a, l.ID), launch.StateRefused, "instance_not_in_project")
	})

	t.Run("an instance whose owner only Nova's bus names", func(t *testing.T) {
		lt := lt.with(t)
		l := lt.create(lt.a, secretFile, "baseline")
		inst := h1.startInstance(t, "")
		lt.nova.createEnd(t, inst, lt.a.project, "host1", l.ID)
		lt.refused(lt.ended(lt.a, l.ID), launch.StateRefused, "owner_unknown")
	})

	t.Run("profile not satisfied", func(t *testing.T) {
		lt := lt.with(t)
		inst := h1.startInstance(t, lt.a.project)
		l := lt.create(lt.a, secretFile, "strict", "--server", inst, "--host-id", launch.HostID(lt.a.project, "host1"))
		lt.refused(lt.ended(lt.a, l.ID), launch.StateRefused, "profile_not_satisfied")
	})

	t.Run("a bus replay of deliver_secret reaches the agent", func(t *testing.T) {
		lt := lt.with(t)
		// Whoever can read the bus copies deliver_secret for host1 ...
		msgs := tapAgentTopic(t, e, "host1")
		inst := h1.startInstance(t, lt.a.project)
		l := lt.create(lt.a, secretFile, "baseline", "--server", inst, "--host-id", launch.HostID(lt.a.project, "host1"), "--wait")
		if l.State != launch.StateDelivered {
			t.Fatalf("launch %+v", l)
		}
		var captured *oslo.Request
		for captured == nil {
			select {
			case d := <-msgs:
				if r, err := oslo.DecodeRequest(d.Body); err == nil && r.Method == attestrpc.MethodDeliverSecret {
					captured = r
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no deliver_secret seen on the bus")
			}
		}
		// ... and sends it again, then re-aimed at another instance of its
		// own on the same host under a new launch id.
		tr, err := oslo.NewTransport(oslo.Config{TransportURL: e.rabbit.URL, ControlExchange: attestrpc.DefaultControlExchange})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		c := tr.Client(oslo.Target{Topic: attestrpc.AgentTopic, Server: "host1", Version: attestrpc.LaunchVersion}).WithTimeout(20 * time.Second)
		var res attestrpc.DeliverSecretResult
		if err := c.Call(t.Context(), nil, attestrpc.MethodDeliverSecret, captured.Args, &res); err != nil {
			t.Fatal(err)
		}
		if res.Delivered || res.Reason != attestrpc.ReasonReplayed {
			t.Errorf("replayed deliver_secret = %+v, want reason replayed", res)
		}
		mine := h1.startInstance(t, lt.a.project)
		args := map[string]json.RawMessage{}
		for k, v := range captured.Args {
			args[k] = v
		}
		args["instance_id"], _ = json.Marshal(mine)
		args["launch_id"], _ = json.Marshal(newUUID(t))
		res = attestrpc.DeliverSecretResult{}
		if err := c.Call(t.Context(), nil, attestrpc.MethodDeliverSecret, args, &res); err != nil {
			t.Fatal(err)
		}
		if res.Delivered || res.Reason != attestrpc.ReasonInvalidBlob {
			t.Errorf("deliver_secret re-aimed at another instance = %+v, want reason invalid_blob", res)
		}
		if s, _ := h1.delivered(t, mine); s != nil {
			t.Error("the re-aimed blob delivered a secret")
		}
	})

	t.Run("PCR extended between quote and unseal", func(t *testing.T) {
		lt := lt.with(t)
		inst := h3.startInstance(t, lt.a.project)
		armed.Store(true)
		l := lt.create(lt.a, secretFile, "baseline", "--server", inst, "--host-id", launch.HostID(lt.a.project, "host3"))
		// Sealed under PolicyAuthorize: the extended PCR reaches a state
		// the profile does not accept, which no approval names.
		lt.refused(lt.ended(lt.a, l.ID), launch.StateFailed, attestrpc.ReasonPCRNotApproved)
		if armed.Load() {
			t.Error("the agent never imported: the hook did not fire")
		}
	})

	t.Run("PCR extended before sealing", func(t *testing.T) {
		lt := lt.with(t)
		d := eventlog.SHA256.Sum([]byte("bootkit on host2"))
		h2.sw.Tool(t, "tpm2_pcrextend", "7:sha256="+hex.EncodeToString(d))
		inst := h2.startInstance(t, lt.a.project)
		l := lt.create(lt.a, secretFile, "baseline", "--server", inst, "--host-id", launch.HostID(lt.a.project, "host2"))
		l = lt.ended(lt.a, l.ID)
		lt.refused(l, launch.StateRefused, "host_untrusted")
	})

	t.Run("another project cannot see or delete it", func(t *testing.T) {
		lt := lt.with(t)
		id := delivered.ID
		lt.cli.fails(commands.ExitNotFound, []string{"not found"}, append(slices.Clone(lt.b.cloud), "launch", "show", id)...)
		lt.cli.fails(commands.ExitNotFound, []string{"not found"}, append(slices.Clone(lt.b.cloud), "launch", "delete", id)...)
		if out := lt.cli.ok(append(slices.Clone(lt.b.cloud), "launch", "list", "-f", "value", "-c", "ID")...); strings.Contains(out, id) {
			t.Errorf("another project lists %s", id)
		}
		lt.cli.fails(commands.ExitNotFound, nil, append(slices.Clone(lt.b.cloud), "launch", "verify", id, "--public-key", lt.keyFile)...)
		// A reader of the project sees it, cannot delete it.
		lt.cli.ok(append(slices.Clone(lt.reader.cloud), "launch", "show", id)...)
		lt.cli.fails(commands.ExitAuth, []string{"trustpool:launches:delete"}, append(slices.Clone(lt.reader.cloud), "launch", "delete", id)...)
		// The administrator lists every project's and sees the host.
		all := jsonOut[[]map[string]any](t, lt.cli.ok(append(slices.Clone(lt.admin), "launch", "list", "--all-projects", "--long", "-f", "json")...))
		found := false
		for _, r := range all {
			found = found || (r["ID"] == id && r["Host"] == "host1")
		}
		if !found {
			t.Errorf("admin --all-projects lacks %s on host1: %v", id, all)
		}
		lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "delete", id)...)
		lt.cli.fails(commands.ExitNotFound, nil, append(slices.Clone(lt.a.cloud), "launch", "show", id)...)
	})

	if e.verdicts.bad != 0 {
		t.Errorf("%d verdicts failed signature verification", e.verdicts.bad)
	}
}

// errMsg is an API error envelope's message.
func errMsg(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	return fmt.Sprint(e["message"])
}

// authorizePolicyOf is the authPolicy of blobs sealed under PolicyAuthorize
// by the policy-signing key whose PEM key list printed.
func authorizePolicyOf(t *testing.T, pemText string) string {
	t.Helper()
	blk, _ := pem.Decode([]byte(pemText))
	if blk == nil {
		t.Fatalf("no policy-signing key in %q", pemText)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("policy-signing key is a %T", k)
	}
	pub, err := policykey.NewPublicKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	d, err := importblob.AuthorizePolicy(pub.TPMName())
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(d)
}

// tapAgentTopic returns copies of what is sent to host's agent topic, as
// whoever can read the bus sees them; the tap goes with t.
func tapAgentTopic(t *testing.T, e *env, host string) <-chan amqp.Delivery {
	t.Helper()
	conn, err := amqp.Dial(e.rabbit.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err == nil {
		err = ch.QueueBind(q.Name, attestrpc.AgentTopic+"."+host, attestrpc.DefaultControlExchange, false, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}
