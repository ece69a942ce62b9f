package actors

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

func TestParseThrottle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in    string
		rate  float64
		burst int
		err   bool
	}{
		{"200", 200, 200, false},
		{"0.5", 0.5, 1, false},
		{"10,3", 10, 3, false},
		{" 10 , 3 ", 10, 3, false},
		{"0", 0, 0, true},
		{"-1", 0, 0, true},
		{"fast", 0, 0, true},
		{"10,0", 0, 0, true},
		{"10,x", 0, 0, true},
		{"NaN", 0, 0, true},
		{"Inf", 0, 0, true},
		// The ranges (issue 19 rows 6 and 9): rate 0.001..1e9, burst 1..2^32-1.
		{"0.001", 0.001, 1, false},
		{"1e9", 1e9, 1e9, false},
		{"5,4294967295", 5, 4294967295, false},
		{"1e-300,1", 0, 0, true},
		{"0.0009", 0, 0, true},
		{"1.000001e9", 0, 0, true},
		{"5,4294967296", 0, 0, true},
		{"5,18446744073709551616", 0, 0, true},
		{"5,-1", 0, 0, true},
	}
	for _, tt := range tests {
		rate, burst, err := ParseThrottle(tt.in)
		if tt.err {
			require.Error(t, err, tt.in)
			// The message names the range the value missed.
			require.Regexp(t, `from (0\.001 to 1e\+09|1 to 4294967295)`, err.Error(), tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.rate, rate, tt.in)
		require.Equal(t, tt.burst, burst, tt.in)
	}
}

func TestThrottlesTakeAllOrNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	set := func(k, v string) { require.NoError(t, f.ask(nil, &SetConfig{Key: k, Value: v}).(*AdminReply).Err) }
	set("throttle.region:eu", "10,2")
	th := f.sys.Throttles()
	now := time.Unix(1000, 0)
	for range 2 {
		ok, _, _ := th.Take([]string{"provider:aws", "region:eu"}, now)
		require.True(t, ok, "the burst")
	}
	ok, hit, retry := th.Take([]string{"provider:aws", "region:eu"}, now)
	require.False(t, ok)
	require.Equal(t, "region:eu", hit)
	require.Equal(t, now.Add(100*time.Millisecond), retry, "one token at 10/s")
	ok, _, _ = th.Take([]string{"region:eu"}, now.Add(100*time.Millisecond))
	require.True(t, ok, "refilled")

	// All or nothing: with provider:aws empty, region:eu keeps its token.
	set("throttle.provider:aws", "1,1")
	ok, _, _ = th.Take([]string{"provider:aws"}, now.Add(200*time.Millisecond))
	require.True(t, ok)
	ok, hit, _ = th.Take([]string{"region:eu", "provider:aws"}, now.Add(200*time.Millisecond))
	require.False(t, ok)
	require.Equal(t, "provider:aws", hit)
	st := th.Stats(now.Add(200 * time.Millisecond))
	require.Len(t, st, 2)
	require.Equal(t, "region:eu", st[1].Key)
	require.InDelta(t, 1, st[1].Tokens, 1e-9, "untouched by the refused take")

	set("throttle.provider:aws", "") // removed: unthrottled
	ok, _, _ = th.Take([]string{"provider:aws"}, now.Add(200*time.Millisecond))
	require.True(t, ok)
}

// throttleByHeader assigns the throttle keys a message names in its
// "throttle" header.
const throttleByHeader = `
function on_enqueue(msg)
  local keys = {}
  for k in string.gmatch(msg.headers["throttle"] or "", "[^,]+") do keys[#keys + 1] = k end
  return { fairness_key = msg.headers["key"], throttle_keys = keys }
end`

func TestThrottledMessagesWaitWhileOthersFlow(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	require.NoError(t, f.ask(nil, &SetConfig{Key: "throttle.slow", Value: "20,1"}).(*AdminReply).Err)
	f.createWith(QueueConfig{Name: "q", VisibilityTimeout: time.Minute, OnEnqueueScript: throttleByHeader})
	for range 5 {
		f.enqueue("q", map[string]string{"key": "s", "throttle": "slow"})
	}
	for range 20 {
		f.enqueue("q", map[string]string{"key": "f"})
	}
	// Before the subscription: its dispatch may take the first token at
	// once, and every later token is 50 ms after the one before.
	start := time.Now()
	c := f.subscribe("q", 100)
	var slow []time.Time
	fast := 0
	for len(slow) < 5 || fast < 20 {
		d := f.recv(c)
		if d.Record.GetFairnessKey() == "s" {
			require.Equal(t, []string{"slow"}, d.Record.GetThrottleKeys(), "stored with the message")
			slow = append(slow, time.Now())
			continue
		}
		fast++
		require.Less(t, len(slow), 3, "the unthrottled key was not held behind the throttled one")
	}
	for i, at := range slow {
		// Burst 1, 20/s: the i-th slow message no sooner than i × 50 ms.
		require.GreaterOrEqual(t, at.Sub(start), time.Duration(i)*50*time.Millisecond-2*time.Millisecond, "slow message %d", i)
	}

	// A runtime change applies to what is waiting, removal unthrottles,
	// and a restart keeps the rate.
	require.NoError(t, f.ask(nil, &SetConfig{Key: "throttle.slow", Value: ""}).(*AdminReply).Err)
	ok, _, _ := f.sys.Throttles().Take([]string{"slow"}, time.Now())
	require.True(t, ok, "removed: unthrottled (and its bucket forgotten)")
	require.NoError(t, f.ask(nil, &SetConfig{Key: "throttle.slow", Value: "0.001,1"}).(*AdminReply).Err)
	f.enqueue("q", map[string]string{"key": "s", "throttle": "slow"}) // takes the new bucket's one token
	f.recv(c)
	f.enqueue("q", map[string]string{"key": "s", "throttle": "slow"})
	require.EqualValues(t, 1, f.stats("q").Depth, "held back: no token") // also waits out the dispatch
	requireNoDelivery(t, c)
	f.stop()
	f = startOn(t, f.store)
	c = f.subscribe("q", 100)
	// Buckets start full after a restart (tokens are not stored; rates are).
	require.Equal(t, "s", f.recv(c).Record.GetFairnessKey())
	f.enqueue("q", map[string]string{"key": "s", "throttle": "slow"})
	require.EqualValues(t, 1, f.stats("q").Depth, "held back after the restart too: the rate was restored")
	requireNoDelivery(t, c)
	require.NoError(t, f.ask(nil, &SetConfig{Key: "throttle.slow", Value: ""}).(*AdminReply).Err)
	f.sys.Send(f.sys.Directory().Lookup("q").PID, &ConsumerReady{}) // a dispatch
	require.Equal(t, "s", f.recv(c).Record.GetFairnessKey(), "unthrottled")
}

// TestThrottleWaitIsFinite: the wait for a token that a queue's timer is
// armed with is the bucket's refill time, in range or not. On 44452e1 a
// rate of 1e-300 gave a wait past the int64 range, converted to a negative
// Duration and raised to 1 ms: the queue woke every millisecond for ever
// (issue 19 row 6). A value stored before the ranges held throttles nothing.
func TestThrottleWaitIsFinite(t *testing.T) {
	t.Parallel()
	store := &faultyStore{Store: storage.NewMemory()}
	var b storage.Batch
	b.PutConfig(ThrottlePrefix+"ancient", "1e-300,1")
	require.NoError(t, store.Write(&b))
	f := startOn(t, store)
	th := f.sys.Throttles()
	now := time.Unix(1000, 0)
	for range 3 {
		ok, _, _ := th.Take([]string{"ancient"}, now)
		require.True(t, ok, "an out-of-range stored value throttles nothing")
	}

	tests := []struct {
		value string
		want  time.Duration
	}{
		{"0.001,1", 1000 * time.Second}, // the slowest rate: one wake-up per token
		{"3,1", 333333334 * time.Nanosecond},
		{"1e9,1", time.Millisecond}, // no finer than the timer is worth
	}
	for _, tt := range tests {
		key := "k" + tt.value // a bucket of its own, full
		require.NoError(t, f.ask(nil, &SetConfig{Key: ThrottlePrefix + key, Value: tt.value}).(*AdminReply).Err)
		ok, _, _ := th.Take([]string{key}, now)
		require.True(t, ok, tt.value)
		ok, _, retryAt := th.Take([]string{key}, now)
		require.False(t, ok, tt.value)
		require.Equal(t, tt.want, retryAt.Sub(now), tt.value)
	}

	// A bucket outside the ranges (which SetConfig no longer makes) waits at
	// most maxThrottleWait, never a garbage duration.
	for _, rate := range []float64{1e-300, 1e-12, 0} {
		bk := &bucket{rate: rate, burst: 1}
		require.Equal(t, maxThrottleWait, bk.wait(), rate)
	}
}

// countTicks counts the timer firings of queue's actor in n.
func countTicks(queue string, n *atomic.Int64) func(*Options) {
	return func(o *Options) {
		o.onTick = func(q string) {
			if q == queue {
				n.Add(1)
			}
		}
	}
}

// idleWindow is how long TestThrottledQueueStaysIdle watches a queue that
// has nothing due. Its verdict does not depend on it: a spinning queue
// wakes thousands of times in it, an idle one not once, however busy the
// machine.
const idleWindow = 300 * time.Millisecond

// TestThrottledQueueStaysIdle: a queue whose waiting messages are held back
// by a throttle wakes only when a token is due (issue 19 row 6). Counted
// are its actor's timer firings, through a test hook.
func TestThrottledQueueStaysIdle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, rate string
		// leave unsubscribes the consumer once the second message is held
		// back, and waits for the refill's tick.
		leave bool
	}{
		// The slowest allowed rate: the next token is 1,000 s away.
		{name: "slowest rate", rate: "0.001,1"},
		// The refill comes when no consumer is left to dispatch to. On
		// 44452e1 the due refill re-armed the timer at once, for ever.
		{name: "consumer gone before the refill", rate: "20,1", leave: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ticks atomic.Int64
			f := startOn(t, &faultyStore{Store: storage.NewMemory()}, countTicks("q", &ticks))
			require.NoError(t, f.ask(nil, &SetConfig{Key: "throttle.slow", Value: tt.rate}).(*AdminReply).Err)
			f.createWith(QueueConfig{Name: "q", VisibilityTimeout: time.Hour, OnEnqueueScript: throttleByHeader})
			for range 2 {
				f.enqueue("q", map[string]string{"key": "s", "throttle": "slow"})
			}
			c := f.subscribe("q", 10)
			f.recv(c) // the burst's one token
			require.EqualValues(t, 1, f.stats("q").Depth, "held back: no token")
			if tt.leave {
				f.sys.Send(f.sys.Directory().Lookup("q").PID, &Unsubscribe{ConsumerID: c.ID()})
				require.Eventually(t, func() bool { return ticks.Load() >= 1 }, waitFor, time.Millisecond, "the refill's tick")
				require.EqualValues(t, 1, f.stats("q").Depth, "nobody to deliver to")
			}
			before := ticks.Load()
			time.Sleep(idleWindow) // the window measured, not a wait for an event
			woke := ticks.Load() - before
			t.Logf("%s: %d timer firings in %v", tt.name, woke, idleWindow)
			require.LessOrEqual(t, woke, int64(1), "an idle queue woke up")
		})
	}
}

// TestFailedReadRefundsThrottleTokens: a dispatch round whose read of the
// messages' records fails delivers nothing, and gives back the tokens its
// messages took. Kept, a key of burst 1 and a slow rate lost its one token
// to a delivery that never happened, and its message waited the whole
// refill (here ~17 minutes) once the store read again.
func TestFailedReadRefundsThrottleTokens(t *testing.T) {
	t.Parallel()
	series := telemetry.NewSeriesSet()
	f := startOn(t, &faultyStore{Store: storage.NewMemory()}, func(o *Options) { o.Series = series })
	require.NoError(t, f.ask(nil, &SetConfig{Key: "throttle.slow", Value: "0.001,1"}).(*AdminReply).Err)
	f.createWith(QueueConfig{Name: "q", VisibilityTimeout: time.Minute, OnEnqueueScript: throttleByHeader})
	f.enqueue("q", map[string]string{"key": "s", "throttle": "slow"})

	f.store.failReads.Store(true)
	c := f.subscribe("q", 10) // its dispatch takes the token, and its read fails
	require.EqualValues(t, 1, f.stats("q").Depth, "not delivered: ready again")
	requireNoDelivery(t, c)
	st := f.sys.Throttles().Stats(time.Now())
	require.Len(t, st, 1)
	require.GreaterOrEqual(t, st[0].Tokens, 1.0, "the token is given back")

	f.store.failReads.Store(false)
	f.sys.Send(f.sys.Directory().Lookup("q").PID, &ConsumerReady{}) // a dispatch
	require.Equal(t, "s", f.recv(c).Record.GetFairnessKey(), "delivered with the refunded token")
	passes := int64(0)
	series.Each(func(p telemetry.SeriesPoint) {
		if p.Spec.Name == telemetry.ThrottleDecisions.Name && p.Counter != nil {
			if v, ok := p.Attrs.Value(attribute.Key(telemetry.AttrResult)); !ok || v.AsString() != "pass" {
				return
			}
			passes += p.Counter.Value()
		}
	})
	require.EqualValues(t, 1, passes, "one pass: the delivery that failed to read is not one")
}
