package evidence

import (
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"
)

// Ledger is an in-memory, concurrency-safe record of issued challenges that
// enforces single use and the host binding: [Ledger.Consume] returns a
// challenge at most once, and only for the host it was issued to. Expired
// entries are dropped lazily. A service with several instances needs a
// shared store with the same semantics instead.
type Ledger struct {
	mu       sync.Mutex
	lifetime time.Duration
	issued   map[string]Challenge
	used     map[string]time.Time
}

// NewLedger returns a ledger whose challenges expire after lifetime (zero:
// DefaultNonceLifetime).
func NewLedger(lifetime time.Duration) *Ledger {
	if lifetime <= 0 {
		lifetime = DefaultNonceLifetime
	}
	return &Ledger{lifetime: lifetime, issued: map[string]Challenge{}, used: map[string]time.Time{}}
}

// Issue creates and records a fresh challenge for host.
func (l *Ledger) Issue(rand io.Reader, now time.Time, host string, pcrs []int) (Challenge, error) {
	ch, err := NewChallenge(rand, now, host, pcrs)
	if err != nil {
		return Challenge{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gc(now)
	l.issued[hex.EncodeToString(ch.Nonce)] = ch
	return ch, nil
}

// Consume marks nonce used and returns its challenge, when it was issued to
// host. A nonce never issued (or already forgotten) wraps
// [ErrNonceUnknown]; a second Consume returns the challenge with Used set
// and an error wrapping [ErrNonceReused]; a nonce issued to another host
// wraps [ErrNonceHost] and is used up (evidence relayed from another host
// is refused for both); an expired one wraps [ErrNonceExpired].
func (l *Ledger) Consume(host string, nonce []byte, now time.Time) (Challenge, error) {
	k := hex.EncodeToString(nonce)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.used[k]; ok {
		return Challenge{Nonce: nonce, Host: host, Used: true}, fmt.Errorf("consume nonce: %w", ErrNonceReused)
	}
	ch, ok := l.issued[k]
	if !ok {
		return Challenge{}, fmt.Errorf("consume nonce: %w", ErrNonceUnknown)
	}
	delete(l.issued, k)
	l.used[k] = ch.IssuedAt
	if ch.Host != host {
		return Challenge{}, fmt.Errorf("consume nonce: %w: issued to %q, presented for %q", ErrNonceHost, ch.Host, host)
	}
	if now.Sub(ch.IssuedAt) > l.lifetime || now.Before(ch.IssuedAt) {
		return Challenge{}, fmt.Errorf("consume nonce: %w", ErrNonceExpired)
	}
	return ch, nil
}

// gc drops entries older than twice the lifetime; a nonce that old is
// refused as expired by Verify anyway.
func (l *Ledger) gc(now time.Time) {
	for k, ch := range l.issued {
		if now.Sub(ch.IssuedAt) > 2*l.lifetime {
			delete(l.issued, k)
		}
	}
	for k, t := range l.used {
		if now.Sub(t) > 2*l.lifetime {
			delete(l.used, k)
		}
	}
}
