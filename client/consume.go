package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// Handler processes one message. Returning nil acks it; an error nacks it
// (the error's text is the nack reason); a panic is recovered and nacks it.
// ctx carries the message's "process" span.
type Handler func(ctx context.Context, m *filav1.Message) error

// ConsumeOptions tunes Consume.
type ConsumeOptions struct {
	// MaxInFlight bounds the handlers running at once, and the messages the
	// broker leases to this consumer ahead of them. Defaults to 16.
	MaxInFlight int
	// SettleTimeout bounds each AckBatch or NackBatch, which are sent even
	// after ctx is cancelled so finished work is not redelivered. Defaults
	// to 10 s.
	SettleTimeout time.Duration
	// Reconnect is how long Consume goes on opening a new stream after one
	// ends UNAVAILABLE: a cluster's failover (the node leading the queue
	// stepped down or died), a node's restart or graceful stop. It opens
	// the next at the leader the end named, else at each known node (the
	// seeds and the dialed address) in turn, with a backoff; the window
	// starts again once a stream delivers. Handlers still running from the
	// ended stream go on, and their acks reach the new leader, where the
	// leases are. The new stream asks for MaxInFlight as the first did:
	// what it leases while the old stream's handlers still hold their
	// slots waits for one with its lease running, so a handler slower
	// than the visibility timeout can see such a message redelivered
	// (at-least-once, never lost). 0 means ReconnectDefault; negative
	// never reconnects.
	Reconnect time.Duration
}

// Consume leases from queue and runs h for each message, with at most
// MaxInFlight handlers at once, then acks or nacks it. Each handler runs
// under a "process <queue>" consumer span that continues the message's
// trace (its traceparent header) and links to the producer's context, per
// the messaging semantic conventions.
//
// Consume returns nil when ctx is cancelled, after every running handler
// has finished and been settled; it returns the stream's error otherwise:
// one that is not UNAVAILABLE, or the last when opts.Reconnect has passed
// without a stream that worked.
func (c *Client) Consume(ctx context.Context, queue string, opts ConsumeOptions, h Handler) error {
	maxInFlight := opts.MaxInFlight
	if maxInFlight <= 0 {
		maxInFlight = 16
	}
	settleTimeout := opts.SettleTimeout
	if settleTimeout <= 0 {
		settleTimeout = 10 * time.Second
	}
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	settle := c.newSettler(settleTimeout)
	defer settle.close() // after every handler has queued its settle
	// The slots bound the handlers across reconnects: those of an ended
	// stream hold theirs until they finish.
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	// Frames of up to maxInFlight messages: whatever is ready comes at once.
	req := &filav1.ConsumeRequest{Queue: queue, MaxInFlight: uint32(maxInFlight), MaxBatch: uint32(maxInFlight)}
	re := newReconnector(c, opts.Reconnect)
	for {
		stream, err := re.open(streamCtx, req)
		if err == nil {
			err = c.serve(ctx, stream, slots, &wg, func(m *filav1.Message) { c.process(ctx, queue, m, h, settle) })
		}
		if ctx.Err() != nil {
			return nil
		}
		if !re.again(ctx, stream, err) {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// serve runs handle for each message of stream, each in its own goroutine
// holding a slot, until the stream ends (its error) or ctx does (nil).
func (c *Client) serve(ctx context.Context, stream *Stream, slots chan struct{}, wg *sync.WaitGroup, handle func(*filav1.Message)) error {
	for {
		m, err := stream.Next()
		if err != nil {
			return err
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			// The message stays leased and comes back when its lease expires.
			return nil
		}
		wg.Go(func() {
			defer func() { <-slots }()
			handle(m)
		})
	}
}

// StartProcessSpan starts the "process <queue>" consumer span of one
// message: it continues the message's trace (its traceparent header: the
// producer's context, or the broker's enqueue if the producer sent none) and
// links to that context, per the messaging semantic conventions. End it
// when the message is settled.
//
// When this client does not record the span (no tracer provider, or its
// sampler said no), the returned context is ctx, without the producer's
// context: a non-recording span carries its parent's context, and calls
// made under it (an Ack, an Extend) would otherwise send the producer's
// span as their parent, and appear in Jaeger as its children although the
// consumer traced nothing.
func (c *Client) StartProcessSpan(ctx context.Context, queue string, m *filav1.Message) (context.Context, trace.Span) {
	created := c.prop.Extract(context.Background(), propagation.MapCarrier(m.GetHeaders()))
	parent := trace.ContextWithSpanContext(ctx, trace.SpanContextFromContext(created))
	spanCtx, span := c.tracer.Start(parent, spanName(telemetry.OpProcess, queue),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(trace.LinkFromContext(created)),
		trace.WithAttributes(append(c.attrs(telemetry.OpProcess, queue),
			attribute.String("messaging.message.id", m.GetId()),
			telemetry.KeyAttempt.Int64(int64(m.GetMetadata().GetAttemptCount())))...))
	if !span.IsRecording() {
		span.End()
		return ctx, trace.SpanFromContext(context.Background())
	}
	return spanCtx, span
}

// process runs h under the message's process span, extending its lease
// while h runs, then hands the message to the settler: only a handler that
// has returned gets its ack sent (at-least-once). The span ends when the
// settle is answered.
func (c *Client) process(ctx context.Context, queue string, m *filav1.Message, h Handler, settle *settler) {
	spanCtx, span := c.StartProcessSpan(ctx, queue, m)
	stopExtending := c.keepLeased(spanCtx, m)
	start := time.Now()
	err := runHandler(spanCtx, m, h)
	c.recordProcess(spanCtx, queue, start, err)
	stopExtending()
	answered := func(settleErr error) {
		fail(span, settleErr)
		span.End()
	}
	if err != nil {
		fail(span, err)
		settle.nack(m, err.Error(), span.SpanContext(), answered)
		return
	}
	settle.ack(m, span.SpanContext(), answered)
}

// keepLeased extends m's lease, by the lease's own length, each time half
// of what is left has passed, until the returned func is called: a handler
// that runs longer than the visibility timeout keeps its message. An
// extension that fails (the lease already expired) stops the extending;
// the handler's ack will then be refused, which is the truth. It costs one
// timer per message, and a goroutine only while an extension is sent.
func (c *Client) keepLeased(ctx context.Context, m *filav1.Message) (stop func()) {
	leased, expires := m.GetTimestamps().GetLeasedAt().AsTime(), m.GetTimestamps().GetLeaseExpiresAt().AsTime()
	length := expires.Sub(leased)
	if m.GetLeaseId() == "" || length <= 0 {
		return func() {}
	}
	var (
		mu      sync.Mutex
		stopped bool
		timer   *time.Timer
		sending sync.WaitGroup
	)
	extend := func() {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		sending.Add(1)
		mu.Unlock()
		defer sending.Done()
		extendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), length)
		next, err := c.Extend(extendCtx, m, length)
		cancel()
		if err != nil {
			return
		}
		mu.Lock()
		if !stopped {
			timer.Reset(time.Until(next) / 2)
		}
		mu.Unlock()
	}
	mu.Lock()
	timer = time.AfterFunc(time.Until(expires)/2, extend)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		timer.Stop()
		mu.Unlock()
		sending.Wait()
	}
}

// ErrPanic wraps a handler panic, which Consume turns into a nack.
var ErrPanic = errors.New("handler panicked")

func runHandler(ctx context.Context, m *filav1.Message, h Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, r)
		}
	}()
	return h(ctx, m)
}
