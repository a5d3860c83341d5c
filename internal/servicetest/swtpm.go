package servicetest

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SWTPMOptions configure [SWTPM].
type SWTPMOptions struct {
	// EKCert manufactures the TPM with swtpm_setup first (about 1 s): SHA-256
	// PCR bank only, persistent RSA and ECC EKs at 0x81010001 and 0x81010016,
	// and EK certificates in NV 0x01c00002 (RSA) and 0x01c00016 (ECC) issued
	// by a CA private to this TPM (see CACertPath). Without it the TPM is
	// unmanufactured: all four PCR banks active, no EK and no certificate.
	EKCert bool
}

// SWTPMServer is a software TPM 2.0 (swtpm socket) private to one test, on
// 127.0.0.1. Its data port accepts raw TPM commands (and the MS simulator's
// framing); the control port speaks swtpm's own control protocol. It has
// no resource manager: flush transient objects after use.
type SWTPMServer struct {
	// Dir holds state/ (the TPM's persistent state), swtpm.log and, with
	// EKCert, ca/.
	Dir string
	// ServerAddr and CtrlAddr are the data and control ports, "127.0.0.1:N"
	// and "127.0.0.1:N+1" (tpm2-tools' swtpm TCTI expects the control port
	// right after the data port).
	ServerAddr, CtrlAddr string
	// TCTI is the tpm2-tools TCTI string, swtpm:host=127.0.0.1,port=N, for
	// TPM2TOOLS_TCTI or --tcti.
	TCTI string
	// CACertPath and IssuerCertPath are the PEM root CA and intermediate
	// (issuer) certificate of the EK certificates; empty without EKCert.
	CACertPath, IssuerCertPath string

	serverPort, ctrlPort int
	mu                   sync.Mutex
	d                    *daemon
}

// SWTPM starts a swtpm private to the test, started up (TPM2_Startup(CLEAR)
// sent) and ready for commands; it is stopped when the test ends.
func SWTPM(t testing.TB, opts SWTPMOptions) *SWTPMServer {
	t.Helper()
	integration(t, "swtpm")
	for _, c := range [][2]string{{"swtpm", "swtpm"}} {
		if err := need(c[0], c[1]); err != nil {
			t.Fatalf("servicetest: %v", err)
		}
	}
	s := &SWTPMServer{Dir: t.TempDir()}
	state := filepath.Join(s.Dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if opts.EKCert {
		if err := s.manufacture(t.Context()); err != nil {
			t.Fatalf("servicetest: %v", err)
		}
	}
	var err error
	for range 3 {
		s.serverPort, err = freePortPair()
		if err != nil {
			break
		}
		s.ctrlPort = s.serverPort + 1
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("servicetest: swtpm: %v", err)
	}
	s.ServerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.serverPort))
	s.CtrlAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.ctrlPort))
	s.TCTI = fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", s.serverPort)
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.d.stop(10 * time.Second); err != nil {
			t.Errorf("servicetest: %v", err)
		}
	})
	return s
}

// manufacture runs swtpm_setup with a private local CA (the default one
// writes to /var/lib/swtpm-localca).
func (s *SWTPMServer) manufacture(ctx context.Context) error {
	if err := need("swtpm_setup", "swtpm-tools"); err != nil {
		return err
	}
	ca := filepath.Join(s.Dir, "ca")
	if err := os.Mkdir(ca, 0o700); err != nil {
		return err
	}
	localca := filepath.Join(s.Dir, "localca.conf")
	setup := filepath.Join(s.Dir, "swtpm_setup.conf")
	files := map[string]string{
		localca: fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca),
		setup:   fmt.Sprintf("create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = /etc/swtpm-localca.options\n", localca),
	}
	for name, text := range files {
		if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := run(ctx, nil, "swtpm_setup", "--tpm2", "--tpmstate", filepath.Join(s.Dir, "state"), "--config", setup,
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--overwrite", "--pcr-banks", "sha256"); err != nil {
		return fmt.Errorf("manufacture swtpm: %w", err)
	}
	s.CACertPath = filepath.Join(ca, "swtpm-localca-rootca-cert.pem")
	s.IssuerCertPath = filepath.Join(ca, "issuercert.pem")
	for _, p := range []string{s.CACertPath, s.IssuerCertPath} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("manufacture swtpm: %w", err)
		}
	}
	return nil
}

func (s *SWTPMServer) start() error {
	d, err := startDaemon("swtpm", filepath.Join(s.Dir, "swtpm.log"), s.Dir, nil,
		"swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+filepath.Join(s.Dir, "state"),
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.serverPort),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.ctrlPort),
		// not-need-init: no CMD_INIT on the control port; startup-clear: swtpm
		// sends TPM2_Startup(CLEAR) itself, as firmware would.
		"--flags", "not-need-init,startup-clear",
		"--log", "level=1")
	if err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.serverPort))
	if err := waitReady(d, 30*time.Second, func(ctx context.Context) error { return tpmGetRandom(ctx, addr) }); err != nil {
		_ = d.stop(10 * time.Second)
		return err
	}
	s.d = d
	return nil
}

// Stop stops the TPM. Its persistent state (keys made persistent, NV) stays;
// volatile state (PCRs, transient objects) is lost, as in a power cycle.
func (s *SWTPMServer) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.d.stop(10 * time.Second); err != nil {
		t.Fatalf("servicetest: %v", err)
	}
}

// Start starts a stopped TPM again on the same ports, like a reboot: PCRs
// start from their reset values. A no-op while it runs.
func (s *SWTPMServer) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.d.exited() {
		return
	}
	if err := s.start(); err != nil {
		t.Fatalf("servicetest: restart swtpm: %v", err)
	}
}

// Tool runs a tpm2-tools command (e.g. "tpm2_pcrread", "sha256:0") against
// this TPM in Dir, fails the test if it fails, and returns its standard
// output.
func (s *SWTPMServer) Tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := runIn(ctx, s.Dir, []string{"TPM2TOOLS_TCTI=" + s.TCTI}, append([]string{name}, args...)...)
	if err != nil {
		t.Fatalf("servicetest: %s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// tpmGetRandom sends TPM2_GetRandom(8) over a raw TPM connection and checks
// for success: that proves the TPM is running and started up.
func tpmGetRandom(ctx context.Context, addr string) error {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// TPM_ST_NO_SESSIONS, commandSize 12, TPM_CC_GetRandom, bytesRequested 8.
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	if _, err := conn.Write(cmd); err != nil {
		return err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		return err
	}
	if rc := binary.BigEndian.Uint32(hdr[6:]); rc != 0 {
		return fmt.Errorf("TPM2_GetRandom: response code %#x", rc)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > 4096 {
		return fmt.Errorf("TPM2_GetRandom: bad response size %d", size)
	}
	_, err = io.CopyN(io.Discard, conn, int64(size)-10)
	return err
}
