package launcher

import (
	"fmt"
	"time"
)

// Rate limits of re-deliveries. Each re-delivery attests the host afresh
// and asks its agent for TPM work, so both who may ask for one are
// limited per launch: the agents' redelivery_wanted casts
// (Config.WantedInterval, wanted.go; bus senders are not authenticated)
// and users' requests through the API (Config.RedeliverInterval, a
// project member's action). The two limits are independent: a forged
// redelivery_wanted cast must not lock a tenant out of their own
// re-delivery, and a tenant's request (refused, say, because the instance
// was not running yet) must not drop the agent's ask once it is. At most
// one re-delivery of a launch runs at a time whoever asked (ErrBusy). The
// limits are per service instance (kept in memory): behind a load
// balancer over n instances a user reaches at most n re-deliveries per
// interval.

// maxTracked bounds the per-launch times a limiter keeps (only launches
// that passed the other checks are tracked; entries older than the
// interval are pruned first).
const maxTracked = 4096

// DefaultRedeliverInterval is Config.RedeliverInterval's default.
const DefaultRedeliverInterval = 10 * time.Second

// TooSoonError says that a user asked for a re-delivery of the launch less than
// Config.RedeliverInterval after the last one was started (429).
type TooSoonError struct {
	LaunchID string
	// Interval is the configured least time between two re-deliveries;
	// RetryAfter is how long until the next one is allowed.
	Interval, RetryAfter time.Duration
}

func (e *TooSoonError) Error() string {
	return fmt.Sprintf("a re-delivery of launch %s was started less than %v ago; try again in %v", e.LaunchID, e.Interval, e.RetryAfter)
}

// intervalLimiter lets each key through at most once per interval. It is
// not safe for concurrent use: its owner's lock (redeliverMu) guards it.
type intervalLimiter struct {
	interval time.Duration
	at       map[string]time.Time
}

func newIntervalLimiter(interval time.Duration) *intervalLimiter {
	return &intervalLimiter{interval: interval, at: map[string]time.Time{}}
}

// allow reports whether key may run at now, and if so records it; if not,
// it returns how long until it may.
func (r *intervalLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	if last, ok := r.at[key]; ok && now.Sub(last) < r.interval {
		return false, r.interval - now.Sub(last)
	}
	if len(r.at) >= maxTracked {
		wait := r.interval
		for k, t := range r.at {
			if now.Sub(t) >= r.interval {
				delete(r.at, k)
			} else {
				wait = min(wait, r.interval-now.Sub(t))
			}
		}
		if len(r.at) >= maxTracked {
			// Every tracked launch ran within the interval: refuse
			// rather than grow or forget a limit.
			return false, wait
		}
	}
	r.at[key] = now
	return true, 0
}
