package metrics_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trustpool/trustpool/attestation-service/internal/metrics"
)

func TestExposition(t *testing.T) {
	r := metrics.New()
	c := r.NewCounter("req_total", "Requests.", "route", "code")
	c.Inc("hosts", "200")
	c.Add(2, "hosts", "200")
	c.Inc(`we"ird`, "500")
	g := r.NewGauge("hosts", "Hosts by status.", "status")
	g.Set(3, "trusted")
	r.NewGaugeFunc("up", "Always one.", func() float64 { return 1 })
	h := r.NewHistogram("lat_seconds", "Latency.", []float64{0.1, 1})
	h.Observe(0.05)
	h.Observe(0.5)
	h.Observe(5)
	var b strings.Builder
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	want := `# HELP req_total Requests.
# TYPE req_total counter
req_total{route="hosts",code="200"} 3
req_total{route="we\"ird",code="500"} 1
# HELP hosts Hosts by status.
# TYPE hosts gauge
hosts{status="trusted"} 3
# HELP up Always one.
# TYPE up gauge
up 1
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 1
lat_seconds_bucket{le="1"} 2
lat_seconds_bucket{le="+Inf"} 3
lat_seconds_sum 5.55
lat_seconds_count 3
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("exposition mismatch (-want +got):\n%s", diff)
	}
}
