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
// challenge at most once, and only for the host it was issued to. Because
// every entry names its host, everything of a deleted host can be dropped at
// once ([Ledger.Forget]). Expired entries are dropped by Issue (at most
// every quarter lifetime; Consume refuses them whether dropped or not) and
// by [Ledger.Prune]. A ledger is one process's: a verifier that issues a
// nonce and consumes it within one round, as the attestation service does,
// needs nothing of it to survive the process; state that crosses processes
// (several service instances) belongs in their shared database.
type Ledger struct {
	mu       sync.Mutex
	lifetime time.Duration
	issued   map[string]Challenge
	used     map[string]usedEntry
	// lastGC is when Issue last swept; it sweeps at most every quarter
	// lifetime (a sweep visits every entry, and a busy verifier issues
	// hundreds of nonces a second).
	lastGC time.Time
}

type usedEntry struct {
	issuedAt time.Time
	host     string
}

// NewLedger returns a ledger whose challenges expire after lifetime (zero:
// DefaultNonceLifetime).
func NewLedger(lifetime time.Duration) *Ledger {
	if lifetime <= 0 {
		lifetime = DefaultNonceLifetime
	}
	return &Ledger{lifetime: lifetime, issued: map[string]Challenge{}, used: map[string]usedEntry{}}
}

// Issue creates and records a fresh challenge for host.
func (l *Ledger) Issue(rand io.Reader, now time.Time, host string, pcrs []int) (Challenge, error) {
	ch, err := NewChallenge(rand, now, host, pcrs)
	if err != nil {
		return Challenge{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastGC) >= l.lifetime/4 || now.Before(l.lastGC) {
		l.gc(now)
		l.lastGC = now
	}
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
	l.used[k] = usedEntry{issuedAt: ch.IssuedAt, host: ch.Host}
	if ch.Host != host {
		return Challenge{}, fmt.Errorf("consume nonce: %w: issued to %q, presented for %q", ErrNonceHost, ch.Host, host)
	}
	if now.Sub(ch.IssuedAt) > l.lifetime || now.Before(ch.IssuedAt) {
		return Challenge{}, fmt.Errorf("consume nonce: %w", ErrNonceExpired)
	}
	return ch, nil
}

// Discard drops an issued nonce that will never be consumed (its round
// ended without an answer). Evidence for it is refused afterwards as
// unknown, exactly as after expiry.
func (l *Ledger) Discard(nonce []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.issued, hex.EncodeToString(nonce))
}

// Forget drops every entry, issued or used, of host and returns how many it
// dropped. A forgotten nonce is refused as unknown, so forgetting never
// accepts anything that was refused before.
func (l *Ledger) Forget(host string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for k, ch := range l.issued {
		if ch.Host == host {
			delete(l.issued, k)
			n++
		}
	}
	for k, e := range l.used {
		if e.host == host {
			delete(l.used, k)
			n++
		}
	}
	return n
}

// Prune drops expired entries and returns how many it dropped.
func (l *Ledger) Prune(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gc(now)
}

// Len is the number of entries held, issued and used.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.issued) + len(l.used)
}

// gc drops entries older than twice the lifetime; a nonce that old is
// refused as expired by Verify anyway.
func (l *Ledger) gc(now time.Time) int {
	n := 0
	for k, ch := range l.issued {
		if now.Sub(ch.IssuedAt) > 2*l.lifetime {
			delete(l.issued, k)
			n++
		}
	}
	for k, e := range l.used {
		if now.Sub(e.issuedAt) > 2*l.lifetime {
			delete(l.used, k)
			n++
		}
	}
	return n
}
