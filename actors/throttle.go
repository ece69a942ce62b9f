package actors

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fila-dev/filad/telemetry"
)

// ThrottlePrefix starts the runtime config keys that set throttle rates:
// "throttle.<key>" = "<rate_per_second>[,<burst>]".
const ThrottlePrefix = "throttle."

// The ranges a throttle value must keep to (docs/failures.md). The slowest
// rate waits 1,000 s for a token, so a queue held back by it wakes once per
// token; the largest burst is what GetStats' uint32 burst can show.
const (
	// MinThrottleRate is the slowest rate, in messages per second.
	MinThrottleRate = 0.001
	// MaxThrottleRate is the fastest rate, in messages per second.
	MaxThrottleRate = 1e9
	// MaxThrottleBurst is the largest burst: 2^32-1.
	MaxThrottleBurst = math.MaxUint32
)

// maxThrottleWait bounds the wait for a token that Take reports. In range,
// no wait reaches it (the longest is 1/MinThrottleRate); it keeps the
// arithmetic finite for a bucket the ranges did not make, so that a timer
// is never armed from an overflowed duration (which fired at once, for
// ever: an idle broker spinning on one core).
const maxThrottleWait = time.Hour

// ParseThrottle reads a throttle value "rate[,burst]": a rate per second
// from MinThrottleRate to MaxThrottleRate and an optional whole burst from 1
// to MaxThrottleBurst (default: the rate rounded up, at least 1).
func ParseThrottle(v string) (rate float64, burst int, err error) {
	r, b, hasBurst := strings.Cut(v, ",")
	rate, err = strconv.ParseFloat(strings.TrimSpace(r), 64)
	// NaN fails both comparisons, so the check is written to refuse it.
	if err != nil || !(rate >= MinThrottleRate && rate <= MaxThrottleRate) {
		return 0, 0, fmt.Errorf("rate %q must be a number from %g to %g (messages per second)", r, MinThrottleRate, MaxThrottleRate)
	}
	burst = max(int(math.Ceil(rate)), 1)
	if hasBurst {
		n, err := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
		if err != nil || n < 1 || n > MaxThrottleBurst {
			return 0, 0, fmt.Errorf("burst %q must be a whole number from 1 to %d", b, uint64(MaxThrottleBurst))
		}
		burst = int(n)
	}
	return rate, burst, nil
}

// Throttles are the token buckets of the throttle keys, shared by every
// queue of this node (a provider's rate limit holds whatever queue its
// messages come from). Rates come from the runtime config store, read on
// each use, so a change, a removal or a restart applies without any other
// signal. It is safe for concurrent use: one lock, taken only for messages
// that carry throttle keys, so that taking a token from each of a message's
// keys is all or nothing.
//
// The buckets are node-local state, never replicated: a rate holds per
// node, which is the whole broker on a single node. In a cluster a token is
// taken where deliveries are decided, on the queue's partition leader, so
// a rate holds per partition leader (docs/decisions.md, issue 23); the
// tokens start full on a new leader, as they do after a restart.
type Throttles struct {
	config  *RuntimeConfig
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	spec   string // the config value it was made from
	rate   float64
	burst  float64
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// NewThrottles returns buckets whose rates config holds.
func NewThrottles(config *RuntimeConfig) *Throttles {
	return &Throttles{config: config, buckets: map[string]*bucket{}}
}

// bucketLocked is key's bucket as config sets it now, refilled to now; nil
// when key is not throttled.
func (t *Throttles) bucketLocked(key string, now time.Time) *bucket {
	spec, ok := t.config.Get(ThrottlePrefix + key)
	if !ok {
		delete(t.buckets, key)
		return nil
	}
	b := t.buckets[key]
	if b == nil || b.spec != spec {
		rate, burst, err := ParseThrottle(spec)
		if err != nil {
			return nil // refused by SetConfig; an old store's bad value throttles nothing
		}
		tokens := float64(burst)
		if b != nil {
			tokens = min(b.tokens, float64(burst)) // a new rate keeps what was left
		}
		b = &bucket{spec: spec, rate: rate, burst: float64(burst), tokens: tokens, at: now}
		t.buckets[key] = b
	}
	if now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
		b.at = now
	}
	return b
}

// wait is how long b takes to hold one token, from 1 ms (a finer timer
// would only wake the queue more often) to maxThrottleWait. It is worked
// out in seconds and clamped before it becomes a Duration: converting a
// float past the int64 range to a Duration gives garbage (a negative wait
// on amd64). Rounding up means the timer never fires just short of the
// token.
func (b *bucket) wait() time.Duration {
	secs := (1 - b.tokens) / b.rate
	if !(secs < maxThrottleWait.Seconds()) { // also NaN
		return maxThrottleWait
	}
	return max(time.Duration(math.Ceil(secs*float64(time.Second))), time.Millisecond)
}

// Take takes one token from each of keys if every one has a token, and
// reports whether it did. When not, retryAt is when the emptiest of them
// will have one.
func (t *Throttles) Take(keys []string, now time.Time) (ok bool, hit string, retryAt time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	bs := make([]*bucket, 0, len(keys))
	for _, k := range keys {
		b := t.bucketLocked(k, now)
		if b == nil {
			continue
		}
		if b.tokens < 1 {
			return false, k, now.Add(b.wait())
		}
		bs = append(bs, b)
	}
	for _, b := range bs {
		b.tokens--
	}
	return true, "", time.Time{}
}

// Refund gives back the token Take took from each of keys, for a message
// that was not delivered after all (its dispatch round's read failed):
// kept, a failed read would spend the key's rate on deliveries that never
// happened. A bucket is never filled past its burst, and a key no longer
// throttled (or whose rate changed since) is left as it is.
func (t *Throttles) Refund(keys []string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		if b := t.bucketLocked(k, now); b != nil {
			b.tokens = min(b.burst, b.tokens+1)
		}
	}
}

// ThrottleStats is one throttle key's bucket now.
type ThrottleStats struct {
	Key        string
	Tokens     float64
	RatePerSec float64
	Burst      int
}

// Stats lists every configured throttle key's bucket, by key.
func (t *Throttles) Stats(now time.Time) []ThrottleStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []ThrottleStats
	for _, e := range t.config.List(ThrottlePrefix) {
		key := strings.TrimPrefix(e.Key, ThrottlePrefix)
		if b := t.bucketLocked(key, now); b != nil {
			out = append(out, ThrottleStats{Key: key, Tokens: b.tokens, RatePerSec: b.rate, Burst: int(b.burst)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// takeThrottle takes a token from each of m's throttle keys, or reports
// that one is short and notes when it refills (the queue's timer comes back
// then, so a throttled queue never spins). Messages without throttle keys
// pass at no cost. fila.throttle.decisions counts messages, not checks: a
// pass per message delivered, a hit once per message held back (however
// often the scheduler looks at it again before it passes).
func (q *queueActor) takeThrottle(m *message) bool {
	keys := m.idx.ThrottleKeys()
	if len(keys) == 0 {
		return true
	}
	ok, hit, retryAt := q.deps.throttles.Take(keys, time.Now())
	if ok {
		m.throttled = false // its pass is counted once it is delivered (countPass)
		return true
	}
	if !m.throttled {
		m.throttled = true
		q.throttleCounter(hit, "hit").Add(1)
	}
	if q.throttledUntil.IsZero() || retryAt.Before(q.throttledUntil) {
		q.throttledUntil = retryAt
	}
	return false
}

// countPass counts the pass of each of m's throttle keys: m was delivered.
// Not when its tokens were taken, since a delivery whose read fails gives
// them back (Throttles.Refund) and takes them again later.
func (q *queueActor) countPass(m *message) {
	for _, k := range m.idx.ThrottleKeys() {
		q.throttleCounter(k, "pass").Add(1)
	}
}

// throttleCounter is the counter of throttle decisions on key with
// result: the first 2 × fairness_keys key/result pairs of the queue get
// series of their own, the rest are summed as (other).
func (q *queueActor) throttleCounter(key, result string) *telemetry.Counter {
	if c, ok := q.throttleCounters[[2]string{key, result}]; ok {
		return c
	}
	if q.throttleCounters == nil {
		q.throttleCounters = map[[2]string]*telemetry.Counter{}
	}
	if len(q.throttleCounters) >= 2*max(q.deps.fairness, 1) {
		// Past the cap: the (other) pair is kept under its own name, so an
		// overflowing key costs one map lookup a decision, not a series
		// lookup. The entry is what the cap counts, one per result.
		other := [2]string{telemetry.OtherFairnessKey, result}
		c, ok := q.throttleCounters[other]
		if !ok {
			c = q.metrics.Throttle(telemetry.OtherFairnessKey, result)
			q.throttleCounters[other] = c
		}
		return c
	}
	c := q.metrics.Throttle(key, result)
	q.throttleCounters[[2]string{key, result}] = c
	return c
}
