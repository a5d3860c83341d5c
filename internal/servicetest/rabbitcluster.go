package servicetest

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RabbitCluster is a RabbitMQ cluster of private nodes on 127.0.0.1, for
// tests of broker failover (node loss with quorum queues).
type RabbitCluster struct {
	// URL is the oslo transport_url naming every node, in node order:
	// rabbit://guest:guest@127.0.0.1:P1,guest:guest@127.0.0.1:P2,.../
	URL string
	// Nodes are the members; Nodes[0] is the one the others joined.
	Nodes []*Rabbit
}

// NewRabbitMQCluster starts n private nodes with one Erlang cookie and
// joins nodes 2..n to the first with rabbitmqctl join_cluster (stop_app,
// join_cluster, start_app), as an operator builds a cluster. The nodes run
// no management plugin and are stopped when the test ends. Starting three
// nodes takes about 20-30 s on two cores.
func NewRabbitMQCluster(t testing.TB, n int) *RabbitCluster {
	t.Helper()
	integration(t, "a RabbitMQ cluster")
	if n < 2 {
		t.Fatalf("servicetest: a cluster needs at least 2 nodes, not %d", n)
	}
	start := time.Now()
	cookie := randAlpha(24)
	dir := t.TempDir()
	nodes := make([]*rabbitNode, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			nodes[i], errs[i] = startRabbitCookie(filepath.Join(dir, "n"+strconv.Itoa(i+1)), false, cookie)
		})
	}
	wg.Wait()
	for _, nd := range nodes {
		if nd != nil {
			t.Cleanup(func() {
				if err := nd.d.stop(60 * time.Second); err != nil {
					t.Errorf("servicetest: %v", err)
				}
			})
		}
	}
	for _, err := range errs {
		if err != nil {
			t.Fatalf("servicetest: RabbitMQ cluster node: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	for _, nd := range nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"join_cluster", nodes[0].nodeName}, {"start_app"}} {
			if out, err := nd.ctl(ctx, args...); err != nil {
				t.Fatalf("servicetest: rabbitmqctl %s on %s: %v %s", strings.Join(args, " "), nd.nodeName, err, out)
			}
		}
		if err := waitReady(nd.d, time.Minute, nd.ready); err != nil {
			t.Fatalf("servicetest: %s after join_cluster: %v", nd.nodeName, err)
		}
	}
	c := &RabbitCluster{}
	var hosts []string
	for _, nd := range nodes {
		c.Nodes = append(c.Nodes, nd.rabbit("/", false))
		hosts = append(hosts, fmt.Sprintf("guest:guest@127.0.0.1:%d", nd.amqpPort))
	}
	c.URL = "rabbit://" + strings.Join(hosts, ",") + "/"
	out, err := nodes[0].ctl(ctx, "cluster_status")
	if err != nil {
		t.Fatalf("servicetest: rabbitmqctl cluster_status: %v", err)
	}
	for _, nd := range nodes {
		if !strings.Contains(out, nd.nodeName) {
			t.Fatalf("servicetest: %s is not in the cluster:\n%s", nd.nodeName, out)
		}
	}
	t.Logf("servicetest: RabbitMQ cluster of %d nodes started in %s", n, time.Since(start).Round(time.Millisecond))
	return c
}

// StopNode stops node i's Erlang VM (rabbitmq-server gets SIGTERM and
// shuts down): its connections close and its classic queues go away; the
// other nodes keep the quorum queues' majority.
func (c *RabbitCluster) StopNode(t testing.TB, i int) {
	t.Helper()
	if err := c.Nodes[i].node.d.stop(90 * time.Second); err != nil {
		t.Fatalf("servicetest: stop %s: %v", c.Nodes[i].NodeName, err)
	}
}
