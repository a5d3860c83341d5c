package integration

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/trustpool/trustpool/compute-agent/agenttest"
	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
	"github.com/trustpool/trustpool/internal/verdict"
)

// TestBrokerNodeLoss: the whole system on a three-node RabbitMQ cluster
// (private nodes joined with rabbitmqctl join_cluster, quorum queues),
// every component given the multi-host transport_url. One node stops
// while the fleet runs: the service, the simulated agents and the filter
// shim fail over to the other nodes, and attestation continues: every host
// gets fresh verdicts and stays trusted at the shim.
func TestBrokerNodeLoss(t *testing.T) {
	cl := servicetest.NewRabbitMQCluster(t, 3)
	interval := 5 * time.Second
	e := newEnvOn(t, interval, &servicetest.Rabbit{URL: cl.URL})
	e.cfg.Rabbit.RabbitQuorumQueue = true
	quorum := oslo.DefaultRabbitOptions()
	quorum.RabbitQuorumQueue = true
	f := e.newSimFleet(60, func(c *agenttest.Config) {
		c.HostsPerConnection = 10
		c.Rabbit = &quorum
	})
	// The key first: the collector (like the shim, with quorum queues)
	// pins it before the service starts.
	key, err := verdict.CreateKey(e.cfg.Keys.VerdictSigningKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	e.verdicts = newCollectorWith(t, cl.URL, pub, &quorum)
	e.startService()
	e.importProfile("simfleet", f.files)
	shim := startShimWith(t, e, pub, "rabbit_quorum_queue = true")
	f.run(t, 2*time.Minute)
	hosts := make([]string, 0, 60)
	for _, h := range f.Hosts() {
		hosts = append(hosts, h.Name)
	}
	waitFor(t, time.Minute, "every host trusted at the shim", func() bool {
		p, err := shim.passes(hosts)
		return err == nil && len(p) == len(hosts)
	})
	// The agents' directed queues are quorum queues, replicated on every
	// node.
	if out := cl.Nodes[1].Ctl(t, "list_queues", "name", "type"); !containsLine(out, "trustpool-agent."+hosts[0], "quorum") {
		t.Fatalf("%s is not a quorum queue:\n%s", "trustpool-agent."+hosts[0], out)
	}
	seq := map[string]uint64{}
	for _, h := range hosts {
		v, _, _ := e.verdicts.get(h)
		seq[h] = v.Seq
	}

	stopped := time.Now()
	cl.StopNode(t, 0)
	t.Logf("node %s stopped in %v", cl.Nodes[0].NodeName, time.Since(stopped).Round(time.Millisecond))

	// Attestation continues: a fresh verdict for every host, trusted.
	dropped := map[string]bool{}
	waitFor(t, 3*time.Minute, "a trusted verdict for every host after the node loss", func() bool {
		if p, err := shim.passes(hosts); err == nil {
			for _, h := range hosts {
				if !p[h] {
					dropped[h] = true
				}
			}
		}
		for _, h := range hosts {
			v, _, ok := e.verdicts.get(h)
			if !ok || v.Seq <= seq[h] || v.Status != verdict.Trusted || !v.VerifiedAt.After(stopped) {
				return false
			}
		}
		return true
	})
	t.Logf("every host attested again %v after the node stopped; %d hosts not trusted at the shim at some point: %v",
		time.Since(stopped).Round(time.Millisecond), len(dropped), dropped)
	// ...and the shim follows: every host passes there too.
	waitFor(t, time.Minute, "every host trusted at the shim after the node loss", func() bool {
		p, err := shim.passes(hosts)
		return err == nil && len(p) == len(hosts)
	})
	// A new enrollment goes through the remaining nodes.
	if st, err := f.Hosts()[0].Reregister(t.Context(), false); err != nil || st != "enrolled" {
		t.Fatalf("re-registration after the node loss: %q, %v", st, err)
	}
}

func containsLine(out, name, typ string) bool {
	for _, l := range splitLines(out) {
		if l == fmt.Sprintf("%s\t%s", name, typ) {
			return true
		}
	}
	return false
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := range len(s) {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
