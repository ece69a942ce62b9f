package actors

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/telemetry"
)

func TestFairnessMeterCapsKeysAndWorksOutRatios(t *testing.T) {
	t.Parallel()
	f := newFairnessMeter(2)
	// One window: a (weight 1) and b (weight 1) get 250 each, c and d
	// (weight 2 each, past the cap) 250 each: a and b got their share of
	// the weight (1/6 each) and more, c and d less.
	for range FairnessWindow / 4 {
		for _, k := range []struct {
			key    string
			weight int64
		}{{"a", 1}, {"b", 1}, {"c", 2}, {"d", 2}} {
			f.delivered(k.key, k.weight)
		}
	}
	r := f.reading()
	require.Len(t, r, 3, "a, b and (other)")
	require.EqualValues(t, 250, r["a"].Deliveries)
	require.EqualValues(t, 500, r[telemetry.OtherFairnessKey].Deliveries, "c and d summed")
	require.InDelta(t, 0.25/(1.0/6), r["a"].ShareRatio, 1e-9)
	require.InDelta(t, 0.5/(4.0/6), r[telemetry.OtherFairnessKey].ShareRatio, 1e-9)
	// The next reading has no new deliveries, and the same ratios.
	r = f.reading()
	require.Zero(t, r["a"].Deliveries)
	require.True(t, r["a"].HasRatio)

	off := newFairnessMeter(0)
	off.delivered("a", 1)
	require.Nil(t, off.reading(), "0 turns it off")
}
