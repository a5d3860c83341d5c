// Command oslo-bench measures RPC call round trips through internal/oslo:
// --calls calls of echo(value=<--size bytes>) from --concurrency goroutines
// sharing one Transport and Client, against a server started separately
// (oslo-peer serve, or tests/interop/py/server.py). It prints one JSON line
// with the same fields as tests/interop/py/bench.py:
//
//	{"impl": "go", "calls": N, "concurrency": C, "size": S, "errors": E,
//	 "seconds": ..., "calls_per_sec": ..., "p50_ms": ..., "p99_ms": ...}
//
// It exits 1 if any call failed. tests/interop/bench.sh runs it next to the
// Python benchmark; this is a benchmark, not a test.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trustpool/trustpool/internal/oslo"
)

type result struct {
	Impl        string  `json:"impl"`
	Calls       int     `json:"calls"`
	Concurrency int     `json:"concurrency"`
	Size        int     `json:"size"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"calls_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "oslo-bench: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	url := flag.String("transport-url", os.Getenv("TRANSPORT_URL"), "oslo transport_url")
	exchange := flag.String("exchange", "openstack", "control_exchange")
	topic := flag.String("topic", "", "topic of the server")
	calls := flag.Int("calls", 5000, "total calls")
	conc := flag.Int("concurrency", 8, "concurrent callers")
	size := flag.Int("size", 64, "payload bytes")
	warmup := flag.Int("warmup", 100, "calls before measuring")
	timeout := flag.Duration("timeout", 60*time.Second, "call timeout")
	flag.Parse()
	if *url == "" || *topic == "" {
		return errors.New("--transport-url and --topic are required")
	}
	if *calls < 1 || *conc < 1 {
		return errors.New("--calls and --concurrency must be positive")
	}
	tr, err := oslo.NewTransport(oslo.Config{
		TransportURL: *url, ControlExchange: *exchange,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	defer tr.Close()
	client := tr.Client(oslo.Target{Topic: *topic}).WithTimeout(*timeout)
	payload := strings.Repeat("x", *size)
	rctx := map[string]any{"request_id": "req-bench"}
	ctx := context.Background()
	echo := func() error {
		var got string
		if err := client.Call(ctx, rctx, "echo", map[string]any{"value": payload}, &got); err != nil {
			return err
		}
		if got != payload {
			return errors.New("echo mismatch")
		}
		return nil
	}
	for range *warmup {
		if err := echo(); err != nil {
			return fmt.Errorf("warm-up call: %w", err)
		}
	}

	lat := make([][]time.Duration, *conc)
	var mu sync.Mutex
	nerr := 0
	var firstErr error
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range *conc {
		n := *calls / *conc
		if i < *calls%*conc {
			n++
		}
		lat[i] = make([]time.Duration, 0, n)
		wg.Go(func() {
			<-start
			for range n {
				t0 := time.Now()
				if err := echo(); err != nil {
					mu.Lock()
					nerr++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := result{
		Impl: "go", Calls: *calls, Concurrency: *conc, Size: *size, Errors: nerr,
		Seconds:     round(elapsed.Seconds(), 3),
		CallsPerSec: round(float64(len(all))/elapsed.Seconds(), 1),
		P50ms:       round(ms(percentile(all, 0.50)), 3),
		P99ms:       round(ms(percentile(all, 0.99)), 3),
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(r); err != nil {
		return err
	}
	if nerr > 0 {
		return fmt.Errorf("%d calls failed, first: %w", nerr, firstErr)
	}
	return nil
}

// percentile is the nearest-rank percentile of sorted values (as bench.py).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := max(0, int(math.Ceil(q*float64(len(sorted))))-1)
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
