package evidence

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/bootseed"
	"github.com/trustpool/trustpool/internal/eventlog"
)

// appendEvent appends a TCG_PCR_EVENT2 with SHA-1 and SHA-256 digests of
// data to a log built for those two banks.
func appendEvent(log []byte, pcr uint32, typ eventlog.EventType, data []byte) []byte {
	var b bytes.Buffer
	b.Write(log)
	b.Write(binary.LittleEndian.AppendUint32(nil, pcr))
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(typ)))
	b.Write(binary.LittleEndian.AppendUint32(nil, 2))
	d1 := sha1.Sum(data)
	d2 := sha256.Sum256(data)
	b.Write(binary.LittleEndian.AppendUint16(nil, uint16(eventlog.SHA1)))
	b.Write(d1[:])
	b.Write(binary.LittleEndian.AppendUint16(nil, uint16(eventlog.SHA256)))
	b.Write(d2[:])
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(data))))
	b.Write(data)
	return b.Bytes()
}

// withReplayOf sets the scenario's PCRs 0-9 to the replay of log, so that
// only the check under test can fail.
func withReplayOf(t testing.TB, s *scenario, log []byte) {
	t.Helper()
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.Replay(eventlog.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	s.pcrs = clonePCRs(s.pcrs)
	for i, v := range rep {
		s.pcrs[int(i)] = v
	}
	s.log = log
}

// eventOffset returns the byte offset of the first event matching f.
func eventOffset(t testing.TB, log []byte, f func(e *eventlog.Event) bool) int {
	t.Helper()
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.Events {
		if f(&l.Events[i]) {
			return l.Events[i].Offset
		}
	}
	t.Fatal("no such event")
	return 0
}

func TestVerifyAccepts(t *testing.T) {
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgECC, tpm2.TPMAlgRSA} {
		k := newFakeAK(t, alg)
		s, ch := baseScenario(t)
		res, err := Verify(k.bind, ch, k.evidence(t, s), nil, Options{Now: t0.Add(time.Second)})
		if err != nil {
			t.Fatalf("alg 0x%x: Verify: %v", uint16(alg), err)
		}
		if res.Boot == nil || res.Boot.Kernel == "" || res.Boot.SecureBoot != eventlog.SecureBootEnabled {
			t.Errorf("boot facts %+v", res.Boot)
		}
		if res.IMA == nil || len(res.IMA.New) != 2 || res.IMA.State.Entries != 2 {
			t.Errorf("IMA result %+v", res.IMA)
		}
	}
}

// TestVerifyRejects has one case per check of Verify (see the package
// doc); each must fail with exactly its named reason.
func TestVerifyRejects(t *testing.T) {
	k := newFakeAK(t, tpm2.TPMAlgECC)
	other := newFakeAK(t, tpm2.TPMAlgECC)
	now := t0.Add(time.Second)
	type tc struct {
		name string
		// edit may change everything that goes into Verify.
		edit func(t *testing.T, s *scenario, ch *Challenge, b *Binding, prev **Previous, o *Options) *Evidence
		want error
	}
	ev := func(s *scenario) *Evidence { return k.evidence(t, *s) }
	cases := []tc{
		{"ak_not_activated", func(t *testing.T, s *scenario, ch *Challenge, b *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			b.Activated = false
			return ev(s)
		}, ErrAKNotActivated},
		{"ak_not_restricted", func(t *testing.T, s *scenario, ch *Challenge, b *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			p := k.pub
			p.ObjectAttributes.Restricted = false
			b.AK = &AKPublic{Public: tpm2.Marshal(p)}
			return ev(s)
		}, ErrAKAttributes},
		{"nonce_too_short", func(t *testing.T, s *scenario, ch *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			ch.Nonce = ch.Nonce[:8]
			s.nonce = ch.Nonce
			return ev(s)
		}, ErrNonceTooShort},
		{"nonce_reused", func(t *testing.T, s *scenario, ch *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			ch.Used = true
			return ev(s)
		}, ErrNonceReused},
		{"nonce_expired", func(t *testing.T, s *scenario, ch *Challenge, _ *Binding, _ **Previous, o *Options) *Evidence {
			t.Helper()
			o.Now = ch.IssuedAt.Add(DefaultNonceLifetime + time.Second)
			return ev(s)
		}, ErrNonceExpired},
		{"nonce_from_future", func(t *testing.T, s *scenario, ch *Challenge, _ *Binding, _ **Previous, o *Options) *Evidence {
			t.Helper()
			o.Now = ch.IssuedAt.Add(-time.Second)
			return ev(s)
		}, ErrNonceExpired},
		{"attest_too_large", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.rawAttest = func(b []byte) []byte { return append(b, make([]byte, MaxAttestSize)...) }
			return ev(s)
		}, ErrTooLarge},
		{"signed_by_other_ak", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			return other.evidence(t, *s)
		}, ErrSignature},
		{"attest_bit_flipped_after_signing", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			e := ev(s)
			e.Attest[len(e.Attest)-1] ^= 1
			return e
		}, ErrSignature},
		{"signature_garbage", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			e := ev(s)
			e.Signature = []byte{0x00, 0x18, 0xde, 0xad}
			return e
		}, ErrSignature},
		{"signature_rsa_for_ecc_ak", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			e := ev(s)
			e.Signature = newFakeAK(t, tpm2.TPMAlgRSA).sign(t, e.Attest)
			return e
		}, ErrSignature},
		{"bad_magic", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.rawAttest = func(b []byte) []byte { return putU32(b, 0, 0xff544348) }
			return ev(s)
		}, ErrMagic},
		{"bad_type_certify", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.rawAttest = func(b []byte) []byte {
				c := bytes.Clone(b)
				binary.BigEndian.PutUint16(c[4:], uint16(tpm2.TPMSTAttestCertify))
				return c
			}
			return ev(s)
		}, ErrAttestType},
		{"attest_trailing_bytes", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.rawAttest = func(b []byte) []byte { return append(bytes.Clone(b), 0) }
			return ev(s)
		}, ErrMalformed},
		{"attest_truncated", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.rawAttest = func(b []byte) []byte { return b[:len(b)-5] }
			return ev(s)
		}, ErrMalformed},
		{"wrong_nonce", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.nonce = bytes.Repeat([]byte{7}, 32)
			return ev(s)
		}, ErrNonceMismatch},
		{"sha1_only_selection", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.sel = []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA1, PCRSelect: bitmap(testPCRs...)}}
			return ev(s)
		}, ErrSHA256Missing},
		{"empty_sha256_selection", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.sel = []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: bitmap()}}
			return ev(s)
		}, ErrSHA256Missing},
		{"partial_selection", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.sel = sha256Sel(0, 1, 2, 3)
			return ev(s)
		}, ErrPCRSelection},
		{"extra_pcr_selected", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.sel = sha256Sel(append([]int{16}, testPCRs...)...)
			return ev(s)
		}, ErrPCRSelection},
		{"extra_bank_selected", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.sel = append(sha256Sel(testPCRs...), tpm2.TPMSPCRSelection{Hash: tpm2.TPMAlgSHA1, PCRSelect: bitmap(0)})
			return ev(s)
		}, ErrPCRSelection},
		{"pcr_value_missing", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			e := ev(s)
			delete(e.PCRs, 9)
			e.PCRs[16] = make([]byte, 32)
			return e
		}, ErrPCRValues},
		{"pcr_value_short", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			e := ev(s)
			e.PCRs[9] = e.PCRs[9][:20]
			return e
		}, ErrPCRValues},
		{"pcr_value_altered", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			e := ev(s)
			e.PCRs = clonePCRs(e.PCRs)
			e.PCRs[4][0] ^= 1
			return e
		}, ErrPCRDigest},
		{"pcr0_never_extended", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.pcrs = clonePCRs(s.pcrs)
			s.pcrs[0] = make([]byte, 32)
			return ev(s)
		}, ErrPCRNotExtended},
		{"reset_count_backwards", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, prev **Previous, _ *Options) *Evidence {
			t.Helper()
			*prev = &Previous{Clock: ClockInfo{Clock: 500, ResetCount: 6}}
			return ev(s)
		}, ErrCounterRollback},
		{"restart_count_backwards", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, prev **Previous, _ *Options) *Evidence {
			t.Helper()
			*prev = &Previous{Clock: ClockInfo{Clock: 500, ResetCount: 5, RestartCount: 1}}
			return ev(s)
		}, ErrCounterRollback},
		{"clock_backwards_same_boot", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, prev **Previous, _ *Options) *Evidence {
			t.Helper()
			*prev = &Previous{Clock: ClockInfo{Clock: 2000, ResetCount: 5}}
			return ev(s)
		}, ErrClockImplausible},
		{"clock_backwards_but_safe_after_reboot", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, prev **Previous, _ *Options) *Evidence {
			t.Helper()
			*prev = &Previous{Clock: ClockInfo{Clock: 2000, ResetCount: 4}}
			return ev(s)
		}, ErrClockImplausible},
		{"event_log_missing", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.log = nil
			return ev(s)
		}, ErrEventLogMissing},
		{"event_log_truncated", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.log = s.log[:len(s.log)-7]
			return ev(s)
		}, ErrEventLog},
		{"event_log_garbage", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			g := make([]byte, 4096)
			rand.Read(g)
			s.log = g
			return ev(s)
		}, ErrEventLog},
		{"event_log_sha1_only", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			log, _, err := bootseed.BuildLog(bootseed.BuildA(), []eventlog.Alg{eventlog.SHA1})
			if err != nil {
				t.Fatal(err)
			}
			s.log = log
			return ev(s)
		}, ErrEventLogBank},
		{"event_data_altered_cmdline", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			// Same digests (so the replay still matches), different text.
			s.log = bytes.ReplaceAll(s.log, []byte("ro quiet"), []byte("ro QUIET"))
			return ev(s)
		}, ErrEventData},
		{"event_retyped_unused", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			off := eventOffset(t, s.log, func(e *eventlog.Event) bool { return e.Type == eventlog.EvEFIBootServicesApp })
			s.log = bytes.Clone(s.log)
			binary.LittleEndian.PutUint32(s.log[off+4:], uint32(eventlog.EvUnused))
			return ev(s)
		}, ErrEventData},
		{"separator_duplicated", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			withReplayOf(t, s, appendEvent(s.log, 4, eventlog.EvSeparator, []byte{0, 0, 0, 0}))
			return ev(s)
		}, ErrEventData},
		{"replay_mismatch_extra_extend", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			// The TPM saw one more PCR 9 extension than the log shows.
			s.pcrs = clonePCRs(s.pcrs)
			s.pcrs[9] = eventlog.SHA256.Sum(s.pcrs[9], bytes.Repeat([]byte{1}, 32))
			return ev(s)
		}, ErrReplay},
		{"replay_mismatch_log_event_added", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.log = appendEvent(s.log, 5, eventlog.EvEFIAction, []byte("Exit Boot Services Returned with Success"))
			return ev(s)
		}, ErrReplay},

		{"ima_pcr10_not_quoted", func(t *testing.T, s *scenario, ch *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			ch.PCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
			s.sel = sha256Sel(ch.PCRs...)
			return ev(s)
		}, ErrPCRSelection},
		{"ima_wrong_offset", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.imaOff = 100
			return ev(s)
		}, ErrIMAOffset},
		{"ima_garbage", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.ima = append([]byte{10, 0, 0, 0}, bytes.Repeat([]byte{0xee}, 60)...)
			return ev(s)
		}, ErrIMA},
		{"ima_no_boot_aggregate", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			ima, pcr10 := imaLog(t, []string{"/usr/bin/bash"}, nil, nil)
			s.ima, s.pcrs = ima, clonePCRs(s.pcrs)
			s.pcrs[10] = pcr10
			return ev(s)
		}, ErrIMA},
		{"ima_boot_aggregate_mismatch", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			ima, pcr10 := imaLog(t, []string{"boot_aggregate", "/usr/bin/bash"}, nil, bytes.Repeat([]byte{9}, 32))
			s.ima, s.pcrs = ima, clonePCRs(s.pcrs)
			s.pcrs[10] = pcr10
			return ev(s)
		}, ErrIMA},
		{"ima_entry_altered", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			s.ima = bytes.Replace(s.ima, []byte("/usr/bin/bash"), []byte("/usr/bin/bosh"), 1)
			return ev(s)
		}, ErrIMAReplay},
		{"ima_entry_dropped", func(t *testing.T, s *scenario, _ *Challenge, _ *Binding, _ **Previous, _ *Options) *Evidence {
			t.Helper()
			e, _, err := eventlog.ParseIMA(s.ima, 20)
			if err != nil {
				t.Fatal(err)
			}
			s.ima = s.ima[:e[0].Size()]
			return ev(s)
		}, ErrIMAReplay},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, ch := baseScenario(t)
			b := k.bind
			var prev *Previous
			o := Options{Now: now}
			e := c.edit(t, &s, &ch, &b, &prev, &o)
			res, err := Verify(b, ch, e, prev, o)
			t.Logf("Verify() = %v", err)
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify() = %v, want %v", err, c.want)
			}
			if res != nil {
				t.Fatal("Verify returned a result with an error")
			}
			for e2 := range reasons {
				if !errors.Is(e2, c.want) && errors.Is(err, e2) {
					t.Errorf("error also matches %v", e2)
				}
			}
			if Reason(err) == "internal" {
				t.Errorf("no reason name for %v", err)
			}
		})
	}
}

// TestVerifyBootPhaseRules: the event rules behind the boot facts reject,
// as ErrEventData with the eventlog reason, events the firmware cannot
// have logged (after their boot phase, or of a type their PCR never holds).
func TestVerifyBootPhaseRules(t *testing.T) {
	k := newFakeAK(t, tpm2.TPMAlgECC)
	for _, c := range []struct {
		name string
		edit func(log []byte) []byte
		want error
	}{
		{"command_line_after_exit_boot_services", func(log []byte) []byte {
			return appendEvent(log, 8, eventlog.EvIPL, []byte("kernel_cmdline: /boot/vmlinuz ro\x00"))
		}, eventlog.ErrEventOrder},
		{"secure_boot_variable_after_separator", func(log []byte) []byte {
			off := eventOffset(t, log, func(e *eventlog.Event) bool { return e.PCR == 5 && e.Type == eventlog.EvEFIAction })
			sb := bootseed.VariableData(bootseed.EFIGlobalVariable, "SecureBoot", []byte{1})
			return append(appendEvent(bytes.Clone(log[:off]), 7, eventlog.EvEFIVariableDriverConf, sb), log[off:]...)
		}, eventlog.ErrEventOrder},
		{"application_retyped_as_driver", func(log []byte) []byte {
			off := eventOffset(t, log, func(e *eventlog.Event) bool { return e.Type == eventlog.EvEFIBootServicesApp })
			return putLE32(log, off+4, uint32(eventlog.EvEFIBootServicesDriver))
		}, eventlog.ErrEventType},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, ch := baseScenario(t)
			withReplayOf(t, &s, c.edit(s.log))
			_, err := Verify(k.bind, ch, k.evidence(t, s), nil, Options{Now: t0.Add(time.Second)})
			if !errors.Is(err, ErrEventData) || !errors.Is(err, c.want) || Reason(err) != "event_data" {
				t.Errorf("Verify() = %v, want %v and %v", err, ErrEventData, c.want)
			}
		})
	}
}

func putLE32(b []byte, off int, v uint32) []byte {
	c := bytes.Clone(b)
	binary.LittleEndian.PutUint32(c[off:], v)
	return c
}

func TestVerifyRebootAndSteadyState(t *testing.T) {
	k := newFakeAK(t, tpm2.TPMAlgECC)
	s, ch := baseScenario(t)
	now := t0.Add(time.Second)
	res, err := Verify(k.bind, ch, k.evidence(t, s), nil, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	prev := &Previous{Clock: res.Clock, PCRs: res.PCRs, EventLogDigest: res.EventLogDigest, Boot: res.Boot, IMA: res.IMA.State}

	// Steady state: same PCRs, no log sent, IMA unchanged.
	s2, ch2 := baseScenario(t)
	s2.pcrs, s2.log, s2.ima, s2.imaOff = s.pcrs, nil, nil, prev.IMA.Offset
	s2.clock.Clock = 2000
	res2, err := Verify(k.bind, ch2, k.evidence(t, s2), prev, Options{Now: now})
	if err != nil {
		t.Fatalf("steady state: %v", err)
	}
	if res2.Rebooted || res2.Boot != prev.Boot {
		t.Errorf("steady state: rebooted=%v, boot reused=%v", res2.Rebooted, res2.Boot == prev.Boot)
	}

	// Reboot: resetCount up, IMA from 0 again, full log required.
	s3, ch3 := baseScenario(t)
	s3.clock = tpm2.TPMSClockInfo{Clock: 3000, ResetCount: 6, Safe: true}
	res3, err := Verify(k.bind, ch3, k.evidence(t, s3), prev, Options{Now: now})
	if err != nil {
		t.Fatalf("after reboot: %v", err)
	}
	if !res3.Rebooted || res3.IMA == nil || len(res3.IMA.New) != 2 {
		t.Errorf("after reboot: rebooted=%v IMA=%+v", res3.Rebooted, res3.IMA)
	}
	// After a reboot an IMA log continuing the old offset is refused.
	s4, ch4 := baseScenario(t)
	s4.clock = tpm2.TPMSClockInfo{Clock: 3000, ResetCount: 6, Safe: true}
	s4.imaOff = prev.IMA.Offset
	if _, err := Verify(k.bind, ch4, k.evidence(t, s4), prev, Options{Now: now}); !errors.Is(err, ErrIMAOffset) {
		t.Errorf("old IMA offset after reboot: %v, want %v", err, ErrIMAOffset)
	}
	// Steady state with a changed log: full check again (and it fails if
	// the log does not match).
	s5, ch5 := baseScenario(t)
	s5.pcrs, s5.ima, s5.imaOff = s.pcrs, nil, prev.IMA.Offset
	s5.log = bytes.ReplaceAll(s5.log, []byte("ro quiet"), []byte("ro QUIET"))
	s5.clock.Clock = 2000
	if _, err := Verify(k.bind, ch5, k.evidence(t, s5), prev, Options{Now: now}); !errors.Is(err, ErrEventData) {
		t.Errorf("steady state with altered log: %v, want %v", err, ErrEventData)
	}
	// Facts derived by older rules are not reused: the log is required
	// and the facts derived again.
	old := *prev
	oldBoot := *prev.Boot
	oldBoot.Version = 0
	old.Boot = &oldBoot
	s6, ch6 := baseScenario(t)
	s6.pcrs, s6.log, s6.ima, s6.imaOff = s.pcrs, nil, nil, prev.IMA.Offset
	s6.clock.Clock = 2000
	if _, err := Verify(k.bind, ch6, k.evidence(t, s6), &old, Options{Now: now}); !errors.Is(err, ErrEventLogMissing) {
		t.Errorf("steady state with old facts and no log: %v, want %v", err, ErrEventLogMissing)
	}
	s6.log = s.log
	ch6, _ = NewChallenge(rand.Reader, t0, testHost, testPCRs)
	s6.nonce = ch6.Nonce
	res6, err := Verify(k.bind, ch6, k.evidence(t, s6), &old, Options{Now: now})
	if err != nil || res6.Boot == old.Boot || res6.Boot.Version != eventlog.FactsVersion {
		t.Errorf("steady state with old facts and the same log: %+v, %v", res6, err)
	}
}

func TestParseAKPublicRejects(t *testing.T) {
	k := newFakeAK(t, tpm2.TPMAlgECC)
	cases := map[string]func(p *tpm2.TPMTPublic){
		"not_fixed_tpm":  func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false },
		"not_restricted": func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false },
		"decrypt":        func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true },
		"not_sensitive_data_origin": func(p *tpm2.TPMTPublic) {
			p.ObjectAttributes.SensitiveDataOrigin = false
		},
		"sha1_name_alg": func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 },
		"sha1_scheme": func(p *tpm2.TPMTPublic) {
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA1})},
				CurveID: tpm2.TPMECCNistP256,
			})
		},
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			p := k.pub
			mut(&p)
			if _, err := ParseAKPublic(tpm2.Marshal(p)); !errors.Is(err, ErrAKAttributes) {
				t.Fatalf("ParseAKPublic() = %v, want %v", err, ErrAKAttributes)
			}
		})
	}
	if _, err := ParseAKPublic(append(tpm2.Marshal(k.pub), 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing byte: %v, want %v", err, ErrMalformed)
	}
}

func TestCheckActivation(t *testing.T) {
	if err := CheckActivation([]byte("secret"), []byte("secreT")); !errors.Is(err, ErrActivation) {
		t.Errorf("wrong secret: %v", err)
	}
	if err := CheckActivation(nil, nil); !errors.Is(err, ErrActivation) {
		t.Errorf("empty secret: %v", err)
	}
	if err := CheckActivation([]byte("secret"), []byte("secret")); err != nil {
		t.Errorf("right secret: %v", err)
	}
}

func TestLedger(t *testing.T) {
	l := NewLedger(time.Minute)
	ch, err := l.Issue(rand.Reader, t0, testHost, testPCRs)
	if err != nil || ch.Host != testHost {
		t.Fatalf("Issue: %+v, %v", ch, err)
	}
	if _, err := l.Consume(testHost, []byte("never issued never issued"), t0); !errors.Is(err, ErrNonceUnknown) {
		t.Errorf("unknown nonce: %v", err)
	}
	got, err := l.Consume(testHost, ch.Nonce, t0.Add(time.Second))
	if err != nil || got.Used || !bytes.Equal(got.Nonce, ch.Nonce) || got.Host != testHost {
		t.Fatalf("first consume: %+v, %v", got, err)
	}
	if got, err := l.Consume(testHost, ch.Nonce, t0.Add(time.Second)); !errors.Is(err, ErrNonceReused) || !got.Used {
		t.Errorf("second consume: %+v, %v", got, err)
	}
	ch2, _ := l.Issue(rand.Reader, t0, testHost, testPCRs)
	if _, err := l.Consume(testHost, ch2.Nonce, t0.Add(2*time.Minute)); !errors.Is(err, ErrNonceExpired) {
		t.Errorf("expired: %v", err)
	}
}

// TestLedgerHostBinding: a nonce is consumed only for the host it was
// issued to; presented for another host (evidence relayed from it) it is
// refused and used up, so the issuing host cannot use it either.
func TestLedgerHostBinding(t *testing.T) {
	l := NewLedger(time.Minute)
	ch, err := l.Issue(rand.Reader, t0, "compute-a", testPCRs)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"compute-b", "", "compute-a "} {
		got, err := l.Consume(host, ch.Nonce, t0.Add(time.Second))
		if host == "compute-b" && (!errors.Is(err, ErrNonceHost) || got.Nonce != nil) {
			t.Errorf("consume for %q: %+v, %v, want %v", host, got, err, ErrNonceHost)
		}
		if host != "compute-b" && !errors.Is(err, ErrNonceReused) {
			t.Errorf("consume for %q after the refusal: %v, want %v", host, err, ErrNonceReused)
		}
	}
	if _, err := l.Consume("compute-a", ch.Nonce, t0.Add(time.Second)); !errors.Is(err, ErrNonceReused) {
		t.Errorf("issuing host after a relay attempt: %v, want %v", err, ErrNonceReused)
	}
	if Reason(fmt.Errorf("x: %w", ErrNonceHost)) != "nonce_wrong_host" {
		t.Error("no reason name for ErrNonceHost")
	}
	if _, err := l.Issue(rand.Reader, t0, "", testPCRs); !errors.Is(err, ErrNonceHost) {
		t.Errorf("Issue without a host: %v", err)
	}
	if _, err := NewChallenge(rand.Reader, t0, "", testPCRs); !errors.Is(err, ErrNonceHost) {
		t.Errorf("NewChallenge without a host: %v", err)
	}
}

func TestLedgerForgetDiscardPrune(t *testing.T) {
	l := NewLedger(time.Minute)
	issue := func(owner string) Challenge {
		t.Helper()
		ch, err := l.Issue(rand.Reader, t0, owner, testPCRs)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	a1, a2, b1 := issue("a"), issue("a"), issue("b")
	if _, err := l.Consume("a", a1.Nonce, t0); err != nil {
		t.Fatal(err)
	}
	if l.Len() != 3 {
		t.Fatalf("Len = %d, want 3", l.Len())
	}
	// Forgetting a host drops its issued and used nonces; they are then
	// refused as unknown, never accepted.
	if n := l.Forget("a"); n != 2 {
		t.Errorf("Forget(a) dropped %d, want 2", n)
	}
	for _, ch := range []Challenge{a1, a2} {
		if _, err := l.Consume("a", ch.Nonce, t0); !errors.Is(err, ErrNonceUnknown) {
			t.Errorf("nonce of a forgotten owner: %v, want ErrNonceUnknown", err)
		}
	}
	// A discarded nonce (the round ended without an answer) is refused.
	l.Discard(b1.Nonce)
	if _, err := l.Consume("b", b1.Nonce, t0); !errors.Is(err, ErrNonceUnknown) {
		t.Errorf("discarded nonce: %v, want ErrNonceUnknown", err)
	}
	if l.Len() != 0 {
		t.Errorf("Len = %d after forget and discard, want 0", l.Len())
	}
	// Prune drops what expired, without a new Issue.
	c1 := issue("c")
	if _, err := l.Consume("c", c1.Nonce, t0); err != nil {
		t.Fatal(err)
	}
	issue("c")
	if n := l.Prune(t0.Add(time.Minute)); n != 0 {
		t.Errorf("Prune before expiry dropped %d", n)
	}
	if n := l.Prune(t0.Add(3 * time.Minute)); n != 2 || l.Len() != 0 {
		t.Errorf("Prune after expiry dropped %d, Len %d; want 2, 0", n, l.Len())
	}
}
