package oslo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/internal/servicetest"
)

// TestServerGroup: many servers on one consuming connection; each answers
// only the calls addressed to it, with its own endpoints, and the broker
// sees one consuming connection for the whole group.
func TestServerGroup(t *testing.T) {
	rabbit := servicetest.RabbitMQ(t)
	tr := newTransport(t, rabbit.URL, nil)
	g := oslo.NewServerGroup(tr, "grouped")
	const n = 40
	for i := range n {
		name := fmt.Sprintf("h%02d", i)
		g.Add(name, oslo.Endpoint{Version: "1.0", Methods: map[string]oslo.Handler{
			"whoami": func(context.Context, *oslo.Request) (any, error) { return name, nil },
		}})
	}
	if g.Len() != n {
		t.Fatalf("Len = %d", g.Len())
	}
	startServer(t, g.Run, g.Ready())
	client := newTransport(t, rabbit.URL, nil).Client(oslo.Target{Topic: "grouped"})
	for i := range n {
		want := fmt.Sprintf("h%02d", i)
		var got string
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := client.WithTarget(func(tg *oslo.Target) { tg.Server = want }).Call(ctx, nil, "whoami", map[string]any{}, &got)
		cancel()
		if err != nil || got != want {
			t.Fatalf("call to %s = %q, %v", want, got, err)
		}
	}
	// A server outside the group gets no answer.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := client.WithTarget(func(tg *oslo.Target) { tg.Server = "stranger" }).Call(ctx, nil, "whoami", map[string]any{}, nil); err == nil {
		t.Error("a call to a server outside the group was answered")
	}
	// One consuming connection serves the whole group.
	conns := 0
	for _, c := range mgmtList(t, rabbit, "/connections") {
		if strings.Contains(fmt.Sprint(c["client_properties"]), "rpc-server-group:grouped") {
			conns++
		}
	}
	if conns != 1 {
		t.Errorf("%d group connections at the broker, want 1", conns)
	}
}

func mgmtList(t *testing.T, rabbit *servicetest.Rabbit, path string) []map[string]any {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, rabbit.MgmtURL+path, nil)
	req.SetBasicAuth("guest", "guest")
	var out []map[string]any
	for range 50 { // the management API's statistics lag a few seconds
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(out) > 0 {
			return out
		}
		time.Sleep(200 * time.Millisecond)
	}
	return out
}

// TestServerGroupRedeclares: the exchange deleted behind the group's back
// (anyone who may declare it may delete it, and every binding with it)
// comes back with the periodic re-declaration, which runs beside serving;
// a member's queue deleted (its consumer cancelled) comes back too.
func TestServerGroupRedeclares(t *testing.T) {
	// Restored after the group has stopped (cleanups run last first).
	t.Cleanup(oslo.SetDeclarationRefresh(600 * time.Millisecond))
	rabbit := servicetest.RabbitMQ(t)
	g := oslo.NewServerGroup(newTransport(t, rabbit.URL, nil), "regroup")
	for _, n := range []string{"a", "b", "c"} {
		g.Add(n, oslo.Endpoint{Methods: map[string]oslo.Handler{
			"whoami": func(context.Context, *oslo.Request) (any, error) { return n, nil },
		}})
	}
	startServer(t, g.Run, g.Ready())
	client := newTransport(t, rabbit.URL, nil).Client(oslo.Target{Topic: "regroup", Server: "b"})
	works := func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		var got string
		return client.Call(ctx, nil, "whoami", map[string]any{}, &got) == nil && got == "b"
	}
	if !works() {
		t.Fatal("call to b fails before anything is deleted")
	}
	ch := rawChannel(t, rabbit)
	for _, tc := range []struct {
		what   string
		delete func() error
	}{
		{"the exchange", func() error { return ch.ExchangeDelete("trustpool-test", false, false) }},
		{"b's queue", func() error { _, err := ch.QueueDelete("regroup.b", false, false, false); return err }},
	} {
		if err := tc.delete(); err != nil {
			t.Fatalf("delete %s: %v", tc.what, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for !works() {
			if time.Now().After(deadline) {
				t.Fatalf("calls to b still fail 30 s after %s was deleted", tc.what)
			}
		}
	}
}
