// Package metrics is a small Prometheus text-format (version 0.0.4) registry:
// counters and gauges with labels, and histograms with fixed buckets, written
// by hand so the service needs no client library. It is safe for concurrent
// use and does no I/O other than writing to the given writer.
package metrics

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Registry holds metrics in registration order.
type Registry struct {
	mu      sync.Mutex
	metrics []metric
}

type metric interface {
	write(w io.Writer) error
}

// New returns an empty registry.
func New() *Registry { return &Registry{} }

func (r *Registry) add(m metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metrics = append(r.metrics, m)
}

// Write writes every metric in the text exposition format.
func (r *Registry) Write(w io.Writer) error {
	r.mu.Lock()
	ms := slices.Clone(r.metrics)
	r.mu.Unlock()
	for _, m := range ms {
		if err := m.write(w); err != nil {
			return err
		}
	}
	return nil
}

// ContentType is the Content-Type of Write's output.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

type family struct {
	name, help, typ string
	labels          []string
	mu              sync.Mutex
	values          map[string]float64 // key: joined label values
	fn              func() float64
}

func (f *family) header(w io.Writer) error {
	_, err := fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.name, escapeHelp(f.help), f.name, f.typ)
	return err
}

func (f *family) write(w io.Writer) error {
	if err := f.header(w); err != nil {
		return err
	}
	if f.fn != nil {
		_, err := fmt.Fprintf(w, "%s %s\n", f.name, formatFloat(f.fn()))
		return err
	}
	f.mu.Lock()
	keys := make([]string, 0, len(f.values))
	for k := range f.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	lines := make([]string, 0, len(keys))
	for _, k := range keys {
		lines = append(lines, fmt.Sprintf("%s%s %s\n", f.name, labelString(f.labels, splitKey(k, len(f.labels))), formatFloat(f.values[k])))
	}
	f.mu.Unlock()
	for _, l := range lines {
		if _, err := io.WriteString(w, l); err != nil {
			return err
		}
	}
	return nil
}

func (f *family) add(v float64, lv []string) {
	if len(lv) != len(f.labels) {
		panic(fmt.Sprintf("metrics: %s takes %d label values, got %d", f.name, len(f.labels), len(lv)))
	}
	f.mu.Lock()
	f.values[strings.Join(lv, "\xff")] += v
	f.mu.Unlock()
}

func (f *family) set(v float64, lv []string) {
	f.mu.Lock()
	f.values[strings.Join(lv, "\xff")] = v
	f.mu.Unlock()
}

func splitKey(k string, n int) []string {
	if n == 0 {
		return nil
	}
	return strings.Split(k, "\xff")
}

// Counter is a monotonically increasing counter family.
type Counter struct{ f *family }

// NewCounter registers a counter family with the given label names.
func (r *Registry) NewCounter(name, help string, labels ...string) *Counter {
	f := &family{name: name, help: help, typ: "counter", labels: labels, values: map[string]float64{}}
	if len(labels) == 0 {
		f.values[""] = 0
	}
	r.add(f)
	return &Counter{f}
}

// Inc adds one for the label values.
func (c *Counter) Inc(labelValues ...string) { c.f.add(1, labelValues) }

// Add adds v (≥ 0) for the label values.
func (c *Counter) Add(v float64, labelValues ...string) { c.f.add(v, labelValues) }

// Gauge is a gauge family.
type Gauge struct{ f *family }

// NewGauge registers a gauge family.
func (r *Registry) NewGauge(name, help string, labels ...string) *Gauge {
	f := &family{name: name, help: help, typ: "gauge", labels: labels, values: map[string]float64{}}
	r.add(f)
	return &Gauge{f}
}

// NewGaugeFunc registers a gauge whose value is read from fn at scrape time.
func (r *Registry) NewGaugeFunc(name, help string, fn func() float64) {
	r.add(&family{name: name, help: help, typ: "gauge", fn: fn})
}

// Set sets the gauge for the label values.
func (g *Gauge) Set(v float64, labelValues ...string) { g.f.set(v, labelValues) }

// Reset removes every labelled value.
func (g *Gauge) Reset() {
	g.f.mu.Lock()
	g.f.values = map[string]float64{}
	g.f.mu.Unlock()
}

// Histogram is a histogram without labels.
type Histogram struct {
	name, help string
	buckets    []float64
	mu         sync.Mutex
	counts     []uint64
	sum        float64
	count      uint64
}

// NewHistogram registers a histogram with upper bounds buckets (sorted).
func (r *Registry) NewHistogram(name, help string, buckets []float64) *Histogram {
	h := &Histogram{name: name, help: help, buckets: slices.Sorted(slices.Values(buckets)), counts: make([]uint64, len(buckets))}
	r.add(h)
	return h
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, b := range h.buckets {
		if v <= b {
			h.counts[i]++
		}
	}
	h.sum += v
	h.count++
}

func (h *Histogram) write(w io.Writer) error {
	h.mu.Lock()
	var b strings.Builder
	fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s histogram\n", h.name, escapeHelp(h.help), h.name)
	for i, ub := range h.buckets {
		fmt.Fprintf(&b, "%s_bucket{le=\"%s\"} %d\n", h.name, formatFloat(ub), h.counts[i])
	}
	fmt.Fprintf(&b, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", h.name, h.count, h.name, formatFloat(h.sum), h.name, h.count)
	h.mu.Unlock()
	_, err := io.WriteString(w, b.String())
	return err
}

func labelString(names, values []string) string {
	if len(names) == 0 {
		return ""
	}
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + `="` + escapeLabel(values[i]) + `"`
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
