// Package cluster decides which attestation service instance attests which
// host when several instances share one database and one bus.
//
// Membership is a row per instance in the database (store.Member), renewed
// every Lease/4 (a heartbeat). The live members are the instances heard
// from within the lease. Each host belongs to the live member with the
// highest rendezvous score of (member name, host name), so every instance
// computes the same assignment from the same rows without talking to the
// others, and when a member joins or leaves only the hosts it gains or
// loses move (about 1/n of the fleet). An instance that has not renewed
// its own row for a lease owns nothing: the others no longer count it, so
// it must not count itself either (its database may be unreachable; its
// rounds could not be recorded anyway). A graceful stop deletes the row,
// handing the hosts over at the others' next refresh; a killed instance's
// hosts move once its lease runs out.
//
// Instances are named by [DEFAULT] host, which must be unique per instance:
// a restarted instance takes its own hosts back at once. A second live
// process under one name is detected (each run writes a random incarnation
// into the row) and reported; until fixed both attest the same hosts.
//
// Clocks: heartbeats are written with the writer's clock and judged with
// the reader's, so instance clocks must agree to well within the lease
// (NTP), as verdict expiry already requires.
//
// The package does not log except through the configured logger for
// membership changes and failures.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/trustpool/trustpool/attestation-service/internal/store"
)

// Store is what membership needs of the database (*store.Store).
type Store interface {
	Heartbeat(ctx context.Context, m store.Member) error
	Members(ctx context.Context) ([]store.Member, error)
	LeaveCluster(ctx context.Context, name, incarnation string) error
	PruneMembers(ctx context.Context, before time.Time) (int64, error)
}

// Config configures a Membership.
type Config struct {
	// Name is this instance's name ([DEFAULT] host), unique per instance.
	Name string
	// KID and PublicKeyPEM are this instance's verdict key, published to
	// the other instances (which serve every live key at GET /v1/keys).
	KID          string
	PublicKeyPEM string
	// Lease is how long a member counts as live after its last heartbeat.
	Lease time.Duration
	Store Store
	// OnChange is called (from Run's goroutine) with every new view.
	OnChange func(View)
	Logger   *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// View is one instance's picture of the cluster.
type View struct {
	// Self is this instance's name; Valid says its own lease is current
	// (when false it owns no host).
	Self  string
	Valid bool
	// Members are the live members' names, sorted (Self included when
	// Valid).
	Members []string
}

// Owner returns the live member host belongs to ("" when there is none).
func (v View) Owner(host string) string {
	var (
		best  string
		score uint64
	)
	for _, m := range v.Members {
		if s := Score(m, host); best == "" || s > score || s == score && m < best {
			best, score = m, s
		}
	}
	return best
}

// Owns reports whether this instance attests host.
func (v View) Owns(host string) bool {
	return v.Valid && v.Owner(host) == v.Self
}

func (v View) equal(o View) bool {
	return v.Self == o.Self && v.Valid == o.Valid && slices.Equal(v.Members, o.Members)
}

// Score is the rendezvous score of member for host: FNV-1a over
// "member\x00host", mixed (splitmix64's finalizer) so that close names
// spread.
func Score(member, host string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(host))
	z := h.Sum64()
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Membership keeps this instance's row alive and the view current.
type Membership struct {
	cfg         Config
	log         *slog.Logger
	incarnation string
	started     time.Time

	mu      sync.Mutex
	view    View
	keys    []store.Member
	renewed time.Time // last successful heartbeat
	dupSeen bool
}

// New returns a Membership; Run starts it. Until the first heartbeat the
// view is not valid.
func New(cfg Config) *Membership {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Membership{cfg: cfg, log: cfg.Logger, incarnation: hex.EncodeToString(b), started: cfg.Now(),
		view: View{Self: cfg.Name}}
}

// View returns the current view.
func (m *Membership) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.view
}

// Owns reports whether this instance attests host now.
func (m *Membership) Owns(host string) bool { return m.View().Owns(host) }

// LiveKeys returns the live members' rows (for their verdict keys), this
// instance's included.
func (m *Membership) LiveKeys() []store.Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.keys)
}

// Period is how often Run renews the row and refreshes the view.
func (m *Membership) Period() time.Duration { return m.cfg.Lease / 4 }

// Run heartbeats and refreshes the view every Lease/4 until ctx is done,
// then leaves the cluster (deletes its row).
func (m *Membership) Run(ctx context.Context) error {
	tk := time.NewTicker(m.Period())
	defer tk.Stop()
	for {
		m.Refresh(ctx)
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := m.cfg.Store.LeaveCluster(lctx, m.cfg.Name, m.incarnation); err != nil {
				m.log.Warn("cannot leave the cluster", "error", err)
			}
			return nil
		case <-tk.C:
		}
	}
}

// Refresh renews this instance's row, reads the members and updates the
// view (Run calls it; tests call it to step).
func (m *Membership) Refresh(ctx context.Context) {
	now := m.cfg.Now()
	err := m.cfg.Store.Heartbeat(ctx, store.Member{Name: m.cfg.Name, Incarnation: m.incarnation, StartedAt: m.started,
		HeartbeatAt: now, KID: m.cfg.KID, PublicKeyPEM: m.cfg.PublicKeyPEM})
	var rows []store.Member
	if err == nil {
		rows, err = m.cfg.Store.Members(ctx)
	}
	m.mu.Lock()
	if err == nil {
		m.renewed = now
	}
	valid := !m.renewed.IsZero() && now.Sub(m.renewed) < m.cfg.Lease
	next := View{Self: m.cfg.Name, Valid: valid}
	var keys []store.Member
	dup := false
	if err == nil {
		for _, r := range rows {
			if now.Sub(r.HeartbeatAt) >= m.cfg.Lease && r.Name != m.cfg.Name {
				continue
			}
			if r.Name == m.cfg.Name && r.Incarnation != m.incarnation {
				dup = true
			}
			keys = append(keys, r)
			next.Members = append(next.Members, r.Name)
		}
		m.keys = keys
	} else {
		// Keep the last known members while our own lease lasts.
		next.Members = m.view.Members
	}
	if !valid {
		next.Members = slices.DeleteFunc(slices.Clone(next.Members), func(n string) bool { return n == m.cfg.Name })
	} else if !slices.Contains(next.Members, m.cfg.Name) {
		next.Members = append(next.Members, m.cfg.Name)
	}
	slices.Sort(next.Members)
	next.Members = slices.Compact(next.Members)
	changed := !next.equal(m.view)
	m.view = next
	reportDup := dup && !m.dupSeen
	m.dupSeen = dup
	m.mu.Unlock()

	if err != nil {
		m.log.Warn("cluster membership not renewed", "error", err, "lease_valid", valid)
	}
	if reportDup {
		m.log.Error("another live service instance uses this instance's name ([DEFAULT] host must be unique)", "name", m.cfg.Name)
	}
	if changed {
		m.log.Info("cluster membership changed", "members", next.Members, "lease_valid", next.Valid)
		if m.cfg.OnChange != nil {
			m.cfg.OnChange(next)
		}
	}
	// Rows of members gone for long are dropped (one instance doing it is
	// enough; all of them doing it is harmless).
	if err == nil && len(rows) > len(keys) {
		if _, err := m.cfg.Store.PruneMembers(ctx, now.Add(-10*m.cfg.Lease)); err != nil {
			m.log.Debug("cannot prune membership rows", "error", err)
		}
	}
}
