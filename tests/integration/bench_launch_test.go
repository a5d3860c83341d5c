package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/attestation-service/service"
	"github.com/trustpool/trustpool/internal/attestapi"
	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/launch"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestBenchLaunch is a measurement, not a test (make bench-launch): trusted
// launches to one host on swtpm, each with a fresh attestation, an import
// blob for the RSA-2048 EK, deliver_secret over RabbitMQ, TPM2_Import +
// unseal and the directory injector.
//
//   - notification → secret unsealed in the agent: from instance.create.end
//     reaching the service's listener to the agent's unseal (bind +
//     attest + seal + deliver_secret round trip − injection), with each
//     phase's p50/p99 from the service's launch timings;
//   - POST /v1/launches with instance_id → delivered receipt stored: wall
//     clock from the request to the service recording the delivery.
//
// The agent's ping round trip over the same bus is the baseline of the
// RPC phase. Run with:
//
//	TRUSTPOOL_BENCH_LAUNCHES=60 go test -run TestBenchLaunch -v ./tests/integration/
func TestBenchLaunch(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("TRUSTPOOL_BENCH_LAUNCHES"))
	if runs <= 0 || testing.Short() {
		t.Skip("set TRUSTPOOL_BENCH_LAUNCHES to run the benchmark")
	}
	e := newEnv(t, 10*time.Second)
	timings := make(chan service.LaunchTiming, 16)
	e.cfg.LaunchObserver = func(tm service.LaunchTiming) { timings <- tm }
	h := e.newHost("bench-1", bootseed.BuildA())
	e.startService()
	e.startAgent(h)
	e.verdicts.wait(t, h.name, 0, 60*time.Second, "attested", func(verdict.Verdict) bool { return true })
	if code, body := e.api("POST", "/v1/profiles/learn", e.admin, map[string]any{"host": h.name, "name": "baseline"}); code != http.StatusCreated {
		t.Fatalf("learn = %d %v", code, body)
	}
	e.verdicts.wait(t, h.name, 0, 60*time.Second, "trusted", func(v verdict.Verdict) bool { return v.Status == verdict.Trusted })
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	userSeq.Lock()
	_, project := e.ks.CreateUser(t, servicetest.KeystoneUser{Name: "tp-bench-" + name, Password: "pw", Project: "bench-" + name, Roles: []string{"member"}})
	userSeq.Unlock()
	token := e.ks.Token(t, "tp-bench-"+name, "pw", "bench-"+name)
	key := e.svc.LaunchPublicKey()
	nova := newNovaBus(t, e)
	secret := []byte("a 32-byte data volume key.......")

	create := func(instance string) (string, time.Time) {
		t.Helper()
		req, err := launch.NewRequest(secret, "baseline", project, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := launch.Seal(key, req)
		if err != nil {
			t.Fatal(err)
		}
		body := attestapi.LaunchCreate{KID: key.KID(), Sealed: sealed}
		if instance != "" {
			body.InstanceID, body.HostID = instance, launch.HostID(project, h.name)
		}
		t0 := time.Now()
		code, out := e.api("POST", "/v1/launches", token, body)
		if code != http.StatusCreated {
			t.Fatalf("create = %d %v", code, out)
		}
		return out["launch"].(map[string]any)["id"].(string), t0
	}
	next := func(id string) (service.LaunchTiming, time.Time) {
		t.Helper()
		select {
		case tm := <-timings:
			if tm.LaunchID != id || tm.State != launch.StateDelivered {
				t.Fatalf("launch %s ended %s (timing of %s)", id, tm.State, tm.LaunchID)
			}
			return tm, time.Now()
		case <-time.After(60 * time.Second):
			t.Fatalf("launch %s did not end", id)
		}
		panic("unreachable")
	}

	type split struct{ bind, attest, seal, rpc, unseal, inject, toUnsealed []time.Duration }
	var byNote split
	var post []time.Duration
	for range runs {
		id, _ := create("")
		inst := h.startInstance(t, project)
		nova.createEnd(t, inst, project, h.name, id)
		tm, _ := next(id)
		byNote.bind = append(byNote.bind, tm.Bind)
		byNote.attest = append(byNote.attest, tm.Attest)
		byNote.seal = append(byNote.seal, tm.Seal)
		byNote.rpc = append(byNote.rpc, tm.RPC)
		byNote.unseal = append(byNote.unseal, tm.Unseal)
		byNote.inject = append(byNote.inject, tm.Inject)
		byNote.toUnsealed = append(byNote.toUnsealed, tm.Bind+tm.Attest+tm.Seal+tm.RPC-tm.Inject)
	}
	for range runs {
		inst := h.startInstance(t, project)
		id, t0 := create(inst)
		_, at := next(id)
		post = append(post, at.Sub(t0))
	}
	// Baseline: the agent's ping round trip on the same bus.
	tr, err := oslo.NewTransport(oslo.Config{TransportURL: e.rabbit.URL, ControlExchange: attestrpc.DefaultControlExchange})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	c := tr.Client(oslo.Target{Topic: attestrpc.AgentTopic, Server: h.name}).WithTimeout(10 * time.Second)
	var ping []time.Duration
	for range runs {
		t0 := time.Now()
		var res attestrpc.PingResult
		if err := c.Call(context.Background(), nil, attestrpc.MethodPing, nil, &res); err != nil {
			t.Fatal(err)
		}
		ping = append(ping, time.Since(t0))
	}

	pct := func(l []time.Duration, p float64) time.Duration {
		s := slices.Clone(l)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	line := func(name string, l []time.Duration) string {
		return fmt.Sprintf("%-38s p50 %7.1f ms   p99 %7.1f ms", name, ms(pct(l, .5)), ms(pct(l, .99)))
	}
	t.Logf("trusted launch on swtpm, %d launches each, one host (RSA-2048 EK, directory injector):\n%s", runs, strings.Join([]string{
		line("notification → secret unsealed", byNote.toUnsealed),
		line("  bind (host, instance_present)", byNote.bind),
		line("  attest (fresh quote + appraisal)", byNote.attest),
		line("  seal (import blob + receipt)", byNote.seal),
		line("  deliver_secret round trip", byNote.rpc),
		line("    agent TPM import + unseal", byNote.unseal),
		line("    agent injection", byNote.inject),
		line("POST /v1/launches → receipt delivered", post),
		line("baseline: agent ping round trip", ping),
	}, "\n"))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
