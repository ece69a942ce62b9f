package actors

import (
	"maps"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fila-dev/filad/telemetry"
)

// Messages the telemetry actor handles.
type (
	// queueReading is a queue actor's gauges now and its counts since its
	// last reading.
	queueReading struct {
		queue string
		delta telemetry.QueueReading
	}
	// queueGone drops a deleted queue's series.
	queueGone struct{ queue string }
	// publishReadings publishes what arrived since the last publish.
	publishReadings struct{}
)

// telemetryActor aggregates the queues' readings (the latest gauges, the
// summed counts) and publishes them on a Board, where the instruments'
// callback and ListQueues read them without ever waiting on an actor.
// Because it sums deltas, a queue actor restarted by its supervisor does not
// reset its queue's counters.
type telemetryActor struct {
	board    *telemetry.Board
	readings map[string]telemetry.QueueReading
	pending  bool // a publishReadings is in the mailbox
}

func newTelemetryActor(board *telemetry.Board) actor.Actor {
	return &telemetryActor{board: board, readings: map[string]telemetry.QueueReading{}}
}

// Receive implements actor.Actor.
func (t *telemetryActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *queueReading:
		r := t.readings[m.queue]
		r.Add(m.delta)
		t.readings[m.queue] = r
		t.schedule(ctx)
	case *queueGone:
		delete(t.readings, m.queue)
		t.schedule(ctx)
	case *publishReadings:
		t.publish()
	}
}

// publish hands readers a copy, because they may still hold the previous map.
func (t *telemetryActor) publish() {
	t.pending = false
	t.board.Publish(maps.Clone(t.readings))
}

// schedule publishes once after the readings already in the mailbox, so a
// burst of readings costs one copy.
func (t *telemetryActor) schedule(ctx actor.Context) {
	if !t.pending {
		t.pending = true
		ctx.Send(ctx.Self(), &publishReadings{})
	}
}
