package actors

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
)

// Where the queue actors run. On a single node every queue's actor runs
// here. In a cluster a queue family (a queue and its DLQ) belongs to one
// partition group, and its actors run only on the node that leads it; the
// other nodes keep the queue's definition and a Directory entry naming the
// leader, which the gateway refuses with NotLeaderError. The cluster tells
// the broker when that changes (PlacementChanged), and when the meta group
// has applied definitions or config that another node's broker wrote
// (MetaApplied).

// Placement says where each queue family is served. Options.Placement nil
// is a single node: everything here.
type Placement interface {
	// Where is where the family's queues are served now: the zero Location
	// when this node is to run their actors (it leads the family's
	// partition, and has applied everything committed before its term),
	// else the leader as this node knows it. family is a queue's name
	// without its DLQ suffix (storage.FamilyOf). It is called from the
	// broker actor only, and must answer at once from memory.
	Where(family string) Location
}

// MetaSyncer is a Placement that can wait until this node has applied
// every queue definition committed anywhere before the call (a cluster's
// read index on its meta group). System.SyncQueues uses it, so that a
// queue created through another node is not answered NOT_FOUND here
// merely because its definition is still on its way.
type MetaSyncer interface {
	SyncMeta(ctx context.Context) error
}

// Partitioner is a Placement that chooses the partition of a queue family
// created (a cluster's): the one the family is placed on already (a live
// queue of it, a deletion mark, or a reaped one), else the least loaded.
// CreateQueue records the answer in the queue's record; 0 means placed by
// a hash of the name. It is called from the broker only, and answers
// from this node's applied state at once.
type Partitioner interface {
	Partition(family string) uint32
	// Routed is the partition family's keys go to now: its record's or
	// mark's, else the hash's. A delete's leftovers are marked with it,
	// so that the reap runs where they are and the family never moves.
	Routed(family string) uint32
}

// Messages the cluster sends the broker. Either may be sent with Send;
// asked, each answers *AdminReply once its reconcile is done.
type (
	// PlacementChanged: what Placement answers may have changed (a
	// partition's leadership moved). The broker asks Placement again for
	// every queue: it starts the actors of the families now served here,
	// each of which loads the queue from the store as a restarted node
	// does; it stops the actors of those now served elsewhere, without
	// reaping anything (their requests in flight and their consumers end
	// with a NotLeaderError naming the new leader, UNAVAILABLE); and it
	// points the Directory at where each queue is now. The answer comes
	// once the actors stopped have stopped and those started are spawned
	// (they may still be loading).
	PlacementChanged struct{}
	// MetaApplied: the store holds queue definitions or runtime config
	// that this node's broker did not write (another node's broker wrote
	// them, and the meta group applied them here). The broker reads the
	// queue records and the runtime config from the store and brings its
	// memory to match: a new record defines the queue (its actor starts
	// where Placement says), a record gone retires the queue here (the
	// leader of its partition reaps its contents: reap_cluster.go), a
	// changed record
	// becomes the queue's config (its actor is told), and changed config
	// entries publish a new RuntimeConfig snapshot, which the keyring and
	// the throttles read. When memory already matches, as on the node
	// that wrote the entries, it changes nothing, so sending it after
	// every meta entry applied is correct. A reload while one of this
	// broker's commands is being written waits for that command.
	MetaApplied struct{}
)

// where is where the queue's family is served now.
func (b *brokerActor) where(name string) Location {
	if b.opts.Placement == nil {
		return Location{}
	}
	return b.opts.Placement.Where(storage.FamilyOf(name).Family)
}

// place makes the queue run where Placement says, and its Directory entry
// say so. It reports whether the queue's actor is retiring: stopped now,
// as the queue moved away, or an incarnation stopping still, which a queue
// to be served here waits for (the actor's name, and its last writes, are
// that one's until it stops) and then starts.
func (b *brokerActor) place(ctx actor.Context, name string) (retiring bool) {
	c := b.children[name]
	want := b.where(name)
	switch {
	case want.Local() && c.pid != nil:
		return false
	case want.Local():
		if r := b.retiring[name]; r != nil {
			r.then = append(r.then, func() {
				if b.children[name] == c {
					b.place(ctx, name)
				}
			})
			return true
		}
		moved := !c.where.Local()
		b.spawn(ctx, name, c)
		if moved {
			b.opts.Logger.Info("queue served here now", slog.String("queue_id", name))
		}
		return false
	case c.pid != nil:
		pid := c.pid
		c.pid, c.where = nil, want
		b.dir.add(&QueueRef{Name: name, Location: want})
		b.retire(ctx, name, pid, want.NotLeader(name))
		b.opts.Logger.Info("queue served by another node now", slog.String("queue_id", name), slog.String("node", want.Node))
		return true
	case c.where != want:
		c.where = want
		b.dir.add(&QueueRef{Name: name, Location: want})
	}
	return false
}

// placeAll places every queue, then calls done once the actors it stopped
// have stopped and those waiting for that are spawned.
func (b *brokerActor) placeAll(ctx actor.Context, done func()) {
	var moving []string
	for _, name := range slices.Sorted(maps.Keys(b.children)) {
		if b.place(ctx, name) {
			moving = append(moving, name)
		}
	}
	b.awaitRetired(ctx, moving, done)
}

// respondLater is a done that answers the current message's sender.
func respondLater(ctx actor.Context) func() {
	sender := ctx.Sender()
	return func() {
		if sender != nil {
			ctx.Send(sender, &AdminReply{})
		}
	}
}

// metaApplied reloads the broker's memory from the store, at once or, if
// a command is being written, once it is.
func (b *brokerActor) metaApplied(ctx actor.Context) {
	if sender := ctx.Sender(); sender != nil {
		b.metaWaiters = append(b.metaWaiters, sender)
	}
	b.metaStale = true
	if b.commands.inFlight == nil {
		b.reloadIfStale(ctx)
	}
}

// reloadIfStale runs the reload that MetaApplied or an unknown outcome
// asked for, and answers the MetaApplied messages waiting for it.
func (b *brokerActor) reloadIfStale(ctx actor.Context) {
	if !b.metaStale {
		return
	}
	b.metaStale = false
	err := b.reloadMeta(ctx)
	for _, w := range b.metaWaiters {
		ctx.Send(w, &AdminReply{Err: err})
	}
	b.metaWaiters = nil
}

// reloadMeta brings the broker's queues and runtime config to what the
// store holds (MetaApplied says what each difference does). A name whose
// delete this broker is carrying out is left alone, as recovery does.
func (b *brokerActor) reloadMeta(ctx actor.Context) error {
	recs, err := b.opts.Store.Queues()
	if err == nil {
		var entries []storage.ConfigEntry
		if entries, err = b.opts.Store.ConfigEntries(); err == nil {
			b.reconcileReaps(ctx) // first: the names marked are the ones being deleted
			b.reconcileQueues(ctx, recs)
			b.reconcileReaps(ctx) // the reaps of the queues it just retired
			b.runtime.reload(entries)
			return nil
		}
	}
	// Memory stays as it was; the next MetaApplied reads again.
	b.opts.Logger.Error("cannot read the queue definitions and runtime config the meta group applied", slog.Any("error", err))
	return fmt.Errorf("%w: %w", ErrStorage, err)
}

func (b *brokerActor) reconcileQueues(ctx actor.Context, recs []*storagev1.QueueRecord) {
	stored := make(map[string]bool, len(recs))
	for _, rec := range recs {
		name := rec.GetName()
		if b.deleting[name] {
			continue
		}
		stored[name] = true
		switch c := b.children[name]; {
		case c == nil:
			b.define(ctx, queueConfigFrom(rec))
			b.opts.Logger.Info("queue created", slog.String("queue_id", name))
		case !proto.Equal(c.config.get().record(), rec):
			c.config.set(queueConfigFrom(rec))
			if c.pid != nil {
				ctx.Send(c.pid, &configChanged{})
			}
			b.opts.Logger.Info("queue updated", slog.String("queue_id", name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(b.children)) {
		if !stored[name] {
			b.remove(ctx, name)
			b.opts.Logger.Info("queue deleted", slog.String("queue_id", name))
		}
	}
}

// reload publishes entries, the whole store as read back, as the new
// snapshot if it differs from the one published; it reports whether it
// did. Only the broker calls it.
func (r *RuntimeConfig) reload(entries []storage.ConfigEntry) bool {
	if slices.Equal(*r.entries.Load(), entries) {
		return false
	}
	var usage configUsage
	for _, e := range entries {
		usage.add(e.Key, e.Value, 1)
	}
	entries = slices.Clone(entries)
	r.usage = usage
	r.entries.Store(&entries)
	r.published()
	return true
}
