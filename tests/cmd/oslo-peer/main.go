// Command oslo-peer is a small oslo.messaging peer for tests and operators.
// It speaks the RabbitMQ wire format of Python oslo.messaging through
// internal/oslo.
//
// Usage:
//
//	oslo-peer serve  --transport-url URL --exchange X --topic T --server S [--version 1.0] [--namespace NS]
//	oslo-peer call   --transport-url URL --exchange X --topic T [--server S] --method M --args '{"value": 1}' [--timeout 30s]
//	oslo-peer cast   --transport-url URL --exchange X --topic T [--server S | --fanout] --method M --args '{...}'
//	oslo-peer notify --transport-url URL --exchange X --topic T --publisher-id P --priority info --event-type E --payload '<json>'
//	oslo-peer listen --transport-url URL --exchange X --topic T --queue Q [--priorities info,error] [--count N]
//
// serve answers the interop method set (same as tests/interop/py/server.py):
//
//	echo(value)          returns value unchanged
//	fail(kind, message)  kind "value": ValueError(message) (Python callers get ValueError);
//	                     kind "plain": trustpool.exception.TrustpoolError;
//	                     otherwise trustpool.exception.InteropError
//	                     (Python callers get oslo_messaging.RemoteError with that exc_type)
//	sleep(seconds)       waits, returns seconds
//	record(value)        remembers value (use it as a cast target)
//	recorded()           returns the remembered values
//	context()            returns the request context it received
//
// It prints "ready" once consuming and stops on SIGTERM or SIGINT.
//
// call prints the result as JSON. A remote failure prints
// {"error": {"class": ..., "module": ..., "message": ...}} on stdout, the
// same as a line on stderr, and exits 1; a timeout or connection error exits 1
// with the error on stderr. cast and notify print {"sent": true}. listen prints
// "ready" and then one JSON line per notification; it exits after --count
// notifications (0: until a signal).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/trustpool/trustpool/internal/oslo"
	"github.com/trustpool/trustpool/tests/interop/peer"
)

type options struct {
	transportURL, exchange, topic, server, namespace, version string
	method, args, context                                     string
	timeout, callMonitor                                      time.Duration
	fanout                                                    bool
	publisherID, priority, eventType, payload                 string
	queue, priorities                                         string
	count                                                     int
	verbose                                                   bool
}

const usage = `usage: oslo-peer serve|call|cast|notify|listen [flags]
Run "oslo-peer <command> -h" for the flags; see the package documentation for details.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(argv []string, stdout, stderr io.Writer) int {
	if len(argv) == 0 || strings.HasPrefix(argv[0], "-") {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := argv[0]
	fs := flag.NewFlagSet("oslo-peer "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.transportURL, "transport-url", os.Getenv("TRANSPORT_URL"), "oslo transport_url (default $TRANSPORT_URL)")
	fs.StringVar(&o.exchange, "exchange", "openstack", "control_exchange")
	fs.StringVar(&o.topic, "topic", "", "topic (required)")
	fs.StringVar(&o.server, "server", "", "server name (serve: required; call/cast: direct to this server)")
	fs.StringVar(&o.namespace, "namespace", "", "endpoint namespace (serve) or target namespace (call/cast)")
	fs.StringVar(&o.version, "version", "", "endpoint version (serve, default 1.0) or target version (call/cast)")
	fs.StringVar(&o.method, "method", "", "method to call or cast")
	fs.StringVar(&o.args, "args", "{}", "keyword arguments, a JSON object")
	fs.StringVar(&o.context, "context", "{}", "request context, a JSON object")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "call timeout; for notify/cast the publish deadline")
	fs.DurationVar(&o.callMonitor, "call-monitor", 0, "call_monitor_timeout: ask the server for keep-alives")
	fs.BoolVar(&o.fanout, "fanout", false, "cast to every server of the topic")
	fs.StringVar(&o.publisherID, "publisher-id", "oslo-peer", "notification publisher_id")
	fs.StringVar(&o.priority, "priority", "info", "notification priority")
	fs.StringVar(&o.eventType, "event-type", "", "notification event_type")
	fs.StringVar(&o.payload, "payload", "{}", "notification payload, JSON")
	fs.StringVar(&o.queue, "queue", "", "listen: the listener's own queue (pool) name")
	fs.StringVar(&o.priorities, "priorities", "", "listen: comma list of priorities (default all)")
	fs.IntVar(&o.count, "count", 0, "listen: exit after this many notifications (0: run until a signal)")
	fs.BoolVar(&o.verbose, "v", false, "log connection events to stderr")
	if err := fs.Parse(argv[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "oslo-peer %s: unexpected arguments %q\n", cmd, fs.Args())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, o, stdout, stderr)
	case "call":
		err = call(ctx, o, stdout)
	case "cast":
		err = cast(ctx, o, stdout)
	case "notify":
		err = notify(ctx, o, stdout)
	case "listen":
		err = listen(ctx, o, stdout, stderr)
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err != nil {
		if re, ok := errors.AsType[*oslo.RemoteError](err); ok {
			writeJSON(stdout, map[string]any{"error": map[string]any{
				"class": re.Class, "module": re.Module, "message": re.Message,
			}})
			fmt.Fprintf(stderr, "oslo-peer %s: remote error %s.%s: %s\n", cmd, re.Module, re.Class, re.Message)
			return 1
		}
		fmt.Fprintf(stderr, "oslo-peer %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func transport(o options, stderr io.Writer) (*oslo.Transport, error) {
	if o.transportURL == "" {
		return nil, errors.New("--transport-url is required")
	}
	if o.topic == "" {
		return nil, errors.New("--topic is required")
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	return oslo.NewTransport(oslo.Config{
		TransportURL:    o.transportURL,
		ControlExchange: o.exchange,
		Logger:          slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	})
}

func jsonObject(flagName, s string) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		return nil, fmt.Errorf("--%s must be a JSON object: %q", flagName, s)
	}
	return m, nil
}

// rawArgs keeps the argument values' JSON text as given.
func rawArgs(s string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		return nil, fmt.Errorf("--args must be a JSON object: %q", s)
	}
	return m, nil
}

func serve(ctx context.Context, o options, stdout, stderr io.Writer) error {
	if o.server == "" {
		return errors.New("--server is required")
	}
	tr, err := transport(o, stderr)
	if err != nil {
		return err
	}
	defer tr.Close()
	version := o.version
	if version == "" {
		version = "1.0"
	}
	srv := oslo.NewServer(tr, oslo.Target{Topic: o.topic, Server: o.server},
		peer.Endpoint(version, o.namespace, &peer.Recorder{}))
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
		fmt.Fprintln(stdout, "ready")
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	}
	if err := <-done; err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

func client(o options, tr *oslo.Transport) *oslo.Client {
	c := tr.Client(oslo.Target{Topic: o.topic, Server: o.server, Version: o.version, Namespace: o.namespace, Fanout: o.fanout})
	if o.callMonitor > 0 {
		c = c.WithCallMonitor(o.callMonitor)
	}
	return c.WithTimeout(o.timeout)
}

func call(ctx context.Context, o options, stdout io.Writer) error {
	if o.method == "" {
		return errors.New("--method is required")
	}
	args, err := rawArgs(o.args)
	if err != nil {
		return err
	}
	rctx, err := jsonObject("context", o.context)
	if err != nil {
		return err
	}
	tr, err := transport(o, os.Stderr)
	if err != nil {
		return err
	}
	defer tr.Close()
	var res json.RawMessage
	if err := client(o, tr).Call(ctx, rctx, o.method, args, &res); err != nil {
		return err
	}
	if res == nil {
		res = json.RawMessage("null")
	}
	_, err = fmt.Fprintf(stdout, "%s\n", res)
	return err
}

func cast(ctx context.Context, o options, stdout io.Writer) error {
	if o.method == "" {
		return errors.New("--method is required")
	}
	args, err := rawArgs(o.args)
	if err != nil {
		return err
	}
	rctx, err := jsonObject("context", o.context)
	if err != nil {
		return err
	}
	tr, err := transport(o, os.Stderr)
	if err != nil {
		return err
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := client(o, tr).Cast(ctx, rctx, o.method, args); err != nil {
		return err
	}
	writeJSON(stdout, map[string]any{"sent": true})
	return nil
}

func notify(ctx context.Context, o options, stdout io.Writer) error {
	if o.eventType == "" {
		return errors.New("--event-type is required")
	}
	var payload json.RawMessage
	if err := json.Unmarshal([]byte(o.payload), &payload); err != nil {
		return fmt.Errorf("--payload must be JSON: %w", err)
	}
	rctx, err := jsonObject("context", o.context)
	if err != nil {
		return err
	}
	tr, err := transport(o, os.Stderr)
	if err != nil {
		return err
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	n := oslo.NewNotifier(tr, o.publisherID, strings.Split(o.topic, ",")...)
	if err := n.Notify(ctx, rctx, o.priority, o.eventType, payload); err != nil {
		return err
	}
	writeJSON(stdout, map[string]any{"sent": true})
	return nil
}

// received is how listen prints a notification (the same keys as
// tests/interop/py/listener.py).
type received struct {
	Priority    string          `json:"priority"`
	PublisherID string          `json:"publisher_id"`
	EventType   string          `json:"event_type"`
	Payload     json.RawMessage `json:"payload"`
	Metadata    map[string]any  `json:"metadata"`
	Ctxt        map[string]any  `json:"ctxt"`
}

func listen(ctx context.Context, o options, stdout, stderr io.Writer) error {
	if o.queue == "" {
		return errors.New("--queue is required (the listener's own queue)")
	}
	tr, err := transport(o, stderr)
	if err != nil {
		return err
	}
	defer tr.Close()
	var prios []string
	if o.priorities != "" {
		prios = strings.Split(o.priorities, ",")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := 0
	l := oslo.NewListener(tr, oslo.ListenerConfig{Exchange: o.exchange, Topic: o.topic, Queue: o.queue, Priorities: prios},
		func(_ context.Context, n *oslo.Notification) error {
			// The listener runs one handler at a time.
			writeJSON(stdout, received{
				Priority: strings.ToLower(n.Priority), PublisherID: n.PublisherID, EventType: n.EventType,
				Payload:  n.Payload,
				Metadata: map[string]any{"message_id": n.MessageID, "timestamp": n.Timestamp},
				Ctxt:     n.Context,
			})
			seen++
			if o.count > 0 && seen >= o.count {
				cancel()
			}
			return nil
		})
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	select {
	case <-l.Ready():
		fmt.Fprintln(stdout, "ready")
	case err := <-done:
		return fmt.Errorf("listen: %w", err)
	}
	if err := <-done; err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return nil
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
