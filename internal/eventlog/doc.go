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
//     go-attestation docs/event-log-disclosure.md); listed below.
//   - [ExtractBootFacts]: the boot facts of the next section, from events
//     of one bank.
//   - [ParseIMA] and [ReplayIMA]: the binary IMA log (ima-ng, ima-sig,
//     ima-buf and ima-modsig templates) read incrementally, replayed into
//     the SHA-256 bank by recomputing each template hash from the template
//     data (the classic list's template-hash column is SHA-1). An
//     [IMAEntry] is a 64-byte view into the parsed bytes, one chunk holds
//     at most [MaxIMAEntries] entries and the replay does not allocate per
//     entry, so a chunk costs about its own size again at worst.
//
// # Consistency rules
//
// [CheckEvents] applies these to PCRs 0-9 and returns the first violation:
//
//   - known event types only (EV_UNUSED and unknown types are rejected),
//     and in the PCRs facts are read from (0, 4, 7, 8, 9) only the types
//     the TCG PC Client Platform Firmware Profile and the OS loaders use
//     there, so that an EFI application retyped as a driver is rejected
//     ([ErrEventType]);
//   - exactly one well-formed EV_SEPARATOR in each of PCRs 0-7 that the
//     log touches ([ErrSeparator]), and all-zero digests on EV_NO_ACTION;
//   - digest == H(data) for every event type whose digest is defined as
//     the hash of its data, and for GRUB's PCR 8 strings the hash of the
//     text after the prefix ([ErrEventData]);
//   - boot phases: nothing in PCR 0 after its separator, no Secure Boot
//     configuration (EV_EFI_VARIABLE_DRIVER_CONFIG) in PCR 7 after its
//     separator, nothing in PCRs 0-9 after ExitBootServices but PCR 5's
//     ExitBootServices actions ([ErrEventOrder]).
//
// # Boot facts: where they come from and when they can be trusted
//
// A quoted PCR value proves the sequence of digests extended into that PCR
// and nothing else: not the event types, not the event data (unless the
// digest is the hash of the data), and not the order of events of
// different PCRs. Root on a booted host can extend any PCR at any time and
// write any log, but cannot insert an extend before the ones a PCR already
// holds. So a fact is read only from the events of the boot phase that
// produces it, and the first of them counts: PCRs 0 and 7 before their
// separator (whose place in the PCR the PCR proves); PCRs 4, 8 and 9
// before ExitBootServices (which is logged in PCR 5, so its place relative
// to them is not proven: [CheckEvents] rejects late events placed after it,
// but a careful attacker logs them before it). A fact the events do not
// establish unambiguously is withheld ([BootFacts.Withheld], with the
// reason) rather than guessed.
//
// Trustworthy once the PCR named is quoted and replays (package evidence
// verifies PCRs 0-9 that way), without pinning its value:
//
//   - secure_boot, secure_boot_var.<name> (PCR 7): the first
//     EV_EFI_VARIABLE_DRIVER_CONFIG of the variable (SecureBoot, PK, KEK,
//     db, dbx, dbt, dbr) before PCR 7's separator; its digest is the hash
//     of the whole variable. A late measurement is rejected, a retyped one
//     leaves the fact unknown or absent, which no profile accepts.
//   - crtm_version and firmware_blobs (PCR 0): crtm_version is the first
//     EV_S_CRTM_VERSION before the separator whose data (at most 256
//     bytes) hashes to its digest; firmware_blobs are the digests of every
//     other PCR 0 measurement before the separator, in order, whatever
//     type the log gives them. Together they account for every PCR 0
//     measurement, so nothing (a firmware volume logged as
//     EV_NONHOST_INFO) can hide from them.
//   - boot_applications and bootloader (PCR 4): boot_applications are the
//     digests of every PCR 4 measurement before ExitBootServices, in
//     order, except the separator and EV_EFI_ACTION strings (short
//     printable text that hashes to its digest); bootloader is the first of
//     them after PCR 4's separator, that is the first code run from a boot
//     option (applications the firmware runs earlier are listed, not
//     taken as the bootloader). Later extends only append.
//     boot_application_paths are informational: device paths are not
//     covered by any digest.
//
// These facts say what the firmware measured; they are as trustworthy as
// the firmware itself, which firmware_blobs (or a pinned PCR 0) vouches
// for.
//
// Trustworthy only when the profile also pins the PCRs named:
//
//   - kernel_cmdline (PCR 8): the text of GRUB's only "kernel_cmdline"
//     string; kernel_path and initrd_path (PCR 8): the file argument of
//     GRUB's only linux (linuxefi, linux16) and initrd commands. Withheld
//     when measured more than once or when any PCR 8 event carries data
//     its digest does not cover. PCR 8 must be pinned: GRUB's digest
//     covers the text after the "grub_cmd: " / "kernel_cmdline: " prefix
//     but not the prefix, and nothing in PCR 8 marks the end of the boot,
//     so root can relabel the booted "kernel_cmdline: X" as a command and
//     extend PCR 8 with "kernel_cmdline: Y" after boot.
//   - kernel and initrd (PCRs 8 and 9): the digest of the only PCR 9
//     EV_IPL measurement whose file name equals kernel_path (initrd_path),
//     GRUB devices like "(hd0,gpt2)" stripped: the SHA-256 of the file
//     content GRUB read. Withheld when no or several PCR 9 measurements
//     have that name. PCR 9 file names are covered by no digest, so which
//     measurement is the kernel rests on unhashed data: a grub.cfg that
//     also reads a golden copy of the kernel can have the names swapped.
//     With PCRs 8 and 9 pinned every command GRUB ran and every file it
//     read are the golden host's, and the facts name which of them were
//     the kernel and initrd.
//
// [FactPCRs] returns these PCRs; package policy's Learn pins them by
// default for every fact it checks. GRUB strings are read in upstream
// GRUB's encoding and in RHEL 8's ("grub_cmd X" hashed with its NUL,
// "grub_kernel_cmdline X").
//
// # What it does not do
//
// Replaying a log proves nothing by itself: only a comparison with PCR
// values from a verified quote does. Callers (package evidence) must compare
// [Log.Replay] with quoted PCRs and must only read facts from events in PCRs
// whose replay matched. [ExtractBootFacts] does not check that; it is also
// used offline by the inspect-eventlog command on unverified files.
//
// # Testing
//
// The tests use no third-party file from this repository. Real firmware
// logs are those the go-tpm-tools module ships, read at test time from the
// Go module cache (a missing module fails the tests, except under -short);
// parsing and replay are checked against tpm2_eventlog(1) from tpm2-tools,
// an independent implementation. Edge cases (legacy SHA-1 format, H-CRTM
// and StartupLocality, vendor info, an SM3 bank, trailing bytes, missing
// separators, every consistency rule, every fact rule) and IMA lists
// (ima-ng, ima-sig, violations, SHA-1 and SHA-256 template-hash columns,
// the legacy "ima" template) are generated by package eventlogtest from
// bootseed builds and an independent IMA list writer.
package eventlog
