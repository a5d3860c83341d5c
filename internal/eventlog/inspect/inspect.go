// Package inspect implements the operator command
// "trustpool-attestation inspect-eventlog FILE": it reads a TCG firmware
// event log offline and prints, as JSON, the replayed PCR values of every
// bank the log carries, the boot facts and the result of the consistency
// rules. Its PCR values agree with tpm2_eventlog(1) from tpm2-tools.
//
// Nothing here is verified: an offline log is not backed by a quote. The
// report says so ("verified": false) so it cannot be mistaken for an
// attestation result. For every fact it reports or withholds, "fact_pcrs"
// names the PCRs the fact is read from and whether a profile checking it
// must pin them for the fact to be trustworthy (see package eventlog).
package inspect

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/trustpool/trustpool/internal/eventlog"
)

// Report is the JSON document inspect-eventlog prints.
type Report struct {
	File     string   `json:"file,omitempty"`
	Verified bool     `json:"verified"`
	Format   string   `json:"format"`
	Events   int      `json:"events"`
	Banks    []string `json:"banks"`
	// PCRs maps bank name -> PCR index -> hex value.
	PCRs map[string]map[string]string `json:"pcrs"`
	// Boot are facts from the SHA-256 bank (SHA-1 for legacy logs).
	Boot *eventlog.BootFacts `json:"boot_facts,omitempty"`
	// Consistency is "ok" or the first violated rule for that bank.
	Consistency map[string]string `json:"consistency"`
	// FactPCRs: for every reported or withheld fact, where it comes from.
	FactPCRs map[string]FactSource `json:"fact_pcrs,omitempty"`
}

// FactSource says which PCRs a fact is read from and whether a profile
// must pin them for the fact to be trustworthy.
type FactSource struct {
	PCRs        []int `json:"pcrs"`
	PinRequired bool  `json:"pin_required"`
}

// Inspect parses and replays log.
func Inspect(log []byte) (*Report, error) {
	l, err := eventlog.Parse(log)
	if err != nil {
		return nil, fmt.Errorf("inspect event log: %w", err)
	}
	r := &Report{Format: "crypto-agile", Events: len(l.Events), PCRs: map[string]map[string]string{}, Consistency: map[string]string{}}
	if l.Format == eventlog.FormatSHA1 {
		r.Format = "sha1"
	}
	factsBank := eventlog.SHA1
	for _, alg := range l.Banks() {
		r.Banks = append(r.Banks, alg.String())
		if _, ok := alg.Hash(); !ok {
			r.Consistency[alg.String()] = "bank not replayable (unsupported hash)"
			continue
		}
		vals, err := l.Replay(alg)
		if err != nil {
			return nil, fmt.Errorf("inspect event log: %w", err)
		}
		m := map[string]string{}
		for i, v := range vals {
			m[strconv.Itoa(int(i))] = hex.EncodeToString(v)
		}
		r.PCRs[alg.String()] = m
		if err := eventlog.CheckEvents(l, alg); err != nil {
			r.Consistency[alg.String()] = err.Error()
		} else {
			r.Consistency[alg.String()] = "ok"
		}
		if alg == eventlog.SHA256 {
			factsBank = alg
		}
	}
	if l.HasBank(factsBank) {
		if r.Boot, err = eventlog.ExtractBootFacts(l, factsBank, nil); err != nil {
			return nil, fmt.Errorf("inspect event log: %w", err)
		}
		r.FactPCRs = map[string]FactSource{}
		add := func(fact string) {
			if pcrs, pin := eventlog.FactPCRs(fact); pcrs != nil {
				r.FactPCRs[fact] = FactSource{PCRs: pcrs, PinRequired: pin}
			}
		}
		for fact := range r.Boot.Map() {
			add(fact)
		}
		for fact := range r.Boot.Withheld {
			add(fact)
		}
	}
	return r, nil
}

// Main runs "inspect-eventlog FILE" with args = [FILE] and returns the exit
// code (0 ok, 1 unreadable or malformed log, 2 usage).
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: inspect-eventlog FILE")
		return 2
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "inspect-eventlog: %v\n", err)
		return 1
	}
	r, err := Inspect(b)
	if err != nil {
		fmt.Fprintf(stderr, "inspect-eventlog: %s: %v\n", args[0], err)
		return 1
	}
	r.File = args[0]
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		fmt.Fprintf(stderr, "inspect-eventlog: %v\n", err)
		return 1
	}
	return 0
}
