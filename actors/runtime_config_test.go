package actors

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/auth"
	"github.com/fila-dev/filad/storage"
)

// TestRuntimeConfigLimits: each limit refuses the write that would cross
// it with ErrLimit naming it, and the store keeps what it held; API keys
// count against their own limit only (issue 19, Deliver 8).
func TestRuntimeConfigLimits(t *testing.T) {
	t.Parallel()
	f := startOn(t, &faultyStore{Store: storage.NewMemory()}, func(o *Options) {
		o.ConfigStore = RuntimeConfigLimits{MaxKeys: 2, MaxBytes: 64, MaxAPIKeys: 1}
	})
	x := func(n int) string { return strings.Repeat("x", n) }
	steps := []struct {
		key, value string
		refused    string // the limit named, or "" for accepted
	}{
		{"a", x(30), ""},                        // 31 bytes
		{"b", x(40), "limits.max_config_bytes"}, // 72
		{"b", x(30), ""},                        // 62
		{"a", x(33), "limits.max_config_bytes"}, // 65: a bigger value grows it
		{"a", x(32), ""},                        // 64: the limit itself fits
		{"c", "1", "limits.max_config_keys"},    // a third key
		{auth.KeyPrefix + "k1", x(500), ""},     // api keys: a budget of their own
		{auth.KeyPrefix + "k2", "{}", "limits.max_api_keys"},
		{auth.KeyPrefix + "k1", x(600), ""}, // replacing a key adds none
		{"b", "", ""},                       // deletes always pass
		{"c", "1", ""},
	}
	for i, s := range steps {
		before, had := f.sys.RuntimeConfig().Get(s.key)
		err := f.ask(nil, &SetConfig{Key: s.key, Value: s.value}).(*AdminReply).Err
		if s.refused == "" {
			require.NoError(t, err, "step %d", i)
			continue
		}
		require.ErrorIs(t, err, ErrLimit, "step %d", i)
		require.ErrorContains(t, err, s.refused, "step %d", i)
		after, has := f.sys.RuntimeConfig().Get(s.key)
		require.Equal(t, [2]any{before, had}, [2]any{after, has}, "step %d: unchanged", i)
	}

	// A store written under higher limits loads whole; only growth is
	// refused until it is back under them.
	f.stop()
	f = startOn(t, f.store, func(o *Options) {
		o.ConfigStore = RuntimeConfigLimits{MaxKeys: 1, MaxBytes: 10, MaxAPIKeys: 1}
	})
	require.Len(t, f.sys.RuntimeConfig().List(""), 3)
	require.ErrorIs(t, f.ask(nil, &SetConfig{Key: "a", Value: x(33)}).(*AdminReply).Err, ErrLimit)
	require.NoError(t, f.ask(nil, &SetConfig{Key: "a", Value: x(5)}).(*AdminReply).Err, "shrinking")
	require.ErrorIs(t, f.ask(nil, &SetConfig{Key: "d", Value: "1"}).(*AdminReply).Err, ErrLimit)
}
