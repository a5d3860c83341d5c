package evidence

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/trustpool/trustpool/internal/eventlog"
)

// Limits on evidence sizes.
const (
	MaxAttestSize    = 4096
	MaxSignatureSize = 1024
	// MinNonceSize is the minimum nonce length (128 bits).
	MinNonceSize = 16
	// MaxNonceSize is the largest nonce a TPM accepts as qualifying data
	// with a SHA-256 AK.
	MaxNonceSize = 32
	// DefaultNonceLifetime applies when Options.NonceLifetime is zero.
	DefaultNonceLifetime = 2 * time.Minute
	// IMAPCR is the PCR IMA extends.
	IMAPCR = 10
)

const (
	tpmGeneratedValue = 0xff544347 // TPM_GENERATED_VALUE
	numPCRs           = 24
)

// Challenge is what the verifier asked a host for: a fresh nonce and a
// SHA-256 PCR selection.
type Challenge struct {
	Nonce    []byte
	IssuedAt time.Time
	// Host is the host the nonce was issued to; [Ledger.Consume] returns
	// the challenge only for that host.
	Host string
	// PCRs is the requested SHA-256 selection (indices 0-23).
	PCRs []int
	// Used is true when the nonce store says the nonce was already consumed.
	Used bool
}

// NewChallenge draws a 32-byte nonce from rand for host (not empty).
func NewChallenge(rand io.Reader, now time.Time, host string, pcrs []int) (Challenge, error) {
	if host == "" {
		return Challenge{}, fmt.Errorf("new challenge: %w: no host", ErrNonceHost)
	}
	n := make([]byte, MaxNonceSize)
	if _, err := io.ReadFull(rand, n); err != nil {
		return Challenge{}, fmt.Errorf("new challenge: read random: %w", err)
	}
	return Challenge{Nonce: n, IssuedAt: now, Host: host, PCRs: slices.Clone(pcrs)}, nil
}

// Evidence is what the agent returns for a challenge. Only the fields the
// verifier needs; they are all untrusted.
type Evidence struct {
	// Attest is the TPMS_ATTEST the TPM signed (TPM2B_ATTEST contents).
	Attest []byte `json:"attest"`
	// Signature is the marshalled TPMT_SIGNATURE.
	Signature []byte `json:"signature"`
	// PCRs holds the SHA-256 values of the quoted PCRs.
	PCRs map[int][]byte `json:"pcrs"`
	// EventLog is the TCG firmware event log (may be empty in steady state,
	// see [Previous]).
	EventLog []byte `json:"event_log,omitempty"`
	// IMALog holds binary IMA entries starting at byte IMAOffset of the
	// agent's list; IMAHashSize is its template-hash column size (20 for
	// the classic list, 32 for binary_runtime_measurements_sha256).
	IMALog      []byte `json:"ima_log,omitempty"`
	IMAOffset   int64  `json:"ima_offset"`
	IMAHashSize int    `json:"ima_hash_size,omitempty"`
}

// ClockInfo is TPMS_CLOCK_INFO from a verified quote.
type ClockInfo struct {
	Clock        uint64 `json:"clock"`
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
	Safe         bool   `json:"safe"`
}

// Previous is the state of the last successful verification for this AK,
// kept by the caller. A nil *Previous means first attestation.
type Previous struct {
	Clock ClockInfo
	// PCRs, EventLogDigest and Boot allow steady state: when no reboot
	// happened and PCRs 0-9 equal these, the event log may be omitted (or
	// equal EventLogDigest) and Boot is reused.
	PCRs           map[int][]byte
	EventLogDigest []byte
	Boot           *eventlog.BootFacts
	IMA            eventlog.IMAState
}

// Options tune Verify. The zero value is the strict default.
type Options struct {
	// Now is the verifier's current time (required).
	Now time.Time
	// NonceLifetime: zero means DefaultNonceLifetime.
	NonceLifetime time.Duration
	// AllowMissingEventLog accepts a quote without a firmware event log
	// (no boot facts then). Default false: a log is required.
	AllowMissingEventLog bool
	// ReplayPCRs are the PCRs whose quoted value must equal the event-log
	// replay when quoted. Nil means 0-9.
	ReplayPCRs []int
}

// IMAResult is the outcome of the IMA replay.
type IMAResult struct {
	// New are the entries verified in this round.
	New []eventlog.IMAEntry
	// State is where the next round starts.
	State eventlog.IMAState
}

// Result holds only verified data.
type Result struct {
	// PCRs are the quoted SHA-256 values.
	PCRs            map[int][]byte
	Clock           ClockInfo
	FirmwareVersion uint64
	// Rebooted is true when reset or restart count increased since
	// Previous: the host must be re-evaluated from a full log.
	Rebooted bool
	// Boot is nil when no event log was required and none was sent.
	Boot           *eventlog.BootFacts
	EventLogDigest []byte
	IMA            *IMAResult
	// AttestDigest is SHA-256 of the attest bytes.
	AttestDigest []byte
}

// Verify checks a quote and its logs (see the package doc for the checks,
// in order) and returns the verified result, or an error wrapping one of
// the package's sentinel errors.
func Verify(b Binding, ch Challenge, ev *Evidence, prev *Previous, opts Options) (*Result, error) {
	res, err := verify(b, ch, ev, prev, opts)
	if err != nil {
		return nil, fmt.Errorf("verify quote: %w", err)
	}
	return res, nil
}

func verify(b Binding, ch Challenge, ev *Evidence, prev *Previous, opts Options) (*Result, error) {
	// 1-2. AK bound to this EK, acceptable AK.
	if !b.Activated || b.AK == nil || b.EK == nil {
		return nil, ErrAKNotActivated
	}
	ak := b.AK
	if !ak.checked {
		var err error
		if ak, err = ParseAKPublic(b.AK.Public); err != nil {
			return nil, err
		}
	}
	// 3. Challenge.
	if len(ch.Nonce) < MinNonceSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrNonceTooShort, len(ch.Nonce))
	}
	if ch.Used {
		return nil, ErrNonceReused
	}
	life := opts.NonceLifetime
	if life <= 0 {
		life = DefaultNonceLifetime
	}
	if opts.Now.IsZero() || ch.IssuedAt.IsZero() || opts.Now.Before(ch.IssuedAt) || opts.Now.Sub(ch.IssuedAt) > life {
		return nil, fmt.Errorf("%w: issued %s, now %s, lifetime %s", ErrNonceExpired, ch.IssuedAt.UTC().Format(time.RFC3339), opts.Now.UTC().Format(time.RFC3339), life)
	}
	want, err := selectionBitmap(ch.PCRs)
	if err != nil {
		return nil, err
	}
	// 4. Sizes.
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", ErrMalformed)
	}
	if len(ev.Attest) > MaxAttestSize || len(ev.Signature) > MaxSignatureSize || len(ev.EventLog) > eventlog.MaxLogSize || len(ev.IMALog) > eventlog.MaxIMAChunk || len(ev.PCRs) > numPCRs {
		return nil, ErrTooLarge
	}
	// 5. Signature over the raw attest bytes, before reading them.
	if err := verifySignature(ak, ev.Attest, ev.Signature); err != nil {
		return nil, err
	}
	// 6. Magic, type, structure.
	att, err := parseQuoteAttest(ev.Attest)
	if err != nil {
		return nil, err
	}
	// 7. Nonce.
	if subtle.ConstantTimeCompare(att.extraData, ch.Nonce) != 1 {
		return nil, ErrNonceMismatch
	}
	// 8. Selection.
	var got []byte
	for _, s := range att.selections {
		if s.hash == tpm2.TPMAlgSHA256 && !allZero(s.bitmap) {
			got = s.bitmap
		}
	}
	if got == nil {
		return nil, ErrSHA256Missing
	}
	if len(att.selections) != 1 || !bytes.Equal(trimBitmap(got), trimBitmap(want)) {
		return nil, fmt.Errorf("%w: quoted %s, requested %v", ErrPCRSelection, describeSelection(att.selections), ch.PCRs)
	}
	// 9. PCR values and digest.
	sel := slices.Clone(ch.PCRs)
	slices.Sort(sel)
	if len(ev.PCRs) != len(sel) {
		return nil, fmt.Errorf("%w: %d values for %d selected PCRs", ErrPCRValues, len(ev.PCRs), len(sel))
	}
	h := sha256.New()
	pcrs := make(map[int][]byte, len(sel))
	for _, i := range sel {
		v, ok := ev.PCRs[i]
		if !ok || len(v) != sha256.Size {
			return nil, fmt.Errorf("%w: PCR %d missing or not 32 bytes", ErrPCRValues, i)
		}
		h.Write(v)
		pcrs[i] = bytes.Clone(v)
	}
	if subtle.ConstantTimeCompare(h.Sum(nil), att.pcrDigest) != 1 {
		return nil, ErrPCRDigest
	}
	// 10. Boot PCRs extended.
	for _, i := range sel {
		if i < 8 && (allZero(pcrs[i]) || allFF(pcrs[i])) {
			return nil, fmt.Errorf("%w: PCR %d", ErrPCRNotExtended, i)
		}
	}
	res := &Result{
		PCRs:            pcrs,
		Clock:           att.clock,
		FirmwareVersion: att.firmware,
	}
	ad := sha256.Sum256(ev.Attest)
	res.AttestDigest = ad[:]
	// 11. Clock and counters.
	if prev != nil {
		if err := checkClock(prev.Clock, res.Clock); err != nil {
			return nil, err
		}
		res.Rebooted = res.Clock.ResetCount != prev.Clock.ResetCount || res.Clock.RestartCount != prev.Clock.RestartCount
	}
	// 12-14. Event log.
	if err := verifyEventLog(ev, prev, opts, res); err != nil {
		return nil, err
	}
	// 15. IMA.
	if err := verifyIMA(ev, prev, res); err != nil {
		return nil, err
	}
	return res, nil
}

func checkClock(prev, cur ClockInfo) error {
	if cur.ResetCount < prev.ResetCount {
		return fmt.Errorf("%w: resetCount %d -> %d", ErrCounterRollback, prev.ResetCount, cur.ResetCount)
	}
	if cur.ResetCount == prev.ResetCount && cur.RestartCount < prev.RestartCount {
		return fmt.Errorf("%w: restartCount %d -> %d", ErrCounterRollback, prev.RestartCount, cur.RestartCount)
	}
	if cur.Clock < prev.Clock {
		sameBoot := cur.ResetCount == prev.ResetCount && cur.RestartCount == prev.RestartCount
		if sameBoot || cur.Safe {
			return fmt.Errorf("%w: clock %d -> %d (safe=%v)", ErrClockImplausible, prev.Clock, cur.Clock, cur.Safe)
		}
	}
	return nil
}

func verifyEventLog(ev *Evidence, prev *Previous, opts Options, res *Result) error {
	replayPCRs := opts.ReplayPCRs
	if replayPCRs == nil {
		replayPCRs = LogPCRs
	}
	var quotedReplay []int
	for _, i := range replayPCRs {
		if _, ok := res.PCRs[i]; ok {
			quotedReplay = append(quotedReplay, i)
		}
	}
	// Steady state: no reboot and the replayed PCRs did not move (facts
	// derived by older rules are derived again).
	if prev != nil && !res.Rebooted && prev.Boot != nil && prev.Boot.Version == eventlog.FactsVersion && len(quotedReplay) > 0 {
		same := true
		for _, i := range quotedReplay {
			if !bytes.Equal(prev.PCRs[i], res.PCRs[i]) {
				same = false
				break
			}
		}
		if same {
			if len(ev.EventLog) == 0 {
				res.Boot, res.EventLogDigest = prev.Boot, prev.EventLogDigest
				return nil
			}
			d := sha256.Sum256(ev.EventLog)
			if bytes.Equal(d[:], prev.EventLogDigest) {
				res.Boot, res.EventLogDigest = prev.Boot, prev.EventLogDigest
				return nil
			}
		}
	}
	if len(ev.EventLog) == 0 {
		if opts.AllowMissingEventLog {
			return nil
		}
		return ErrEventLogMissing
	}
	l, replay, err := replayEventLog(ev.EventLog)
	if err != nil {
		return err
	}
	var bad []int
	for _, i := range quotedReplay {
		if subtle.ConstantTimeCompare(replayed(replay, i), res.PCRs[i]) != 1 {
			bad = append(bad, i)
		}
	}
	if len(bad) > 0 {
		return newReplayError(bad)
	}
	facts, err := bootFacts(l, quotedReplay)
	if err != nil {
		return err
	}
	res.Boot = facts
	d := sha256.Sum256(ev.EventLog)
	res.EventLogDigest = d[:]
	return nil
}

// replayEventLog parses a firmware event log, applies the consistency
// rules to its SHA-256 bank and replays it (checks 12 and 13).
func replayEventLog(raw []byte) (*eventlog.Log, map[uint32][]byte, error) {
	l, err := eventlog.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrEventLog, err)
	}
	if !l.HasBank(eventlog.SHA256) {
		return nil, nil, ErrEventLogBank
	}
	if err := eventlog.CheckEvents(l, eventlog.SHA256); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrEventData, err)
	}
	replay, err := l.Replay(eventlog.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrEventLog, err)
	}
	return l, replay, nil
}

// replayed is PCR i's replayed value: a PCR the log never extends is in its
// reset state, zero.
func replayed(replay map[uint32][]byte, i int) []byte {
	if r, ok := replay[uint32(i)]; ok { //nolint:gosec // PCR indexes are small
		return r
	}
	return make([]byte, sha256.Size)
}

// bootFacts reads the boot facts from the events of the PCRs in use (the
// ones whose replay is proven).
func bootFacts(l *eventlog.Log, use []int) (*eventlog.BootFacts, error) {
	verified := make(map[uint32]bool, len(use))
	for _, i := range use {
		verified[uint32(i)] = true //nolint:gosec // PCR indexes are small
	}
	facts, err := eventlog.ExtractBootFacts(l, eventlog.SHA256, func(pcr uint32) bool { return verified[pcr] })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEventData, err)
	}
	return facts, nil
}

// LogPCRs are the PCRs a firmware event log accounts for (those [Verify]
// replays by default).
var LogPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// Reference is what a firmware event log predicts a host that booted it
// will prove.
type Reference struct {
	// PCRs are the SHA-256 values of PCRs 0-9 after the boot ([LogPCRs]; a
	// PCR the log does not extend is zero, as the TPM reports it).
	PCRs map[int][]byte
	// Boot are the boot facts a verifier reads from the log once the quote
	// proves PCRs 0-9.
	Boot *eventlog.BootFacts
}

// ReferenceFromEventLog computes reference values offline, from the event
// log a build pipeline captured, with the verifier's own code: the log
// must pass the checks [Verify] makes on a host's log (12 and 13), the
// PCRs are its replay and the facts are read as from a host whose quote of
// PCRs 0-9 matched that replay. So a profile learned from the result
// equals one learned from a host that booted this log. Nothing proves the
// log is what a host will boot: that is the pipeline's word, and the
// values only ever accept quotes that match them.
func ReferenceFromEventLog(raw []byte) (*Reference, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("reference values from event log: %w", ErrEventLogMissing)
	}
	if len(raw) > eventlog.MaxLogSize {
		return nil, fmt.Errorf("reference values from event log: %w: event log of %d bytes (at most %d)", ErrTooLarge, len(raw), eventlog.MaxLogSize)
	}
	l, replay, err := replayEventLog(raw)
	if err != nil {
		return nil, fmt.Errorf("reference values from event log: %w", err)
	}
	ref := &Reference{PCRs: make(map[int][]byte, len(LogPCRs))}
	for _, i := range LogPCRs {
		ref.PCRs[i] = replayed(replay, i)
	}
	if ref.Boot, err = bootFacts(l, LogPCRs); err != nil {
		return nil, fmt.Errorf("reference values from event log: %w", err)
	}
	return ref, nil
}

func verifyIMA(ev *Evidence, prev *Previous, res *Result) error {
	var st eventlog.IMAState
	if prev != nil && !res.Rebooted {
		st = prev.IMA
	}
	if len(ev.IMALog) == 0 && st.Entries == 0 && ev.IMAOffset == 0 {
		if _, quoted := res.PCRs[IMAPCR]; !quoted {
			return nil
		}
	}
	want, quoted := res.PCRs[IMAPCR]
	if !quoted {
		return fmt.Errorf("%w: IMA log sent but PCR %d not quoted", ErrPCRSelection, IMAPCR)
	}
	if ev.IMAOffset != st.Offset {
		return fmt.Errorf("%w: log starts at byte %d, verified state is at %d", ErrIMAOffset, ev.IMAOffset, st.Offset)
	}
	hs := ev.IMAHashSize
	if hs == 0 {
		hs = 20
	}
	entries, _, err := eventlog.ParseIMA(ev.IMALog, hs)
	if errors.Is(err, eventlog.ErrTooLarge) {
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIMA, err)
	}
	if st.Entries == 0 && len(entries) > 0 {
		if err := checkBootAggregate(&entries[0], res.PCRs); err != nil {
			return err
		}
	}
	verified, next, err := eventlog.ReplayIMA(st, entries, IMAPCR, want)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIMAReplay, err)
	}
	res.IMA = &IMAResult{New: verified, State: next}
	return nil
}

// checkBootAggregate checks IMA's first entry: it must be boot_aggregate,
// and when it is a SHA-256 digest and PCRs 0-7 are quoted, it must equal
// SHA-256 over the quoted PCRs 0-9 (kernels >= 5.8) or 0-7 (older ones):
// this ties the runtime log to the verified boot.
func checkBootAggregate(e *eventlog.IMAEntry, pcrs map[int][]byte) error {
	if e.Path() != "boot_aggregate" {
		return fmt.Errorf("%w: first entry is %q, want boot_aggregate", ErrIMA, e.Path())
	}
	if e.FileHashAlg() != "sha256" {
		return nil
	}
	aggregate := func(n int) ([]byte, bool) {
		h := sha256.New()
		for i := range n {
			v, ok := pcrs[i]
			if !ok {
				return nil, false
			}
			h.Write(v)
		}
		return h.Sum(nil), true
	}
	a8, ok := aggregate(8)
	if !ok {
		return nil // boot PCRs not quoted: nothing to compare with
	}
	if subtle.ConstantTimeCompare(a8, e.FileDigest()) == 1 {
		return nil
	}
	if a10, ok := aggregate(10); ok && subtle.ConstantTimeCompare(a10, e.FileDigest()) == 1 {
		return nil
	}
	return fmt.Errorf("%w: boot_aggregate does not match the quoted boot PCRs", ErrIMA)
}

func verifySignature(ak *AKPublic, attest, sigBytes []byte) error {
	if len(attest) == 0 || len(sigBytes) == 0 {
		return fmt.Errorf("%w: empty attest or signature", ErrSignature)
	}
	sig, err := parseSignature(sigBytes)
	if err != nil {
		return fmt.Errorf("%w: TPMT_SIGNATURE: %v", ErrSignature, err) //nolint:errorlint // one reason only
	}
	if sig.alg != ak.SigAlg {
		return fmt.Errorf("%w: signature algorithm 0x%04x, AK scheme 0x%04x", ErrSignature, uint16(sig.alg), uint16(ak.SigAlg))
	}
	if sig.hash != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("%w: signature hash 0x%04x is not SHA-256", ErrSignature, uint16(sig.hash))
	}
	digest := sha256.Sum256(attest)
	switch k := ak.Key.(type) {
	case *ecdsa.PublicKey:
		if sig.alg != tpm2.TPMAlgECDSA || !ecdsa.Verify(k, digest[:], new(big.Int).SetBytes(sig.r), new(big.Int).SetBytes(sig.s)) {
			return ErrSignature
		}
	case *rsa.PublicKey:
		switch sig.alg {
		case tpm2.TPMAlgRSASSA:
			err = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig.sig)
		case tpm2.TPMAlgRSAPSS:
			err = rsa.VerifyPSS(k, crypto.SHA256, digest[:], sig.sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		default:
			err = ErrSignature
		}
		if err != nil {
			return ErrSignature
		}
	default:
		return fmt.Errorf("%w: AK is neither an RSA nor an ECC key", ErrSignature)
	}
	return nil
}

// selectionBitmap turns requested PCR indices into a TPMS_PCR_SELECTION
// bitmap.
func selectionBitmap(pcrs []int) ([]byte, error) {
	if len(pcrs) == 0 {
		return nil, fmt.Errorf("%w: empty PCR selection requested", ErrPCRSelection)
	}
	bm := make([]byte, 3)
	for _, i := range pcrs {
		if i < 0 || i >= numPCRs {
			return nil, fmt.Errorf("%w: PCR %d out of range", ErrPCRSelection, i)
		}
		if bm[i/8]&(1<<(i%8)) != 0 {
			return nil, fmt.Errorf("%w: PCR %d requested twice", ErrPCRSelection, i)
		}
		bm[i/8] |= 1 << (i % 8)
	}
	return bm, nil
}

// SelectionBitmap is the PCR bitmap (3 bytes) for pcrs, as the agent passes
// it to TPM2_Quote.
func SelectionBitmap(pcrs []int) ([]byte, error) { return selectionBitmap(pcrs) }

func trimBitmap(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

func describeSelection(l []pcrSelection) string {
	var buf bytes.Buffer
	for i, s := range l {
		if i > 0 {
			buf.WriteString(" ")
		}
		fmt.Fprintf(&buf, "alg 0x%04x:", uint16(s.hash))
		for j := 0; j < len(s.bitmap)*8; j++ {
			if s.bitmap[j/8]&(1<<(j%8)) != 0 {
				fmt.Fprintf(&buf, "%d,", j)
			}
		}
	}
	return buf.String()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func allFF(b []byte) bool {
	for _, c := range b {
		if c != 0xff {
			return false
		}
	}
	return len(b) > 0
}
