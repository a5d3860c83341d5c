// Package evidence is Trustpool's verifier core: it decides, from TPM
// evidence a host sent, what is true about that host. It is pure: no I/O,
// no logging, no clock (the caller passes Now) and no global state; every
// input is untrusted and every error means "not trusted".
//
// Library choice: the whole project uses go-tpm's TPMDirect API
// (github.com/google/go-tpm/tpm2) for TPM structures, on both sides, with
// go-tpm-tools only in tests (its in-process reference simulator, and the
// real firmware event logs its module ships).
// go-tpm alone parses TPMS_ATTEST/TPMT_SIGNATURE/TPMT_PUBLIC and implements
// TPM2_MakeCredential for RSA and ECC EKs (tpm2.CreateCredential), so the
// verifier needs nothing else; and its transport.TPM interface lets the
// agent speak to /dev/tpmrm0, swtpm's socket and the simulator without the
// io.ReadWriter adapters go-tpm-tools' client and go-attestation require.
// go-attestation's event log parser replays SHA-1/SHA-256 only and checks
// neither data-digest consistency nor separators the way we need, so event
// logs are parsed by package eventlog. Its tests, and this package's
// TestVerifyRealLogs, run on go-tpm-tools' real logs read at test time from
// the Go module cache (see eventlog/eventlogtest; nothing of them is copied
// into this repository) and on generated edge cases, and compare parsing
// and replay with tpm2_eventlog(1).
//
// # Enrollment
//
// [ParseEKPublic], [CheckEKCertificate] (chain to a vendor-root pool, EK
// certificate key == EK), [ParseAKPublic] (AK attribute check),
// [MakeCredential] (the verifier half of credential activation, keyed on
// the AK name under the EK) and [CheckActivation] (constant-time secret
// comparison). A [Binding] with Activated set is what the service stores
// once activation succeeded.
//
// # Checks made by Verify
//
// [Verify] makes every check below, in this order, and returns the first
// failure, wrapped so that errors.Is matches the named sentinel:
//
//  1. the AK is bound to the host's EK by a successful credential
//     activation ([ErrAKNotActivated]);
//  2. the AK is a restricted, fixedTPM, fixedParent, sensitiveDataOrigin
//     signing key with a SHA-256 ECDSA (P-256/P-384) or RSASSA/RSAPSS
//     (>= 2048 bit) scheme ([ErrAKAttributes]);
//  3. the challenge is usable: nonce of at least 16 bytes ([ErrNonceTooShort]),
//     not already consumed ([ErrNonceReused]), issued no later than Now and
//     not older than the nonce lifetime ([ErrNonceExpired]);
//  4. evidence sizes are within limits ([ErrTooLarge]; an IMA chunk of
//     more than eventlog.MaxIMAEntries entries too, see check 15);
//  5. the signature is a well-formed TPMT_SIGNATURE with the AK's scheme and
//     SHA-256 ([ErrMalformed], [ErrSignature]) and verifies over the exact
//     attest bytes with the AK ([ErrSignature]); nothing in the attest
//     structure is read before this;
//  6. magic is TPM_GENERATED_VALUE ([ErrMagic]) and type is
//     TPM_ST_ATTEST_QUOTE ([ErrAttestType]); the structure parses with no
//     trailing bytes and clockInfo.safe is 0 or 1 ([ErrMalformed]);
//  7. extraData equals the issued nonce, compared in constant time
//     ([ErrNonceMismatch]);
//  8. the quoted selection contains a non-empty SHA-256 bank
//     ([ErrSHA256Missing]) and is exactly the requested SHA-256 selection,
//     no more and no less, and no other bank ([ErrPCRSelection]);
//  9. the reported PCR values are exactly the selected PCRs, 32 bytes each
//     ([ErrPCRValues]), and SHA-256 of their concatenation equals pcrDigest
//     ([ErrPCRDigest]);
//  10. no quoted PCR in 0-7 is all-zero or all-0xFF, i.e. never extended
//     by firmware (bank-downgrade / Carte Blanche, [ErrPCRNotExtended]);
//  11. clock info against the last verified quote of this AK: resetCount
//     and restartCount never decrease ([ErrCounterRollback]); Clock does
//     not go backwards while the counters are unchanged or while the TPM
//     claims safe ([ErrClockImplausible]); an increase marks
//     Result.Rebooted (re-evaluate, full log replay, IMA from offset 0);
//  12. an event log is present unless explicitly allowed ([ErrEventLogMissing]),
//     parses ([ErrEventLog]), declares a SHA-256 bank ([ErrEventLogBank]);
//  13. event types and data are consistent with digests in PCRs 0-9: known
//     types only, and only the types of their PCR in PCRs 0, 4, 7, 8 and 9;
//     one separator per PCR 0-7; digest == H(data) where defined; no event
//     after the end of the boot phase that produces it (PCR 0 after its
//     separator, Secure Boot configuration after PCR 7's separator,
//     anything but PCR 5 after ExitBootServices) ([ErrEventData], wrapping
//     eventlog.ErrEventType, eventlog.ErrEventData, eventlog.ErrSeparator
//     or eventlog.ErrEventOrder; see package eventlog);
//  14. the SHA-256 replay of the log equals every quoted PCR in 0-9 (a
//     quoted PCR the log never extends must then be zero, which check 10
//     already refuses for 0-7) ([ErrReplay], detail in [*ReplayError]);
//  15. the IMA log, when sent or when an IMA state exists: PCR 10 must be
//     quoted ([ErrPCRSelection]), the log must continue exactly where the
//     last verified round stopped, or start at 0 after a reboot
//     ([ErrIMAOffset]), parse ([ErrIMA]; more than eventlog.MaxIMAEntries
//     entries: [ErrTooLarge]) and a prefix of it must replay
//     (SHA-256 template hashes recomputed from template data) to the
//     quoted PCR 10 ([ErrIMAReplay]); entries appended after the quote are
//     left for the next round; a SHA-256 template-hash column must match
//     the recomputed hash ([ErrIMAReplay]); the first entry after boot must
//     be boot_aggregate and, when SHA-256 and PCRs 0-7 are quoted, equal
//     SHA-256 of the quoted PCRs 0-7 or 0-9 ([ErrIMA]). Only that entry is
//     boot_aggregate: IMAEntry.Seq numbers the verified entries since boot,
//     and package policy appraises a later entry of that name as a file.
//
// Boot facts are then read only from events of quoted PCRs whose replay
// matched ([eventlog.ExtractBootFacts]), by the rules package eventlog
// documents: each from the boot phase that produced it, withheld
// (BootFacts.Withheld) when the events do not establish it. Which facts are
// trustworthy on their own and which only under pinned PCRs (the kernel
// and command line facts need PCRs 8 and 9) is documented there too;
// pinning is the profile's job (package policy).
//
// Steady state: with a [Previous] of the same boot (counters unchanged)
// whose replayed PCRs equal the quoted ones, the event log may be omitted
// (or be byte-identical, compared by digest) and the previous boot facts
// are reused, unless older rules derived them (eventlog.FactsVersion);
// everything else is checked as above. This keeps a routine
// re-attestation within ~1.1x of the bare signature check (see
// BenchmarkSteadyState).
//
// # Reference values offline
//
// [ReferenceFromEventLog] takes a firmware event log alone (a build
// pipeline's) through checks 12 and 13 and the replay of check 14, and
// returns the PCRs 0-9 it replays to and the boot facts read as for a host
// whose quote of PCRs 0-9 matched: what learning from a host that booted
// the log yields. It cannot tell whether any host will boot that log; the
// values only accept hosts whose quotes match them.
//
// # What Verify does not check
//
//   - Whether the facts and PCRs are good: that is package policy.
//   - qualifiedSigner in TPMS_ATTEST (the signature by the bound AK is the
//     proof of origin) and firmwareVersion (obfuscated for AKs outside the
//     endorsement hierarchy; reported, not judged).
//   - IMA file signatures in ima-sig entries (reported for policy).
//   - Absolute resetCount/restartCount values: for an AK outside the
//     endorsement hierarchy they carry a per-key offset; only changes are
//     meaningful.
//   - Nonce single use and host binding across processes: the caller's
//     nonce store must hand out a challenge only for the host it was issued
//     to and mark it consumed (Challenge.Used) atomically before Verify;
//     [Ledger] does this in memory: [Ledger.Issue] and [Ledger.Consume]
//     take the host, and a nonce presented for another host is refused
//     ([ErrNonceHost]) and used up.
package evidence
