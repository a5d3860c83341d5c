package engine

import (
	"context"
	"fmt"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestrpc"
)

// AddProfileVersion stores body (the TOML of one profile) as a new
// candidate version of profile, notifies it and returns its number. A
// candidate is accepted nowhere, so no host is attested again.
func (e *Engine) AddProfileVersion(ctx context.Context, profile, body, source string) (int, error) {
	n, err := e.cfg.Store.AddProfileVersion(ctx, profile, body, source)
	if err != nil {
		return 0, err
	}
	payload := map[string]any{"profile": profile, "version": n, "state": store.VersionCandidate, "source": source}
	if err := e.cfg.Publisher.Notify(ctx, attestrpc.EventProfileVersionCreated, payload); err != nil {
		e.log.Warn("cannot send notification", "event", attestrpc.EventProfileVersionCreated, "error", err)
	}
	return n, nil
}

// SetProfileVersionState changes a version's rollout state (see
// store.SetProfileVersionState), notifies the change and attests every
// host again under the new set of accepted versions.
func (e *Engine) SetProfileVersionState(ctx context.Context, profile string, version int, from, to string, hosts []string) error {
	if err := e.cfg.Store.SetProfileVersionState(ctx, profile, version, from, to, hosts); err != nil {
		return fmt.Errorf("change state of profile %q version %d: %w", profile, version, err)
	}
	if hosts == nil {
		hosts = []string{}
	}
	payload := map[string]any{"profile": profile, "version": version, "from": from, "state": to, "hosts": hosts}
	if err := e.cfg.Publisher.Notify(ctx, attestrpc.EventProfileVersionStateChanged, payload); err != nil {
		e.log.Warn("cannot send notification", "event", attestrpc.EventProfileVersionStateChanged, "error", err)
	}
	e.TriggerAll(ctx)
	return nil
}
