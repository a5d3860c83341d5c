package bootseed

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/trustpool/trustpool/internal/eventlog"
)

// Dialer opens a connection to a TPM (tpm.DialSWTPM fits).
type Dialer func(ctx context.Context, addr string, timeout time.Duration) (transport.TPMCloser, error)

// bootPCRs are the PCRs a firmware boot extends (and [Events] covers).
const bootPCRs = 10

// Main is the tpm-boot-seed command: it gives the swtpm at -swtpm, or the
// virtual TPM at -device, a simulated measured boot of a variant, writes
// the event log (and optionally an IMA log with -ima-files measurements)
// and prints what it did. It returns the exit code.
//
//	tpm-boot-seed -swtpm 127.0.0.1:2321 -variant build-a -log DIR/binary_bios_measurements \
//	    [-ima DIR/binary_runtime_measurements -ima-files 3]
//	tpm-boot-seed -device /dev/tpmrm1 -log DIR/binary_bios_measurements
//
// A TPM whose boot PCRs are extended already (a second run before the
// swtpm restarted) is left alone when the log at -log records exactly
// that boot, and is an error otherwise: extending again would leave PCRs
// that no log replays to. -device accepts only a TPM that sysfs shows as
// virtual (the kernel's vtpm proxy, served by a swtpm): on a hardware TPM
// these extends would forge a measured boot.
func Main(ctx context.Context, args []string, dial Dialer, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tpm-boot-seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("swtpm", "127.0.0.1:2321", "swtpm server (data) port")
	device := fs.String("device", "", "instead of -swtpm: the device of a virtual TPM (/dev/tpmrmN of the kernel's vtpm proxy)")
	sysfs := fs.String("sysfs", "/sys", "where sysfs is, to tell a virtual TPM (-device) from a hardware one")
	wait := fs.Duration("wait", 5*time.Second, "how long to keep trying to reach the TPM")
	variant := fs.String("variant", "build-a", "boot variant: build-a, build-b, secureboot-off, drifted")
	logPath := fs.String("log", "binary_bios_measurements", "where to write the firmware event log")
	imaPath := fs.String("ima", "", "IMA log to create (classic list; <path>_sha256 is written too); empty: no IMA")
	imaFiles := fs.Int("ima-files", 2, "number of files to measure into the IMA log")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "tpm-boot-seed: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected arguments %q", fs.Args())
	}
	vs := Variants()
	v, ok := vs[*variant]
	if !ok {
		names := make([]string, 0, len(vs))
		for n := range vs {
			names = append(names, n)
		}
		slices.Sort(names)
		return usage("unknown variant %q (have %v)", *variant, names)
	}
	where := *addr
	open := func(ctx context.Context) (transport.TPMCloser, error) { return dial(ctx, *addr, 5*time.Second) }
	if *device != "" {
		swtpmSet := false
		fs.Visit(func(f *flag.Flag) { swtpmSet = swtpmSet || f.Name == "swtpm" })
		if swtpmSet {
			return usage("-swtpm and -device exclude each other")
		}
		if err := checkVirtual(*sysfs, *device); err != nil {
			fmt.Fprintf(stderr, "tpm-boot-seed: %v\n", err)
			return 1
		}
		where = *device
		open = func(context.Context) (transport.TPMCloser, error) { return linuxtpm.Open(*device) }
	}
	if err := run(ctx, open, *wait, where, v, *logPath, *imaPath, *imaFiles, stdout); err != nil {
		fmt.Fprintf(stderr, "tpm-boot-seed: %v\n", err)
		return 1
	}
	return 0
}

// checkVirtual fails unless dev (/dev/tpmN or /dev/tpmrmN) belongs to a TPM
// chip that sysfs lists under devices/virtual, as the kernel registers
// the vtpm proxy's (a hardware TPM has a parent device).
func checkVirtual(sysfs, dev string) error {
	base := filepath.Base(dev)
	n := strings.TrimPrefix(strings.TrimPrefix(base, "tpmrm"), "tpm")
	if n == "" || n == base || strings.Trim(n, "0123456789") != "" {
		return fmt.Errorf("-device %s: want /dev/tpmN or /dev/tpmrmN", dev)
	}
	root, err := filepath.EvalSymlinks(sysfs)
	if err != nil {
		return fmt.Errorf("-device %s: cannot tell whether it is virtual: %w", dev, err)
	}
	chip, err := filepath.EvalSymlinks(filepath.Join(root, "class", "tpm", "tpm"+n))
	if err != nil {
		return fmt.Errorf("-device %s: cannot tell whether it is virtual: %w", dev, err)
	}
	if !strings.HasPrefix(chip, filepath.Join(root, "devices", "virtual")+string(filepath.Separator)) {
		return fmt.Errorf("-device %s is a hardware TPM (%s), not a virtual one: refusing to forge a measured boot on it", dev, chip)
	}
	return nil
}

// connect opens the TPM, retrying for up to wait (a swtpm just started may
// not listen yet).
func connect(ctx context.Context, open func(context.Context) (transport.TPMCloser, error), wait time.Duration) (transport.TPMCloser, error) {
	deadline := time.Now().Add(wait)
	for {
		c, err := open(ctx)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func run(ctx context.Context, open func(context.Context) (transport.TPMCloser, error), wait time.Duration, where string, v Variant,
	logPath, imaPath string, n int, stdout io.Writer) error {
	c, err := connect(ctx, open, wait)
	if err != nil {
		return err
	}
	defer c.Close()
	algs, err := ActiveBanks(c)
	if err != nil {
		return err
	}
	current, err := readBootPCRs(c, algs)
	if err != nil {
		return err
	}
	if !allZero(current) {
		if err := logMatches(logPath, current); err != nil {
			return fmt.Errorf("%s has booted already (PCRs 0-%d are extended), but not as %s records: %w; restart the TPM to reset its PCRs",
				where, bootPCRs-1, logPath, err)
		}
		fmt.Fprintf(stdout, "%s has booted already, as %s records: left alone\n", where, logPath)
		return nil
	}
	log, err := Seed(ctx, c, v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(logPath, log, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "simulated measured boot of %s as %s (for tests and development clouds, never production): %d-byte event log in %s\n",
		where, v.Name, len(log), logPath)
	if imaPath == "" {
		return nil
	}
	var files []IMAFile
	for i := range n {
		p := fmt.Sprintf("/usr/bin/demo-%d", i)
		files = append(files, IMAFile{Path: p, Content: []byte("content of " + p)})
	}
	logs, err := AppendIMA(c, files, true)
	if err != nil {
		return err
	}
	if err := os.WriteFile(imaPath, logs.SHA1, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(imaPath+"_sha256", logs.SHA256, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "measured %d files into PCR 10: %s (and %s)\n", n+1, imaPath, filepath.Base(imaPath)+"_sha256")
	return nil
}

// readBootPCRs reads PCRs 0-9 of every bank in algs, one PCR per command.
func readBootPCRs(t transport.TPM, algs []eventlog.Alg) (map[eventlog.Alg][][]byte, error) {
	out := map[eventlog.Alg][][]byte{}
	for _, a := range algs {
		for i := range bootPCRs {
			sel := make([]byte, 3)
			sel[i/8] = 1 << (i % 8)
			rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{
				PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgID(a), PCRSelect: sel}},
			}}.Execute(t)
			if err != nil {
				return nil, fmt.Errorf("read %s PCR %d: %w", a, i, err)
			}
			if len(rsp.PCRValues.Digests) != 1 {
				return nil, fmt.Errorf("read %s PCR %d: %d digests in the answer", a, i, len(rsp.PCRValues.Digests))
			}
			out[a] = append(out[a], rsp.PCRValues.Digests[0].Buffer)
		}
	}
	return out, nil
}

func allZero(pcrs map[eventlog.Alg][][]byte) bool {
	for _, vs := range pcrs {
		for _, v := range vs {
			if !bytes.Equal(v, make([]byte, len(v))) {
				return false
			}
		}
	}
	return true
}

// logMatches checks that the event log at path replays to pcrs.
func logMatches(path string, pcrs map[eventlog.Alg][][]byte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	l, err := eventlog.Parse(b)
	if err != nil {
		return err
	}
	for a, vs := range pcrs {
		rep, err := l.Replay(a)
		if err != nil {
			return err
		}
		for i, v := range vs {
			want := rep[uint32(i)] //nolint:gosec // i < bootPCRs
			if want == nil {
				want = make([]byte, len(v))
			}
			if !bytes.Equal(v, want) {
				return fmt.Errorf("%s PCR %d is %x, the log replays to %x", a, i, v, want)
			}
		}
	}
	return nil
}
