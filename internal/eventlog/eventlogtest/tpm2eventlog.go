package eventlogtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	_ "crypto/sha1" // register the hashes for crypto.Hash
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TPM2Event is one event record as tpm2_eventlog(1) printed it.
type TPM2Event struct {
	PCR uint32
	// Type is tpm2-tools' name ("EV_SEPARATOR"; "Unknown event type" for
	// types tpm2-tools 5.4 does not know).
	Type string
	// SpecID is set on the Spec ID Event03 header of a crypto-agile log.
	SpecID bool
	// Digests maps bank name ("sha256") to the lowercase hex digest.
	Digests map[string]string
	// Data is the event data when tpm2_eventlog printed it as raw hex; nil
	// when it decoded the data into fields.
	Data []byte
	// Fields are the decoded "key: value" lines of the event data
	// (UEFI variables: "UnicodeName", "VariableData"...), unquoted.
	Fields map[string]string
}

// TPM2Log is what tpm2_eventlog printed for one log file.
type TPM2Log struct {
	// Events are all records in log order, the Spec ID header included.
	Events []TPM2Event
	// PCRs maps bank name -> PCR index -> lowercase hex ("pcrs:" section).
	PCRs map[string]map[uint32]string
	// Stderr holds tpm2_eventlog's warnings.
	Stderr string
}

// RequireTPM2Eventlog returns the path of tpm2_eventlog. Tests needing it
// are skipped under -short; otherwise a missing tool (Debian package
// tpm2-tools) fails the test.
func RequireTPM2Eventlog(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs tpm2_eventlog (tpm2-tools); skipped with -short")
	}
	p, err := exec.LookPath("tpm2_eventlog")
	if err != nil {
		t.Fatalf("tpm2_eventlog (Debian package tpm2-tools) is required: %v", err)
	}
	return p
}

// RunTPM2Eventlog runs tpm2_eventlog on file and parses its output. The
// test fails when the tool fails or prints no PCRs.
func RunTPM2Eventlog(t testing.TB, file string) *TPM2Log {
	t.Helper()
	out, stderr := TPM2EventlogOutput(t, file)
	l, err := parseTPM2Eventlog(out)
	if err != nil {
		t.Fatalf("tpm2_eventlog %s: %v", file, err)
	}
	l.Stderr = stderr
	return l
}

// TPM2EventlogOutput runs tpm2_eventlog with args on file and returns what
// it printed on stdout (YAML) and stderr (its warnings and errors). With
// "--eventlog-version=2" tpm2-tools decodes the Secure Boot variables'
// EFI_SIGNATURE_LISTs and warns about structures that do not add up. The
// test fails when the tool fails.
func TPM2EventlogOutput(t testing.TB, file string, args ...string) (stdout []byte, stderr string) {
	t.Helper()
	tool := RequireTPM2Eventlog(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, append(args, file)...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tpm2_eventlog %s: %v: %s", file, err, errb.String())
	}
	return out, errb.String()
}

func unquote(s string) string { return strings.Trim(strings.TrimSpace(s), `"`) }

// parseTPM2Eventlog reads the parts of tpm2-tools 5.4's YAML we need, line
// by line: events start at "  PCRIndex:" (crypto-agile events also have a
// "- EventNum:" line before it, legacy ones do not).
func parseTPM2Eventlog(out []byte) (*TPM2Log, error) {
	l := &TPM2Log{PCRs: map[string]map[uint32]string{}}
	var cur *TPM2Event
	inPCRs := false
	alg, bank := "", ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if line == "pcrs:" {
			inPCRs = true
			continue
		}
		if inPCRs {
			switch {
			case strings.HasPrefix(line, "    "):
				idx, val, ok := strings.Cut(line, ":")
				if !ok || bank == "" {
					return nil, fmt.Errorf("unexpected PCR line %q", line)
				}
				i, err := strconv.ParseUint(strings.TrimSpace(idx), 10, 32)
				if err != nil {
					return nil, fmt.Errorf("PCR line %q: %w", line, err)
				}
				l.PCRs[bank][uint32(i)] = strings.TrimPrefix(strings.TrimSpace(val), "0x")
			case strings.HasPrefix(line, "  ") && strings.HasSuffix(line, ":"):
				bank = strings.TrimSuffix(strings.TrimSpace(line), ":")
				l.PCRs[bank] = map[uint32]string{}
			}
			continue
		}
		key, val, _ := strings.Cut(line, ":")
		switch key {
		case "  PCRIndex":
			i, err := strconv.ParseUint(strings.TrimSpace(val), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("line %q: %w", line, err)
			}
			l.Events = append(l.Events, TPM2Event{PCR: uint32(i), Digests: map[string]string{}, Fields: map[string]string{}})
			cur = &l.Events[len(l.Events)-1]
			alg = ""
		case "  EventType", "  SpecID", "  - AlgorithmId", "    Digest", "  Digest", "  Event":
			if cur == nil {
				return nil, fmt.Errorf("line %q before the first event", line)
			}
			switch key {
			case "  EventType":
				cur.Type = strings.TrimSpace(val)
			case "  SpecID":
				cur.SpecID = true
			case "  - AlgorithmId":
				alg = strings.TrimSpace(val)
			case "    Digest":
				if alg == "" {
					return nil, fmt.Errorf("digest without algorithm: %q", line)
				}
				cur.Digests[alg] = unquote(val)
			case "  Digest": // the Spec ID header's SHA-1-sized digest
				cur.Digests["sha1"] = unquote(val)
			case "  Event":
				// Raw data is a quoted hex string; strings (EV_IPL...)
				// are YAML block scalars ("|-") and not kept.
				if v := strings.TrimSpace(val); strings.HasPrefix(v, `"`) {
					v = unquote(v)
					d, err := hex.DecodeString(v)
					if err != nil {
						return nil, fmt.Errorf("event data %q: %w", line, err)
					}
					cur.Data = d
				}
			}
		default:
			// Decoded event data: "    Key: value" right under "  Event:".
			if cur != nil && strings.HasPrefix(key, "    ") && !strings.HasPrefix(key, "     ") && !strings.HasPrefix(key, "    -") && val != "" {
				cur.Fields[strings.TrimSpace(key)] = unquote(val)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(l.PCRs) == 0 {
		return nil, fmt.Errorf("printed no PCRs")
	}
	return l, nil
}

// BankHash maps tpm2-tools' bank names to the hashes this package can
// compute (SM3 is not among them).
var BankHash = map[string]crypto.Hash{"sha1": crypto.SHA1, "sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}

func extend(h crypto.Hash, cur []byte, digestHex string) ([]byte, error) {
	d, err := hex.DecodeString(digestHex)
	if err != nil || len(d) != h.Size() {
		return nil, fmt.Errorf("digest %q is not a %v digest", digestHex, h)
	}
	hh := h.New()
	hh.Write(cur)
	hh.Write(d)
	return hh.Sum(nil), nil
}

func (l *TPM2Log) replay(skip func(e *TPM2Event) bool, start func(pcr uint32, size int) []byte) (map[string]map[uint32]string, error) {
	out := map[string]map[uint32]string{}
	for bank, h := range BankHash {
		vals := map[uint32][]byte{}
		for i := range l.Events {
			e := &l.Events[i]
			if e.SpecID || skip(e) {
				continue
			}
			d, ok := e.Digests[bank]
			if !ok {
				continue
			}
			cur, ok := vals[e.PCR]
			if !ok {
				cur = start(e.PCR, h.Size())
			}
			v, err := extend(h, cur, d)
			if err != nil {
				return nil, fmt.Errorf("event %d: %w", i, err)
			}
			vals[e.PCR] = v
		}
		if len(vals) == 0 {
			continue
		}
		m := map[uint32]string{}
		for i, v := range vals {
			m[i] = hex.EncodeToString(v)
		}
		out[bank] = m
	}
	return out, nil
}

// ReplayTPM2Tools replays the events the way tpm2-tools 5.4 does: every
// event after the Spec ID header is extended, EV_NO_ACTION included, from
// all-zero PCRs (StartupLocality is ignored). Its result must equal
// [TPM2Log.PCRs] in every bank listed in [BankHash]; that checks this
// parser read the events tpm2_eventlog replayed.
func (l *TPM2Log) ReplayTPM2Tools() (map[string]map[uint32]string, error) {
	return l.replay(func(*TPM2Event) bool { return false }, func(_ uint32, n int) []byte { return make([]byte, n) })
}

// StartupLocality returns the locality of the StartupLocality EV_NO_ACTION
// event in PCR 0 (TCG PC Client PFP 10.4.5.3), or 0.
func (l *TPM2Log) StartupLocality() byte {
	for _, e := range l.Events {
		if e.PCR == 0 && e.Type == "EV_NO_ACTION" && len(e.Data) == 17 && string(e.Data[:16]) == "StartupLocality\x00" {
			return e.Data[16]
		}
	}
	return 0
}

// ReplayTPM replays tpm2_eventlog's events with the semantics of the TPM
// and the TCG PC Client Platform Firmware Profile: EV_NO_ACTION events are
// never extended (10.4.5) and PCR 0 starts at 00..00LL where LL is the
// StartupLocality (10.4.5.3). These are the values a quote of a real TPM
// reports for a complete log.
func (l *TPM2Log) ReplayTPM() (map[string]map[uint32]string, error) {
	loc := l.StartupLocality()
	return l.replay(func(e *TPM2Event) bool { return e.Type == "EV_NO_ACTION" }, func(pcr uint32, n int) []byte {
		b := make([]byte, n)
		if pcr == 0 {
			b[n-1] = loc
		}
		return b
	})
}
