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

// Messages the broker actor handles. CreateQueue, UpdateQueue,
// DeleteQueue, SetConfig, CreateKey, RevokeKey and SetAcl are its commands
// (commands.go says how it runs them); EndStreams is not.
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
	// empty Value deletes Key. Reply: *AdminReply.
	SetConfig struct{ Key, Value string }
	// AdminReply answers CreateQueue, DeleteQueue, SetConfig and CreateKey.
	AdminReply struct{ Err error }
	// EndStreams ends every consumer of every queue with ErrShuttingDown, the
	// first step of a graceful shutdown. Reply: *AdminReply.
	EndStreams struct{}
)

// brokerActor is the root of the queue actors: it creates, recovers, deletes
// and supervises them, and runs each where Options.Placement says
// (placement.go). It owns the Directory's writes.
type brokerActor struct {
	opts Options
	deps queueDeps
	dir  *Directory
	// children holds every live queue, whether its actor runs here or not.
	children map[string]*child
	// deleting holds the names whose delete is underway, from the write
	// that marks them deleted until their contents are reaped: such a name
	// cannot be created again meanwhile. reaping holds the continuation of
	// each reap in progress. unfinished holds the names whose reap failed:
	// their mark is still stored, so a create reaps them again first.
	deleting   map[string]bool
	reaping    map[string]*reaping
	unfinished map[string]bool
	// In a cluster (reap_cluster.go) the marks stored say which names are
	// being deleted, and creaps holds the reaps this node carries out,
	// markWaiters what waits for a mark to go.
	creaps      map[string]*clusterReap
	markWaiters map[string][]func()
	// retiring holds the actors of deleted queues, and of queues now served
	// elsewhere, until they have stopped.
	retiring map[string]*retiring
	// runtime is the runtime config store; the broker is its one writer.
	runtime *RuntimeConfig
	// commands holds the commands waiting for the one in flight.
	commands commandQueue
	// metaStale is set when MetaApplied came while a command was in
	// flight: the store may hold that command's write before its apply
	// ran, so the reload waits for it (placement.go).
	metaStale bool
	// metaWaiters are the senders of the MetaApplied messages deferred so,
	// answered once the reload has run.
	metaWaiters []*actor.PID
}

// child is a live queue: the config cell its actor reads, and the actor
// when it runs here (pid nil otherwise, where says where it runs: the
// Location in the queue's Directory entry).
type child struct {
	pid    *actor.PID
	config *configCell
	where  Location
}

// Receive implements actor.Actor.
func (b *brokerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		b.recoverQueues(ctx)
	case command:
		b.commands.push(&pendingCommand{cmd: m, sender: ctx.Sender()})
		b.runCommands(ctx)
	case *commandWritten:
		b.written(ctx, m)
	case *reapStepDone:
		b.reapStepped(ctx, m)
	case *reapConfirmed:
		b.reapConfirmedMsg(ctx, m)
	case *clusterStepDone:
		b.clusterStepped(ctx, m)
	case *reapRetry:
		b.reapRetried(ctx, m)
	case *marksGone:
		m.then()
	case *EndStreams:
		for _, c := range b.children {
			if c.pid != nil {
				ctx.Send(c.pid, &endConsumers{err: ErrShuttingDown})
			}
		}
		ctx.Respond(&AdminReply{})
	case *PlacementChanged:
		b.placeAll(ctx, respondLater(ctx))
		b.reconcileReaps(ctx) // a partition led here now, or no longer
	case *MetaApplied:
		b.metaApplied(ctx)
	case *actor.Stopping:
		b.refuseCommands(ctx)
	}
}

// recoverQueues finishes the deletes a crash cut short, then starts an
// actor for every stored queue; each actor loads its own messages and
// leases. The migrations (recovery.go) have run before.
func (b *brokerActor) recoverQueues(ctx actor.Context) {
	deleted, err := b.opts.Store.DeletedQueues()
	if err != nil {
		panic(fmt.Errorf("actors: list deleted queues: %w", err))
	}
	if b.metaForwarder() != nil {
		// A cluster's partition leaders reap, once they know they lead.
		b.reconcileReaps(ctx)
		deleted = nil
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
		b.define(ctx, queueConfigFrom(rec))
	}
	if len(recs) > 0 {
		b.opts.Logger.Info("queues recovered", slog.Int("queues", len(recs)))
	}
}

// decide checks a CreateQueue: the name (and its DLQ's) must be free.
// Messages stored under a name that has no queue are leftovers (of a
// delete by an older filad cut short by a crash, or of a reap that failed):
// they must not reappear in the new queue, so the command marks them
// deleted first, reaps them, and then is decided again.
func (m *CreateQueue) decide(b *brokerActor) (*decision, error) {
	cfg := m.Config
	cfg.CreatedAt = time.Now()
	if p, ok := b.opts.Placement.(Partitioner); ok {
		// Decided here, from this node's applied state, and recorded:
		// every node reads it from the record.
		cfg.Partition = p.Partition(storage.FamilyOf(cfg.Name).Family)
	}
	cfgs, err := b.planCreate(cfg)
	if err != nil {
		return nil, err
	}
	left, err := b.leftovers(cfgs)
	if err != nil {
		return nil, err
	}
	if len(left) == 0 {
		return &decision{entry: &queuesDefined{configs: cfgs}, done: answer(&AdminReply{})}, nil
	}
	b.opts.Logger.Warn("removing leftovers of an earlier delete before creating the queue", slog.String("queue_id", cfg.Name))
	// Leftovers are marked with the partition their keys are on now (a
	// reaped mark's, when this node's copy of it lags the reap; else the
	// hash's): the reap runs there, and the family never moves, which
	// snapshots rely on. A single node has no partitions (0).
	var partition uint32
	if p, ok := b.opts.Placement.(Partitioner); ok {
		partition = p.Routed(storage.FamilyOf(cfg.Name).Family)
	}
	return &decision{entry: &queuesRetired{names: left, partition: partition}, done: func(ctx actor.Context, b *brokerActor, p *pendingCommand) {
		if b.metaForwarder() != nil {
			b.awaitMarksGone(ctx, left, func() { // reaped by the partition's leader
				b.commands.pushFront(p)
				b.runCommands(ctx)
			})
			return
		}
		b.reapAll(ctx, left, func(err error) {
			if err != nil {
				p.answer(ctx, &AdminReply{Err: err})
				return
			}
			b.commands.pushFront(p) // the names are free now: create them next
			b.runCommands(ctx)
		})
	}}, nil
}

func (m *CreateQueue) refuse(err error) any { return &AdminReply{Err: err} }

// leftovers are the names of cfgs that have messages or leases stored, or
// a reap that failed.
func (b *brokerActor) leftovers(cfgs []QueueConfig) ([]string, error) {
	var left []string
	for _, c := range cfgs {
		ids, err := b.opts.Store.QueueItems(c.Name, false, "", 1)
		if err == nil && len(ids) == 0 {
			ids, err = b.opts.Store.QueueItems(c.Name, true, "", 1)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStorage, err)
		}
		if len(ids) > 0 || b.unfinished[c.Name] {
			left = append(left, c.Name)
		}
	}
	return left, nil
}

// planCreate returns the queues a create of cfg defines: cfg and, unless
// it is a DLQ or its DLQ exists (which is adopted), its DLQ.
func (b *brokerActor) planCreate(cfg QueueConfig) ([]QueueConfig, error) {
	if b.children[cfg.Name] != nil {
		return nil, fmt.Errorf("%w: %q", ErrQueueExists, cfg.Name)
	}
	cfgs := []QueueConfig{cfg}
	if dlq := DLQName(cfg.Name); !IsDLQ(cfg.Name) && b.children[dlq] == nil {
		cfgs = append(cfgs, dlqConfig(b.opts.DefaultQueue, cfg))
	}
	for _, c := range cfgs {
		if b.deleting[c.Name] {
			return nil, fmt.Errorf("%w: %q is being deleted; retry when the delete has finished", ErrQueueExists, c.Name)
		}
	}
	return cfgs, nil
}

// dlqConfig is the config of source's dead-letter queue: the server's
// defaults (a DLQ has no limits, no max_attempts and no DLQ of its own).
func dlqConfig(defaults, source QueueConfig) QueueConfig {
	return QueueConfig{
		Name:              DLQName(source.Name),
		VisibilityTimeout: defaults.VisibilityTimeout,
		FairnessKeyHeader: defaults.FairnessKeyHeader,
		CreatedAt:         source.CreatedAt,
		Partition:         source.Partition, // a family is on one partition
	}
}

// define adds a queue to the broker and the Directory, and starts its
// actor if it runs here.
func (b *brokerActor) define(ctx actor.Context, cfg QueueConfig) {
	b.children[cfg.Name] = &child{config: newConfigCell(cfg)}
	b.place(ctx, cfg.Name)
}

// spawn starts the actor of the queue c, which is to run here, and
// publishes it. c's config cell is the one every incarnation of the
// queue's actor on this node shares, so that epochs keep growing and
// writes in flight are counted across a move away and back.
func (b *brokerActor) spawn(ctx actor.Context, name string, c *child) {
	depth := &mailboxDepth{}
	config := c.config
	props := actor.PropsFromProducer(
		// A new actor per call: a restart must start from storage and the
		// config cell, not from the state that panicked.
		func() actor.Actor { return newQueueActor(config, depth, b.deps) },
		actor.WithMailbox(actor.Unbounded(depth)),
		actor.WithDispatcher(b.deps.dispatcher),
	)
	pid, err := ctx.SpawnNamed(props, name)
	if err != nil {
		panic(fmt.Errorf("actors: spawn queue %s: %w", name, err))
	}
	c.pid, c.where = pid, Location{}
	b.dir.add(&QueueRef{Name: name, PID: pid, mailbox: depth})
}

// decide checks an UpdateQueue: the queue must exist. The patch is
// applied to the config in force, which every earlier command has set.
func (m *UpdateQueue) decide(b *brokerActor) (*decision, error) {
	c := b.children[m.Name]
	if c == nil {
		return nil, QueueNotFound(m.Name)
	}
	cfg := m.Patch.Apply(c.config.get())
	return &decision{entry: &queueUpdated{config: cfg}, done: answer(&UpdateQueueReply{Config: cfg})}, nil
}

func (m *UpdateQueue) refuse(err error) any { return &UpdateQueueReply{Err: err} }

// decide checks a DeleteQueue, which deletes a queue and its DLQ. A DLQ
// whose source queue exists cannot be deleted alone: the source would have
// nowhere to dead-letter.
//
// The delete is decided by one write: both records go and both names are
// marked deleted, in one unit. After it, a crash at any moment ends with
// neither queue (recovery reaps what the mark names); before it, with both.
// Applying it retires the actors, and only once both have stopped (so that
// no write of theirs, such as a dead-lettering or a redrive between the
// two, can land behind the reap) are their contents reaped in bounded
// steps. The reply comes when the reap is done; later commands do not wait
// for it. In a cluster the reap is the partition leader's, and the reply
// comes when the marks are gone (reap_cluster.go).
func (m *DeleteQueue) decide(b *brokerActor) (*decision, error) {
	name := m.Name
	if b.children[name] == nil {
		return nil, QueueNotFound(name)
	}
	if source := strings.TrimSuffix(name, DLQSuffix); IsDLQ(name) && b.children[source] != nil {
		return nil, fmt.Errorf("%w: %q is the dead-letter queue of %q; delete that queue (which deletes both) or purge this one",
			ErrFailedPrecondition, name, source)
	}
	names := []string{name}
	if dlq := DLQName(name); b.children[dlq] != nil {
		names = append(names, dlq)
	}
	partition := b.children[name].config.get().Partition
	return &decision{entry: &queuesRetired{names: names, partition: partition}, done: func(ctx actor.Context, b *brokerActor, p *pendingCommand) {
		if b.metaForwarder() != nil {
			// Reaped by the partition's leader (reap_cluster.go).
			b.awaitMarksGone(ctx, names, func() { p.answer(ctx, &AdminReply{}) })
			return
		}
		b.awaitRetired(ctx, names, func() {
			b.reapAll(ctx, names, func(err error) { p.answer(ctx, &AdminReply{Err: err}) })
		})
	}}, nil
}

func (m *DeleteQueue) refuse(err error) any { return &AdminReply{Err: err} }

// retiring is a queue's actor on its way out (its queue deleted, or now
// served elsewhere): once it has stopped, the broker forgets it and runs
// then, in order.
type retiring struct {
	pid     *actor.PID
	stopped *actor.Future
	then    []func()
}

// remove takes a deleted queue out of the broker and the Directory, and
// retires its actor if it runs here: the actor answers whatever still
// reaches it NOT_FOUND.
func (b *brokerActor) remove(ctx actor.Context, name string) {
	c := b.children[name]
	delete(b.children, name)
	b.dir.remove(name)
	if c.pid != nil {
		b.retire(ctx, name, c.pid, fmt.Errorf("%w: %q was deleted", ErrQueueNotFound, name))
	}
}

// retire tells a queue's actor to stop: it answers whatever still reaches
// it with err, ends its consumers with err, waits for its writes in
// flight, and stops itself; awaitRetired waits for that. Blocking on it
// here could deadlock the broker, so the wait's continuation runs as a
// message of its own.
func (b *brokerActor) retire(ctx actor.Context, name string, pid *actor.PID, err error) {
	r := &retiring{pid: pid, stopped: actor.NewFuture(ctx.ActorSystem(), b.opts.RequestTimeout)}
	b.retiring[name] = r
	ctx.Send(pid, &retire{err: err, stopped: r.stopped.PID()})
	ctx.ReenterAfter(r.stopped, func(_ any, err error) {
		if err != nil {
			// Its writes did not finish in time: stop it regardless.
			b.opts.Logger.Warn("queue's actor did not retire in time; stopping it", slog.String("queue_id", name))
			_ = ctx.PoisonFuture(r.pid).Wait()
		}
		delete(b.retiring, name)
		ctx.Send(b.deps.telemetry, &queueGone{queue: name})
		for _, then := range r.then {
			then()
		}
	})
}

// awaitRetired calls done once the named queues' actors that are retiring
// have stopped.
func (b *brokerActor) awaitRetired(_ actor.Context, names []string, done func()) {
	left := 0
	for _, name := range names {
		if r := b.retiring[name]; r != nil {
			left++
			r.then = append(r.then, func() {
				if left--; left == 0 {
					done()
				}
			})
		}
	}
	if left == 0 {
		done()
	}
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
