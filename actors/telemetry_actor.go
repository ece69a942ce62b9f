package actors

import (
	"maps"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fila-dev/filad/telemetry"
)

// Messages the telemetry actor handles.
type (
	// queueReading is a queue actor's latest gauge values.
	queueReading struct {
		queue  string
		gauges telemetry.QueueGauges
	}
	// queueGone drops a deleted queue's series.
	queueGone struct{ queue string }
	// publishReadings publishes what arrived since the last publish.
	publishReadings struct{}
)

// telemetryActor aggregates the queues' gauge readings and publishes them on
// a GaugeBoard, where the observable-gauge callback and ListQueues read them
// without ever waiting on an actor.
type telemetryActor struct {
	board    *telemetry.GaugeBoard
	readings map[string]telemetry.QueueGauges
	pending  bool // a publishReadings is in the mailbox
}

func newTelemetryActor(board *telemetry.GaugeBoard) actor.Actor {
	return &telemetryActor{board: board, readings: map[string]telemetry.QueueGauges{}}
}

// Receive implements actor.Actor.
func (t *telemetryActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *queueReading:
		t.readings[m.queue] = m.gauges
		t.schedule(ctx)
	case *queueGone:
		delete(t.readings, m.queue)
		t.schedule(ctx)
	case *publishReadings:
		// A copy, because readers may still hold the previous map.
		t.pending = false
		t.board.Publish(maps.Clone(t.readings))
	}
}

// schedule publishes once after the readings already in the mailbox, so a
// burst of readings costs one copy.
func (t *telemetryActor) schedule(ctx actor.Context) {
	if !t.pending {
		t.pending = true
		ctx.Send(ctx.Self(), &publishReadings{})
	}
}
