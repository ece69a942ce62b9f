package client

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// ReconnectDefault is how long Consume goes on looking for a queue's
// leader after its stream ended UNAVAILABLE, when ConsumeOptions.Reconnect
// is 0: longer than a cluster's failover (about 1–2 s) and a node's
// restart take, short enough that a consumer of a broker that is gone
// for good says so.
const ReconnectDefault = 30 * time.Second

// Backoff between reconnect attempts: from reconnectFirst, doubling to
// reconnectMost, each with up to half of it again at random so that the
// consumers of a failed node do not all come back in the same instant.
const (
	reconnectFirst = 50 * time.Millisecond
	reconnectMost  = time.Second
)

// knownNodes are the addresses a client knows of, in the order it tries
// them: the seeds, then the dialed address, each once.
func knownNodes(seeds []string, addr string) []string {
	var out []string
	for _, a := range append(slices.Clip(seeds), addr) {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// reconnector decides, each time a consume stream ends, whether Consume
// opens another and where: at the leader the end named (a node that lost
// the queue's leadership names its successor when it knows it), else at
// each known node in turn, which either serves or names the leader. It
// gives up when the end is not UNAVAILABLE (a deleted queue, a revoked
// key, a bad request are answers, not outages), or when no stream has
// lasted since the window began.
type reconnector struct {
	c      *Client
	window time.Duration // < 0: never reconnect
	// since is when the outage began (zero: none): the first end of a
	// stream that had delivered, or had lasted a window, starts a new one.
	since time.Time
	wait  time.Duration // the next backoff
	// at is where the next stream opens, "" for the dialed connection,
	// whose interceptor follows a refusal's hint by itself. followed
	// says at came from a hint, turn which known node is next.
	at       string
	followed bool
	turn     int
}

func newReconnector(c *Client, window time.Duration) *reconnector {
	if window == 0 {
		window = ReconnectDefault
	}
	return &reconnector{c: c, window: window}
}

// open opens a lease stream where the last end pointed.
func (r *reconnector) open(ctx context.Context, req *filav1.ConsumeRequest) (*Stream, error) {
	svc := r.c.svc
	if r.at != "" {
		conn, err := r.c.leaders.conn(r.at)
		if err != nil {
			return nil, err
		}
		svc = filav1.NewFilaServiceClient(conn)
	}
	s, err := svc.Consume(ctx, req)
	if err != nil {
		return nil, err
	}
	return &Stream{s: s, c: r.c, ctx: ctx, queue: req.GetQueue(), opened: time.Now()}, nil
}

// again says whether to open another stream after s (nil: it did not
// open) ended with err, and waits the backoff first; false when ctx ends
// meanwhile.
func (r *reconnector) again(ctx context.Context, s *Stream, err error) bool {
	if r.window < 0 || status.Code(err) != codes.Unavailable {
		return false
	}
	now := time.Now()
	if r.since.IsZero() || (s != nil && (s.delivered || now.Sub(s.opened) >= r.window)) {
		r.since, r.wait = now, reconnectFirst
	}
	if now.Sub(r.since) >= r.window {
		return false
	}
	var hinted string
	if s != nil {
		hinted = hint(err, s.s.Trailer())
	}
	// A hint is followed at once, but not twice in a row without a pause:
	// two nodes that name each other during an election would otherwise
	// be asked in a tight loop.
	pause := !(hinted != "" && !r.followed)
	switch {
	case hinted != "":
		r.at, r.followed = hinted, true
	case len(r.c.nodes) > 1:
		r.at, r.followed = r.c.nodes[r.turn%len(r.c.nodes)], false
		r.turn++
	default:
		r.at, r.followed = "", false
	}
	if !pause {
		return true
	}
	d := r.wait + rand.N(r.wait/2+1)
	r.wait = min(2*r.wait, reconnectMost)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
