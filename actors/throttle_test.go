package actors

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
	}
	for _, tt := range tests {
		rate, burst, err := ParseThrottle(tt.in)
		if tt.err {
			require.Error(t, err, tt.in)
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
	c := f.subscribe("q", 100)
	var slow []time.Time
	fast := 0
	start := time.Now()
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
