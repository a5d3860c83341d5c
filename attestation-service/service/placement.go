package service

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/cluster"
	"github.com/trustpool/trustpool/attestation-service/internal/sched"
	"github.com/trustpool/trustpool/attestation-service/internal/store"
	"github.com/trustpool/trustpool/internal/attestapi"
)

// placement keeps the scheduler's hosts those the cluster view gives this
// instance: at start, whenever the view changes and every lease (hosts
// enrolled through another instance). A host taken over keeps its rhythm:
// its next round is one interval after the verdict recorded last, by
// whichever instance.
type placement struct {
	st       *store.Store
	sc       *sched.Scheduler
	ms       *cluster.Membership
	interval time.Duration
	jitter   time.Duration
	log      *slog.Logger
	last     []string // members at the last rebalance
}

func (p *placement) run(ctx context.Context) {
	tk := time.NewTicker(p.ms.Period())
	defer tk.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		n++
		// Every lease, and at once when the members changed.
		v := p.ms.View()
		if n%4 != 0 && sameMembers(v, p.last) {
			continue
		}
		if err := p.rebalance(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("cannot place hosts", "error", err)
		}
	}
}

func sameMembers(v cluster.View, last []string) bool {
	if !v.Valid || len(v.Members) != len(last) {
		return false
	}
	for i := range last {
		if v.Members[i] != last[i] {
			return false
		}
	}
	return true
}

// rebalance adds the hosts this instance owns and removes the others.
func (p *placement) rebalance(ctx context.Context) error {
	v := p.ms.View()
	hosts, err := p.st.Schedule(ctx)
	if err != nil {
		return err
	}
	added, removed := 0, 0
	now := time.Now()
	for _, h := range hosts {
		owned := h.Activated && v.Owns(h.Name)
		switch has := p.sc.Has(h.Name); {
		case owned && !has:
			if h.AttestedAt.IsZero() {
				p.sc.Add(h.Name)
			} else {
				d := p.interval
				if p.jitter > 0 {
					d += time.Duration((2*rand.Float64() - 1) * float64(p.jitter)) //nolint:gosec // G404: spreading rounds is not security-relevant
				}
				p.sc.AddDue(h.Name, h.AttestedAt.Add(d))
			}
			added++
		case !owned && has:
			p.sc.Remove(h.Name)
			removed++
		}
	}
	if v.Valid {
		p.last = v.Members
	} else {
		p.last = nil
	}
	if added > 0 || removed > 0 {
		p.log.Info("hosts placed", "added", added, "removed", removed, "scheduled", p.sc.Hosts(), "members", v.Members,
			"took", time.Since(now).String())
	}
	return nil
}

// otherKeys returns the verdict keys of the other live instances, for GET
// /v1/keys (every key a shim may meet); a key shared by several instances
// is listed once, and this instance's own (ownKID) not at all.
func otherKeys(ms *cluster.Membership, ownKID string) func() []attestapi.VerdictKey {
	return func() []attestapi.VerdictKey {
		seen := map[string]bool{ownKID: true}
		var out []attestapi.VerdictKey
		for _, m := range ms.LiveKeys() {
			if seen[m.KID] || m.KID == "" || m.PublicKeyPEM == "" {
				continue
			}
			seen[m.KID] = true
			out = append(out, attestapi.VerdictKey{KID: m.KID, Algorithm: "Ed25519", PublicKeyPEM: m.PublicKeyPEM})
		}
		return out
	}
}
