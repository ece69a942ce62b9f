package actors

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// QueueRef is how the gateway reaches a queue actor without asking the
// broker: its PID, and the depth of its mailbox for admission control.
type QueueRef struct {
	// Name is the queue's name.
	Name string
	// PID is the queue actor; it stays the same across supervisor restarts.
	PID     *actor.PID
	mailbox *mailboxDepth
}

// MailboxDepth is the number of messages posted to the queue actor and not
// yet taken by it.
func (r *QueueRef) MailboxDepth() int64 { return r.mailbox.n.Load() }

// Directory maps queue names to live queue actors. Only the broker actor
// writes it; gateways read it concurrently. It is a routing table, not queue
// state: it changes only on create, delete and recovery.
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
