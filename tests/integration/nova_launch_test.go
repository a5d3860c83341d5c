package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/trustpool/trustpool/cli/commands"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/novanotify"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// novaServer is a server Nova booted, as the Python side reports it.
type novaServer struct {
	Event, Name, ID, Host, Project string
	HostID                         string `json:"host_id"`
}

// TestNovaLaunch is the trusted launch through Nova's real control plane
// (nova-filter-shim/python/tests/functional/test_e2e_launch.py): Nova's
// functional-test base in-process with TrustedFilter asking the real
// filter shim, Nova's real versioned notifier on the real RabbitMQ, Nova's
// API behind the real keystonemiddleware on a real port (in the Keystone
// catalog), and the fake virt driver's instances seen by the agents'
// directory injectors. Everything else is as in TestLaunch: the attestation
// service, three swtpm agents, the trustpool CLI as the tenant.
//
//  1. The tenant creates a launch, then Nova boots a server with
//     trustpool_launch=<id> on a trust:profile flavor: TrustedFilter places
//     it on an attested host, nova-compute's instance.create.end binds the
//     launch, the secret arrives in that host's instance, the receipt
//     verifies with the CLI against the server's id and the hostId Nova
//     shows, and prove/check agree.
//  2. With no Nova account at the service (a third party runs it): the
//     tenant binds an existing server with --server; the CLI reads its
//     hostId from Nova with the tenant's own credentials, the service
//     matches it to the enrolled host.
//  3. The service restarted with a Nova account ([nova], endpoint
//     override): --server is bound through Nova's API; a server of another
//     project is refused (server_not_in_project), which only Nova's API
//     can tell.
func TestNovaLaunch(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	py := servicetest.Python(t)
	shimBin := buildFilterShim(t)
	e := newEnv(t, 5*time.Second)
	root := t.TempDir()
	names := []string{"host1", "host2", "host3"}
	hosts := map[string]*host{}
	for _, n := range names {
		h := e.newHost(n, bootseed.BuildA())
		h.instances = filepath.Join(root, n)
		if err := os.Mkdir(h.instances, 0o700); err != nil {
			t.Fatal(err)
		}
		hosts[n] = h
	}
	e.startService()
	for _, n := range names {
		e.startAgent(hosts[n])
	}
	for _, n := range names {
		e.verdicts.wait(t, n, 0, 60*time.Second, "attested", status(verdict.Untrusted))
	}
	if code, body := e.api("POST", "/v1/profiles/learn", e.admin, map[string]any{"host": "host1", "name": "baseline"}); code != http.StatusCreated {
		t.Fatalf("learn baseline = %d %v", code, body)
	}
	for _, n := range names {
		e.verdicts.wait(t, n, 0, 60*time.Second, "trusted", status(verdict.Trusted))
	}
	shim := startFilterShim(t, e, shimBin)
	shim.waitPasses(t, names, names)

	// Keystone: the tenant, Nova's service user, Nova's API in the catalog.
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	tenantUser, tenantProjectName := "tp-tenant-"+name, "tenant-"+name
	novaUser := "tp-nova-" + name
	userSeq.Lock()
	_, tenantProject := e.ks.CreateUser(t, servicetest.KeystoneUser{Name: tenantUser, Password: "pw", Project: tenantProjectName, Roles: []string{"member", "reader"}})
	e.ks.CreateUser(t, servicetest.KeystoneUser{Name: novaUser, Password: "nova-pw", Project: "service", Roles: []string{"service", "admin"}})
	userSeq.Unlock()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	novaPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	novaURL := fmt.Sprintf("http://127.0.0.1:%d/v2.1", novaPort)
	region := "Region-" + name
	e.ks.AddEndpoint(t, "compute", region, "public", novaURL)

	dir := t.TempDir()
	clouds := fmt.Sprintf("clouds:\n  tenant:\n    auth:\n      auth_url: %s\n      username: %s\n      password: pw\n      project_name: %s\n"+
		"      user_domain_name: Default\n      project_domain_name: Default\n    region_name: %s\n", e.ks.URL, tenantUser, tenantProjectName, region)
	cloudsFile := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(cloudsFile, []byte(clouds), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, bin: buildCLI(t), env: []string{"OS_CLIENT_CONFIG_FILE=" + cloudsFile, "OS_ATTESTATION_URL=" + e.svc.APIURL()}}
	tenant := []string{"--os-cloud", "tenant"}
	as := func(args ...string) []string { return append(slices.Clone(tenant), args...) }
	fingerprint := e.svc.LaunchPublicKey().Fingerprint()
	keyPEM, _ := verdict.MarshalPublicKeyPEM(e.svc.PublicKey())
	keyFile := filepath.Join(dir, "verdict-key.pem")
	secretFile := filepath.Join(dir, "secret")
	secret := []byte("the tenant's data volume key")
	for f, b := range map[string][]byte{keyFile: keyPEM, secretFile: secret} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	create := func(extra ...string) map[string]any {
		t.Helper()
		args := as("launch", "create", "--profile", "baseline", "--secret-file", secretFile, "--launch-key-fingerprint", fingerprint, "-f", "json")
		return jsonOut[map[string]any](t, c.ok(append(args, extra...)...))
	}

	// A tap on Nova's notifications, as they go on the wire (the parser's
	// fuzz seed is such a body).
	taps := tapNova(t, e)

	// 1. The launch waits for Nova.
	pending := create()
	if pending["state"] != launch.StatePending {
		t.Fatalf("launch = %v", pending)
	}
	launchID := pending["id"].(string)

	// Nova boots the servers (and stays up until done).
	events := filepath.Join(dir, "events.jsonl")
	done := filepath.Join(dir, "done")
	servers := `[{"name": "notified", "launch_id": "` + launchID + `"}, {"name": "by-hostid"}, {"name": "by-nova"}, {"name": "admins", "as": "admin"}]`
	pyDone := runNovaLaunch(t, py, shim, names, []string{
		"TRUSTPOOL_TRANSPORT_URL=" + e.rabbit.URL, "TRUSTPOOL_INSTANCES_ROOT=" + root,
		"TRUSTPOOL_NOVA_API_PORT=" + fmt.Sprint(novaPort), "TRUSTPOOL_KEYSTONE_URL=" + e.ks.URL,
		"TRUSTPOOL_NOVA_USER=" + novaUser, "TRUSTPOOL_NOVA_PASSWORD=nova-pw", "TRUSTPOOL_ADMIN_TOKEN=" + e.admin,
		"TRUSTPOOL_TENANT_TOKEN=" + e.ks.Token(t, tenantUser, "pw", tenantProjectName), "TRUSTPOOL_TENANT_PROJECT=" + tenantProject,
		"TRUSTPOOL_E2E_SERVERS=" + servers, "TRUSTPOOL_E2E_EVENTS=" + events, "TRUSTPOOL_E2E_DONE=" + done,
	})
	booted := map[string]novaServer{}
	waitFor(t, 8*time.Minute, "Nova to boot the servers", func() bool {
		select {
		case err := <-pyDone:
			t.Fatalf("Nova's test ended early: %v", err)
		default:
		}
		b, _ := os.ReadFile(events)
		sc := bufio.NewScanner(bytes.NewReader(b))
		ready := false
		for sc.Scan() {
			var s novaServer
			if json.Unmarshal(sc.Bytes(), &s) == nil {
				booted[s.Name] = s
				ready = ready || s.Event == "ready"
			}
		}
		return ready
	})
	defer func() {
		if err := os.WriteFile(done, nil, 0o600); err != nil {
			t.Error(err)
		}
		if err := <-pyDone; err != nil {
			t.Errorf("Nova's test: %v", err)
		}
	}()
	for _, n := range []string{"notified", "by-hostid", "by-nova"} {
		s := booted[n]
		if s.Project != tenantProject || s.HostID != launch.HostID(tenantProject, s.Host) || !slices.Contains(names, s.Host) {
			t.Fatalf("server %s = %+v: not the tenant's, or hostId is not sha224(project + host)", n, s)
		}
	}

	// The notification bound the launch; Nova's hostId and the receipt's
	// agree.
	notified := booted["notified"]
	waitFor(t, 60*time.Second, "launch "+launchID+" to end", func() bool {
		l := jsonOut[map[string]any](t, c.ok(as("launch", "show", launchID, "-f", "json")...))
		return launch.Final(fmt.Sprint(l["state"]))
	})
	c.ok(as("launch", "verify", launchID, "--public-key", keyFile, "--server", notified.ID, "--host-id", notified.HostID, "--profile", "baseline")...)
	got, err := os.ReadFile(filepath.Join(root, notified.Host, notified.ID, launch.SecretFile))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("the instance Nova booted on %s received %q, %v", notified.Host, got, err)
	}
	proof := strings.TrimSpace(c.ok("launch", "prove", "--secret-file", filepath.Join(root, notified.Host, notified.ID, launch.SecretFile), "--challenge", "nova-e2e"))
	c.ok("launch", "check", "--secret-file", secretFile, "--challenge", "nova-e2e", "--proof", proof)
	checkCapturedNotification(t, taps, notified, tenantProject, launchID)

	// 2. No Nova account at the service: the CLI reads the hostId.
	byHostID := booted["by-hostid"]
	l := create("--server", byHostID.ID, "--wait", "--public-key", keyFile)
	if l["state"] != launch.StateDelivered || l["host_id"] != byHostID.HostID {
		t.Fatalf("--server with the hostId from Nova = %v", l)
	}

	// 3. The service gets a Nova account.
	e.stopSvc()
	e.cfg.Launch.NovaAPI = true
	e.cfg.Nova.EndpointOverride = novaURL
	e.startService()
	c.env = []string{"OS_CLIENT_CONFIG_FILE=" + cloudsFile, "OS_ATTESTATION_URL=" + e.svc.APIURL()}
	byNova := booted["by-nova"]
	l = create("--server", byNova.ID, "--wait", "--public-key", keyFile)
	if l["state"] != launch.StateDelivered || l["host_id"] != byNova.HostID {
		t.Fatalf("--server through Nova's API = %v", l)
	}
	// A server of another project (the admin's): only Nova's API knows
	// whose it is.
	other := booted["admins"].ID
	l = jsonOut[map[string]any](t, c.ok(as("launch", "create", "--profile", "baseline", "--secret-file", secretFile,
		"--launch-key-fingerprint", fingerprint, "--server", other, "--host-id", launch.HostID(tenantProject, "host1"), "-f", "json")...))
	id := l["id"].(string)
	var ended map[string]any
	waitFor(t, 60*time.Second, "launch "+id+" to end", func() bool {
		ended = jsonOut[map[string]any](t, c.ok(as("launch", "show", id, "-f", "json")...))
		return launch.Final(fmt.Sprint(ended["state"]))
	})
	if rs, _ := ended["reasons"].([]any); ended["state"] != launch.StateRefused || len(rs) != 1 || !strings.HasPrefix(fmt.Sprint(rs[0]), "server_not_in_project") {
		t.Errorf("a server of another project: %v", ended)
	}
	c.fails(commands.ExitError, []string{"refused"}, as("launch", "verify", id, "--public-key", keyFile)...)
}

// runNovaLaunch runs test_e2e_launch.py in the background; the channel
// gets its outcome.
func runNovaLaunch(t *testing.T, py string, s *filterShim, hosts []string, env []string) <-chan error {
	t.Helper()
	pkgDir, err := filepath.Abs("../../nova-filter-shim/python")
	if err != nil {
		t.Fatal(err)
	}
	testsDir := filepath.Join(pkgDir, "tests")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "-v", "functional.test_e2e_launch")
	cmd.Dir = testsDir
	cmd.Env = append(append(os.Environ(),
		"PYTHONPATH="+pkgDir+string(os.PathListSeparator)+testsDir, "PYTHONDONTWRITEBYTECODE=1",
		"TRUSTPOOL_SHIM_SOCKET="+s.socket, "TRUSTPOOL_SHIM_LOG="+s.log, "TRUSTPOOL_E2E_HOSTS="+strings.Join(hosts, ",")), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		defer cancel()
		err := cmd.Wait()
		if err == nil {
			err = servicetest.CheckUnittest(out.Bytes(), 0)
		}
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, out.Bytes())
		}
		res <- err
	}()
	t.Cleanup(func() { cancel() })
	return res
}

// tapNova binds a queue of the test's to Nova's versioned notifications.
func tapNova(t *testing.T, e *env) <-chan amqp.Delivery {
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
	if err := ch.ExchangeDeclare(novanotify.Exchange, "topic", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err == nil {
		err = ch.QueueBind(q.Name, novanotify.Topic+".info", novanotify.Exchange, false, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkCapturedNotification finds Nova's instance.create.end of s on the
// tap, parses it as the service does, and (TRUSTPOOL_UPDATE_TESTDATA=1)
// keeps it as the parser's fuzz seed.
func checkCapturedNotification(t *testing.T, taps <-chan amqp.Delivery, s novaServer, project, launchID string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case d := <-taps:
			n, err := oslo.DecodeNotification(d.Body)
			if err != nil || n.EventType != novanotify.EventCreateEnd {
				continue
			}
			ev, err := novanotify.ParseCreateEnd(n.Payload)
			if err != nil {
				t.Fatalf("Nova's own instance.create.end does not parse: %v", err)
			}
			if ev.InstanceID != s.ID {
				continue
			}
			if ev.ProjectID != project || ev.Host != s.Host || ev.LaunchID != launchID || n.PublisherID != "nova-compute:"+s.Host {
				t.Errorf("parsed %+v from %s, want instance %s of %s on %s naming %s", ev, n.PublisherID, s.ID, project, s.Host, launchID)
			}
			if os.Getenv("TRUSTPOOL_UPDATE_TESTDATA") != "" {
				p := filepath.Join("..", "..", "internal", "novanotify", "testdata", "instance_create_end.json")
				if err := os.WriteFile(p, d.Body, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			return
		case <-deadline:
			t.Fatal("Nova's instance.create.end never came by the tap")
		}
	}
}
