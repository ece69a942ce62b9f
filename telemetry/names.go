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
	Redelivered
	DRRRounds
	DRRKeysProcessed
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
	OldestReady
	DRRActiveKeys
	Bytes
	MaxDepth
	MaxBytes
	ConsumerCredit
	numGauges
)

// MetricSpec describes one exported instrument.
type MetricSpec struct {
	Name, Unit, Description string
	// SinceUnixMillis: the reading holds a Unix time in milliseconds (0:
	// none), and the instrument reports the seconds since then (a float
	// gauge), so an age grows between readings.
	SinceUnixMillis bool
}

// Counts describes each Count's instrument.
var Counts = [numCounts]MetricSpec{
	Enqueued:     {Name: "fila.messages.enqueued", Unit: "{message}", Description: "Messages accepted durably by Enqueue."},
	Leased:       {Name: "fila.messages.leased", Unit: "{message}", Description: "Messages delivered to consumers under a lease."},
	Acked:        {Name: "fila.messages.acked", Unit: "{message}", Description: "Messages acknowledged and deleted."},
	Nacked:       {Name: "fila.messages.nacked", Unit: "{message}", Description: "Messages nacked by consumers (then retried, delayed or dead-lettered)."},
	Expired:      {Name: "fila.messages.expired", Unit: "{message}", Description: "Leases that ran out their visibility timeout unsettled."},
	DeadLettered: {Name: "fila.messages.dead_lettered", Unit: "{message}", Description: "Messages that reached max_attempts and moved to the dead-letter queue (or were dropped with dead_letter off)."},
	Redriven:     {Name: "fila.messages.redriven", Unit: "{message}", Description: "Messages moved from this dead-letter queue back to its source by Redrive."},
	Redelivered:  {Name: "fila.messages.redelivered", Unit: "{message}", Description: "Deliveries of messages delivered before (attempt_count > 0)."},
	DRRRounds:    {Name: "fila.scheduler.drr.rounds", Unit: "{round}", Description: "DRR rounds: as many key turns as there were active keys."},
	DRRKeysProcessed: {Name: "fila.scheduler.drr.keys_processed", Unit: "{key}",
		Description: "DRR turns: a fairness key granted its quantum."},
}

// Gauges describes each Gauge's instrument.
var Gauges = [numGauges]MetricSpec{
	Depth:           {Name: "fila.queue.depth", Unit: "{message}", Description: "Ready messages in the queue now."},
	LeasesActive:    {Name: "fila.leases.active", Unit: "{message}", Description: "Leased (in-flight) messages in the queue now."},
	ConsumersActive: {Name: "fila.consumers.active", Unit: "{consumer}", Description: "Open lease streams on the queue now."},
	Delayed:         {Name: "fila.queue.delayed", Unit: "{message}", Description: "Messages waiting out a retry backoff or fila-delay-ms now (not in depth)."},
	OldestReady: {Name: "fila.queue.oldest_ready.age", Unit: "s", SinceUnixMillis: true,
		Description: "How long the oldest ready message has waited since it was enqueued; 0 when none is ready."},
	DRRActiveKeys: {Name: "fila.scheduler.drr.active_keys", Unit: "{key}", Description: "Fairness keys with ready messages now."},
	Bytes: {Name: "fila.queue.bytes", Unit: "By",
		Description: "Payload bytes the queue holds now (ready, delayed and leased), as they count against max_bytes."},
	MaxDepth: {Name: "fila.queue.limit.max_depth", Unit: "{message}",
		Description: "The queue's max_depth (messages held before Enqueue is refused); 0 is unlimited."},
	MaxBytes: {Name: "fila.queue.limit.max_bytes", Unit: "By",
		Description: "The queue's max_bytes (payload bytes held before Enqueue is refused); 0 is unlimited."},
	ConsumerCredit: {Name: "fila.consumers.credit", Unit: "{message}",
		Description: "Deliveries the queue's consumers can take now: their max_in_flight less what they hold."},
}

// Per-fairness-key instruments (attributes queue_id and fairness_key),
// capped per queue.
var (
	FairnessThroughput = MetricSpec{Name: "fila.fairness.throughput", Unit: "{message}",
		Description: "Deliveries per fairness key (the first keys of a queue up to telemetry.fairness_keys; the rest as (other))."}
	FairShareRatio = MetricSpec{Name: "fila.fairness.fair_share_ratio", Unit: "1",
		Description: "A fairness key's deliveries over the last 60 s against what weighted max-min fairness would have given it; 1.0 is exactly fair, 0 starved."}
)

// Lua hook instruments (Fila story 6.3), per queue_id and hook.
var (
	LuaDuration = MetricSpec{Name: "fila.lua.execution.duration", Unit: "s", Description: "Time one Lua hook call took."}
	LuaErrors   = MetricSpec{Name: "fila.lua.errors", Unit: "{error}",
		Description: "Lua hook calls that failed: an error, a timeout or an invalid result (the queue's defaults applied)."}
	LuaBreakerActivations = MetricSpec{Name: "fila.lua.circuit_breaker.activations", Unit: "{activation}",
		Description: "Times a queue's script breaker opened (its hook is bypassed for the cooldown)."}
)

// AttrHook names the hook on the fila.lua.* instruments.
const AttrHook = "hook"

// Throttle instruments (Fila story 6.3).
var (
	ThrottleDecisions = MetricSpec{Name: "fila.throttle.decisions", Unit: "{decision}",
		Description: "Throttle checks of messages about to be delivered: result pass (a token taken) or hit (held back)."}
	ThrottleTokens = MetricSpec{Name: "fila.throttle.tokens_remaining", Unit: "{token}",
		Description: "Tokens in a throttle key's bucket now."}
)

// AuthFailures counts refused calls by reason (missing_key, invalid_key,
// expired_key, unknown_certificate, permission_denied).
var AuthFailures = MetricSpec{Name: "fila.auth.failures", Unit: "{call}", Description: "Calls refused for their key or certificate, or for a missing permission, by reason."}

// Attributes of the throttle instruments.
const (
	AttrThrottleKey = "throttle_key"
	AttrResult      = "result"
)

// AttrFairnessKey names the fairness key on the per-key instruments.
const AttrFairnessKey = "fairness_key"

// Histograms recorded synchronously (lock-free in the SDK) on hot paths.
var (
	// CommitDuration is how long a queue's durable write took, from submit
	// to the committer's answer: the fsync wait a client's request sees.
	CommitDuration = MetricSpec{Name: "fila.storage.commit.duration", Unit: "s", Description: "Time from submitting a queue's write to its durable commit."}
	// ReadDuration is how long a queue's read of the message records its
	// message cache missed took (issue 26): one per read, whoever reads.
	ReadDuration = MetricSpec{Name: "fila.storage.read.duration", Unit: "s", Description: "Time a queue's read of the message records its cache missed took."}
	// WaitDuration is how long a message waited from its enqueue to its
	// first delivery.
	WaitDuration = MetricSpec{Name: "fila.message.wait.duration", Unit: "s", Description: "Time from a message's enqueue to its first delivery."}
	// ProcessDuration is how long a lease lasted until its ack or nack.
	ProcessDuration = MetricSpec{Name: "fila.message.process.duration", Unit: "s", Description: "Time from a delivery to its ack or nack."}
	// CommitItems is how many items (a message with its lease) one
	// storage commit wrote: how well group commit groups.
	CommitItems = MetricSpec{Name: "fila.storage.commit.messages", Unit: "{message}", Description: "Items (a message with its lease) written per storage commit."}
)

// MessageSize is a message's payload size, as it counts against
// max_bytes, one measurement per message Enqueue admits.
var MessageSize = MetricSpec{Name: "fila.message.size", Unit: "By", Description: "Payload size of each message Enqueue admitted, as it counts against max_bytes."}

// EnqueueRefused counts messages a queue refused, by reason: max_depth or
// max_bytes. (A resource alarm refuses every queue alike, before the queue
// sees the message: fila.alarm.active says when.)
var EnqueueRefused = MetricSpec{Name: "fila.messages.refused", Unit: "{message}", Description: "Messages a queue refused for its max_depth or max_bytes, by reason."}

// Refusal reasons of EnqueueRefused.
const (
	RefusedMaxDepth = "max_depth"
	RefusedMaxBytes = "max_bytes"
)

// AttrReason names why, on fila.messages.refused and fila.auth.failures.
const AttrReason = "reason"

// AlarmActive is 1 while a broker-wide resource alarm (attribute alarm:
// disk or memory) refuses Enqueue, else 0.
var AlarmActive = MetricSpec{Name: "fila.alarm.active", Unit: "1", Description: "1 while a resource alarm refuses Enqueue, else 0."}

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
	MetricRedelivered = Counts[Redelivered].Name
	MetricOldestReady = Gauges[OldestReady].Name
)

// Store and disk gauges (server reads them at each collection).
var (
	StorageSize = MetricSpec{Name: "fila.storage.size", Unit: "By",
		Description: "Bytes of the store's files in storage.data_dir (badger's LSM tree and value log; the disk reserve left out)."}
	DiskFree = MetricSpec{Name: "fila.storage.disk.free", Unit: "By",
		Description: "Free bytes on storage.data_dir's filesystem, as the disk alarm sees them."}
	DiskMinFree = MetricSpec{Name: "fila.storage.disk.min_free", Unit: "By",
		Description: "limits.min_free_disk_bytes: with less free, the disk alarm refuses Enqueue; 0 is off."}
)

// Process instruments, by the semantic conventions' names.
var (
	ProcessCPUTime = MetricSpec{Name: "process.cpu.time", Unit: "s", Description: "CPU time filad has used, by cpu.mode (user, system)."}
	ProcessMemory  = MetricSpec{Name: "process.memory.usage", Unit: "By", Description: "filad's resident memory (RSS)."}
	ProcessFDs     = MetricSpec{Name: "process.unix.file_descriptor.count", Unit: "{file_descriptor}", Description: "File descriptors filad has open."}
	// ProcessAnonymousMemory has no semantic-conventions name: it is
	// filad's, beside process.memory.usage.
	ProcessAnonymousMemory = MetricSpec{Name: "fila.process.memory.anonymous", Unit: "By",
		Description: "filad's anonymous resident memory: the resident set less its file-backed pages (badger's mapped files, which the kernel reclaims); what the memory alarm judges against limits.max_memory_bytes."}
)

// ExportFailures counts failed OTLP exports by signal (traces, metrics):
// what the one WARN per outage says, for an alert.
var ExportFailures = MetricSpec{Name: "fila.telemetry.export.failures", Unit: "{export}", Description: "OTLP exports that failed (after their retries), by signal."}
