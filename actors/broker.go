package actors

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// Messages the broker actor handles.
type (
	// CreateQueue defines a queue and starts its actor. Reply: *AdminReply.
	CreateQueue struct{ Config QueueConfig }
	// DeleteQueue stops a queue's actor, ends its streams with
	// ErrQueueNotFound, and removes its messages and leases. Reply: *AdminReply.
	DeleteQueue struct{ Name string }
	// UpdateQueue changes fields of a live queue's config, durably; the
	// change applies from the next delivery or settle on, and a supervisor
	// restart keeps it. Reply: *UpdateQueueReply.
	UpdateQueue struct {
		Name  string
		Patch QueuePatch
	}
	// UpdateQueueReply answers UpdateQueue with the config now in force.
	UpdateQueueReply struct {
		Config QueueConfig
		Err    error
	}
	// SetConfig stores Value under Key in the runtime config store; an
	// empty Value deletes Key. With IfAbsent, a Key already set is left
	// alone and the reply is ErrQueueExists (the check and the write are
	// one step of the broker, so two creators cannot both win). Reply:
	// *AdminReply.
	SetConfig struct {
		Key, Value string
		IfAbsent   bool
	}
	// AdminReply answers CreateQueue, DeleteQueue and SetConfig.
	AdminReply struct{ Err error }
	// EndStreams ends every consumer of every queue with ErrShuttingDown, the
	// first step of a graceful shutdown. Reply: *AdminReply.
	EndStreams struct{}
)

// brokerActor is the root of the queue actors: it creates, recovers, deletes
// and supervises them. It owns the Directory's writes.
type brokerActor struct {
	opts     Options
	deps     queueDeps
	dir      *Directory
	children map[string]*child
	// deleting holds the names whose delete is underway, from the write
	// that marks them deleted until their contents are reaped: such a name
	// cannot be created again meanwhile. reaping holds the continuation of
	// each reap in progress. unfinished holds the names whose reap failed:
	// their mark is still stored, so a create reaps them again first.
	deleting   map[string]bool
	reaping    map[string]*reaping
	unfinished map[string]bool
	// runtime is the runtime config store; the broker is its one writer.
	runtime *RuntimeConfig
}

// child is a live queue actor and the config cell it reads.
type child struct {
	pid    *actor.PID
	config *configCell
}

// Receive implements actor.Actor.
func (b *brokerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		b.recoverQueues(ctx)
	case *CreateQueue:
		b.createAfterLeftovers(ctx, m.Config)
	case *UpdateQueue:
		cfg, err := b.update(ctx, m.Name, m.Patch)
		ctx.Respond(&UpdateQueueReply{Config: cfg, Err: err})
	case *SetConfig:
		if _, taken := b.runtime.Get(m.Key); taken && m.IfAbsent {
			ctx.Respond(&AdminReply{Err: fmt.Errorf("%w: %q", ErrQueueExists, m.Key)})
			return
		}
		ctx.Respond(&AdminReply{Err: b.runtime.set(b.opts.Store, m.Key, m.Value)})
	case *DeleteQueue:
		b.delete(ctx, m.Name)
	case *reapStepDone:
		b.reapStepped(ctx, m)
	case *EndStreams:
		for _, c := range b.children {
			ctx.Send(c.pid, &endConsumers{err: ErrShuttingDown})
		}
		ctx.Respond(&AdminReply{})
	}
}

// recoverQueues finishes the deletes a crash cut short, then starts an
// actor for every stored queue; each actor loads its own messages and
// leases.
func (b *brokerActor) recoverQueues(ctx actor.Context) {
	deleted, err := b.opts.Store.DeletedQueues()
	if err != nil {
		panic(fmt.Errorf("actors: list deleted queues: %w", err))
	}
	for _, name := range deleted {
		b.reap(ctx, name, func(error) {})
	}
	if len(deleted) > 0 {
		b.opts.Logger.Info("finishing deletes cut short", slog.Int("queues", len(deleted)))
	}
	recs, err := b.opts.Store.Queues()
	if err != nil {
		panic(fmt.Errorf("actors: list queues: %w", err))
	}
	// A deletion's mark and the queue's record are removed in one unit, so
	// a name is never both; the reap removes any record regardless.
	recs = slices.DeleteFunc(recs, func(rec *storagev1.QueueRecord) bool { return b.deleting[rec.GetName()] })
	for _, rec := range recs {
		b.spawn(ctx, queueConfigFrom(rec))
	}
	// Queues created before dead-letter queues existed get theirs now.
	for _, rec := range recs {
		if name := rec.GetName(); !IsDLQ(name) && b.children[DLQName(name)] == nil && !b.deleting[DLQName(name)] {
			if err := b.create(ctx, b.dlqConfig(queueConfigFrom(rec))); err != nil {
				panic(fmt.Errorf("actors: create dead-letter queue of %s: %w", name, err))
			}
		}
	}
	if len(recs) > 0 {
		b.opts.Logger.Info("queues recovered", slog.Int("queues", len(recs)))
	}
}

// createAfterLeftovers answers CreateQueue. Messages stored under a name
// that has no queue are leftovers (of a delete by an older filad cut short
// by a crash, or of a reap that failed): they must not reappear in the new
// queue, so they are reaped first, and the create runs after.
func (b *brokerActor) createAfterLeftovers(ctx actor.Context, cfg QueueConfig) {
	cfgs, err := b.planCreate(cfg)
	if err != nil {
		ctx.Respond(&AdminReply{Err: err})
		return
	}
	var left []string
	for _, c := range cfgs {
		ids, err := b.opts.Store.QueueItems(c.Name, false, "", 1)
		if err == nil && len(ids) == 0 {
			ids, err = b.opts.Store.QueueItems(c.Name, true, "", 1)
		}
		if err != nil {
			ctx.Respond(&AdminReply{Err: fmt.Errorf("%w: %w", ErrStorage, err)})
			return
		}
		if len(ids) > 0 || b.unfinished[c.Name] {
			left = append(left, c.Name)
		}
	}
	if len(left) == 0 {
		ctx.Respond(&AdminReply{Err: b.create(ctx, cfg)})
		return
	}
	b.opts.Logger.Warn("removing leftovers of an earlier delete before creating the queue", slog.String("queue_id", cfg.Name))
	var mark storage.Batch
	mark.RetireQueues(left...) // so a crash now cannot leave them to the new queue
	if err := b.opts.Store.Write(&mark); err != nil {
		ctx.Respond(&AdminReply{Err: fmt.Errorf("%w: %w", ErrStorage, err)})
		return
	}
	sender := ctx.Sender()
	b.reapAll(ctx, left, func(err error) {
		if err == nil {
			err = b.create(ctx, cfg)
		}
		ctx.Send(sender, &AdminReply{Err: err})
	})
}

// planCreate returns the queues a create of cfg defines: cfg and, unless
// it is a DLQ or its DLQ exists (which is adopted), its DLQ.
func (b *brokerActor) planCreate(cfg QueueConfig) ([]QueueConfig, error) {
	if b.children[cfg.Name] != nil {
		return nil, fmt.Errorf("%w: %q", ErrQueueExists, cfg.Name)
	}
	cfgs := []QueueConfig{cfg}
	if dlq := DLQName(cfg.Name); !IsDLQ(cfg.Name) && b.children[dlq] == nil {
		cfgs = append(cfgs, b.dlqConfig(cfg))
	}
	for _, c := range cfgs {
		if b.deleting[c.Name] {
			return nil, fmt.Errorf("%w: %q is being deleted; retry when the delete has finished", ErrQueueExists, c.Name)
		}
	}
	return cfgs, nil
}

// create defines a queue and, unless it is itself a DLQ, its DLQ (one
// write for both; an existing DLQ of that name is adopted).
func (b *brokerActor) create(ctx actor.Context, cfg QueueConfig) error {
	cfg.CreatedAt = time.Now()
	cfgs, err := b.planCreate(cfg)
	if err != nil {
		return err
	}
	var batch storage.Batch
	for _, c := range cfgs {
		batch.PutQueue(c.record())
	}
	if err := b.opts.Store.Write(&batch); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	for _, c := range cfgs {
		b.spawn(ctx, c)
		b.opts.Logger.Info("queue created", slog.String("queue_id", c.Name))
	}
	return nil
}

// dlqConfig is the config of source's dead-letter queue: the server's
// defaults (a DLQ has no limits, no max_attempts and no DLQ of its own).
func (b *brokerActor) dlqConfig(source QueueConfig) QueueConfig {
	return QueueConfig{
		Name:              DLQName(source.Name),
		VisibilityTimeout: b.opts.DefaultQueue.VisibilityTimeout,
		FairnessKeyHeader: b.opts.DefaultQueue.FairnessKeyHeader,
		CreatedAt:         source.CreatedAt,
	}
}

func (b *brokerActor) spawn(ctx actor.Context, cfg QueueConfig) {
	depth := &mailboxDepth{}
	config := newConfigCell(cfg)
	props := actor.PropsFromProducer(
		// A new actor per call: a restart must start from storage and the
		// config cell, not from the state that panicked.
		func() actor.Actor { return newQueueActor(config, depth, b.deps) },
		actor.WithMailbox(actor.Unbounded(depth)),
	)
	pid, err := ctx.SpawnNamed(props, cfg.Name)
	if err != nil {
		panic(fmt.Errorf("actors: spawn queue %s: %w", cfg.Name, err))
	}
	b.children[cfg.Name] = &child{pid: pid, config: config}
	b.dir.add(&QueueRef{Name: cfg.Name, PID: pid, mailbox: depth})
}

func (b *brokerActor) update(ctx actor.Context, name string, patch QueuePatch) (QueueConfig, error) {
	c := b.children[name]
	if c == nil {
		return QueueConfig{}, QueueNotFound(name)
	}
	cfg := patch.Apply(c.config.get())
	var batch storage.Batch
	batch.PutQueue(cfg.record())
	if err := b.opts.Store.Write(&batch); err != nil {
		return QueueConfig{}, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	c.config.set(cfg)
	ctx.Send(c.pid, &configChanged{})
	b.opts.Logger.Info("queue updated", slog.String("queue_id", name))
	return cfg, nil
}

// delete deletes a queue and its DLQ. A DLQ whose source queue exists
// cannot be deleted alone: the source would have nowhere to dead-letter.
//
// The delete is decided by one write: both records go and both names are
// marked deleted, in one unit. After it, a crash at any moment ends with
// neither queue (recovery reaps what the mark names); before it, with both.
// Then the actors retire, and only once both have stopped (so that no
// write of theirs, such as a dead-lettering or a redrive between the two,
// can land behind the reap) are their contents reaped in bounded steps.
// The reply comes when the reap is done.
func (b *brokerActor) delete(ctx actor.Context, name string) {
	if b.children[name] == nil {
		ctx.Respond(&AdminReply{Err: QueueNotFound(name)})
		return
	}
	if source := strings.TrimSuffix(name, DLQSuffix); IsDLQ(name) && b.children[source] != nil {
		ctx.Respond(&AdminReply{Err: fmt.Errorf("%w: %q is the dead-letter queue of %q; delete that queue (which deletes both) or purge this one",
			ErrFailedPrecondition, name, source)})
		return
	}
	names := []string{name}
	if dlq := DLQName(name); b.children[dlq] != nil {
		names = append(names, dlq)
	}
	var mark storage.Batch
	mark.RetireQueues(names...)
	if err := b.opts.Store.Write(&mark); err != nil {
		ctx.Respond(&AdminReply{Err: fmt.Errorf("%w: %w", ErrStorage, err)})
		return
	}
	sender := ctx.Sender()
	b.retire(ctx, names, func() {
		b.reapAll(ctx, names, func(err error) { ctx.Send(sender, &AdminReply{Err: err}) })
	})
}

// retire stops the named queues' actors, then calls done. Each actor
// answers whatever still reaches it NOT_FOUND, ends its consumers, waits
// for its writes in flight, and stops itself; a future completes when it
// has. Blocking on that here could deadlock the broker, so each wait's
// continuation runs as a message of its own.
func (b *brokerActor) retire(ctx actor.Context, names []string, done func()) {
	stopped := make([]*actor.Future, len(names))
	pids := make([]*actor.PID, len(names))
	for i, name := range names {
		pids[i] = b.children[name].pid
		delete(b.children, name)
		b.deleting[name] = true
		b.dir.remove(name)
		stopped[i] = actor.NewFuture(ctx.ActorSystem(), b.opts.RequestTimeout)
		ctx.Send(pids[i], &retire{err: fmt.Errorf("%w: %q was deleted", ErrQueueNotFound, name), stopped: stopped[i].PID()})
	}
	var wait func(i int)
	wait = func(i int) {
		if i == len(names) {
			done()
			return
		}
		ctx.ReenterAfter(stopped[i], func(_ any, err error) {
			if err != nil {
				// Its writes did not finish in time: stop it regardless.
				b.opts.Logger.Warn("deleted queue's actor did not retire in time; stopping it", slog.String("queue_id", names[i]))
				_ = ctx.PoisonFuture(pids[i]).Wait()
			}
			ctx.Send(b.deps.telemetry, &queueGone{queue: names[i]})
			wait(i + 1)
		})
	}
	wait(0)
}

// reapLimit is how many messages, or leases, one reap step deletes: one
// bounded transaction, so that the writes of other queues, which share the
// committer, wait for about one step, not for the whole reap
// (`filabench -only operator` measures it).
const reapLimit = 1000

// reaping is a reap in progress: where it is, and what to do once it ends.
type reaping struct {
	reaper *storage.Reaper
	done   func(error)
}

// reapStepDone: one step of a reap is durable, or failed.
type reapStepDone struct {
	name string
	last bool
	err  error
}

// reapAll reaps the named queues one after the other, then calls done
// with the first error.
func (b *brokerActor) reapAll(ctx actor.Context, names []string, done func(error)) {
	b.reap(ctx, names[0], func(err error) {
		if err != nil {
			for _, name := range names[1:] { // not begun: left as a failed reap is
				delete(b.deleting, name)
				b.unfinished[name] = true
			}
		}
		if err != nil || len(names) == 1 {
			done(err)
			return
		}
		b.reapAll(ctx, names[1:], done)
	})
}

// reap deletes the contents of a queue marked deleted (RetireQueues),
// and then the mark, in steps of reapLimit messages, each submitted once
// the one before is durable; the broker serves other requests between
// steps. done runs in the broker once the reap has ended.
func (b *brokerActor) reap(ctx actor.Context, name string, done func(error)) {
	b.deleting[name] = true
	b.reaping[name] = &reaping{reaper: storage.NewReaper(name), done: done}
	b.reapNext(ctx, name)
}

func (b *brokerActor) reapNext(ctx actor.Context, name string) {
	step, last, err := b.reaping[name].reaper.Next(b.opts.Store, reapLimit)
	if err != nil {
		b.reapStepped(ctx, &reapStepDone{name: name, err: err})
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	b.opts.Store.Submit(step, func(err error) {
		// On the committer's goroutine: only hand the outcome over.
		root.Send(self, &reapStepDone{name: name, last: last, err: err})
	})
}

func (b *brokerActor) reapStepped(ctx actor.Context, m *reapStepDone) {
	if m.err == nil && !m.last {
		b.reapNext(ctx, m.name)
		return
	}
	done := b.reaping[m.name].done
	delete(b.reaping, m.name)
	delete(b.deleting, m.name)
	if m.err != nil {
		// The mark stays: the next start, or a create of the name, reaps again.
		b.unfinished[m.name] = true
		b.opts.Logger.Error("delete of queue's messages incomplete; it is retried on restart or when the name is created again",
			slog.String("queue_id", m.name), slog.Any("error", m.err))
		done(fmt.Errorf("%w: %w", ErrStorage, m.err))
		return
	}
	delete(b.unfinished, m.name)
	b.opts.Logger.Info("queue deleted", slog.String("queue_id", m.name))
	done(nil)
}

// supervisorStrategy restarts a failed queue actor, which reloads from
// storage; other queues never notice. A queue that fails 10 times within a
// minute is stopped rather than spun.
func supervisorStrategy(log *slog.Logger) actor.SupervisorStrategy {
	return actor.NewOneForOneStrategy(10, time.Minute, func(reason any) actor.Directive {
		log.Warn("queue actor failed; restarting it from storage", slog.Any("reason", reason))
		return actor.RestartDirective
	})
}
