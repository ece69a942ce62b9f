package client

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/protocol"
)

// LeaderAddrKey is the trailer in which a cluster node that does not lead
// what a call needs names the client address of the node that does
// (Fila's convention). Such a refusal means nothing was done.
const LeaderAddrKey = protocol.LeaderAddrMetadata

// leaders follows a cluster's refusals: a call refused UNAVAILABLE with a
// leader's address is made again there, once, and the calls for the same
// queue go there from then on, until one fails there (then the client's
// own address is asked again). Against a single node nothing is ever
// refused so, and it costs a map lookup a call.
type leaders struct {
	// dial opens a connection to a leader, with the client's options but
	// without these interceptors: a leader's own refusal is not followed
	// again (one hop, as the nodes themselves do).
	dial func(addr string) (*grpc.ClientConn, error)

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn // by address
	byQueue map[string]string           // queue → its leader's address
}

func newLeaders(dial func(string) (*grpc.ClientConn, error)) *leaders {
	return &leaders{dial: dial, conns: map[string]*grpc.ClientConn{}, byQueue: map[string]string{}}
}

// queueOf is the queue a request names, "" for one that names none (or
// several, as a batch may).
func queueOf(req any) string {
	if q, ok := req.(interface{ GetQueue() string }); ok {
		return q.GetQueue()
	}
	return ""
}

// leaderOf is the connection to queue's known leader, nil if none.
func (l *leaders) leaderOf(queue string) (*grpc.ClientConn, string) {
	if queue == "" {
		return nil, ""
	}
	l.mu.Lock()
	addr := l.byQueue[queue]
	l.mu.Unlock()
	if addr == "" {
		return nil, ""
	}
	conn, err := l.conn(addr)
	if err != nil {
		return nil, ""
	}
	return conn, addr
}

// follow notes addr as queue's leader and returns a connection to it.
func (l *leaders) follow(queue, addr string) (*grpc.ClientConn, error) {
	if queue != "" {
		l.mu.Lock()
		l.byQueue[queue] = addr
		l.mu.Unlock()
	}
	return l.conn(addr)
}

// forget drops addr as queue's leader, if it still is.
func (l *leaders) forget(queue, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byQueue[queue] == addr {
		delete(l.byQueue, queue)
	}
}

func (l *leaders) conn(addr string) (*grpc.ClientConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.conns[addr]; c != nil {
		return c, nil
	}
	c, err := l.dial(addr)
	if err != nil {
		return nil, err
	}
	l.conns[addr] = c
	return c, nil
}

// close closes the leaders' connections.
func (l *leaders) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for addr, c := range l.conns {
		_ = c.Close()
		delete(l.conns, addr)
	}
}

// hint is the leader a refusal names, "" when err is not such a refusal.
func hint(err error, trailer metadata.MD) string {
	if status.Code(err) != codes.Unavailable {
		return ""
	}
	if v := trailer.Get(LeaderAddrKey); len(v) > 0 {
		return v[0]
	}
	return ""
}

// unary is the client's unary interceptor.
func (l *leaders) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	queue := queueOf(req)
	if conn, addr := l.leaderOf(queue); conn != nil {
		var trailer metadata.MD
		err := conn.Invoke(ctx, method, req, reply, append(opts, grpc.Trailer(&trailer))...)
		if status.Code(err) != codes.Unavailable {
			return err
		}
		l.forget(queue, addr)
		if h := hint(err, trailer); h != "" && h != addr {
			return l.retryAt(ctx, queue, h, method, req, reply, opts)
		}
		return err // it may have been done: the caller decides
	}
	// The first call goes where the client was dialed; a node not leading
	// the queue is asked for the hint, not to proxy, so that the later
	// calls go to the leader directly.
	var trailer metadata.MD
	err := invoker(metadata.AppendToOutgoingContext(ctx, protocol.RedirectMetadata, "1"), method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
	if h := hint(err, trailer); h != "" {
		return l.retryAt(ctx, queue, h, method, req, reply, opts)
	}
	return err
}

func (l *leaders) retryAt(ctx context.Context, queue, addr, method string, req, reply any, opts []grpc.CallOption) error {
	conn, err := l.follow(queue, addr)
	if err != nil {
		return err
	}
	return conn.Invoke(ctx, method, req, reply, opts...)
}

// stream is the client's stream interceptor, for Consume: a refusal comes
// as the stream's first answer, so the stream is opened again at the
// leader, with the same request, before the caller sees anything.
func (l *leaders) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	open := func(conn *grpc.ClientConn) (grpc.ClientStream, error) {
		if conn == nil {
			return streamer(ctx, desc, cc, method, opts...)
		}
		return conn.NewStream(ctx, desc, method, opts...)
	}
	s, err := open(nil)
	if err != nil || desc.ClientStreams {
		return s, err // only server streams (one request) are followed
	}
	return &following{ClientStream: s, l: l, open: open, ctx: ctx}, nil
}

// following is a server stream that, refused before its first message, is
// opened again at the leader the refusal names.
type following struct {
	grpc.ClientStream
	l        *leaders
	open     func(*grpc.ClientConn) (grpc.ClientStream, error)
	ctx      context.Context
	req      any  // the one request sent
	received bool // a message came: no more following
	followed bool
}

func (f *following) SendMsg(m any) error {
	f.req = m
	return f.ClientStream.SendMsg(m)
}

func (f *following) RecvMsg(m any) error {
	err := f.ClientStream.RecvMsg(m)
	if err == nil {
		f.received = true
		return nil
	}
	if f.received || f.followed || f.req == nil {
		return err
	}
	h := hint(err, f.ClientStream.Trailer())
	if h == "" {
		return err
	}
	f.followed = true
	conn, cerr := f.l.follow(queueOf(f.req), h)
	if cerr != nil {
		return err
	}
	s, serr := f.open(conn)
	if serr != nil {
		return serr
	}
	if serr := s.SendMsg(f.req); serr != nil {
		return serr
	}
	if serr := s.CloseSend(); serr != nil {
		return serr
	}
	f.ClientStream = s
	return f.RecvMsg(m)
}
