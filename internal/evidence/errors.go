package evidence

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Rejection reasons. Every error returned by this package wraps exactly one
// of them (errors.Is), so callers can name the reason without matching
// strings. [Reason] returns a short stable name for logs and verdicts.
var (
	ErrMalformed        = errors.New("malformed evidence")
	ErrTooLarge         = errors.New("evidence too large")
	ErrAKNotActivated   = errors.New("AK not activated for this EK")
	ErrAKAttributes     = errors.New("AK attributes not acceptable")
	ErrEKPublic         = errors.New("EK public key not acceptable")
	ErrEKCertChain      = errors.New("EK certificate chain invalid")
	ErrEKCertMismatch   = errors.New("EK certificate key does not match the EK")
	ErrActivation       = errors.New("credential activation secret mismatch")
	ErrNonceTooShort    = errors.New("nonce too short")
	ErrNonceReused      = errors.New("nonce reused")
	ErrNonceExpired     = errors.New("nonce expired")
	ErrNonceUnknown     = errors.New("nonce not issued")
	ErrNonceHost        = errors.New("nonce issued to another host")
	ErrNonceMismatch    = errors.New("quote nonce does not match the issued nonce")
	ErrSignature        = errors.New("bad AK signature")
	ErrMagic            = errors.New("attest magic is not TPM_GENERATED_VALUE")
	ErrAttestType       = errors.New("attest type is not TPM_ST_ATTEST_QUOTE")
	ErrSHA256Missing    = errors.New("SHA-256 PCR bank missing or empty in quote")
	ErrPCRSelection     = errors.New("quoted PCR selection differs from the requested one")
	ErrPCRValues        = errors.New("reported PCR values do not match the selection")
	ErrPCRDigest        = errors.New("PCR digest does not match reported PCR values")
	ErrPCRNotExtended   = errors.New("boot PCR never extended")
	ErrCounterRollback  = errors.New("reset or restart counter went backwards")
	ErrClockImplausible = errors.New("TPM clock implausible")
	ErrEventLogMissing  = errors.New("event log missing")
	ErrEventLog         = errors.New("event log malformed")
	ErrEventLogBank     = errors.New("event log has no SHA-256 bank")
	ErrEventData        = errors.New("event types or data inconsistent with digests")
	ErrReplay           = errors.New("event log replay does not match quoted PCRs")
	ErrIMA              = errors.New("IMA log malformed")
	ErrIMAOffset        = errors.New("IMA log does not continue the verified state")
	ErrIMAReplay        = errors.New("IMA log replay does not match PCR 10")
)

var reasons = map[error]string{
	ErrMalformed:        "malformed",
	ErrTooLarge:         "too_large",
	ErrAKNotActivated:   "ak_not_activated",
	ErrAKAttributes:     "ak_attributes",
	ErrEKPublic:         "ek_public",
	ErrEKCertChain:      "ek_cert_chain",
	ErrEKCertMismatch:   "ek_cert_mismatch",
	ErrActivation:       "activation_failed",
	ErrNonceTooShort:    "nonce_too_short",
	ErrNonceReused:      "nonce_reused",
	ErrNonceExpired:     "nonce_expired",
	ErrNonceUnknown:     "nonce_unknown",
	ErrNonceHost:        "nonce_wrong_host",
	ErrNonceMismatch:    "nonce_mismatch",
	ErrSignature:        "bad_signature",
	ErrMagic:            "bad_magic",
	ErrAttestType:       "bad_attest_type",
	ErrSHA256Missing:    "sha256_bank_missing",
	ErrPCRSelection:     "pcr_selection",
	ErrPCRValues:        "pcr_values",
	ErrPCRDigest:        "pcr_digest",
	ErrPCRNotExtended:   "pcr_not_extended",
	ErrCounterRollback:  "counter_rollback",
	ErrClockImplausible: "clock_implausible",
	ErrEventLogMissing:  "event_log_missing",
	ErrEventLog:         "event_log_malformed",
	ErrEventLogBank:     "event_log_bank",
	ErrEventData:        "event_data",
	ErrReplay:           "replay_mismatch",
	ErrIMA:              "ima_malformed",
	ErrIMAOffset:        "ima_offset",
	ErrIMAReplay:        "ima_replay_mismatch",
}

// Reason returns the stable short name of the rejection reason err wraps
// ("bad_signature"), or "internal" for errors from elsewhere.
func Reason(err error) string {
	for e, r := range reasons {
		if errors.Is(err, e) {
			return r
		}
	}
	return "internal"
}

// ReplayError lists the PCRs whose event-log replay differs from the quote.
type ReplayError struct {
	PCRs []int
}

func (e *ReplayError) Error() string {
	s := make([]string, len(e.PCRs))
	for i, p := range e.PCRs {
		s[i] = fmt.Sprint(p)
	}
	return fmt.Sprintf("%v: PCR %s", ErrReplay, strings.Join(s, ","))
}

// Unwrap makes errors.Is(err, ErrReplay) hold.
func (e *ReplayError) Unwrap() error { return ErrReplay }

func newReplayError(pcrs []int) *ReplayError {
	sort.Ints(pcrs)
	return &ReplayError{PCRs: pcrs}
}
