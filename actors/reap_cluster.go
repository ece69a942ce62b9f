package actors

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fila-dev/filad/storage"
)

// The reap of a cluster. A queue's messages and leases belong to its
// family's partition group, which only that group's leader can write, and
// the node that deletes the queue is the meta group's leader, which may
// lead another partition. So in a cluster every node's broker watches the
// deletion marks it has applied (the meta group's, which every node
// applies), and the leader of each marked family's partition reaps it:
//
//  1. once the queue's actor here has stopped, it confirms through the
//     meta group that the mark is still there (a read index: everything
//     committed before is applied here), so that no queue of that name
//     created again can have written to the partition before it began;
//  2. it deletes the contents in bounded steps, proposed to the partition
//     (Reaper), and stops at once when the mark goes or changes, or the
//     partition moves to another leader (whose broker goes on from what
//     its replica holds);
//  3. it proposes the mark's end to the meta group through its leader
//     (MetaForwarder), conditional on the mark's token
//     (storage.(*Batch).ForgetMark: the mark stays, reaped, as the name's
//     placement), and again after clusterReapRetry until it is seen
//     applied: an end that lands late, or twice, never ends a later
//     deletion of the name, and never touches a definition.
//
// The DeleteQueue answers once the marks are gone here (the meta leader
// has applied their removal).

// MetaForwarder is a Placement whose queues' contents are reaped by the
// leader of their partition (a cluster's; see above). ForwardMeta
// proposes b, a batch of the meta owner, to the meta group whether or not
// this node leads it; nobody tells whether it committed, so b must be
// idempotent, and the broker watches for its effect.
type MetaForwarder interface {
	MetaSyncer
	ForwardMeta(b *storage.Batch) error
}

// clusterReapRetry is how long a reap waits before it tries again a step
// that failed, or proposes again a mark's removal not yet seen applied.
const clusterReapRetry = time.Second

// clusterReap is a reap this node's broker carries out, of one mark.
type clusterReap struct {
	mark   storage.DeletionMark
	reaper *storage.Reaper // nil until the mark is confirmed
	// forgetting: the contents are gone; the mark's removal is proposed.
	forgetting bool
}

// Self-messages of a cluster reap. Each names its reap: one that is not
// the name's current reap any more (stopped, or replaced) is ignored.
type (
	reapConfirmed struct {
		reap *clusterReap
		err  error
	}
	clusterStepDone struct {
		reap *clusterReap
		err  error
	}
	// reapRetry: try again (reap nil: reconcile every reap).
	reapRetry struct{ reap *clusterReap }
	// marksGone runs then: a mark awaited (awaitMarksGone) is gone.
	marksGone struct{ then func() }
)

// metaForwarder is the Placement as a MetaForwarder; nil on a single node
// (and with a Placement that is none), whose broker reaps itself.
func (b *brokerActor) metaForwarder() MetaForwarder {
	f, _ := b.opts.Placement.(MetaForwarder)
	return f
}

// awaitMarksGone calls done once none of names is marked deleted in this
// node's store any more.
func (b *brokerActor) awaitMarksGone(ctx actor.Context, names []string, done func()) {
	b.initClusterReaps()
	left := len(names)
	for _, name := range names {
		b.markWaiters[name] = append(b.markWaiters[name], func() {
			if left--; left == 0 {
				done()
			}
		})
	}
	b.reconcileReaps(ctx)
}

// reconcileReaps brings the reaps this broker runs to the marks its store
// holds: the names marked are the ones being deleted (no create of them
// meanwhile); a reap whose mark went or changed, or whose partition this
// node no longer leads, stops; a mark of a family led here, whose queue
// has no actor here any more, gets a reap. It does nothing on a single
// node.
func (b *brokerActor) reconcileReaps(ctx actor.Context) {
	if b.metaForwarder() == nil {
		return
	}
	b.initClusterReaps()
	marks, err := b.deletionMarks()
	if err != nil {
		b.opts.Logger.Error("cannot read the deletion marks; reaping waits", slog.Any("error", err))
		b.retryReapLater(ctx, nil)
		return
	}
	marked := make(map[string]storage.DeletionMark, len(marks))
	for _, m := range marks {
		marked[m.Queue] = m
	}
	for name := range b.deleting {
		if _, ok := marked[name]; !ok {
			delete(b.deleting, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(b.markWaiters)) {
		if _, ok := marked[name]; !ok {
			// As messages of their own: a waiter may run a command, which
			// must not begin inside a reload of the broker's memory.
			for _, w := range b.markWaiters[name] {
				ctx.Send(ctx.Self(), &marksGone{then: w})
			}
			delete(b.markWaiters, name)
		}
	}
	for name, r := range b.creaps {
		m, ok := marked[name]
		switch {
		case !ok && r.forgetting:
			b.opts.Logger.Info("queue's contents reaped", slog.String("queue_id", name))
			delete(b.creaps, name)
		case !ok || !bytes.Equal(m.Value, r.mark.Value) || !b.where(name).Local():
			delete(b.creaps, name) // its messages in flight are ignored
		}
	}
	for _, m := range marks {
		b.deleting[m.Queue] = true
		if b.creaps[m.Queue] != nil || b.children[m.Queue] != nil || !b.where(m.Queue).Local() {
			continue // reaping, or its queue's record is not applied as removed here yet, or led elsewhere
		}
		r := &clusterReap{mark: m}
		b.creaps[m.Queue] = r
		// Its actor's last writes land before the reap reads.
		b.awaitRetired(ctx, []string{m.Queue}, func() { b.confirmMark(ctx, r) })
	}
}

// deletionMarks are the marks of the deletions under way (not the reaped
// ones, which only place their names).
func (b *brokerActor) deletionMarks() ([]storage.DeletionMark, error) {
	marks, err := b.opts.Store.DeletionMarks()
	return slices.DeleteFunc(marks, func(m storage.DeletionMark) bool { return m.Reaped }), err
}

func (b *brokerActor) initClusterReaps() {
	if b.creaps == nil {
		b.creaps, b.markWaiters = map[string]*clusterReap{}, map[string][]func(){}
	}
}

// current reports whether r is its name's reap still.
func (b *brokerActor) current(r *clusterReap) bool {
	return r != nil && b.creaps[r.mark.Queue] == r
}

// confirmMark starts r's first step: a read of the meta group through its
// leader, off the broker's goroutine.
func (b *brokerActor) confirmMark(ctx actor.Context, r *clusterReap) {
	if !b.current(r) {
		return
	}
	syncer, timeout := b.metaForwarder(), b.opts.RequestTimeout
	self, root := ctx.Self(), ctx.ActorSystem().Root
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		root.Send(self, &reapConfirmed{reap: r, err: syncer.SyncMeta(sctx)})
	}()
}

// reapConfirmedMsg begins r's steps if its mark is still the one stored,
// now that this node has applied the meta group as far as it was
// committed when r began.
func (b *brokerActor) reapConfirmedMsg(ctx actor.Context, m *reapConfirmed) {
	r := m.reap
	if !b.current(r) {
		return
	}
	if m.err != nil {
		b.opts.Logger.Debug("cannot confirm a deletion mark through the meta group; retrying", slog.String("queue_id", r.mark.Queue), slog.Any("error", m.err))
		b.retryReapLater(ctx, r)
		return
	}
	marks, err := b.deletionMarks()
	if err != nil {
		b.retryReapLater(ctx, r)
		return
	}
	i := slices.IndexFunc(marks, func(s storage.DeletionMark) bool { return s.Queue == r.mark.Queue })
	if i < 0 || !bytes.Equal(marks[i].Value, r.mark.Value) {
		delete(b.creaps, r.mark.Queue)
		b.reconcileReaps(ctx)
		return
	}
	r.reaper = storage.NewMarkReaper(r.mark)
	b.clusterReapNext(ctx, r)
}

// clusterReapNext submits r's next step, or proposes the mark's removal
// once the contents are gone.
func (b *brokerActor) clusterReapNext(ctx actor.Context, r *clusterReap) {
	step, last, err := r.reaper.Next(b.opts.Store, reapLimit)
	if err != nil {
		b.clusterStepped(ctx, &clusterStepDone{reap: r, err: err})
		return
	}
	if last {
		r.forgetting = true
		b.forwardForget(ctx, r, step)
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	b.opts.Store.Submit(step, func(err error) {
		// On the store's goroutine: only hand the outcome over.
		root.Send(self, &clusterStepDone{reap: r, err: err})
	})
}

func (b *brokerActor) clusterStepped(ctx actor.Context, m *clusterStepDone) {
	r := m.reap
	switch {
	case !b.current(r):
	case m.err == nil:
		b.clusterReapNext(ctx, r)
	case errors.Is(m.err, ErrNotLeader):
		// The partition moved: its new leader reaps from its replica.
		delete(b.creaps, r.mark.Queue)
	default:
		b.opts.Logger.Warn("a step of a queue's reap failed; retrying", slog.String("queue_id", r.mark.Queue), slog.Any("error", m.err))
		b.retryReapLater(ctx, r)
	}
}

// forwardForget proposes step, r's ForgetMark, to the meta group, and
// looks again after clusterReapRetry.
func (b *brokerActor) forwardForget(ctx actor.Context, r *clusterReap, step *storage.Batch) {
	fw, name := b.metaForwarder(), r.mark.Queue
	log := b.opts.Logger
	go func() {
		if err := fw.ForwardMeta(step); err != nil {
			log.Debug("cannot propose a deletion mark's removal yet; retrying", slog.String("queue_id", name), slog.Any("error", err))
		}
	}()
	b.retryReapLater(ctx, r)
}

// retryReapLater sends reapRetry{r} after clusterReapRetry.
func (b *brokerActor) retryReapLater(ctx actor.Context, r *clusterReap) {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	time.AfterFunc(clusterReapRetry, func() { root.Send(self, &reapRetry{reap: r}) })
}

// reapRetried: a removal proposed is proposed again if its mark is still
// there; a reap that failed starts afresh.
func (b *brokerActor) reapRetried(ctx actor.Context, m *reapRetry) {
	r := m.reap
	switch {
	case r == nil:
	case !b.current(r):
		return
	case r.forgetting:
		b.reconcileReaps(ctx) // it ends r if the mark went
		if b.current(r) {
			var forget storage.Batch
			forget.ForgetMark(r.mark)
			b.forwardForget(ctx, r, &forget)
		}
		return
	default:
		delete(b.creaps, r.mark.Queue)
	}
	b.reconcileReaps(ctx)
}
