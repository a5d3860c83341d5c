package integration

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/cli/commands"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/verdict"
)

// reboot restarts h as a host reboot does: the agent stops, swtpm
// restarts (PCRs reset) and is seeded with build v, the instance's tmpfs
// (what the agent injected) is gone, the agent starts again with its state
// directory. It returns once the service has a verdict of the rebooted
// host.
func (lt *launchTest) reboot(h *host, v bootseed.Variant, instance string) {
	t := lt.t
	t.Helper()
	before, _, _ := lt.e.verdicts.get(h.name)
	h.stop()
	h.sw.Stop(t)
	h.sw.Start(t)
	h.boot(t, v)
	h.boots++
	for _, f := range []string{launch.SecretFile, launch.ReceiptFile} {
		if err := os.Remove(filepath.Join(h.instances, instance, f)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	lt.e.startAgent(h)
	lt.e.verdicts.wait(t, h.name, before.Seq, 60*time.Second, "attested after the reboot", func(verdict.Verdict) bool { return true })
}

// userRedeliveryInterval is TestLaunchRedeliver's [launch]
// redelivery_user_interval, the least the service accepts.
const userRedeliveryInterval = time.Second

// redeliver runs `trustpool launch redeliver` for tn and returns its exit
// code, the outcome and the launch as printed. A launch redelivered before
// is asked for again only once userRedeliveryInterval has passed since the
// last request returned (the service counts from before it answered), as
// the service's rate limit wants (internal/api's TestRedeliverRateLimit
// tests the limit).
func (lt *launchTest) redeliver(tn tenant, id string) (int, attestapi.LaunchEvent, attestapi.Launch) {
	lt.t.Helper()
	if last, ok := lt.redelivered[id]; ok {
		time.Sleep(time.Until(last.Add(userRedeliveryInterval)))
	}
	r := lt.cli.run(nil, append(slices.Clone(tn.cloud), "launch", "redeliver", id, "-f", "json")...)
	lt.redelivered[id] = time.Now()
	var out attestapi.LaunchEvent
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || json.Unmarshal(m["redelivery"], &out) != nil {
		lt.t.Fatalf("launch redeliver %s: exit %d, stdout %q, stderr %q", id, r.code, r.stdout, r.stderr)
	}
	return r.code, out, launchJSON(lt.t, r.stdout)
}

// TestLaunchRedeliver is re-delivery after a host reboot, against
// RabbitMQ, Keystone, the attestation service (with its policy-signing
// key) and swtpm agents, tenants using the trustpool CLI.
//
// Positive: a delivered launch's host reboots into the same approved
// build; `launch redeliver` attests it afresh and the agent injects the
// secret again from the blob it kept, with a receipt of state redelivered
// that verifies with the CLI, in the history of `launch show` and
// notified. Negative: the host rebooted into a tampered state (refused
// host_untrusted, with a signed refusal receipt and history entry; nothing
// unsealed); another project's member (not found) and a project reader
// (forbidden); a launch never delivered (409 launch_not_delivered); a
// redeliver_secret replayed on the bus, and the same request with a nonce
// the attacker asked for (request_invalid; nothing unsealed). An upgrade
// rolled out with profile versions: build B as a candidate is refused,
// approved it is redelivered (the blob sealed on build A unseals on B),
// and once build A's version is retired (--force, host1 relies on it) the
// host booted back into A is refused. Deleting the launch makes the host
// drop the blob it kept.
//
// Asked for by the agent (host3, whose agent checks its kept blobs'
// instances): after a reboot into the approved build nobody runs `launch
// redeliver`, and the secret is back in the instance with a receipt of
// state redelivered naming the agent as initiator (history and
// notification too); after a reboot into a build no profile approves, the
// agent's ask is refused (host_untrusted, initiator agent) and nothing is
// injected.
func TestLaunchRedeliver(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	e := newEnv(t, 5*time.Second)
	lt := &launchTest{t: t, e: e, hosts: map[string]*host{}, dir: t.TempDir(), redelivered: map[string]time.Time{}}
	for _, n := range []string{"host1", "host2", "host3"} {
		lt.hosts[n] = e.newHost(n, bootseed.BuildA())
	}
	// host3's agent asks for re-delivery by itself (the others leave it
	// to `launch redeliver`).
	lt.hosts["host3"].redeliveryCheck = time.Second
	// The subtests redeliver launches again within a second or two (l1
	// after the bus replay, the upgrade's launch after each reboot): the
	// least interval the service accepts, which redeliver waits out, not
	// the 10s default.
	e.cfg.Launch.RedeliveryUserInterval = userRedeliveryInterval
	lt.start()
	h1, h2, h3 := lt.hosts["host1"], lt.hosts["host2"], lt.hosts["host3"]
	secret := []byte("the data volume's key, again after a reboot")
	secretFile := filepath.Join(lt.dir, "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	deliver := func(h *host) (attestapi.Launch, string) {
		t.Helper()
		inst := h.startInstance(t, lt.a.project)
		l := lt.create(lt.a, secretFile, "baseline", "--server", inst, "--host-id", launch.HostID(lt.a.project, h.name), "--wait")
		if l.State != launch.StateDelivered {
			t.Fatalf("launch %+v", l)
		}
		kept := filepath.Join(h.dir, "state", "kept", l.ID+".json")
		fi, err := os.Stat(kept)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("kept blob %s: %v, %v; want mode 0600", kept, fi, err)
		}
		if b, _ := os.ReadFile(kept); bytes.Contains(b, secret) {
			t.Fatal("the kept blob holds the secret")
		}
		return l, inst
	}

	// Whoever can read the bus sees what the service sends host1.
	msgs := tapAgentTopic(t, e, "host1")

	l1, inst1 := deliver(h1)
	var captured *oslo.Request
	t.Run("host rebooted into the approved build: redelivered", func(t *testing.T) {
		lt := lt.with(t)
		lt.reboot(h1, bootseed.BuildA(), inst1)
		if s, _ := h1.delivered(t, inst1); s != nil {
			t.Fatal("the secret survived the reboot")
		}
		code, out, l := lt.redeliver(lt.a, l1.ID)
		if code != 0 || out.State != launch.StateRedelivered || l.State != launch.StateRedelivered {
			t.Fatalf("redeliver: exit %d, %+v, launch %+v", code, out, l)
		}
		got, receipt := h1.delivered(t, inst1)
		if !bytes.Equal(got, secret) {
			t.Fatalf("instance received %q after redelivery, want the tenant's secret", got)
		}
		// The new receipt, from the API and from the instance, verifies.
		rec := jsonOut[map[string]any](t, lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "verify", l1.ID, "--public-key", lt.keyFile,
			"--server", inst1, "--host-id", launch.HostID(lt.a.project, "host1"), "--profile", "baseline", "--state", "redelivered", "-f", "json")...))
		if rec["signature"] != "valid" || rec["state"] != launch.StateRedelivered || rec["delivered_at"] == "" {
			t.Errorf("verified receipt %v", rec)
		}
		rf := filepath.Join(lt.dir, "redelivered-receipt.json")
		if err := os.WriteFile(rf, receipt, 0o600); err != nil {
			t.Fatal(err)
		}
		lt.cli.ok("launch", "verify", "--receipt-file", rf, "--public-key", lt.keyFile, "--server", inst1, "--state", "redelivered")
		show := jsonOut[map[string]any](t, lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "show", l1.ID, "-f", "json")...))
		var states []string
		for _, h := range show["history"].([]any) {
			states = append(states, h.(map[string]any)["state"].(string))
		}
		if len(states) == 0 || states[len(states)-1] != launch.StateRedelivered || !slices.Contains(states, launch.StateDelivered) {
			t.Errorf("history %v, want delivered then redelivered", states)
		}
		if p := lt.events.wait(t, l1.ID, attestrpc.EventLaunchRedelivered); p["host"] != "host1" || p["instance_id"] != inst1 {
			t.Errorf("redelivered notification %v", p)
		}
		for captured == nil {
			select {
			case d := <-msgs:
				if r, err := oslo.DecodeRequest(d.Body); err == nil && r.Method == attestrpc.MethodRedeliverSecret {
					captured = r
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no redeliver_secret seen on the bus")
			}
		}
	})

	t.Run("a bus replay of redeliver_secret unseals nothing", func(t *testing.T) {
		if captured == nil {
			t.Skip("nothing captured")
		}
		lt := lt.with(t)
		for _, f := range []string{launch.SecretFile, launch.ReceiptFile} {
			if err := os.Remove(filepath.Join(h1.instances, inst1, f)); err != nil {
				t.Fatal(err)
			}
		}
		tr, err := oslo.NewTransport(oslo.Config{TransportURL: e.rabbit.URL, ControlExchange: attestrpc.DefaultControlExchange})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		c := tr.Client(oslo.Target{Topic: attestrpc.AgentTopic, Server: "host1", Version: attestrpc.RedeliverVersion}).WithTimeout(20 * time.Second)
		var res attestrpc.DeliverSecretResult
		if err := c.Call(t.Context(), nil, attestrpc.MethodRedeliverSecret, captured.Args, &res); err != nil {
			t.Fatal(err)
		}
		if res.Delivered || res.Reason != attestrpc.ReasonRequestInvalid {
			t.Errorf("replayed redeliver_secret = %+v, want reason request_invalid", res)
		}
		// The attacker asks for a fresh nonce and puts it in the copy: the
		// signature no longer covers the request.
		var chRes attestrpc.RedeliverChallengeResult
		if err := c.Call(t.Context(), nil, attestrpc.MethodRedeliverChallenge,
			attestrpc.RedeliverChallengeArgs{LaunchID: l1.ID, InstanceID: inst1}, &chRes); err != nil {
			t.Fatal(err)
		}
		if !chRes.Kept {
			t.Fatal("the agent no longer keeps the blob")
		}
		args := map[string]json.RawMessage{}
		for k, v := range captured.Args {
			args[k] = v
		}
		args["nonce"], _ = json.Marshal(chRes.Nonce)
		res = attestrpc.DeliverSecretResult{}
		if err := c.Call(t.Context(), nil, attestrpc.MethodRedeliverSecret, args, &res); err != nil {
			t.Fatal(err)
		}
		if res.Delivered || res.Reason != attestrpc.ReasonRequestInvalid {
			t.Errorf("redeliver_secret with the attacker's nonce = %+v, want reason request_invalid", res)
		}
		if s, r := h1.delivered(t, inst1); s != nil || r != nil {
			t.Error("a replayed redeliver_secret delivered something")
		}
		// The service's own request still works after the attempts.
		if code, out, _ := lt.redeliver(lt.a, l1.ID); code != 0 || out.State != launch.StateRedelivered {
			t.Errorf("redeliver after the replays: exit %d, %+v", code, out)
		}
	})

	t.Run("another project or a reader cannot redeliver", func(t *testing.T) {
		lt := lt.with(t)
		lt.cli.fails(commands.ExitNotFound, []string{"not found"}, append(slices.Clone(lt.b.cloud), "launch", "redeliver", l1.ID)...)
		lt.cli.fails(commands.ExitAuth, []string{"trustpool:launches:redeliver"}, append(slices.Clone(lt.reader.cloud), "launch", "redeliver", l1.ID)...)
		tokB := e.ks.Token(t, lt.b.user, "pw", "launch-b-"+lt.name)
		if code, body := e.api("POST", attestapi.LaunchRedeliverPath(l1.ID), tokB, nil); code != http.StatusNotFound {
			t.Errorf("another project's POST redeliver = %d %v, want 404", code, body)
		}
	})

	t.Run("a launch never delivered", func(t *testing.T) {
		lt := lt.with(t)
		l := lt.create(lt.a, secretFile, "baseline") // pending: no instance yet
		tokA := e.ks.Token(t, lt.a.user, "pw", "launch-a-"+lt.name)
		code, body := e.api("POST", attestapi.LaunchRedeliverPath(l.ID), tokA, nil)
		if reason, _ := body["error"].(map[string]any)["reason"].(string); code != http.StatusConflict || reason != attestapi.ReasonLaunchNotDelivered {
			t.Errorf("POST redeliver of a pending launch = %d %v, want 409 %s", code, body, attestapi.ReasonLaunchNotDelivered)
		}
		lt.cli.fails(commands.ExitError, []string{"launch_not_delivered"}, append(slices.Clone(lt.a.cloud), "launch", "redeliver", l.ID)...)
	})

	t.Run("host rebooted into a tampered state: refused, nothing unsealed", func(t *testing.T) {
		lt := lt.with(t)
		l2, inst2 := deliver(h2)
		lt.reboot(h2, bootseed.BuildA(), inst2)
		d := eventlog.SHA256.Sum([]byte("bootkit installed before the reboot"))
		h2.sw.Tool(t, "tpm2_pcrextend", "7:sha256="+hex.EncodeToString(d))
		code, out, l := lt.redeliver(lt.a, l2.ID)
		if code != commands.ExitError || out.State != launch.StateRefused || len(out.Reasons) != 1 || !strings.HasPrefix(out.Reasons[0], "host_untrusted") {
			t.Errorf("redeliver: exit %d, %+v; want exit 1, refused host_untrusted", code, out)
		}
		if l.State != launch.StateDelivered {
			t.Errorf("launch after a refused re-delivery is %s, want still delivered", l.State)
		}
		if s, r := h2.delivered(t, inst2); s != nil || r != nil {
			t.Error("a refused re-delivery delivered something")
		}
		lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "verify", l2.ID, "--public-key", lt.keyFile, "--state", "refused")...)
		show := jsonOut[map[string]any](t, lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "show", l2.ID, "-f", "json")...))
		hist := show["history"].([]any)
		last := hist[len(hist)-1].(map[string]any)
		if last["state"] != launch.StateRefused || !strings.HasPrefix(fmtReasons(last["reasons"]), "host_untrusted") {
			t.Errorf("last history entry %v, want refused host_untrusted", last)
		}
		p := lt.events.wait(t, l2.ID, attestrpc.EventLaunchRefused)
		if p["redelivery"] != true {
			t.Errorf("refused notification %v, want redelivery true", p)
		}
	})

	// lastEvent returns the last history entry of a launch as `launch show`
	// prints it, once it is in state (waiting for it).
	lastEvent := func(lt *launchTest, id, state string) map[string]any {
		t := lt.t
		t.Helper()
		var last map[string]any
		waitFor(t, 90*time.Second, "launch "+id+" history ending in "+state, func() bool {
			show := jsonOut[map[string]any](t, lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "show", id, "-f", "json")...))
			hist, _ := show["history"].([]any)
			if len(hist) == 0 {
				return false
			}
			last, _ = hist[len(hist)-1].(map[string]any)
			return last["state"] == state
		})
		return last
	}

	var l4 launchRef
	t.Run("host rebooted: its agent asks, redelivered without launch redeliver", func(t *testing.T) {
		lt := lt.with(t)
		l, inst := deliver(h3)
		l4 = launchRef{l.ID, inst}
		// The reboot wipes the instance's secret; nobody calls `launch
		// redeliver`: the agent sees the instance at its first check after
		// the reboot and asks.
		lt.reboot(h3, bootseed.BuildA(), inst)
		var got []byte
		waitFor(t, 90*time.Second, "the secret back in the instance", func() bool {
			s, r := h3.delivered(t, inst)
			got = s
			return s != nil && r != nil
		})
		if !bytes.Equal(got, secret) {
			t.Fatalf("instance received %q, want the tenant's secret", got)
		}
		last := lastEvent(lt, l.ID, launch.StateRedelivered)
		if last["initiator"] != launch.InitiatorAgent {
			t.Errorf("last history entry %v, want initiator agent", last)
		}
		// The receipt in the instance is the new one: redelivered, naming
		// the agent, and it verifies.
		_, receipt := h3.delivered(t, inst)
		var sr launch.SignedReceipt
		var r launch.Receipt
		if err := json.Unmarshal(receipt, &sr); err != nil || json.Unmarshal([]byte(sr.Receipt), &r) != nil {
			t.Fatalf("receipt in the instance %q: %v", receipt, err)
		}
		if r.State != launch.StateRedelivered || r.Initiator != launch.InitiatorAgent {
			t.Errorf("receipt in the instance: state %s, initiator %q; want redelivered by the agent", r.State, r.Initiator)
		}
		rf := filepath.Join(lt.dir, "agent-redelivered-receipt.json")
		if err := os.WriteFile(rf, receipt, 0o600); err != nil {
			t.Fatal(err)
		}
		lt.cli.ok("launch", "verify", "--receipt-file", rf, "--public-key", lt.keyFile, "--server", inst, "--state", "redelivered")
		if p := lt.events.wait(t, l.ID, attestrpc.EventLaunchRedelivered); p["initiator"] != launch.InitiatorAgent || p["host"] != "host3" {
			t.Errorf("redelivered notification %v, want initiator agent", p)
		}
	})

	t.Run("host rebooted into an unapproved state: the agent's ask is refused, nothing injected", func(t *testing.T) {
		if l4.id == "" {
			t.Skip("the previous subtest failed")
		}
		lt := lt.with(t)
		l5, inst5 := deliver(h3)
		// Build B is in no profile: the fresh attestation finds the host
		// untrusted. (l4's ask comes within the service's
		// redelivery_wanted_interval of the last one: dropped.)
		lt.reboot(h3, bootseed.BuildB(), inst5)
		last := lastEvent(lt, l5.ID, launch.StateRefused)
		if last["initiator"] != launch.InitiatorAgent || !strings.HasPrefix(fmtReasons(last["reasons"]), "host_untrusted") {
			t.Errorf("last history entry %v, want refused host_untrusted, initiator agent", last)
		}
		if s, r := h3.delivered(t, inst5); s != nil || r != nil {
			t.Error("a refused re-delivery the agent asked for delivered something")
		}
		show := launchJSON(t, lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "show", l5.ID, "-f", "json")...))
		if show.State != launch.StateDelivered {
			t.Errorf("launch after the refusal is %s, want still delivered", show.State)
		}
		if p := lt.events.wait(t, l5.ID, attestrpc.EventLaunchRefused); p["initiator"] != launch.InitiatorAgent || p["redelivery"] != true {
			t.Errorf("refused notification %v, want initiator agent", p)
		}
		// host3 plays no part in what follows (build B gets approved
		// there).
		h3.stop()
	})

	// An upgrade rolled out with profile versions: the host reboots into
	// build B, learned as a candidate version (re-delivery refused), then
	// approved (redelivered: the blob sealed on build A unseals on B), then
	// build A's version is retired and the host booted back into A is
	// refused again. Nothing is unsealed while refused.
	t.Run("an upgrade rolls out: candidate refused, approved redelivered, retired refused", func(t *testing.T) {
		lt := lt.with(t)
		trusted := func(what string) {
			t.Helper()
			v, _, _ := e.verdicts.get("host2")
			if v.Status != verdict.Trusted {
				e.verdicts.wait(t, "host2", v.Seq, 60*time.Second, what, status(verdict.Trusted))
			}
		}
		refused := func(id, inst, what string) {
			t.Helper()
			code, out, l := lt.redeliver(lt.a, id)
			if code != commands.ExitError || out.State != launch.StateRefused || l.State == launch.StateRefused {
				t.Errorf("%s: redeliver exit %d, %+v, launch %s; want exit 1, refused, the launch's state kept", what, code, out, l.State)
			}
			if s, r := h2.delivered(t, inst); s != nil || r != nil {
				t.Errorf("%s: a refused re-delivery delivered something", what)
			}
		}
		lt.reboot(h2, bootseed.BuildA(), "")
		trusted("trusted on build A")
		l3, inst3 := deliver(h2)

		lt.reboot(h2, bootseed.BuildB(), inst3)
		learned := jsonOut[map[string]any](t, lt.cli.ok(append(slices.Clone(lt.admin),
			"profile", "version", "learn", "baseline", "--host", "host2", "-f", "json")...))
		if learned["state"] != "candidate" {
			t.Fatalf("learned version %v, want a candidate", learned)
		}
		ver := fmt.Sprint(learned["version"])
		refused(l3.ID, inst3, "build B as a candidate")

		lt.cli.ok(append(slices.Clone(lt.admin), "profile", "version", "set-state", "baseline", ver, "approved")...)
		trusted("trusted on build B once approved")
		code, out, _ := lt.redeliver(lt.a, l3.ID)
		if code != 0 || out.State != launch.StateRedelivered {
			t.Fatalf("redeliver on approved build B: exit %d, %+v", code, out)
		}
		if got, _ := h2.delivered(t, inst3); !bytes.Equal(got, secret) {
			t.Fatalf("instance received %q on build B, want the secret sealed on build A", got)
		}

		// host1 still runs build A: retiring its version needs --force.
		lt.cli.fails(commands.ExitError, []string{"host \"host1\" matched", "turns them untrusted"}, append(slices.Clone(lt.admin), "profile", "version", "set-state", "baseline", "1", "retired")...)
		lt.cli.ok(append(slices.Clone(lt.admin), "profile", "version", "set-state", "baseline", "1", "retired", "--force")...)
		lt.reboot(h2, bootseed.BuildA(), inst3)
		refused(l3.ID, inst3, "build A retired")
	})

	t.Run("deleting the launch drops the kept blob", func(t *testing.T) {
		lt := lt.with(t)
		kept := filepath.Join(h1.dir, "state", "kept", l1.ID+".json")
		if _, err := os.Stat(kept); err != nil {
			t.Fatalf("no kept blob before the delete: %v", err)
		}
		lt.cli.ok(append(slices.Clone(lt.a.cloud), "launch", "delete", l1.ID)...)
		waitFor(t, 30*time.Second, "the kept blob to go", func() bool {
			_, err := os.Stat(kept)
			return os.IsNotExist(err)
		})
	})

	if e.verdicts.bad != 0 {
		t.Errorf("%d verdicts failed signature verification", e.verdicts.bad)
	}
}

// launchRef names a delivered launch and its instance.
type launchRef struct{ id, instance string }

func fmtReasons(v any) string {
	rs, _ := v.([]any)
	var out []string
	for _, r := range rs {
		s, _ := r.(string)
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}
