package actors

import (
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// QueueConfig is a queue's definition.
type QueueConfig struct {
	Name              string
	VisibilityTimeout time.Duration
	FairnessKeyHeader string
	// MaxDepth and MaxBytes bound the messages and payload bytes the queue
	// holds (ready and leased); 0 is unlimited.
	MaxDepth, MaxBytes uint64
	// MaxAttempts is how many deliveries a message gets before it is
	// dead-lettered (or dropped); 0 is unlimited.
	MaxAttempts uint32
	// Backoff delays a retry; the zero value retries at once.
	Backoff Backoff
	// DeadLetter moves a message at MaxAttempts to the queue's DLQ; when
	// false such a message is deleted.
	DeadLetter bool
	// OnEnqueueScript and OnFailureScript are the queue's Lua hooks; empty:
	// none (docs/scripting.md).
	OnEnqueueScript, OnFailureScript string
	// CreatedAt is when the queue was created; set by CreateQueue.
	CreatedAt time.Time
	// Partition is the cluster partition of the queue's family, chosen by
	// CreateQueue (Partitioner); 0 on a single node, and placed by a hash
	// of the name in a cluster.
	Partition uint32
}

// QueuePatch changes some fields of a QueueConfig; nil fields stay as
// they are.
type QueuePatch struct {
	VisibilityTimeout  *time.Duration
	FairnessKeyHeader  *string
	MaxDepth, MaxBytes *uint64
	MaxAttempts        *uint32
	Backoff            *Backoff
	DeadLetter         *bool
	OnEnqueueScript    *string
	OnFailureScript    *string
}

// Apply returns c with p's fields changed.
func (p QueuePatch) Apply(c QueueConfig) QueueConfig {
	set(&c.VisibilityTimeout, p.VisibilityTimeout)
	set(&c.FairnessKeyHeader, p.FairnessKeyHeader)
	set(&c.MaxDepth, p.MaxDepth)
	set(&c.MaxBytes, p.MaxBytes)
	set(&c.MaxAttempts, p.MaxAttempts)
	set(&c.Backoff, p.Backoff)
	set(&c.DeadLetter, p.DeadLetter)
	set(&c.OnEnqueueScript, p.OnEnqueueScript)
	set(&c.OnFailureScript, p.OnFailureScript)
	return c
}

func set[T any](field *T, v *T) {
	if v != nil {
		*field = *v
	}
}

func (c QueueConfig) record() *storagev1.QueueRecord {
	return &storagev1.QueueRecord{
		Name:                c.Name,
		VisibilityTimeoutMs: uint64(c.VisibilityTimeout / time.Millisecond),
		FairnessKeyHeader:   c.FairnessKeyHeader,
		CreatedAtUnixMs:     c.CreatedAt.UnixMilli(),
		MaxDepth:            c.MaxDepth,
		MaxBytes:            c.MaxBytes,
		MaxAttempts:         c.MaxAttempts,
		RetryInitialMs:      uint64(c.Backoff.Initial / time.Millisecond),
		RetryMaxMs:          uint64(c.Backoff.Max / time.Millisecond),
		RetryMultiplier:     c.Backoff.Multiplier,
		DeadLetterOff:       !c.DeadLetter,
		OnEnqueueScript:     c.OnEnqueueScript,
		OnFailureScript:     c.OnFailureScript,
		Partition:           c.Partition,
	}
}

func queueConfigFrom(rec *storagev1.QueueRecord) QueueConfig {
	return QueueConfig{
		Name:              rec.GetName(),
		VisibilityTimeout: time.Duration(rec.GetVisibilityTimeoutMs()) * time.Millisecond,
		FairnessKeyHeader: rec.GetFairnessKeyHeader(),
		MaxDepth:          rec.GetMaxDepth(),
		MaxBytes:          rec.GetMaxBytes(),
		MaxAttempts:       rec.GetMaxAttempts(),
		Backoff: Backoff{
			Initial:    time.Duration(rec.GetRetryInitialMs()) * time.Millisecond,
			Max:        time.Duration(rec.GetRetryMaxMs()) * time.Millisecond,
			Multiplier: rec.GetRetryMultiplier(),
		},
		DeadLetter:      !rec.GetDeadLetterOff(),
		OnEnqueueScript: rec.GetOnEnqueueScript(),
		OnFailureScript: rec.GetOnFailureScript(),
		CreatedAt:       time.UnixMilli(rec.GetCreatedAtUnixMs()),
		Partition:       rec.GetPartition(),
	}
}

// load loads the queue from storage: on first start, after a restart by the
// supervisor, and after a broker restart alike. It reads the messages'
// index records, not their payloads (storage.Store.LoadIndex); a queue
// stored before index records existed is read whole once, and its index
// records written then (indexQueue).
func (q *queueActor) load(ctx actor.Context) {
	q.reconfigure()
	q.epoch = q.config.epochs.Add(1)
	q.cacheScope = q.cfg.Name + "\x00" + strconv.FormatUint(q.epoch, 10)
	now := time.Now()
	var expired []*message
	// The index records come one by one, straight into the queue's own
	// entries: a backlog of ten million is never held twice.
	contents, err := q.deps.store.LoadIndex(q.cfg.Name, func(sm storage.IndexedMessage, l *storagev1.LeaseRecord) error {
		m := &message{id: sm.ID}
		if l != nil {
			m.idx = sm.Index
			at := time.UnixMilli(l.GetExpiresAtUnixMs())
			q.applyLease(m, time.Unix(0, l.GetLeasedAtUnixNs()), at, l.GetLeaseId(), nil)
			if !at.After(now) {
				m.leaseGen++ // as tick does: its expiry entry is stale
				expired = append(expired, m)
			}
			return nil
		}
		q.applyMessage(m, sm.Index, now) // in enqueue order: the latest weight wins again
		return nil
	})
	if err != nil {
		// Panicking hands the failure to the supervisor, which retries.
		panic(fmt.Errorf("actors: load queue %s: %w", q.cfg.Name, err))
	}
	if !contents.Indexed {
		q.indexQueue(ctx, contents.Unindexed)
	}
	q.failExpired(ctx, expired, now, "expire leases on recovery")
	q.armTimer(ctx)
	q.changed(ctx)
	q.deps.log.Debug("queue recovered", slog.String("queue_id", q.cfg.Name),
		slog.Int("messages", len(q.msgs)), slog.Int("leased", q.inFlight()))
}

// indexQueue writes the index records of the messages stored without one
// (by a filad before index records) and marks the queue indexed, so that
// its next load reads no payload. Nobody waits on it: until it commits
// (or if it fails), loads read those messages whole again, which is
// correct, only slower; an index record written meanwhile by a retry wins
// over the one made from the whole record, and this write never replaces
// it, as it is submitted before anything else of this epoch.
func (q *queueActor) indexQueue(ctx actor.Context, unindexed []storage.IndexedMessage) {
	var b storage.Batch
	for _, m := range unindexed {
		b.PutIndex(q.cfg.Name, m.ID, m.Index)
	}
	b.MarkIndexed(q.cfg.Name)
	q.deps.store.Defer(&b, q.logFailure(ctx, "write index records"))
	if len(unindexed) > 0 {
		q.deps.log.Info("queue indexed: its messages stored before index records have them now",
			slog.String("queue_id", q.cfg.Name), slog.Int("messages", len(unindexed)))
	}
}

// reconfigure reads the config cell and installs its scripts. A script
// that no longer compiles (the [lua] limits changed under it) is dropped
// with an ERROR: the queue goes on with its plain policy.
func (q *queueActor) reconfigure() {
	q.cfg = q.config.get()
	for _, s := range []struct{ hook, src string }{
		{scripting.OnEnqueue, q.cfg.OnEnqueueScript}, {scripting.OnFailure, q.cfg.OnFailureScript},
	} {
		if err := q.scripts.Set(s.hook, s.src); err != nil {
			q.deps.log.Error("queue script refused; the queue runs without it", slog.String("queue_id", q.cfg.Name),
				slog.String("hook", s.hook), slog.Any("error", err))
			_ = q.scripts.Set(s.hook, "")
		}
	}
}

// nextAttempt returns idx with attempt_count + 1, ready at once (ready_at
// unset).
func nextAttempt(idx storage.Index) storage.Index {
	idx.AttemptCount++
	idx.ReadyAtUnixMs = 0
	return idx
}

// withAttempt returns a copy of rec with attempt_count + 1; records are
// never changed in place because deliveries share them.
func withAttempt(rec *storagev1.MessageRecord) *storagev1.MessageRecord {
	return &storagev1.MessageRecord{
		Headers:             rec.GetHeaders(),
		Payload:             rec.GetPayload(),
		FairnessKey:         rec.GetFairnessKey(),
		Weight:              rec.GetWeight(),
		AttemptCount:        rec.GetAttemptCount() + 1,
		EnqueuedAtUnixNs:    rec.GetEnqueuedAtUnixNs(),
		CreationTraceparent: rec.GetCreationTraceparent(),
		CreationTracestate:  rec.GetCreationTracestate(),
		ThrottleKeys:        rec.GetThrottleKeys(),
	}
}

// logFailure is the completion of a write nobody waits on (leases, expiries):
// a failure is logged, and recovery reconciles from what did commit; an
// unknown outcome makes this epoch reload now.
func (q *queueActor) logFailure(ctx actor.Context, what string) func(error) {
	log, name, epoch := q.deps.log, q.cfg.Name, q.epoch
	self, system := ctx.Self(), ctx.ActorSystem()
	return func(err error) {
		if err != nil {
			log.Error("storage write failed", slog.String("queue_id", name), slog.String("op", what), slog.Any("error", err))
		}
		if unknownOutcome(err) {
			system.Root.Send(self, &writeUnknown{epoch: epoch})
		}
	}
}

// holdings are what a queue holds against its max_depth and max_bytes:
// stored messages and those whose Enqueue is being written.
type holdings struct{ messages, bytes uint64 }

// holding is what the queue holds now: its stored messages and its
// enqueues being written.
func (q *queueActor) holding() holdings {
	return holdings{messages: q.held.messages + q.reserved.messages, bytes: q.held.bytes + q.reserved.bytes}
}

// add counts a message of payloadBytes.
func (h *holdings) add(payloadBytes uint64) {
	h.messages++
	h.bytes += payloadBytes
}

// remove uncounts a message of payloadBytes.
func (h *holdings) remove(payloadBytes uint64) {
	h.messages--
	h.bytes -= payloadBytes
}

// admit says why a message of size bytes would break the queue's limits,
// with the limit's reason for fila.messages.refused, or nil.
func (h holdings) admit(cfg QueueConfig, size int) (string, error) {
	if cfg.MaxDepth > 0 && h.messages >= cfg.MaxDepth {
		return telemetry.RefusedMaxDepth, fmt.Errorf("%w: queue %q holds %d messages (config.max_depth %d)", ErrOverloaded, cfg.Name, h.messages, cfg.MaxDepth)
	}
	if cfg.MaxBytes > 0 && h.bytes+uint64(size) > cfg.MaxBytes {
		return telemetry.RefusedMaxBytes, fmt.Errorf("%w: queue %q holds %d payload bytes; %d more is over config.max_bytes %d", ErrOverloaded, cfg.Name, h.bytes, size, cfg.MaxBytes)
	}
	return "", nil
}
