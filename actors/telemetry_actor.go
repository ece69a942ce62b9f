package actors

import (
	"maps"
	"slices"

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
// reset its queue's counters. A deleted queue's series stop, but its counts
// are kept: a queue created again under that name counts on from them, so
// a cumulative series never goes down under the same start time.
type telemetryActor struct {
	board    *telemetry.Board
	readings map[string]telemetry.QueueReading
	pending  bool // a publishReadings is in the mailbox
	// retired holds deleted queues' counts, the oldest first out of order
	// past maxRetiredCounts.
	retired map[string]telemetry.QueueReading
	order   []string
}

// maxRetiredCounts bounds the deleted queues whose counts are kept.
const maxRetiredCounts = 10_000

func newTelemetryActor(board *telemetry.Board) actor.Actor {
	return &telemetryActor{board: board, readings: map[string]telemetry.QueueReading{}, retired: map[string]telemetry.QueueReading{}}
}

// Receive implements actor.Actor.
func (t *telemetryActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *queueReading:
		r, live := t.readings[m.queue]
		if !live {
			r = t.retired[m.queue]
			delete(t.retired, m.queue)
		}
		r.Add(m.delta)
		t.readings[m.queue] = r
		t.schedule(ctx)
	case *queueGone:
		t.retire(m.queue)
		t.schedule(ctx)
	case *publishReadings:
		t.publish()
	case *syncReadings:
		t.publish()
		ctx.Respond(m)
	}
}

// retire stops a deleted queue's series and keeps its counts.
func (t *telemetryActor) retire(queue string) {
	r, ok := t.readings[queue]
	if !ok {
		return
	}
	delete(t.readings, queue)
	// Counts and per-key deliveries go on; gauges and ratios do not.
	kept := telemetry.QueueReading{Counts: r.Counts}
	if r.Fair != nil {
		kept.Fair = r.Fair.KeepTotals()
	}
	t.retired[queue] = kept
	t.order = append(t.order, queue)
	for len(t.retired) > maxRetiredCounts {
		oldest := t.order[0]
		t.order = t.order[1:]
		delete(t.retired, oldest) // may be gone already (created again)
	}
	if len(t.order) > 2*maxRetiredCounts {
		// Names created again leave stale entries: compact now and then.
		t.order = slices.DeleteFunc(t.order, func(q string) bool { _, kept := t.retired[q]; return !kept })
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
