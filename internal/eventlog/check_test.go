package eventlog_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/trustpool/trustpool/internal/eventlog"
	"github.com/trustpool/trustpool/internal/eventlog/eventlogtest"
)

// parseAndCheck runs Parse and CheckEvents in every bank it can hash.
func parseAndCheck(raw []byte) error {
	l, err := eventlog.Parse(raw)
	if err != nil {
		return err
	}
	for _, alg := range l.Banks() {
		if _, ok := alg.Hash(); ok {
			if err := eventlog.CheckEvents(l, alg); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestCheckEventsGoTPMTools: every real log go-tpm-tools ships passes the
// event rules in every bank.
func TestCheckEventsGoTPMTools(t *testing.T) {
	for name, raw := range eventlogtest.GoTPMToolsLogs(t) {
		t.Run(name, func(t *testing.T) {
			if err := parseAndCheck(raw); err != nil {
				t.Errorf("Parse+CheckEvents: %v", err)
			}
		})
	}
}

// TestCheckEventsGenerated runs the generated edge cases (see
// eventlogtest.Generated): valid ones pass, the others fail with their
// sentinel.
func TestCheckEventsGenerated(t *testing.T) {
	for _, c := range eventlogtest.Generated(t) {
		t.Run(c.Name, func(t *testing.T) {
			err := parseAndCheck(c.Log)
			if (c.Want == nil && err != nil) || !errors.Is(err, c.Want) {
				t.Errorf("Parse+CheckEvents: %v, want %v (%s)", err, c.Want, c.Why)
			}
		})
	}
}

// TestCheckEventsRules proves each rule of CheckEvents rejects: every case
// edits the records of a valid generated log (bootseed build-a, SHA-1 and
// SHA-256 banks) in one way.
func TestCheckEventsRules(t *testing.T) {
	banks := eventlogtest.Banks(eventlog.SHA1, eventlog.SHA256)
	baseLog := eventlogtest.Generated(t)[0]
	if baseLog.Name != "base-sha1-sha256" {
		t.Fatalf("first generated case is %s", baseLog.Name)
	}
	l, err := eventlog.Parse(baseLog.Log)
	if err != nil {
		t.Fatal(err)
	}
	base := eventlogtest.Recs(l)
	first := func(recs []eventlogtest.Rec, f func(r eventlogtest.Rec) bool) int {
		i := slices.IndexFunc(recs, f)
		if i < 0 {
			t.Fatal("no matching record")
		}
		return i
	}
	ofType := func(typ eventlog.EventType, pcr uint32) func(r eventlogtest.Rec) bool {
		return func(r eventlogtest.Rec) bool { return r.Type == typ && r.PCR == pcr }
	}
	// remeasure keeps the record but makes its digests H(data) again.
	remeasure := func(r eventlogtest.Rec) eventlogtest.Rec {
		return eventlogtest.Measure(banks, r.PCR, r.Type, r.Data, r.Data)
	}
	sep := func(pcr uint32, data []byte) eventlogtest.Rec {
		return eventlogtest.Measure(banks, pcr, eventlog.EvSeparator, data, data)
	}
	isEBS := func(r eventlogtest.Rec) bool {
		return r.PCR == 5 && r.Type == eventlog.EvEFIAction && string(r.Data) == "Exit Boot Services Invocation"
	}
	grubCmd := func(s string) eventlogtest.Rec {
		return eventlogtest.Measure(banks, 8, eventlog.EvIPL, []byte(s), []byte("grub_cmd: "+s+"\x00"))
	}
	secureBootOn := eventlogtest.Measure(banks, 7, eventlog.EvEFIVariableDriverConf, nil, nil)
	for _, r := range base {
		if r.Type == eventlog.EvEFIVariableDriverConf && r.PCR == 7 {
			secureBootOn = r // SecureBoot=1 is the first variable
			break
		}
	}
	cases := []struct {
		name string
		edit func(recs []eventlogtest.Rec) []eventlogtest.Rec
		want error
	}{
		{"accepted_unchanged", func(r []eventlogtest.Rec) []eventlogtest.Rec { return r }, nil},
		{"accepted_unknown_type_outside_boot_pcrs", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return append(r, eventlogtest.Measure(banks, 14, 0x7fff0001, []byte("x"), []byte("x")))
		}, nil},
		{"unknown_type", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			r[first(r, ofType(eventlog.EvEFIBootServicesApp, 4))].Type = 0x7fff0001
			return r
		}, eventlog.ErrEventType},
		{"ev_unused", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			r[first(r, ofType(eventlog.EvIPL, 9))].Type = eventlog.EvUnused
			return r
		}, eventlog.ErrEventType},
		{"no_action_nonzero_digest", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			na := eventlogtest.NoAction(banks, 0, eventlogtest.StartupLocality(0))
			na.Digests[1].Value = bytes.Repeat([]byte{1}, 32)
			return slices.Insert(r, 0, na)
		}, eventlog.ErrEventData},
		{"separator_data_size", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			r[first(r, ofType(eventlog.EvSeparator, 4))] = sep(4, []byte{0, 0, 0, 0, 0})
			return r
		}, eventlog.ErrSeparator},
		{"separator_value", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			r[first(r, ofType(eventlog.EvSeparator, 4))] = sep(4, []byte{1, 0, 0, 0})
			return r
		}, eventlog.ErrSeparator},
		{"separator_error_value_accepted", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			r[first(r, ofType(eventlog.EvSeparator, 4))] = sep(4, []byte{0xff, 0xff, 0xff, 0xff})
			return r
		}, nil},
		{"separator_digest", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			i := first(r, ofType(eventlog.EvSeparator, 4))
			r[i] = eventlogtest.Measure(banks, 4, eventlog.EvSeparator, []byte{0xff, 0xff, 0xff, 0xff}, []byte{0, 0, 0, 0})
			return r
		}, eventlog.ErrEventData},
		{"separator_duplicated", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return slices.Insert(r, first(r, isEBS), sep(4, []byte{0, 0, 0, 0}))
		}, eventlog.ErrSeparator},
		{"separator_missing", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return slices.Delete(r, first(r, ofType(eventlog.EvSeparator, 5)), first(r, ofType(eventlog.EvSeparator, 5))+1)
		}, eventlog.ErrSeparator},
		{"efi_action_data", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			r[first(r, ofType(eventlog.EvEFIAction, 4))].Data = []byte("Calling EFI Application from Boot Option!")
			return r
		}, eventlog.ErrEventData},
		{"secure_boot_variable_data", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			d := r[first(r, ofType(eventlog.EvEFIVariableDriverConf, 7))].Data
			d[len(d)-1] ^= 1 // SecureBoot 1 -> 0, digest unchanged
			return r
		}, eventlog.ErrEventData},
		{"driver_config_malformed", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			i := first(r, ofType(eventlog.EvEFIVariableDriverConf, 7))
			binary.LittleEndian.PutUint64(r[i].Data[24:], 1000) // VariableDataLength beyond the data
			r[i] = remeasure(r[i])
			return r
		}, eventlog.ErrEventData},
		{"boot_variable_digest", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			i := first(r, ofType(eventlog.EvEFIVariableBoot, 1))
			r[i] = eventlogtest.Measure(banks, 1, eventlog.EvEFIVariableBoot, []byte("another BootOrder"), r[i].Data)
			return r
		}, eventlog.ErrEventData},
		{"authority_malformed", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			i := first(r, ofType(eventlog.EvEFIVariableAuthority, 7))
			r[i].Data = r[i].Data[:20]
			return r
		}, eventlog.ErrEventData},
		{"gpt_data", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			r[first(r, ofType(eventlog.EvEFIGPTEvent, 5))].Data[0] ^= 1
			return r
		}, eventlog.ErrEventData},
		{"app_retyped_as_driver", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			r[first(r, ofType(eventlog.EvEFIBootServicesApp, 4))].Type = eventlog.EvEFIBootServicesDriver
			return r
		}, eventlog.ErrEventType},
		{"firmware_blob_in_pcr4", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			r[first(r, ofType(eventlog.EvEFIBootServicesApp, 4))].Type = eventlog.EvEFIPlatformFirmware
			return r
		}, eventlog.ErrEventType},
		{"action_in_pcr8", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			a := []byte("grub_cmd: linux /evil")
			return slices.Insert(r, first(r, isEBS), eventlogtest.Measure(banks, 8, eventlog.EvEFIAction, a, a))
		}, eventlog.ErrEventType},
		{"variable_in_pcr0", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			v := secureBootOn
			v.PCR = 0
			return slices.Insert(r, 1, v)
		}, eventlog.ErrEventType},
		{"accepted_nonhost_info_in_pcr0", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return slices.Insert(r, 1, eventlogtest.Measure(banks, 0, eventlog.EvNonhostInfo, []byte("FV"), []byte("GCE NonHostInfo\x00")))
		}, nil},
		{"firmware_blob_after_pcr0_separator", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return slices.Insert(r, first(r, isEBS), eventlogtest.Measure(banks, 0, eventlog.EvEFIPlatformFirmware, []byte("late FV"), make([]byte, 16)))
		}, eventlog.ErrEventOrder},
		{"secure_boot_after_pcr7_separator", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return slices.Insert(r, first(r, isEBS), secureBootOn)
		}, eventlog.ErrEventOrder},
		{"accepted_authority_after_pcr7_separator", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			a := r[first(r, ofType(eventlog.EvEFIVariableAuthority, 7))]
			return slices.Insert(r, first(r, isEBS), a)
		}, nil},
		{"grub_command_after_exit_boot_services", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return append(r, grubCmd("linux /boot/vmlinuz quiet"))
		}, eventlog.ErrEventOrder},
		{"grub_file_after_exit_boot_services", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return append(r, eventlogtest.Measure(banks, 9, eventlog.EvIPL, []byte("kernel"), []byte("/boot/vmlinuz\x00")))
		}, eventlog.ErrEventOrder},
		{"application_after_exit_boot_services", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return append(r, r[first(r, ofType(eventlog.EvEFIBootServicesApp, 4))])
		}, eventlog.ErrEventOrder},
		{"accepted_exit_boot_services_retried", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			return append(r, r[first(r, isEBS)])
		}, nil},
		{"grub_command_line", func(r []eventlogtest.Rec) []eventlogtest.Rec {
			i := first(r, func(r eventlogtest.Rec) bool {
				return r.PCR == 8 && bytes.HasPrefix(r.Data, []byte("kernel_cmdline: "))
			})
			r[i].Data = bytes.Replace(r[i].Data, []byte(" quiet"), []byte(" QUIET"), 1)
			return r
		}, eventlog.ErrEventData},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			recs := make([]eventlogtest.Rec, len(base))
			for i, r := range base {
				recs[i] = r
				recs[i].Data = bytes.Clone(r.Data)
				recs[i].Digests = slices.Clone(r.Digests)
			}
			err := parseAndCheck(eventlogtest.EncodeCryptoAgile(banks, nil, c.edit(recs)))
			if (c.want == nil && err != nil) || !errors.Is(err, c.want) {
				t.Errorf("Parse+CheckEvents: %v, want %v", err, c.want)
			}
			var ee *eventlog.EventError
			if c.want != nil && !errors.Is(c.want, eventlog.ErrMalformed) && !errors.As(err, &ee) {
				t.Errorf("%v is not an *EventError", err)
			}
		})
	}
}
