package inject

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/trustpool/trustpool/internal/attestrpc"
)

// Directory is the directory injector: <Root>/<instance_id>/ stands for the
// instance.
type Directory struct {
	Root string
}

// Name implements Injector.
func (d *Directory) Name() string { return "directory" }

func (d *Directory) dir(instanceID string) (string, error) {
	if !attestrpc.IsUUID(instanceID) {
		return "", fmt.Errorf("instance id %q is not a UUID", instanceID)
	}
	return filepath.Join(d.Root, instanceID), nil
}

// Present implements Injector: the instance's directory exists.
func (d *Directory) Present(_ context.Context, instanceID string) (bool, error) {
	p, err := d.dir(instanceID)
	if err != nil {
		return false, err
	}
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	}
	return fi.IsDir(), nil
}

// Owner implements Injector: <Root>/<instance_id>.owner.
func (d *Directory) Owner(_ context.Context, instanceID string) (string, error) {
	if _, err := d.dir(instanceID); err != nil {
		return "", err
	}
	return ownerFile(d.Root, instanceID)
}

// Inject implements Injector: each file is written to a new file in the
// instance's directory, created with its final mode, then renamed over any
// older one.
func (d *Directory) Inject(ctx context.Context, instanceID string, files []File) error {
	ok, err := d.Present(ctx, instanceID)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNoInstance
	}
	dir, _ := d.dir(instanceID)
	for _, f := range files {
		if err := writeFile(dir, f); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(dir string, f File) error {
	if f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." {
		return fmt.Errorf("file name %q is not a base name", f.Name)
	}
	tmp, err := os.CreateTemp(dir, "."+f.Name+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", f.Name, err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp made it 0600; the final mode before any byte is written.
	if err := tmp.Chmod(f.Mode.Perm() | 0o200); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", f.Name, err)
	}
	if _, err := tmp.Write(f.Data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", f.Name, err)
	}
	if err := tmp.Chmod(f.Mode.Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", f.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, f.Name)); err != nil {
		return fmt.Errorf("write %s: %w", f.Name, err)
	}
	return nil
}
