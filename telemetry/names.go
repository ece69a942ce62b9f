package telemetry

// Every name filad exports lives in this file: the instrumentation scope,
// span names, and the metric table. Adding a per-queue metric is one entry
// in Counts or Gauges (plus the line that counts it) and its test; the
// instruments, the aggregation in the telemetry actor and ListQueues all
// range over these tables, so no field can be forgotten and export 0.

// ScopeName is the instrumentation scope of filad's own instruments and spans.
const ScopeName = "github.com/fila-dev/filad"

// Span names of the queue actor. Each is a child of the RPC span whose
// context came in the actor envelope, so one trace crosses the actors.
const (
	SpanEnqueue = "fila.queue.enqueue"
	SpanSettle  = "fila.queue.settle"
	SpanDeliver = "fila.queue.deliver"
	SpanCommit  = "fila.storage.commit"
)

// AttrQueueID is the attribute naming the queue on every fila.* series.
const AttrQueueID = "queue_id"

// Count is a per-queue monotonic counter, counted by the queue actor at
// the moment each change is durable.
type Count int

// The counters, in QueueReading.Counts order.
const (
	Enqueued Count = iota
	Leased
	Acked
	Nacked
	Expired
	DeadLettered
	Redriven
	numCounts
)

// Gauge is a per-queue value the queue actor reports as it is now.
type Gauge int

// The gauges, in QueueReading.Gauges order.
const (
	Depth Gauge = iota
	LeasesActive
	ConsumersActive
	Delayed
	numGauges
)

// MetricSpec describes one exported instrument.
type MetricSpec struct {
	Name, Unit, Description string
}

// Counts describes each Count's instrument.
var Counts = [numCounts]MetricSpec{
	Enqueued: {"fila.messages.enqueued", "{message}", "Messages accepted durably by Enqueue."},
	Leased:   {"fila.messages.leased", "{message}", "Messages delivered to consumers under a lease."},
	Acked:    {"fila.messages.acked", "{message}", "Messages acknowledged and deleted."},
	Nacked:   {"fila.messages.nacked", "{message}", "Messages nacked by consumers (then retried, delayed or dead-lettered)."},
	Expired:  {"fila.messages.expired", "{message}", "Leases that ran out their visibility timeout unsettled."},
	DeadLettered: {"fila.messages.dead_lettered", "{message}",
		"Messages that reached max_attempts and moved to the dead-letter queue (or were dropped with dead_letter off)."},
	Redriven: {"fila.messages.redriven", "{message}", "Messages moved from this dead-letter queue back to its source by Redrive."},
}

// Gauges describes each Gauge's instrument.
var Gauges = [numGauges]MetricSpec{
	Depth:           {"fila.queue.depth", "{message}", "Ready messages in the queue now."},
	LeasesActive:    {"fila.leases.active", "{message}", "Leased (in-flight) messages in the queue now."},
	ConsumersActive: {"fila.consumers.active", "{consumer}", "Open lease streams on the queue now."},
	Delayed:         {"fila.queue.delayed", "{message}", "Messages waiting out a retry backoff or fila-delay-ms now (not in depth)."},
}

// Histograms recorded synchronously (lock-free in the SDK) on hot paths.
var (
	// CommitDuration is how long a queue's durable write took, from submit
	// to the committer's answer: the fsync wait a client's request sees.
	CommitDuration = MetricSpec{"fila.storage.commit.duration", "s", "Time from submitting a queue's write to its durable commit."}
)

// AlarmActive is 1 while a broker-wide resource alarm (attribute alarm:
// disk or memory) refuses Enqueue, else 0.
var AlarmActive = MetricSpec{"fila.alarm.active", "1", "1 while a resource alarm refuses Enqueue, else 0."}

// AttrAlarm names the alarm on fila.alarm.active.
const AttrAlarm = "alarm"

// Metric names, for tests and dashboards that name one.
var (
	MetricEnqueued    = Counts[Enqueued].Name
	MetricLeased      = Counts[Leased].Name
	MetricAcked       = Counts[Acked].Name
	MetricNacked      = Counts[Nacked].Name
	MetricQueueDepth  = Gauges[Depth].Name
	MetricLeaseActive = Gauges[LeasesActive].Name
	MetricConsumers   = Gauges[ConsumersActive].Name
	MetricExpired     = Counts[Expired].Name
	MetricDeadLetter  = Counts[DeadLettered].Name
	MetricRedriven    = Counts[Redriven].Name
	MetricDelayed     = Gauges[Delayed].Name
)
