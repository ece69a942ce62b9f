package actors

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

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
	deleting map[string]bool
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
		ctx.Respond(&AdminReply{Err: b.create(ctx, m.Config)})
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
	case *EndStreams:
		for _, c := range b.children {
			ctx.Send(c.pid, &endConsumers{err: ErrShuttingDown})
		}
		ctx.Respond(&AdminReply{})
	}
}

// recoverQueues starts an actor for every stored queue; each actor loads its
// own messages and leases.
func (b *brokerActor) recoverQueues(ctx actor.Context) {
	recs, err := b.opts.Store.Queues()
	if err != nil {
		panic(fmt.Errorf("actors: list queues: %w", err))
	}
	for _, rec := range recs {
		b.spawn(ctx, queueConfigFrom(rec))
	}
	// Queues created before dead-letter queues existed get theirs now.
	for _, rec := range recs {
		if name := rec.GetName(); !IsDLQ(name) && b.children[DLQName(name)] == nil {
			if err := b.create(ctx, b.dlqConfig(queueConfigFrom(rec))); err != nil {
				panic(fmt.Errorf("actors: create dead-letter queue of %s: %w", name, err))
			}
		}
	}
	if len(recs) > 0 {
		b.opts.Logger.Info("queues recovered", slog.Int("queues", len(recs)))
	}
}

// create defines a queue and, unless it is itself a DLQ, its DLQ (one
// write for both; an existing DLQ of that name is adopted).
func (b *brokerActor) create(ctx actor.Context, cfg QueueConfig) error {
	if b.children[cfg.Name] != nil || b.deleting[cfg.Name] {
		return fmt.Errorf("%w: %q", ErrQueueExists, cfg.Name)
	}
	cfg.CreatedAt = time.Now()
	cfgs := []QueueConfig{cfg}
	if dlq := DLQName(cfg.Name); !IsDLQ(cfg.Name) && b.children[dlq] == nil {
		if b.deleting[dlq] {
			return fmt.Errorf("%w: %q, the dead-letter queue of %q, is being deleted", ErrQueueExists, dlq, cfg.Name)
		}
		cfgs = append(cfgs, b.dlqConfig(cfg))
	}
	var batch storage.Batch
	for _, c := range cfgs {
		// Leftovers of a deletion cut short by a crash must not reappear.
		if err := b.opts.Store.PurgeQueue(c.Name); err != nil {
			return fmt.Errorf("%w: %w", ErrStorage, err)
		}
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
	b.retire(ctx, names, func(err error) { ctx.Respond(&AdminReply{Err: err}) })
}

// retire deletes the named queues one after the other, then calls done
// with the first error. Each queue's actor answers whatever still reaches
// it NOT_FOUND, ends its consumers, waits for its writes in flight, and
// stops itself; a future completes when it has. Blocking on that here could
// deadlock the broker, so the continuation runs as a message of its own,
// with this request's sender restored.
func (b *brokerActor) retire(ctx actor.Context, names []string, done func(error)) {
	name := names[0]
	c := b.children[name]
	delete(b.children, name)
	b.deleting[name] = true
	b.dir.remove(name)
	stopped := actor.NewFuture(ctx.ActorSystem(), b.opts.RequestTimeout)
	ctx.Send(c.pid, &retire{err: fmt.Errorf("%w: %q was deleted", ErrQueueNotFound, name), stopped: stopped.PID()})
	ctx.ReenterAfter(stopped, func(_ any, err error) {
		if err != nil {
			// Its writes did not finish in time: stop it regardless.
			b.opts.Logger.Warn("deleted queue's actor did not retire in time; stopping it", slog.String("queue_id", name))
			_ = ctx.PoisonFuture(c.pid).Wait()
		}
		ctx.Send(b.deps.telemetry, &queueGone{queue: name})
		err = b.purge(name)
		if len(names) == 1 || err != nil {
			done(err)
			return
		}
		b.retire(ctx, names[1:], done)
	})
}

func (b *brokerActor) purge(name string) error {
	defer delete(b.deleting, name)
	var batch storage.Batch
	batch.DeleteQueue(name)
	if err := b.opts.Store.Write(&batch); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	if err := b.opts.Store.PurgeQueue(name); err != nil {
		// The record is gone, so the queue is deleted; leftovers are purged
		// if the name is created again.
		b.opts.Logger.Warn("purge of deleted queue incomplete", slog.String("queue_id", name), slog.Any("error", err))
	}
	b.opts.Logger.Info("queue deleted", slog.String("queue_id", name))
	return nil
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
