package server_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestThrottleRangesThroughTheAPI: a throttle value outside its ranges is
// INVALID_ARGUMENT naming the key and the range, and changes nothing; the
// largest burst is shown whole (issue 19 rows 6 and 9: on 44452e1
// "5,4294967296" was taken and GetStats showed burst 0).
func TestThrottleRangesThroughTheAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.createQueue(t, "calls", nil)
	tests := []struct{ value, want string }{
		{"1e-300,1", "from 0.001 to 1e+09"},
		{"0.0001", "from 0.001 to 1e+09"},
		{"2e9", "from 0.001 to 1e+09"},
		{"5,4294967296", "from 1 to 4294967295"},
		{"5,0", "from 1 to 4294967295"},
	}
	for _, tt := range tests {
		_, err := b.admin.SetConfig(ctxT(t), &filav1.SetConfigRequest{Key: "throttle.x", Value: tt.value})
		requireCode(t, err, codes.InvalidArgument)
		require.Contains(t, status.Convert(err).Message(), "value of throttle.x", tt.value)
		require.Contains(t, status.Convert(err).Message(), tt.want, tt.value)
		got, err := b.admin.GetConfig(ctxT(t), &filav1.GetConfigRequest{Key: "throttle.x"})
		require.NoError(t, err)
		require.Empty(t, got.GetValue(), "nothing stored")
	}
	_, err := b.admin.SetConfig(ctxT(t), &filav1.SetConfigRequest{Key: "throttle.x", Value: "0.001,4294967295"})
	require.NoError(t, err)
	ts := b.stats(t, "calls").GetPerThrottleStats()
	require.Len(t, ts, 1)
	require.EqualValues(t, uint32(4294967295), ts[0].GetBurst())
	require.InDelta(t, 0.001, ts[0].GetRatePerSecond(), 1e-12)
}
