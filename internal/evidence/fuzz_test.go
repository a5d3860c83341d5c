package evidence

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// FuzzVerify mutates the attest and signature bytes (the quote/attest
// parser) and the event log of a valid evidence; Verify must never panic
// and must reject anything but the seed itself. The AK is fixed per run.
func FuzzVerify(f *testing.F) {
	k := newFakeAK(f, tpm2.TPMAlgECC)
	s, ch := baseScenario(f)
	ev := k.evidence(f, s)
	f.Add(ev.Attest, ev.Signature, ev.EventLog)
	f.Add(ev.Attest[:10], ev.Signature, []byte{})
	f.Fuzz(func(t *testing.T, attest, sig, log []byte) {
		e := *ev
		e.Attest, e.Signature, e.EventLog = attest, sig, log
		_, _ = Verify(k.bind, ch, &e, nil, Options{Now: t0.Add(time.Second)})
	})
}

// FuzzParsePublic feeds arbitrary TPMT_PUBLIC bytes to the AK and EK
// parsers.
func FuzzParsePublic(f *testing.F) {
	f.Add(tpm2.Marshal(newFakeAK(f, tpm2.TPMAlgECC).pub))
	f.Add(tpm2.Marshal(newFakeAK(f, tpm2.TPMAlgRSA).pub))
	f.Add(tpm2.Marshal(tpm2.RSAEKTemplate))
	f.Add(tpm2.Marshal(tpm2.ECCEKTemplate))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseAKPublic(b)
		if ek, err := ParseEKPublic(b); err == nil {
			_, _, _ = MakeCredential(zeroReader{}, ek, make([]byte, 34))
		}
	})
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 1
	}
	return len(p), nil
}

// FuzzParseQuoteAttest checks the hand-written TPMS_ATTEST and
// TPMT_SIGNATURE decoders against go-tpm's: whatever ours accepts, go-tpm
// must decode to the same values and re-encode to the same bytes.
func FuzzParseQuoteAttest(f *testing.F) {
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgECC, tpm2.TPMAlgRSA} {
		k := newFakeAK(f, alg)
		s, _ := baseScenario(f)
		ev := k.evidence(f, s)
		f.Add(ev.Attest, ev.Signature)
	}
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		if a, err := parseQuoteAttest(attest); err == nil {
			g, gerr := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
			if gerr != nil {
				t.Fatalf("ours accepts, go-tpm refuses: %v", gerr)
			}
			q, qerr := g.Attested.Quote()
			if qerr != nil || !bytes.Equal(tpm2.Marshal(g), attest) {
				t.Fatalf("go-tpm re-encodes differently (%v)", qerr)
			}
			if !bytes.Equal(a.extraData, g.ExtraData.Buffer) || a.clock.ResetCount != g.ClockInfo.ResetCount ||
				a.clock.Clock != g.ClockInfo.Clock || a.clock.Safe != bool(g.ClockInfo.Safe) ||
				!bytes.Equal(a.pcrDigest, q.PCRDigest.Buffer) || len(a.selections) != len(q.PCRSelect.PCRSelections) {
				t.Fatal("decoders disagree")
			}
		}
		if s, err := parseSignature(sig); err == nil {
			g, gerr := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
			if gerr != nil || g.SigAlg != s.alg || !bytes.Equal(tpm2.Marshal(g), sig) {
				t.Fatalf("signature decoders disagree: %v", gerr)
			}
		}
	})
}
