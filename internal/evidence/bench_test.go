package evidence

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/eventlog/eventlogtest"
)

// The floor is the cost of verifying the AK signature alone; every other
// benchmark reports its ratio to it ("x-floor").
var (
	floorOnce sync.Map // alg -> float64 ns/op
)

func floor(b *testing.B, alg tpm2.TPMAlgID, k *fakeAK, ev *Evidence) float64 {
	b.Helper()
	if v, ok := floorOnce.Load(alg); ok {
		return v.(float64)
	}
	// testing.Benchmark cannot run inside a benchmark; time it directly.
	const n = 500
	start := time.Now()
	for range n {
		if err := verifySignature(k.bind.AK, ev.Attest, ev.Signature); err != nil {
			b.Fatal(err)
		}
	}
	ns := float64(time.Since(start).Nanoseconds()) / n
	floorOnce.Store(alg, ns)
	return ns
}

var benchAlgs = []struct {
	name string
	alg  tpm2.TPMAlgID
}{{"ecc", tpm2.TPMAlgECC}, {"rsa", tpm2.TPMAlgRSA}}

// realLogScenario uses the real 33 KB Ubuntu 21.04 GCE log of
// go-tpm-tools (read from the module cache).
func realLogScenario(b *testing.B) (scenario, Challenge) {
	b.Helper()
	log := eventlogtest.GoTPMToolsLog(b, "ubuntu-2104-no-dbx.bin")
	s, ch, ok := realScenario(b, log)
	if !ok {
		b.Fatal("log unusable")
	}
	return s, ch
}

func reportRatio(b *testing.B, fl float64, start time.Time) {
	b.Helper()
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N)/fl, "x-floor")
}

func BenchmarkSignatureVerify(b *testing.B) {
	for _, a := range benchAlgs {
		b.Run(a.name, func(b *testing.B) {
			k := newFakeAK(b, a.alg)
			s, _ := baseScenario(b)
			ev := k.evidence(b, s)
			for b.Loop() {
				if err := verifySignature(k.bind.AK, ev.Attest, ev.Signature); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFullAppraisal: first attestation of a host with a real firmware
// log (parse, rules, replay, facts) on top of the quote checks.
func BenchmarkFullAppraisal(b *testing.B) {
	for _, a := range benchAlgs {
		b.Run(a.name, func(b *testing.B) {
			k := newFakeAK(b, a.alg)
			s, ch := realLogScenario(b)
			ev := k.evidence(b, s)
			fl := floor(b, a.alg, k, ev)
			o := Options{Now: t0.Add(time.Second)}
			start := time.Now()
			for b.Loop() {
				if _, err := Verify(k.bind, ch, ev, nil, o); err != nil {
					b.Fatal(err)
				}
			}
			reportRatio(b, fl, start)
		})
	}
}

// BenchmarkSteadyState: no reboot, PCRs equal to the last verified ones;
// the agent sends no log (omitted) or the same log (digest compared).
func BenchmarkSteadyState(b *testing.B) {
	for _, a := range benchAlgs {
		for _, mode := range []string{"log_omitted", "same_log"} {
			b.Run(a.name+"/"+mode, func(b *testing.B) {
				k := newFakeAK(b, a.alg)
				s, ch := realLogScenario(b)
				ev := k.evidence(b, s)
				o := Options{Now: t0.Add(time.Second)}
				res, err := Verify(k.bind, ch, ev, nil, o)
				if err != nil {
					b.Fatal(err)
				}
				prev := &Previous{Clock: res.Clock, PCRs: res.PCRs, EventLogDigest: res.EventLogDigest, Boot: res.Boot}
				if mode == "log_omitted" {
					s.log = nil
				}
				s.clock.Clock++
				ev = k.evidence(b, s)
				fl := floor(b, a.alg, k, ev)
				start := time.Now()
				for b.Loop() {
					if _, err := Verify(k.bind, ch, ev, prev, o); err != nil {
						b.Fatal(err)
					}
				}
				reportRatio(b, fl, start)
			})
		}
	}
}

// BenchmarkIMAPerEntry: steady state plus n new IMA entries; reports the
// cost per entry beyond the steady state.
func BenchmarkIMAPerEntry(b *testing.B) {
	const n = 100
	k := newFakeAK(b, tpm2.TPMAlgECC)
	s, _ := baseScenario(b)
	log, pcrs, _ := goodBoot(b)
	paths := []string{"boot_aggregate"}
	for i := range n {
		paths = append(paths, "/usr/lib/x86_64-linux-gnu/lib"+string(rune('a'+i%26))+".so."+string(rune('0'+i%10)))
	}
	first, pcr10 := imaLog(b, paths[:1], nil, bootAggregate(pcrs))
	rest, pcr10b := imaLog(b, paths[1:], pcr10, nil)
	_, consumed, err := eventlog.ParseIMA(first, 20)
	if err != nil {
		b.Fatal(err)
	}
	s.log, s.pcrs = log, clonePCRs(pcrs)
	s.pcrs[10] = pcr10b
	s.ima, s.imaOff = rest, int64(consumed)
	prevPCRs := clonePCRs(s.pcrs)
	ch, _ := NewChallenge(rand.Reader, t0, testHost, testPCRs)
	s.nonce = ch.Nonce
	l, _ := eventlog.Parse(log)
	facts, _ := eventlog.ExtractBootFacts(l, eventlog.SHA256, nil)
	prev := &Previous{Clock: ClockInfo{Clock: 1, ResetCount: 5}, PCRs: prevPCRs, Boot: facts,
		IMA: eventlog.IMAState{Offset: int64(consumed), Entries: 1, PCRs: map[uint32][]byte{10: pcr10}}}
	s.log = nil
	ev := k.evidence(b, s)
	fl := floor(b, tpm2.TPMAlgECC, k, ev)
	o := Options{Now: t0.Add(time.Second)}
	start := time.Now()
	for b.Loop() {
		res, err := Verify(k.bind, ch, ev, prev, o)
		if err != nil || len(res.IMA.New) != n {
			b.Fatal(err)
		}
	}
	per := float64(time.Since(start).Nanoseconds()) / float64(b.N)
	b.ReportMetric((per-fl)/n, "ns/entry")
	b.ReportMetric(per/fl, "x-floor")
}

// tinyIMAChunk returns n of the smallest well-formed ima-ng entries (58
// bytes each: a 3-byte SHA-1 "digest" and the path "/x"; n = 0 fills
// MaxIMAChunk), and the SHA-256 PCR 10 they extend to from start. It is the
// worst case for memory per byte of evidence.
func tinyIMAChunk(t testing.TB, start []byte, n int) ([]byte, []byte) {
	t.Helper()
	e, th := eventlogtest.TinyIMAEntry()
	if n == 0 {
		n = eventlog.MaxIMAChunk / len(e)
	}
	chunk := bytes.Repeat(e, n)
	pcr := [32]byte(start)
	for range n {
		pcr = sha256.Sum256(append(pcr[:], th...))
	}
	return chunk, pcr[:]
}

// imaChunkRound is a steady-state round whose evidence carries chunk (IMA
// entries after boot_aggregate) extending PCR 10 to pcr10.
func imaChunkRound(t testing.TB, n int) (*fakeAK, Challenge, *Evidence, *Previous, []byte) {
	t.Helper()
	k := newFakeAK(t, tpm2.TPMAlgECC)
	s, ch := baseScenario(t)
	log, pcrs, _ := goodBoot(t)
	first, pcr10 := imaLog(t, []string{"boot_aggregate"}, nil, bootAggregate(pcrs))
	chunk, pcr10b := tinyIMAChunk(t, pcr10, n)
	l, _ := eventlog.Parse(log)
	facts, _ := eventlog.ExtractBootFacts(l, eventlog.SHA256, nil)
	s.log, s.pcrs = nil, clonePCRs(pcrs)
	prevPCRs := clonePCRs(s.pcrs)
	s.pcrs[10] = pcr10b
	s.ima, s.imaOff = chunk, int64(len(first))
	prev := &Previous{Clock: ClockInfo{Clock: 1, ResetCount: 5}, PCRs: prevPCRs, Boot: facts,
		IMA: eventlog.IMAState{Offset: int64(len(first)), Entries: 1, PCRs: map[uint32][]byte{10: pcr10}}}
	return k, ch, k.evidence(t, s), prev, chunk
}

// verifyMemory runs Verify once and returns its result, the bytes it
// allocated, the bytes still reachable from the result after a GC, and its
// error.
func verifyMemory(k *fakeAK, ch Challenge, ev *Evidence, prev *Previous) (res *Result, alloc, retained uint64, err error) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before, total := ms.HeapAlloc, ms.TotalAlloc
	res, err = Verify(k.bind, ch, ev, prev, Options{Now: t0.Add(time.Second)})
	runtime.GC()
	runtime.ReadMemStats(&ms)
	alloc = ms.TotalAlloc - total
	if ms.HeapAlloc > before {
		retained = ms.HeapAlloc - before
	}
	runtime.KeepAlive(res)
	return res, alloc, retained, err
}

// BenchmarkIMAChunkMemory: one round that receives MaxIMAEntries tiny IMA
// entries, the most a chunk may carry, in 15 MiB (the worst case for
// memory per byte). B/op (-benchmem) is everything Verify allocates;
// retained-B is what stays reachable from the result after a GC; both are
// also reported per byte of the chunk.
func BenchmarkIMAChunkMemory(b *testing.B) {
	k, ch, ev, prev, chunk := imaChunkRound(b, maxIMAEntries)
	var retained, alloc uint64
	b.ReportAllocs()
	for b.Loop() {
		res, a, r, err := verifyMemory(k, ch, ev, prev)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.IMA.New) != maxIMAEntries {
			b.Fatalf("%d entries verified, want %d", len(res.IMA.New), maxIMAEntries)
		}
		alloc, retained = max(alloc, a), max(retained, r)
	}
	b.ReportMetric(float64(retained), "retained-B")
	b.ReportMetric(float64(retained)/float64(len(chunk)), "retained/chunk")
	b.ReportMetric(float64(alloc)/float64(len(chunk)), "alloc/chunk")
}
