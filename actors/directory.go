package actors

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// QueueRef is how the gateway reaches a queue without asking the broker:
// where the queue lives, its actor's PID, and the depth of its mailbox for
// admission control. A QueueRef does not change once it is in the
// Directory; a queue that moves gets a new one.
type QueueRef struct {
	// Name is the queue's name.
	Name string
	// Location is where the queue's actor runs; the zero Location is this
	// node, the only one a single node knows.
	Location Location
	// PID is the queue actor when Location is local, nil otherwise; it
	// stays the same across supervisor restarts.
	PID     *actor.PID
	mailbox *mailboxDepth // nil when not local
}

// Location is where a queue is served, as this node knows it. The zero
// value is local: this node runs the queue's actor. In a cluster the queue
// lives in a partition group whose leader runs the actor, and a node that
// is not that leader records what it knows of it: the leader's node, its
// client address, and the term in which that was learned, so that a newer
// term's news replaces an older one (docs/architecture.md, "Routing").
type Location struct {
	// Node is the id of the other node that leads the queue's partition;
	// "" when this node runs the queue's actor.
	Node string
	// LeaderAddr is that node's client address (host:port), "" when not
	// known; a non-leader's refusal names it (NotLeaderError) so that a
	// client can go there.
	LeaderAddr string
	// Term is the leadership term Node and LeaderAddr are from; 0 when local.
	Term uint64
}

// Local reports whether this node runs the queue's actor.
func (l Location) Local() bool { return l.Node == "" }

// NotLeader is the refusal of a call for queue, served at l: it names
// l's leader (its client address and node id) as far as l knows it.
func (l Location) NotLeader(queue string) *NotLeaderError {
	node, _ := strconv.ParseUint(l.Node, 10, 64) // "0" or "": not known
	return &NotLeaderError{Queue: queue, LeaderAddr: l.LeaderAddr, LeaderNode: node}
}

// MailboxDepth is the number of messages posted to the queue actor and not
// yet taken by it.
// It is 0 for a queue served elsewhere.
func (r *QueueRef) MailboxDepth() int64 {
	if r.mailbox == nil {
		return 0
	}
	return r.mailbox.n.Load()
}

// Directory maps queue names to where they are served: this node's queue
// actors, and in a cluster the other nodes' queues. Only the broker actor
// writes it; gateways read it concurrently. It is a routing table, not
// queue state: it changes only on create, delete, recovery and a change of
// placement (PlacementChanged, MetaApplied).
type Directory struct {
	m sync.Map // string → *QueueRef
}

// Lookup returns the queue's actor, or nil if there is no such queue.
func (d *Directory) Lookup(name string) *QueueRef {
	v, ok := d.m.Load(name)
	if !ok {
		return nil
	}
	return v.(*QueueRef)
}

func (d *Directory) add(ref *QueueRef)  { d.m.Store(ref.Name, ref) }
func (d *Directory) remove(name string) { d.m.Delete(name) }

// mailboxDepth is a protoactor mailbox middleware counting queued messages.
type mailboxDepth struct{ n atomic.Int64 }

var _ actor.MailboxMiddleware = (*mailboxDepth)(nil)

func (m *mailboxDepth) MailboxStarted()     {}
func (m *mailboxDepth) MessagePosted(any)   { m.n.Add(1) }
func (m *mailboxDepth) MessageReceived(any) { m.n.Add(-1) }
func (m *mailboxDepth) MailboxEmpty()       {}

// Names returns the names of the live queues, sorted.
func (d *Directory) Names() []string {
	var names []string
	d.m.Range(func(k, _ any) bool {
		names = append(names, k.(string))
		return true
	})
	slices.Sort(names)
	return names
}
