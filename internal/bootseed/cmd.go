package bootseed

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// Dialer opens a connection to a TPM (tpm.DialSWTPM fits).
type Dialer func(ctx context.Context, addr string, timeout time.Duration) (transport.TPMCloser, error)

// Main is the tpm-boot-seed command: it boots the swtpm at -swtpm with a
// variant, writes the event log (and optionally an IMA log with -ima-files
// measurements) and prints what it did. It returns the exit code.
//
//	tpm-boot-seed -swtpm 127.0.0.1:2321 -variant build-a -log DIR/binary_bios_measurements \
//	    [-ima DIR/binary_runtime_measurements -ima-files 3]
func Main(ctx context.Context, args []string, dial Dialer, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tpm-boot-seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("swtpm", "127.0.0.1:2321", "swtpm server (data) port")
	variant := fs.String("variant", "build-a", "boot variant: build-a, build-b, secureboot-off, drifted")
	logPath := fs.String("log", "binary_bios_measurements", "where to write the firmware event log")
	imaPath := fs.String("ima", "", "IMA log to create (classic list; <path>_sha256 is written too); empty: no IMA")
	imaFiles := fs.Int("ima-files", 2, "number of files to measure into the IMA log")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	vs := Variants()
	v, ok := vs[*variant]
	if !ok {
		names := make([]string, 0, len(vs))
		for n := range vs {
			names = append(names, n)
		}
		slices.Sort(names)
		fmt.Fprintf(stderr, "tpm-boot-seed: unknown variant %q (have %v)\n", *variant, names)
		return 2
	}
	if err := run(ctx, dial, *addr, v, *logPath, *imaPath, *imaFiles, stdout); err != nil {
		fmt.Fprintf(stderr, "tpm-boot-seed: %v\n", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, dial Dialer, addr string, v Variant, logPath, imaPath string, n int, stdout io.Writer) error {
	c, err := dial(ctx, addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	log, err := Seed(ctx, c, v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(logPath, log, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "booted %s as %s: %d-byte event log in %s\n", addr, v.Name, len(log), logPath)
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
