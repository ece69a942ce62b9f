package actors

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fila-dev/filad/storage"
)

// The broker is a state machine of typed commands. Its state is the
// queues (their actors and config cells), the runtime config store and
// the API keys in it; CreateQueue, UpdateQueue, DeleteQueue, SetConfig,
// CreateKey, RevokeKey and SetAcl change it, and nothing else does.
//
// A command runs in three steps, all in the broker, the single writer:
//
//  1. decide: check its preconditions against the broker's state and turn
//     it into an entry, which says exactly what changes (the configs with
//     their creation time, the key's encoding): nothing left to look up.
//  2. write: the entry's batch is submitted to the store; the broker's
//     mailbox does not wait for the fsync. The completion comes back as a
//     message (commandWritten).
//  3. apply: once the batch is durable, apply turns the entry into memory,
//     and the command answers (or goes on: a delete reaps).
//
// Commands run one at a time, in arrival order: while one is being
// written, later ones wait in the broker's FIFO, so each decision sees
// every earlier command applied (two CreateQueue of one name: the second
// is ALREADY_EXISTS). Every other message (EndStreams, reap steps, a
// retiring actor's stop) is served meanwhile.
//
// In a cluster, the broker is the meta group's proposer: step 2's store
// proposes the batch to the meta group, and refuses it on a node that does
// not lead that group (ErrNotLeader: the command answers that error, and
// nothing changes). The other nodes' brokers do not run apply: the log
// brings the batch into their stores, and MetaApplied brings their memory
// to match (placement.go).

// A command is a message that changes the broker's state.
type command interface {
	// decide checks the command against b's state, with every earlier
	// command applied, and returns what carries it out, or why not.
	decide(b *brokerActor) (*decision, error)
	// refuse is the reply that carries err.
	refuse(err error) any
}

// decision is a command that passed its checks.
type decision struct {
	entry entry
	// done runs in the broker once entry is applied: it answers p, or goes
	// on with the command's later steps.
	done func(ctx actor.Context, b *brokerActor, p *pendingCommand)
}

// answer is a done that replies reply.
func answer(reply any) func(actor.Context, *brokerActor, *pendingCommand) {
	return func(ctx actor.Context, _ *brokerActor, p *pendingCommand) { p.answer(ctx, reply) }
}

// An entry is a decided command: what apply changes, and the batch that
// makes it durable.
type entry interface{ write(b *storage.Batch) }

type (
	// queuesDefined: queues created (a queue and its DLQ, or a DLQ alone).
	queuesDefined struct{ configs []QueueConfig }
	// queueUpdated: a queue's config replaced.
	queueUpdated struct{ config QueueConfig }
	// queuesRetired: queues deleted, their records removed and their names
	// marked, with their family's partition; their contents are reaped
	// afterwards.
	queuesRetired struct {
		names     []string
		partition uint32
	}
	// configSet: a runtime config key set, or deleted (value ""). API keys
	// are such keys.
	configSet struct{ key, value string }
)

func (e *queuesDefined) write(b *storage.Batch) {
	for _, c := range e.configs {
		b.PutQueue(c.record())
	}
}

func (e *queueUpdated) write(b *storage.Batch) { b.PutQueue(e.config.record()) }

func (e *queuesRetired) write(b *storage.Batch) { b.RetireQueuesOn(e.partition, e.names...) }

func (e *configSet) write(b *storage.Batch) {
	if e.value == "" {
		b.DeleteConfig(e.key)
	} else {
		b.PutConfig(e.key, e.value)
	}
}

// apply turns a committed entry into the broker's memory: the one place
// a command changes it.
func (b *brokerActor) apply(ctx actor.Context, e entry) {
	switch e := e.(type) {
	case *queuesDefined:
		for _, c := range e.configs {
			b.define(ctx, c)
			b.opts.Logger.Info("queue created", slog.String("queue_id", c.Name))
		}
	case *queueUpdated:
		c := b.children[e.config.Name]
		c.config.set(e.config)
		if c.pid != nil {
			ctx.Send(c.pid, &configChanged{})
		}
		b.opts.Logger.Info("queue updated", slog.String("queue_id", e.config.Name))
	case *queuesRetired:
		for _, name := range e.names {
			b.deleting[name] = true
			if b.children[name] != nil {
				b.remove(ctx, name)
			}
		}
	case *configSet:
		b.runtime.apply(e.key, e.value)
	default:
		panic(fmt.Sprintf("actors: broker cannot apply %T", e))
	}
}

// pendingCommand is a command and who waits for its answer.
type pendingCommand struct {
	cmd    command
	sender *actor.PID
	// decided is set once the command is decided and being written.
	decided *decision
}

// answer sends reply to whoever asked (nobody, for a plain Send).
func (p *pendingCommand) answer(ctx actor.Context, reply any) {
	if p.sender != nil {
		ctx.Send(p.sender, reply)
	}
}

// commandQueue is the broker's FIFO of commands: the one being written
// (inFlight) and those waiting behind it.
type commandQueue struct {
	inFlight *pendingCommand
	waiting  []*pendingCommand
}

func (q *commandQueue) push(p *pendingCommand) { q.waiting = append(q.waiting, p) }

// pushFront puts p before every waiting command.
func (q *commandQueue) pushFront(p *pendingCommand) {
	q.waiting = append([]*pendingCommand{p}, q.waiting...)
}

func (q *commandQueue) pop() *pendingCommand {
	p := q.waiting[0]
	q.waiting[0] = nil
	q.waiting = q.waiting[1:]
	return p
}

// commandWritten is the store's completion of the command in flight. The store
// calls back on its committer goroutine, so the callback only sends this
// to the broker, where apply runs. A self-message rather than ReenterAfter
// on a future: the store's completion is a callback, not a future, and a
// future's timeout would answer "failed" for a write that may still land.
type commandWritten struct{ err error }

// runCommands decides the waiting commands, in order, until one is being
// written or none is left.
func (b *brokerActor) runCommands(ctx actor.Context) {
	q := &b.commands
	for q.inFlight == nil && len(q.waiting) > 0 {
		p := q.pop()
		d, err := p.cmd.decide(b)
		if err != nil {
			p.answer(ctx, p.cmd.refuse(err))
			continue
		}
		p.decided = d
		q.inFlight = p
		var batch storage.Batch
		d.entry.write(&batch)
		self, root := ctx.Self(), ctx.ActorSystem().Root
		b.opts.Store.Submit(&batch, func(err error) { root.Send(self, &commandWritten{err: err}) })
	}
}

// written applies the command in flight once its write is durable, or
// refuses it, then runs the next:
//   - a store that fails a batch applied none of it: memory stays, and the
//     refusal is ErrStorage;
//   - a store that is not the meta group's leader (its error matches
//     ErrNotLeader) proposed nothing: memory stays, and the refusal is the
//     store's error as it is, so that it carries the leader's address;
//   - a store that cannot tell (storage.ErrOutcomeUnknown) may apply the
//     batch, now or later: memory is reloaded from the store (as
//     MetaApplied does; a later apply comes with a MetaApplied of its
//     own), and the refusal is ErrOutcomeUnknown (UNAVAILABLE).
func (b *brokerActor) written(ctx actor.Context, m *commandWritten) {
	p := b.commands.inFlight
	if p == nil {
		return // refused already: the broker is stopping
	}
	b.commands.inFlight = nil
	switch {
	case m.err == nil:
		b.apply(ctx, p.decided.entry)
		p.decided.done(ctx, b, p)
	case errors.Is(m.err, ErrNotLeader):
		p.answer(ctx, p.cmd.refuse(m.err))
	case errors.Is(m.err, storage.ErrOutcomeUnknown):
		b.metaStale = true
		b.reloadIfStale(ctx)
		p.answer(ctx, p.cmd.refuse(fmt.Errorf("%w: the change may or may not have been stored; retry it", ErrOutcomeUnknown)))
	default:
		p.answer(ctx, p.cmd.refuse(fmt.Errorf("%w: %w", ErrStorage, m.err)))
	}
	b.reloadIfStale(ctx) // a MetaApplied that came meanwhile
	b.runCommands(ctx)
}

// refuseCommands answers the commands still waiting when the broker stops:
// they were never written. The one in flight may have been: its answer
// says so.
func (b *brokerActor) refuseCommands(ctx actor.Context) {
	if p := b.commands.inFlight; p != nil {
		p.answer(ctx, p.cmd.refuse(fmt.Errorf("%w: the change in progress may or may not have been stored", ErrShuttingDown)))
		b.commands.inFlight = nil
	}
	for len(b.commands.waiting) > 0 {
		p := b.commands.pop()
		p.answer(ctx, p.cmd.refuse(ErrShuttingDown))
	}
}
