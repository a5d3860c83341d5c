package localapi

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/trustpool/trustpool/nova-filter-shim/internal/trustcache"
)

// Metric names, all prefixed trustpool_filter_shim_.
const metricPrefix = "trustpool_filter_shim_"

func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(a.Exposition()))
}

// Exposition renders every metric in the Prometheus text format.
func (a *API) Exposition() string {
	var b strings.Builder
	st := a.cfg.State()
	cs := a.cfg.Cache.Stats()

	family(&b, "verdicts_accepted_total", "counter", "Signed verdicts verified and kept.")
	sample(&b, "verdicts_accepted_total", nil, float64(cs.Accepted))

	family(&b, "verdicts_dropped_total", "counter", "Received verdicts not kept, by reason.")
	for _, reason := range trustcache.DropReasons {
		sample(&b, "verdicts_dropped_total", []string{"reason", string(reason)}, float64(cs.Dropped[reason]))
	}

	family(&b, "hosts", "gauge", "Hosts with a verdict, by the status acted on now (expired verdicts act as unknown).")
	for _, s := range []string{"trusted", "untrusted", "unknown", "expired"} {
		sample(&b, "hosts", []string{"status", s}, float64(cs.Hosts[s]))
	}

	a.mu.Lock()
	codes := make([]int, 0, len(a.requests))
	for c := range a.requests {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	counts := make([]uint64, len(codes))
	for i, c := range codes {
		counts[i] = a.requests[c]
	}
	a.mu.Unlock()
	family(&b, "filter_requests_total", "counter", "POST /v1/filter requests, by HTTP status.")
	if len(codes) == 0 {
		sample(&b, "filter_requests_total", []string{"code", "200"}, 0)
	}
	for i, c := range codes {
		sample(&b, "filter_requests_total", []string{"code", fmt.Sprint(c)}, float64(counts[i]))
	}
	family(&b, "filter_request_duration_seconds", "summary", "Time spent answering POST /v1/filter.")
	var total uint64
	for _, n := range counts {
		total += n
	}
	sample(&b, "filter_request_duration_seconds_sum", nil, math.Float64frombits(a.seconds.Load()))
	sample(&b, "filter_request_duration_seconds_count", nil, float64(total))

	family(&b, "filter_hosts_total", "counter", "Hosts evaluated by POST /v1/filter, by outcome.")
	sample(&b, "filter_hosts_total", []string{"outcome", "pass"}, float64(a.passed.Load()))
	sample(&b, "filter_hosts_total", []string{"outcome", "reject"}, float64(a.rejected.Load()))

	family(&b, "snapshot_loaded", "gauge", "1 once get_verdicts has answered.")
	sample(&b, "snapshot_loaded", nil, b2f(st.SnapshotLoaded))
	family(&b, "subscribed", "gauge", "1 once the verdict fanout consumer has started (it reconnects by itself).")
	sample(&b, "subscribed", nil, b2f(st.Subscribed))
	family(&b, "service_silent", "gauge", "1 while nothing has been heard from the attestation service for longer than the verdict validity.")
	sample(&b, "service_silent", nil, b2f(st.Silent))
	family(&b, "snapshot_failures_total", "counter", "Failed get_verdicts calls.")
	sample(&b, "snapshot_failures_total", nil, float64(st.SnapshotFailures))
	family(&b, "snapshot_file_writes_total", "counter", "Writes of the verdict snapshot file for the Nova filter, by result.")
	sample(&b, "snapshot_file_writes_total", []string{"result", "ok"}, float64(st.SnapshotFileWrites))
	sample(&b, "snapshot_file_writes_total", []string{"result", "error"}, float64(st.SnapshotFileFailures))
	return b.String()
}

func family(b *strings.Builder, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s%s %s\n# TYPE %s%s %s\n", metricPrefix, name, help, metricPrefix, name, typ)
}

// sample writes one line; labels are name/value pairs. Label values here
// are fixed strings from this package, but are escaped anyway.
func sample(b *strings.Builder, name string, labels []string, v float64) {
	b.WriteString(metricPrefix)
	b.WriteString(name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(b, "%s=\"%s\"", labels[i], escapeLabel(labels[i+1]))
		}
		b.WriteByte('}')
	}
	fmt.Fprintf(b, " %s\n", formatFloat(v))
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func formatFloat(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%g", v)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// addFloat adds d to the float64 stored as bits in u.
func addFloat(u *atomic.Uint64, d float64) {
	for {
		old := u.Load()
		if u.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}
