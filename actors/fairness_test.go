package actors

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/telemetry"
)

func TestFairnessMeterReportsDeliveriesAndBacklog(t *testing.T) {
	t.Parallel()
	f := newFairnessMeter(2)
	ready := newDRR[*message](1)
	// a is delivered; b and c are backlogged and never delivered: b is
	// named (a starved key gets its series), c past the cap is (other).
	for range 3 {
		f.delivered("a", 1)
	}
	ready.push("b", 2, &message{})
	ready.push("c", 3, &message{})
	r := f.reading(ready)
	require.Equal(t, map[string]telemetry.KeyReading{
		"a":                        {Deliveries: 3, Weight: 1},
		"b":                        {Backlogged: true, Weight: 2},
		telemetry.OtherFairnessKey: {Backlogged: true, Weight: 3},
	}, r)

	// Still backlogged, nothing delivered: the backlog is stated again.
	require.Equal(t, map[string]telemetry.KeyReading{
		"b": {Backlogged: true, Weight: 2}, telemetry.OtherFairnessKey: {Backlogged: true, Weight: 3},
	}, f.reading(ready))

	// Drained: one empty reading says so, then nothing.
	ready.pop()
	ready.pop()
	require.Equal(t, map[string]telemetry.KeyReading{}, f.reading(ready))
	require.Nil(t, f.reading(ready), "nothing new to say")

	// A delivery past the cap counts on (other).
	f.delivered("d", 5)
	require.Equal(t, map[string]telemetry.KeyReading{telemetry.OtherFairnessKey: {Deliveries: 1, Weight: 3}}, f.reading(ready))

	off := newFairnessMeter(0)
	off.delivered("a", 1)
	ready.push("a", 1, &message{})
	require.Nil(t, off.reading(ready), "0 turns it off")
}
