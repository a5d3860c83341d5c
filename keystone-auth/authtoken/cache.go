package authtoken

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// tokenKey is the cache key: SHA-256 of the token, never the token itself.
type tokenKey [sha256.Size]byte

func keyOf(token string) tokenKey { return sha256.Sum256([]byte(token)) }

// tokenCache is a bounded LRU of validated tokens whose entries expire.
type tokenCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // front: most recently used
	items map[tokenKey]*list.Element
}

type cacheEntry struct {
	key     tokenKey
	info    *tokenInfo
	expires time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, ll: list.New(), items: map[tokenKey]*list.Element{}}
}

func (c *tokenCache) get(k tokenKey, now time.Time) (*tokenInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.ll.Remove(el)
		delete(c.items, k)
		return nil, false
	}
	c.ll.MoveToFront(el)
	return e.info, true
}

func (c *tokenCache) put(k tokenKey, info *tokenInfo, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		e := el.Value.(*cacheEntry)
		e.info, e.expires = info, expires
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&cacheEntry{key: k, info: info, expires: expires})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// flight coalesces concurrent validations of the same token.
type flight struct {
	mu    sync.Mutex
	calls map[flightKey]*call
}

type flightKey struct {
	k            tokenKey
	allowExpired bool
}

type call struct {
	done chan struct{}
	info *tokenInfo
	err  error
}

// do runs fn once for concurrent callers with the same key; waiting callers give up when
// their own done channel closes.
func (f *flight) do(k flightKey, done <-chan struct{}, fn func() (*tokenInfo, error)) (*tokenInfo, error, bool) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[flightKey]*call{}
	}
	if c, ok := f.calls[k]; ok {
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.info, c.err, true
		case <-done:
			return nil, errCanceled, true
		}
	}
	c := &call{done: make(chan struct{})}
	f.calls[k] = c
	f.mu.Unlock()
	c.info, c.err = fn()
	f.mu.Lock()
	delete(f.calls, k)
	f.mu.Unlock()
	close(c.done)
	return c.info, c.err, false
}
