package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
)

// TestMixedServersShareTopic runs a Go and a Python server on the same topic,
// as a rolling replacement of a Python service would: both declare the same
// exchanges and queues (RabbitMQ refuses a redeclare with different flags,
// so both starting proves the flags match, also with amqp_durable_queues and
// quorum queues), topic casts are shared between them, every fanout cast
// reaches both, and directed calls reach the named one, from Go and Python
// callers alike.
func TestMixedServersShareTopic(t *testing.T) {
	skipShort(t)
	for _, c := range []struct {
		name, query string
		goFirst     bool
		wantQueue   string // in `rabbitmqctl list_queues name durable arguments`
	}{
		{"default", "", true, "mixed\tfalse\t[]"},
		{"durable", "?amqp_durable_queues=true", false, "mixed\ttrue\t[]"},
		{"quorum", "?rabbit_quorum_queue=true", true, "mixed\ttrue\t[{\"x-queue-type\",\"quorum\"}]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := servicetest.RabbitMQ(t)
			url := r.URL + c.query
			tr := newTransport(t, url)
			const topic = "mixed"
			ep, goRec := peerEndpoint("1.0")
			startPyServer := func() {
				srv := startPy(t, "server.py", "--transport-url", url, "--exchange", exchange,
					"--topic", topic, "--server", "pyhost")
				srv.waitReady(t)
			}
			if c.goFirst {
				startGoServer(t, tr, oslo.Target{Topic: topic, Server: "gohost"}, ep)
				startPyServer()
			} else {
				startPyServer()
				startGoServer(t, tr, oslo.Target{Topic: topic, Server: "gohost"}, ep)
			}
			if out := r.Ctl(t, "list_queues", "-p", r.VHost, "name", "durable", "arguments"); !strings.Contains(out, c.wantQueue) {
				t.Errorf("queue %q not declared as %q:\n%s", topic, c.wantQueue, out)
			}
			caller := startPy(t, "caller.py", "--transport-url", url, "--exchange", exchange, "--topic", topic)
			caller.waitReady(t)
			ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
			defer cancel()

			client := tr.Client(oslo.Target{Topic: topic}).WithTimeout(30 * time.Second)
			fanout := client.WithTarget(func(tg *oslo.Target) { tg.Fanout = true })
			to := func(server string) *oslo.Client {
				return client.WithTarget(func(tg *oslo.Target) { tg.Server = server })
			}

			// Directed calls reach the named server, from Go and Python.
			for _, server := range []string{"gohost", "pyhost"} {
				var got string
				if err := to(server).Call(ctx, rctx, "echo", map[string]any{"value": "to " + server}, &got); err != nil || got != "to "+server {
					t.Errorf("go call to %s: %q, %v", server, got, err)
				}
				caller.send(t, map[string]any{"method": "echo", "args": map[string]any{"value": "py to " + server}, "server": server, "timeout": 30})
				var res callerResult
				caller.nextJSON(t, ctx, &res)
				if !res.OK || jsonDiff([]byte(fmt.Sprintf("%q", "py to "+server)), res.Result) != "" {
					t.Errorf("python call to %s: %+v", server, res)
				}
			}

			// Fanout casts reach both servers; topic casts reach exactly one.
			if err := fanout.Cast(ctx, rctx, "record", map[string]any{"value": "go-fanout"}); err != nil {
				t.Fatalf("go fanout cast: %v", err)
			}
			caller.send(t, map[string]any{"method": "record", "args": map[string]any{"value": "py-fanout"}, "cast": true, "fanout": true})
			var res callerResult
			caller.nextJSON(t, ctx, &res)
			if !res.OK {
				t.Fatalf("python fanout cast: %+v", res.Error)
			}
			const topicCasts = 10
			for i := range topicCasts {
				if err := client.Cast(ctx, rctx, "record", map[string]any{"value": fmt.Sprintf("go-topic-%d", i)}); err != nil {
					t.Fatalf("go topic cast: %v", err)
				}
			}

			recorded := func(server string) []string {
				var vals []string
				if err := to(server).Call(ctx, rctx, "recorded", nil, &vals); err != nil {
					t.Fatalf("recorded on %s: %v", server, err)
				}
				return vals
			}
			for {
				goVals, pyVals := recorded("gohost"), recorded("pyhost")
				count := map[string]int{}
				for _, v := range append(goVals, pyVals...) {
					count[v]++
				}
				if count["go-fanout"] == 2 && count["py-fanout"] == 2 && len(goVals)+len(pyVals) == topicCasts+4 {
					for i := range topicCasts {
						if n := count[fmt.Sprintf("go-topic-%d", i)]; n != 1 {
							t.Errorf("topic cast %d recorded %d times, want once", i, n)
						}
					}
					for _, vals := range [][]string{goVals, pyVals} {
						if !slices.Contains(vals, "go-fanout") || !slices.Contains(vals, "py-fanout") {
							t.Errorf("a server missed a fanout cast: go %v, python %v", goVals, pyVals)
						}
					}
					t.Logf("topic casts shared: %d on the Go server, %d on the Python server", len(goVals)-2, len(pyVals)-2)
					break
				}
				select {
				case <-ctx.Done():
					t.Fatalf("casts not all recorded: go %v, python %v", goVals, pyVals)
				case <-time.After(100 * time.Millisecond):
				}
			}
			// The in-process recorder agrees with what recorded() returned.
			var fromRec []string
			for _, v := range goRec.Values() {
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					t.Fatal(err)
				}
				fromRec = append(fromRec, s)
			}
			if diff := cmp.Diff(recorded("gohost"), fromRec); diff != "" {
				t.Errorf("recorded() vs recorder (-rpc +recorder):\n%s", diff)
			}
		})
	}
}
