package main

import (
	"context"
	"crypto/tls"
	"fmt"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"sync"
	"sync/atomic"
	"time"

	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// filadTarget drives one filad over gRPC.
type filadTarget struct {
	client *client.Client
	conn   *grpc.ClientConn
	svc    filav1.FilaServiceClient
	admin  filav1.FilaAdminClient
	seq    atomic.Int64
	// queueConfig is what newQueue creates queues with (nil: defaults).
	queueConfig *filav1.QueueConfig
	// follow: a cluster node, whose queues may be led by others
	// (leaderFor); leaders are the targets dialed at them.
	follow  bool
	mu      sync.Mutex
	leaders map[string]*filadTarget
}

func newFiladTarget(addr string) (*filadTarget, error) {
	return newSecureFiladTarget(addr, nil, "")
}

// newSecureFiladTarget dials with TLS (when tlsCfg is set) and sends key
// with every call (when set).
func newSecureFiladTarget(addr string, tlsCfg *tls.Config, key string) (*filadTarget, error) {
	transport := insecure.NewCredentials()
	if tlsCfg != nil {
		transport = credentials.NewTLS(tlsCfg)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(transport)}
	if key != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearerKey(key)))
	}
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, err
	}
	// The clients' own telemetry is theirs, in their own processes: off, so
	// that what is measured is filad's (they share its process here).
	c, err := client.Dial(addr, client.Options{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider(), TLS: tlsCfg, APIKey: key})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return &filadTarget{client: c, conn: conn, svc: filav1.NewFilaServiceClient(conn), admin: filav1.NewFilaAdminClient(conn)}, nil
}

// bearerKey sends an API key with every call of filabench's own conn.
type bearerKey string

func (b bearerKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearerKey) RequireTransportSecurity() bool { return false }

func (t *filadTarget) close() {
	_ = t.conn.Close()
	_ = t.client.Close()
	for _, l := range t.leaders {
		l.close()
	}
}

// newQueue creates a queue through the client, which follows a cluster
// node's hint to the meta group's leader.
func (t *filadTarget) newQueue(ctx context.Context) (string, error) {
	name := fmt.Sprintf("bench-%d", t.seq.Add(1))
	_, err := t.client.Admin().CreateQueue(ctx, &filav1.CreateQueueRequest{Name: name, Config: t.queueConfig})
	return name, err
}

// leaderFor is a target dialed at the node that leads queue: t itself
// on a single node or when t's node leads it, else one per leader,
// closed with t. The leader a hint names is asked too, until it answers
// as the leader: it may not have applied the queue's record yet.
func (t *filadTarget) leaderFor(ctx context.Context, queue string) (*filadTarget, error) {
	if !t.follow {
		return t, nil
	}
	at := t
	for range 10 {
		addr, err := leaderOf(ctx, at.conn, queue)
		if err != nil || addr == at.conn.Target() {
			return at, err
		}
		if at, err = t.dialed(addr); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("the leader of %s moved 10 times while it was looked for", queue)
}

// dialed is t, or t's target for another node of its cluster.
func (t *filadTarget) dialed(addr string) (*filadTarget, error) {
	if addr == t.conn.Target() {
		return t, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.leaders[addr]; l != nil {
		return l, nil
	}
	l, err := newFiladTarget(addr)
	if err != nil {
		return nil, err
	}
	if t.leaders == nil {
		t.leaders = map[string]*filadTarget{}
	}
	t.leaders[addr] = l
	return l, nil
}

// produce enqueues n messages from p concurrent producers, each waiting for
// its reply before the next (synchronous publishes).
func (t *filadTarget) produce(ctx context.Context, queue string, p, n int, payload []byte, headers func(i int) map[string]string) error {
	return inParallel(p, n, func(i int) error {
		var h map[string]string
		if headers != nil {
			h = headers(i)
		}
		_, err := t.svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue, Payload: payload, Headers: h})
		return err
	})
}

// inParallel runs fn(0) … fn(n-1) on p workers, each taking the next index
// when it is done with its last, and returns the first error (a worker stops
// at its error).
func inParallel(p, n int, fn func(i int) error) error {
	var next atomic.Int64
	errs := make(chan error, p)
	var wg sync.WaitGroup
	for range p {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (t *filadTarget) enqueueThroughput(ctx context.Context, producers, n int, payload []byte) (result, error) {
	q, err := t.newQueue(ctx)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := t.produce(ctx, q, producers, n, payload, nil); err != nil {
		return result{}, err
	}
	return rate(fmt.Sprintf("enqueue %dP %dB", producers, len(payload)), n, time.Since(start)), nil
}

// consume runs c consumer streams that ack every message until n are acked.
// onMessage, if set, sees every message as it arrives.
func (t *filadTarget) consume(ctx context.Context, queue string, c, n int, onMessage func(*filav1.Message)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var acked atomic.Int64
	errs := make(chan error, c)
	var wg sync.WaitGroup
	for range c {
		stream, err := t.svc.Consume(ctx, &filav1.ConsumeRequest{Queue: queue})
		if err != nil {
			return err
		}
		wg.Go(func() {
			for {
				resp, err := stream.Recv()
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				m := resp.GetMessage()
				if onMessage != nil {
					onMessage(m)
				}
				if _, err := t.svc.Ack(ctx, &filav1.AckRequest{Queue: queue, MessageId: m.GetId()}); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				if acked.Add(1) == int64(n) {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// lifecycleThroughput runs producers and consumers at once: enqueue, lease,
// ack, until every message is acked.
func (t *filadTarget) lifecycleThroughput(ctx context.Context, producers, consumers, n int, payload []byte, headers func(int) map[string]string) (result, error) {
	q, err := t.newQueue(ctx)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	consumed := make(chan error, 1)
	go func() { consumed <- t.consume(ctx, q, consumers, n, nil) }()
	if err := t.produce(ctx, q, producers, n, payload, headers); err != nil {
		return result{}, err
	}
	if err := <-consumed; err != nil {
		return result{}, err
	}
	return rate(fmt.Sprintf("lifecycle %dP/%dC %dB", producers, consumers, len(payload)), n, time.Since(start)), nil
}

// consumeBatched starts c client.Consume consumers (frames, coalesced
// acks, MaxInFlight 256) of q. wait(true) returns once they have handled
// n messages (or ctx is done), wait(false) at once; either stops them,
// waits until their acks are answered, and returns the first error.
func consumeBatched(ctx context.Context, t *filadTarget, q string, c, n int) (wait func(all bool) error) {
	cctx, cancel := context.WithCancel(ctx)
	var handled atomic.Int64
	allHandled := make(chan struct{})
	errs := make(chan error, c)
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			errs <- t.client.Consume(cctx, q, client.ConsumeOptions{MaxInFlight: 256}, func(context.Context, *filav1.Message) error {
				if handled.Add(1) == int64(n) {
					close(allHandled)
				}
				return nil
			})
		})
	}
	return func(all bool) error {
		if all {
			select {
			case <-allHandled:
			case <-ctx.Done():
			}
		}
		cancel()
		wg.Wait() // Consume returns once its acks are answered
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		return ctx.Err()
	}
}

// produceBatched enqueues n messages through the client's batching
// Producer, with callers concurrent callers (each waits for its own id, and
// the Producer gathers them into EnqueueBatch calls).
func (t *filadTarget) produceBatched(ctx context.Context, queue string, callers, n int, payload []byte) error {
	p := t.client.NewProducer(client.ProducerOptions{})
	defer p.Close()
	return inParallel(callers, n, func(int) error {
		_, err := p.Enqueue(ctx, queue, nil, payload)
		return err
	})
}

func (t *filadTarget) enqueueBatchedThroughput(ctx context.Context, callers, n int, payload []byte) (result, error) {
	q, err := t.newQueue(ctx)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := t.produceBatched(ctx, q, callers, n, payload); err != nil {
		return result{}, err
	}
	return rate(fmt.Sprintf("enqueue batched %dB", len(payload)), n, time.Since(start)), nil
}

// lifecycleBatchedThroughput: the batching Producer and c client.Consume
// consumers (frames, coalesced acks) until every message is acked.
func (t *filadTarget) lifecycleBatchedThroughput(ctx context.Context, callers, consumers, n int, payload []byte) (result, error) {
	q, err := t.newQueue(ctx)
	if err != nil {
		return result{}, err
	}
	// In a cluster, straight to the queue's leader: the Producer's
	// batches name no single queue, so the client cannot follow a hint
	// for them (t itself on a single node).
	if t, err = t.leaderFor(ctx, q); err != nil {
		return result{}, err
	}
	start := time.Now()
	wait := consumeBatched(ctx, t, q, consumers, n)
	if err := t.produceBatched(ctx, q, callers, n, payload); err != nil {
		_ = wait(false)
		return result{}, fmt.Errorf("produce: %w", err)
	}
	if err := wait(true); err != nil {
		return result{}, fmt.Errorf("consume: %w", err)
	}
	return rate(fmt.Sprintf("lifecycle batched %dC %dB", consumers, len(payload)), n, time.Since(start)), nil
}
