// Package keyfile reads and creates the service's private key files: one
// PEM block in a file only its owner may read. It owns the file part that
// the verdict, launch and policy-signing keys share; what the block holds
// (PKCS #8, SEC 1, an HPKE key) is its callers' business.
//
// [Format.Read] checks, in this order, and refuses with the caller's
// sentinel errors:
//   - the file exists (else [Format.NoKey]: a missing key is never
//     replaced by a new one here, since shims and tenants pin the old one);
//   - it is a regular file (not a directory, FIFO or device; opened
//     non-blocking so a FIFO cannot hang start-up);
//   - its mode grants the group and others nothing (mode&0077 == 0), taken
//     from the opened file, so the check and the read see the same file;
//   - it holds a PEM block of the expected type.
//
// It does not check the file's owner or its directory's permissions, does
// not look past the first PEM block, and does not parse the block's bytes.
//
// [Format.Create] writes the block to a temporary file (mode 0600) in the
// target's directory (created 0700 when missing), syncs it and then links
// it to the target name: the key appears whole or not at all, and an
// existing file, or one another creator linked first, is never replaced
// (the error then wraps [fs.ErrExist]). The directory is synced after the
// link so the name survives a crash. It needs a file system with hard
// links. The package does no logging.
package keyfile

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Format is one kind of key file. All fields are required.
type Format struct {
	// PEMType is the type of the file's PEM block ("PRIVATE KEY").
	PEMType string
	// NoKey is wrapped by errors for a file that does not exist.
	NoKey error
	// Unusable is wrapped by errors for a file that exists but may not be
	// used: not a regular file, readable by others, or not the PEM block.
	Unusable error
}

// Read returns the bytes of the PEM block in the key file at path after
// the checks in the package comment. The caller should clear them once
// parsed.
func (f Format) Read(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer; it is ignored for regular files.
	file, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", f.NoKey, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file (%s)", f.Unusable, path, fi.Mode().Type())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600", f.Unusable, path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	// The PEM text is the key in base64: do not leave it behind.
	defer clear(b)
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != f.PEMType {
		return nil, fmt.Errorf("%w: %s: no PEM %s block", f.Unusable, path, f.PEMType)
	}
	return blk.Bytes, nil
}

// Create writes der as the file's PEM block to a new file at path, as the
// package comment describes. If path exists the error wraps fs.ErrExist
// and the file is left as it was.
func (f Format) Create(path string, der []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	// CreateTemp makes the file with mode 0600 and O_EXCL.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	// The temporary name goes whatever happens; after a successful link
	// the key lives on under path.
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	if err := pem.Encode(tmp, &pem.Block{Type: f.PEMType, Bytes: der}); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// link(2), unlike rename(2), fails when path exists: exactly one of
	// several concurrent creators wins.
	if err := os.Link(tmp.Name(), path); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) {
			err = le.Err
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		// The caller is told there is no key, so there must be none.
		_ = os.Remove(path)
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// syncDir makes a new directory entry in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
