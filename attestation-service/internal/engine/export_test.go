package engine

import (
	"context"
	"sync"
)

// HostLockEntries is the number of hosts in the lock map.
func (e *Engine) HostLockEntries() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.hostLocks)
}

// LedgerEntries is the number of nonces the ledger holds.
func (e *Engine) LedgerEntries() int { return e.ledger.Len() }

// PublishedEntries is the number of hosts with a published-expiry record.
func (e *Engine) PublishedEntries() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.published)
}

// Challenges is the number of stored enrollment challenges.
func (e *Engine) Challenges() int {
	n, err := e.cfg.Store.CountChallenges(context.Background())
	if err != nil {
		panic(err)
	}
	return n
}

// HostLock exposes the per-host mutex.
func (e *Engine) HostLock(host string) sync.Locker { return e.hostLock(host) }
