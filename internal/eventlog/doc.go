// Package eventlog parses and replays the two measurement logs a Linux host
// keeps for its TPM: the TCG PC Client firmware event log
// (/sys/kernel/security/tpm0/binary_bios_measurements) and the IMA runtime
// log (/sys/kernel/security/ima/binary_runtime_measurements).
//
// The package is pure: it does no I/O and no logging, and every input is
// treated as hostile. Parsers never allocate from a length field before
// checking it against the bytes actually present, and cap the number of
// events and digests.
//
// # What it provides
//
//   - [Parse]: the TCG crypto-agile format (Spec ID Event03 header, then
//     TCG_PCR_EVENT2 records with one digest per declared bank) and the
//     legacy SHA-1 format (TCG_PCR_EVENT records only).
//   - [Log.Replay]: recomputes PCR values per bank, honouring the
//     StartupLocality EV_NO_ACTION event for PCR 0, exactly as
//     tpm2_eventlog(1) and the TPM do.
//   - [CheckEvents]: the consistency rules a verifier must apply because
//     event types and event data are NOT covered by the PCRs (see
//     go-attestation docs/event-log-disclosure.md): known event types only
//     in PCRs 0-9 (EV_UNUSED and unknown types are rejected), exactly one
//     well-formed EV_SEPARATOR in each of PCRs 0-7 that the log touches,
//     all-zero digests on EV_NO_ACTION, and digest == H(data) for every
//     event type whose digest is defined as the hash of its data.
//   - [ExtractBootFacts]: secure boot state, Secure Boot variable digests,
//     CRTM version, firmware blob digests, boot applications, bootloader,
//     kernel (digest, path), initrd and kernel command line, from events of
//     one bank.
//   - [ParseIMA] and [ReplayIMA]: the binary IMA log (ima-ng, ima-sig,
//     ima-buf and ima-modsig templates) read incrementally, replayed into
//     the SHA-256 bank by recomputing each template hash from the template
//     data (the classic list's template-hash column is SHA-1).
//
// # What it does not do
//
// Replaying a log proves nothing by itself: only a comparison with PCR
// values from a verified quote does. Callers (package evidence) must compare
// [Log.Replay] with quoted PCRs and must only read facts from events in PCRs
// whose replay matched. [ExtractBootFacts] does not check that; it is also
// used offline by the inspect-eventlog command on unverified files.
package eventlog
