// Package transport carries raft messages between the nodes of a filad
// cluster over gRPC on the internal port (fila.cluster.v1.Raft).
//
// Raft tolerates lost messages and retransmits what matters, so the
// transport is built to never hold the raft driver up: Send only queues,
// and drops when a peer's queue is full or the peer is unreachable. Each
// peer has two lanes, as etcd's rafthttp has two streams: one for log
// appends (MsgApp, MsgSnap), one for everything else (heartbeats, votes,
// answers). Each lane has its queue and a goroutine that keeps one stream
// open, sends what is queued in batches, and reconnects with backoff when
// the stream breaks. The two streams share one connection, whose HTTP/2
// frames interleave, so a heartbeat never waits behind megabytes of
// appends to a follower catching up (which, waiting, read as a dead
// leader to it and as a dead follower to the leader's quorum check). The
// messages of one lane arrive in the order they were sent; raft needs no
// order between the lanes.
//
// A stream carries one node's messages: the receiver may refuse the
// sender it claims (Options.Authenticate: filad checks the TLS
// certificate), and drops any raft message not from that sender to itself.
//
// Faults (drop the links to or from a peer) are compiled in, so that the
// process-level cluster tests can partition real nodes without iptables;
// a node turns them on only when its config asks for a control address.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
)

// Options configures a Transport.
type Options struct {
	// NodeID is this node's id (> 0).
	NodeID uint64
	// Deliver receives the messages a peer sent, on that peer's stream's
	// goroutine, in the order sent. It must not block for long: the stream
	// waits for it.
	Deliver func(from uint64, msgs []*clusterv1.GroupMessage)
	// Dial opens a connection to a peer's internal address (TLS, if any, is
	// its business). Required.
	Dial func(addr string) (*grpc.ClientConn, error)
	// Unreachable, if set, is told when sending to a peer failed, so the
	// raft driver can report the peer unreachable to its groups. It is
	// called on the peer's goroutine and must not block.
	Unreachable func(peer uint64)
	// QueueLen bounds the messages waiting in one lane of one peer; Send
	// drops past it. DefaultQueueLen when 0.
	QueueLen int
	// MaxBatch bounds the messages of one send. DefaultMaxBatch when 0.
	MaxBatch int
	// MaxBatchBytes bounds the bytes of one send beyond its first message
	// (which goes alone if it is larger). DefaultMaxBatchBytes when 0.
	MaxBatchBytes int
	// Faults, if set, drops what its rules say.
	Faults *Faults
	// Authenticate, if set, binds a stream to the node it claims to send
	// for: it is called once per stream, with the stream's context (its
	// peer's TLS state) and the id the first batch names as its sender,
	// and a non-nil error (a gRPC status, PermissionDenied) ends the
	// stream with it before anything is delivered. Without it (no TLS:
	// nothing to check a claim against) a stream is taken as from the node
	// it names.
	Authenticate func(ctx context.Context, claimed uint64) error
	// AdmitProposal, if set, is asked about each proposal (a raft MsgProp)
	// a peer forwards, with the peer's id and the marshalled message; an
	// error drops that message (counted in Received's refused). A node
	// forwards a proposal only to register itself, so filad admits only
	// that (cluster.AdmitForwarded).
	AdmitProposal func(from uint64, msg []byte) error
	// Logger is slog.Default() when nil.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultQueueLen      = 4096
	DefaultMaxBatch      = 256
	DefaultMaxBatchBytes = 4 << 20
	// MaxMessageBytes is the largest send a stream carries, both ways: one
	// raft message holds at least one whole entry, and an entry is one
	// storage batch, up to server.max_batch_bytes (256 MiB at most) and
	// its headers. gRPC's default, 4 MiB, would wedge a group on the first
	// larger batch: its append could never reach a follower.
	MaxMessageBytes = 300 << 20
	// backoffMin and backoffMax bound the wait between two connection
	// attempts to a peer that is down: short enough that a restarted node
	// hears its group within an election timeout (1 s in filad's
	// defaults), long enough that a dead one costs nearly nothing.
	backoffMin = 20 * time.Millisecond
	backoffMax = 500 * time.Millisecond
)

// Transport sends raft messages to peers and serves theirs. It is safe for
// concurrent use.
type Transport struct {
	clusterv1.UnimplementedRaftServer
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	peers  map[uint64]*peer
	closed bool
	wg     sync.WaitGroup

	// received counts messages delivered; refused those dropped on
	// arrival by a fault rule, or because they were not the stream's
	// sender's to send (screen).
	received, refused atomic.Uint64
	// warned are the peers a dropped message was logged for, so that a
	// peer that keeps sending them is logged once.
	warned LogOnce
}

// New returns a Transport; Register it on the internal gRPC server and
// SetPeer each peer.
func New(opts Options) (*Transport, error) {
	switch {
	case opts.NodeID == 0:
		return nil, errors.New("transport: NodeID must be > 0")
	case opts.Deliver == nil || opts.Dial == nil:
		return nil, errors.New("transport: Deliver and Dial are required")
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = DefaultQueueLen
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Transport{opts: opts, log: opts.Logger, peers: map[uint64]*peer{}}, nil
}

// ServerOptions are what the internal gRPC server needs for the
// transport's streams (their message size).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageBytes)}
}

// DialOptions are what a connection to a peer needs (its message size).
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessageBytes))}
}

// Register serves fila.cluster.v1.Raft on g.
func (t *Transport) Register(g *grpc.Server) { clusterv1.RegisterRaftServer(g, t) }

// SetPeer adds peer id at addr, or moves it there (its stream reconnects).
func (t *Transport) SetPeer(id uint64, addr string) error {
	if id == 0 || id == t.opts.NodeID {
		return fmt.Errorf("transport: peer id %d is not another node's", id)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("transport: closed")
	}
	if p := t.peers[id]; p != nil {
		if p.addr == addr {
			return nil
		}
		p.stop()
	}
	p := &peer{id: id, addr: addr, t: t, done: make(chan struct{})}
	for i := range p.lanes {
		p.lanes[i] = &lane{queue: make(chan *clusterv1.GroupMessage, t.opts.QueueLen)}
	}
	t.peers[id] = p
	t.wg.Add(1)
	go p.run()
	return nil
}

// RemovePeer stops sending to peer id; what was queued for it is dropped.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.peers[id]; p != nil {
		p.stop()
		delete(t.peers, id)
	}
}

// Send queues msgs for peer to and never blocks. It reports how many were
// queued: the rest were dropped (the peer is unknown, its queue is full,
// or a fault rule cuts the link).
func (t *Transport) Send(to uint64, msgs ...*clusterv1.GroupMessage) int {
	t.mu.Lock()
	p := t.peers[to]
	t.mu.Unlock()
	if p == nil {
		return 0
	}
	if !t.opts.Faults.allows(t.opts.NodeID, to) {
		p.dropped.Add(uint64(len(msgs)))
		return 0
	}
	queued := 0
	for _, m := range msgs {
		select {
		case p.lanes[laneOf(m)].queue <- m:
			queued++
		default:
			p.dropped.Add(1)
		}
	}
	return queued
}

// The lanes of a peer.
const (
	laneControl = iota
	laneAppends
	numLanes
)

// laneOf is the lane m goes on: appends and snapshots on theirs,
// everything else (small, and what liveness rests on) on the other.
func laneOf(m *clusterv1.GroupMessage) int {
	if typ := typeOf(m.GetMessage()); typ == raftpb.MsgApp || typ == raftpb.MsgSnap {
		return laneAppends
	}
	return laneControl
}

// typeOf is the type of a marshalled raftpb.Message: its first field, as
// raft marshals it (fields in number order), else read by header.
func typeOf(b []byte) raftpb.MessageType {
	if num, wt, n := protowire.ConsumeTag(b); n > 0 && num == 1 && wt == protowire.VarintType {
		if v, m := protowire.ConsumeVarint(b[n:]); m > 0 {
			return raftpb.MessageType(v)
		}
	}
	typ, _, _, _ := header(b)
	return typ
}

// Close stops every peer's stream; Deliver is not called once it returns,
// except by streams the gRPC server still serves (stop it first).
func (t *Transport) Close() {
	t.mu.Lock()
	t.closed = true
	for id, p := range t.peers {
		p.stop()
		delete(t.peers, id)
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// PeerStats is what was sent to one peer so far.
type PeerStats struct {
	// Sent counts messages written to a stream; Dropped those lost before
	// (a full queue, a fault, a broken stream).
	Sent, Dropped uint64
	// Connected is whether the peer's streams (both lanes) are open now.
	Connected bool
}

// Stats reports each peer's counts.
func (t *Transport) Stats() map[uint64]PeerStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[uint64]PeerStats, len(t.peers))
	for id, p := range t.peers {
		out[id] = PeerStats{Sent: p.sent.Load(), Dropped: p.dropped.Load(), Connected: p.connected()}
	}
	return out
}

// Received reports the messages delivered from peers, and those refused
// on arrival: by a fault rule, or as not their stream's sender's to send.
func (t *Transport) Received() (delivered, refused uint64) {
	return t.received.Load(), t.refused.Load()
}

// Stream implements clusterv1.RaftServer: it delivers one peer's batches.
// A stream carries one node's messages: its first batch names the sender,
// which Options.Authenticate may refuse, and a later batch that names
// another ends the stream (PermissionDenied). Each raft message in a
// batch must be from that sender and to this node, or it is dropped
// (screen): the batch's claim is what was authenticated, the messages'
// own From is what raft believes.
func (t *Transport) Stream(s clusterv1.Raft_StreamServer) error {
	var sender uint64
	for first := true; ; first = false {
		b, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if b.GetTo() != t.opts.NodeID {
			return status.Errorf(codes.FailedPrecondition, "raft batch for node %d reached node %d", b.GetTo(), t.opts.NodeID)
		}
		switch {
		case first:
			sender = b.GetFrom()
			if t.opts.Authenticate != nil {
				if err := t.opts.Authenticate(s.Context(), sender); err != nil {
					return err
				}
			}
		case b.GetFrom() != sender:
			return status.Errorf(codes.PermissionDenied, "a raft stream carries one node's messages: it began as node %d's, and a batch claims node %d", sender, b.GetFrom())
		}
		if !t.opts.Faults.allows(sender, t.opts.NodeID) {
			t.refused.Add(uint64(len(b.GetMessages())))
			continue
		}
		msgs := t.screen(sender, b.GetMessages())
		t.received.Add(uint64(len(msgs)))
		if len(msgs) > 0 {
			t.opts.Deliver(sender, msgs)
		}
	}
}

// screen returns the messages of msgs that sender may send this node:
// raft messages from sender to this node, and of the proposals only those
// AdmitProposal admits. The rest are dropped, counted and logged once per
// sender. A message raft relays in good faith is dropped too: a follower
// forwarding a proposal another node sent it (it believed this one led)
// keeps that node's From. Raft tolerates the loss, and filad's one
// forwarded proposal, a registration, is proposed again until it applies.
func (t *Transport) screen(sender uint64, msgs []*clusterv1.GroupMessage) []*clusterv1.GroupMessage {
	var kept []*clusterv1.GroupMessage // nil until one is dropped: then msgs is copied
	for i, gm := range msgs {
		typ, from, to, err := header(gm.GetMessage())
		switch {
		case err == nil && (from != sender || to != t.opts.NodeID):
			err = fmt.Errorf("a raft message from node %d to node %d on node %d's stream to node %d", from, to, sender, t.opts.NodeID)
		case err == nil && typ == raftpb.MsgProp && t.opts.AdmitProposal != nil:
			err = t.opts.AdmitProposal(sender, gm.GetMessage())
		}
		if err == nil {
			if kept != nil {
				kept = append(kept, gm)
			}
			continue
		}
		if kept == nil {
			kept = append(make([]*clusterv1.GroupMessage, 0, len(msgs)), msgs[:i]...)
		}
		t.refused.Add(1)
		if t.warned.First(sender) {
			t.log.Warn("cluster: raft message dropped: not the sending node's to send (logged once per node)",
				slog.Uint64("peer", sender), slog.Uint64("group", gm.GetGroup()), slog.Any("error", err))
		}
	}
	if kept == nil {
		return msgs
	}
	return kept
}

// header reads the type, From and To of a marshalled raftpb.Message
// without decoding the rest (its entries are skipped, not copied).
func header(b []byte) (typ raftpb.MessageType, from, to uint64, err error) {
	// raftpb.Message's field numbers (raft.proto): type 1, to 2, from 3.
	const fieldType, fieldTo, fieldFrom = 1, 2, 3
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, 0, fmt.Errorf("a raft message that does not decode: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if wt == protowire.VarintType && num >= fieldType && num <= fieldFrom {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, 0, 0, fmt.Errorf("a raft message that does not decode: %w", protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldType:
				typ = raftpb.MessageType(v)
			case fieldTo:
				to = v
			case fieldFrom:
				from = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, wt, b)
		if n < 0 {
			return 0, 0, 0, fmt.Errorf("a raft message that does not decode: %w", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return typ, from, to, nil
}

// LogOnce remembers the peers already logged about, up to a bound past
// which it logs no more (an intruder naming ever new ids cannot grow it).
// The zero value is ready; it is safe for concurrent use.
type LogOnce struct {
	mu   sync.Mutex
	seen map[uint64]bool
}

// First reports whether id is logged about for the first time.
func (w *LogOnce) First(id uint64) bool {
	const bound = 1024
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen[id] || len(w.seen) >= bound {
		return false
	}
	if w.seen == nil {
		w.seen = map[uint64]bool{}
	}
	w.seen[id] = true
	return true
}

// peer is one peer's lanes and the goroutines that stream them.
type peer struct {
	id    uint64
	addr  string
	t     *Transport
	lanes [numLanes]*lane
	done  chan struct{}
	once  sync.Once

	sent, dropped atomic.Uint64
}

// lane is one of a peer's queues, streamed on its own stream.
type lane struct {
	queue     chan *clusterv1.GroupMessage
	connected atomic.Bool
}

func (p *peer) stop() { p.once.Do(func() { close(p.done) }) }

func (p *peer) connected() bool {
	for _, l := range p.lanes {
		if !l.connected.Load() {
			return false
		}
	}
	return true
}

// run keeps each lane's stream to the peer open on one connection, which
// lives as long as the peer: gRPC redials it underneath.
func (p *peer) run() {
	defer p.t.wg.Done()
	conn, err := p.t.opts.Dial(p.addr)
	if err != nil {
		p.t.log.Error("raft peer address refused", slog.Uint64("peer", p.id), slog.String("addr", p.addr), slog.Any("error", err))
		return
	}
	defer conn.Close()
	client := clusterv1.NewRaftClient(conn)
	var lanes sync.WaitGroup
	for _, l := range p.lanes {
		lanes.Go(func() { p.keep(client, l) })
	}
	lanes.Wait()
}

// keep keeps lane l's stream open until the peer stops, reconnecting with
// backoff.
func (p *peer) keep(client clusterv1.RaftClient, l *lane) {
	backoff := backoffMin
	for {
		up, err := p.stream(client, l)
		l.connected.Store(false)
		if err == nil {
			return // stopped
		}
		if p.t.opts.Unreachable != nil {
			p.t.opts.Unreachable(p.id)
		}
		p.t.log.Debug("raft stream to peer broke", slog.Uint64("peer", p.id), slog.String("addr", p.addr), slog.Any("error", err))
		if up {
			backoff = backoffMin // it was up: it may be back soon
		}
		select {
		case <-p.done:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// stream sends lane l's queue on one stream until it breaks (an error) or
// the peer is stopped (nil). up reports whether the stream opened: a lane
// with nothing to send (a node that leads nothing sends no appends) is up
// all the same.
func (p *peer) stream(client clusterv1.RaftClient, l *lane) (up bool, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel() // a stream blocked in Send or connecting ends too
		case <-ctx.Done():
		}
	}()
	s, err := client.Stream(ctx)
	if err != nil {
		return false, p.stoppedOr(err)
	}
	l.connected.Store(true)
	// The receiver never sends: Recv returns when it ends the stream (a
	// refusal, a restart), which a sender with nothing to send would
	// otherwise learn only at its next Send.
	ended := make(chan error, 1)
	go func() {
		_, err := s.Recv()
		ended <- err
	}()
	batch := &clusterv1.RaftBatch{From: p.t.opts.NodeID, To: p.id}
	for {
		var first *clusterv1.GroupMessage
		select {
		case <-p.done:
			_ = s.CloseSend()
			return true, nil
		case err := <-ended:
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("the peer ended the stream")
			}
			return true, p.stoppedOr(err)
		case first = <-l.queue:
		}
		batch.Messages = append(batch.Messages[:0], first)
		bytes := 0
	more:
		for len(batch.Messages) < p.t.opts.MaxBatch && bytes < p.t.opts.MaxBatchBytes {
			select {
			case m := <-l.queue:
				batch.Messages = append(batch.Messages, m)
				bytes += len(m.GetMessage())
			default:
				break more
			}
		}
		if err := s.Send(batch); err != nil {
			p.dropped.Add(uint64(len(batch.Messages)))
			if rerr := <-ended; rerr != nil && !errors.Is(rerr, io.EOF) {
				err = rerr // the receiver's reason says more than EOF
			}
			return true, p.stoppedOr(err)
		}
		p.sent.Add(uint64(len(batch.Messages)))
	}
}

// stoppedOr is nil once the peer is stopped (err is then the stream's
// cancellation), else err.
func (p *peer) stoppedOr(err error) error {
	select {
	case <-p.done:
		return nil
	default:
		return err
	}
}
