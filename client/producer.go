package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// ProducerOptions tunes a Producer.
type ProducerOptions struct {
	// Linger is how long the first message of a batch may wait for others
	// to join it while an earlier batch is still on its way; with nothing
	// on its way a message is sent at once, so light load pays no linger.
	// Defaults to 1 ms.
	Linger time.Duration
	// MaxBatch is the most messages in one EnqueueBatch; a full batch is
	// sent at once. Defaults to 256 (the broker's limit is
	// server.max_batch_items, 1000 by default).
	MaxBatch int
}

// Producer batches concurrent Enqueue calls into EnqueueBatch calls, as NATS
// async publish and the Kafka producer do: each caller still gets its own
// id or error. Batches are sent without waiting for the one before, so
// several are in flight at once. It is safe for concurrent use.
type Producer struct {
	c      *Client
	opts   ProducerOptions
	in     chan *pendingSend
	done   chan struct{}  // closed by Close
	exited chan struct{}  // closed when run has sent its last batch
	sent   sync.WaitGroup // batches in flight
	closed sync.Once
}

type pendingSend struct {
	req    *filav1.EnqueueRequest
	result chan sendResult // buffered: the sender never blocks on a caller gone
}

type sendResult struct {
	id  string
	err error
}

// batchTimeout bounds one EnqueueBatch call of a Producer.
const batchTimeout = 30 * time.Second

// ErrProducerClosed is returned by Enqueue after Close.
var ErrProducerClosed = errors.New("client: producer closed")

// NewProducer starts a Producer on c; Close it when done.
func (c *Client) NewProducer(opts ProducerOptions) *Producer {
	if opts.Linger <= 0 {
		opts.Linger = time.Millisecond
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	p := &Producer{c: c, opts: opts, in: make(chan *pendingSend), done: make(chan struct{}), exited: make(chan struct{})}
	go p.run()
	return p
}

// Enqueue stores a message in queue and returns its id once it is durable,
// like Client.Enqueue, but shares its RPC and commit with the messages
// other goroutines enqueue within the linger. Cancelling ctx releases the
// caller at once; the message may still be stored.
func (p *Producer) Enqueue(ctx context.Context, queue string, headers map[string]string, payload []byte) (id string, err error) {
	start := time.Now()
	ctx, span, h := p.c.startSend(ctx, queue, headers)
	defer func() {
		// messaging.client.sent.messages is counted per batch, in send.
		p.c.recordOperation(ctx, telemetry.OpSend, queue, start, err)
		fail(span, err)
		span.End()
	}()
	ps := &pendingSend{req: &filav1.EnqueueRequest{Queue: queue, Headers: h, Payload: payload}, result: make(chan sendResult, 1)}
	select {
	case p.in <- ps:
	case <-p.done:
		return "", ErrProducerClosed
	case <-ctx.Done():
		return "", ctx.Err()
	}
	select {
	case r := <-ps.result:
		if r.err != nil {
			return "", r.err
		}
		span.SetAttributes(attribute.String("messaging.message.id", r.id))
		return r.id, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Close sends what is waiting, waits for every batch in flight to be
// answered, and stops the producer.
func (p *Producer) Close() error {
	p.closed.Do(func() { close(p.done) })
	<-p.exited
	p.sent.Wait()
	return nil
}

// run gathers messages into batches. A batch is sent at once when no other
// is on its way (light load pays no linger), when it is full, when a batch
// on its way has been answered, or when its first message has waited Linger.
func (p *Producer) run() {
	defer close(p.exited)
	var batch []*pendingSend
	inFlight := 0
	answered := make(chan struct{}, 1024)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	send := func() {
		if len(batch) > 0 {
			inFlight++
			p.send(batch, answered)
			batch = nil
		}
		timer.Stop()
	}
	for {
		select {
		case ps := <-p.in:
			batch = append(batch, ps)
			switch {
			case inFlight == 0 || len(batch) >= p.opts.MaxBatch:
				send()
			case len(batch) == 1:
				timer.Reset(p.opts.Linger)
			}
		case <-answered:
			inFlight--
			if inFlight == 0 {
				send()
			}
		case <-timer.C:
			send()
		case <-p.done:
			send()
			return
		}
	}
}

// send makes one EnqueueBatch call in the background, hands each caller
// its result, and then signals answered.
func (p *Producer) send(batch []*pendingSend, answered chan<- struct{}) {
	p.sent.Add(1)
	go func() {
		defer p.sent.Done()
		defer func() {
			select {
			case answered <- struct{}{}:
			case <-p.exited: // run has stopped counting
			}
		}()
		req := &filav1.EnqueueBatchRequest{Messages: make([]*filav1.EnqueueRequest, len(batch))}
		for i, ps := range batch {
			req.Messages[i] = ps.req
		}
		// The batch outlives any one caller's context; each caller waits
		// (or not) on its own.
		ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
		defer cancel()
		resp, err := p.c.svc.EnqueueBatch(ctx, req)
		// One count per queue and outcome per batch, not one per message:
		// the same sum, at a fraction of the cost.
		sent := sentCounts{}
		for i, ps := range batch {
			var r sendResult
			if err != nil {
				r.err = err
			} else {
				res := batchResult(resp, i)
				r.id, r.err = res.ID, res.Err
			}
			sent.add(ps.req.GetQueue(), r.err)
			ps.result <- r
		}
		sent.record(ctx, p.c)
	}()
}
