package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/client"
	"github.com/fila-dev/filad/internal/filadtest"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startBroker starts filad in-process (on h's providers when h is set) and
// returns its address.
func startBroker(t *testing.T, h *telemetrytest.Harness) string {
	t.Helper()
	var opts server.Options
	if h != nil {
		opts.TracerProvider, opts.MeterProvider = h.TracerProvider, h.MeterProvider
	}
	return filadtest.Start(t, filadtest.Options{Server: opts}).Addr()
}

// dial returns a client on h's tracer provider (the global one if h is nil).
func dial(t *testing.T, addr string, h *telemetrytest.Harness) *client.Client {
	t.Helper()
	opts := client.Options{Propagator: propagation.TraceContext{}}
	if h != nil {
		opts.TracerProvider, opts.MeterProvider = h.TracerProvider, h.MeterProvider
	}
	c, err := client.Dial(addr, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConsumeAcksNacksAndRecoversPanics(t *testing.T) {
	t.Parallel()
	c := dial(t, startBroker(t, nil), nil)
	require.NoError(t, c.CreateQueue(ctxT(t), "jobs", client.QueueConfig{}))
	ids := map[string]string{}
	for _, kind := range []string{"ok", "fail-once", "panic-once"} {
		id, err := c.Enqueue(ctxT(t), "jobs", map[string]string{"kind": kind}, []byte(kind))
		require.NoError(t, err)
		ids[id] = kind
	}

	ctx, cancel := context.WithCancel(ctxT(t))
	var mu sync.Mutex
	attempts := map[string][]uint32{}
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, "jobs", client.ConsumeOptions{MaxInFlight: 2}, func(_ context.Context, m *filav1.Message) error {
			mu.Lock()
			attempts[m.GetHeaders()["kind"]] = append(attempts[m.GetHeaders()["kind"]], m.GetMetadata().GetAttemptCount())
			mu.Unlock()
			first := m.GetMetadata().GetAttemptCount() == 0
			switch m.GetHeaders()["kind"] {
			case "fail-once":
				if first {
					return errors.New("transient")
				}
			case "panic-once":
				if first {
					panic("boom")
				}
			}
			return nil
		})
	}()
	require.Eventually(t, func() bool {
		st, err := c.Stats(ctxT(t), "jobs")
		return err == nil && st.GetDepth() == 0 && st.GetInFlight() == 0
	}, 20*time.Second, 5*time.Millisecond, "all settled")
	cancel()
	require.NoError(t, <-done, "a cancelled Consume returns nil")

	require.Equal(t, []uint32{0}, attempts["ok"])
	require.Equal(t, []uint32{0, 1}, attempts["fail-once"], "an error nacks: redelivered with attempt 1")
	require.Equal(t, []uint32{0, 1}, attempts["panic-once"], "a panic is recovered and nacked")
}

func TestConsumeBoundsInFlight(t *testing.T) {
	t.Parallel()
	c := dial(t, startBroker(t, nil), nil)
	require.NoError(t, c.CreateQueue(ctxT(t), "b", client.QueueConfig{}))
	for range 20 {
		_, err := c.Enqueue(ctxT(t), "b", nil, nil)
		require.NoError(t, err)
	}
	var running, peak, handled atomic.Int32
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, "b", client.ConsumeOptions{MaxInFlight: 3}, func(context.Context, *filav1.Message) error {
			n := running.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			<-release
			running.Add(-1)
			handled.Add(1)
			return nil
		})
	}()
	require.Eventually(t, func() bool { return running.Load() == 3 }, 20*time.Second, time.Millisecond)
	close(release)
	require.Eventually(t, func() bool { return handled.Load() == 20 }, 20*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.EqualValues(t, 3, peak.Load())
}

// TestTraceContinuity: the producer's span, the broker's spans and the
// consumer's process span are one trace, and the process span links to the
// producer's context.
func TestTraceContinuity(t *testing.T) {
	t.Parallel()
	brokerH, producerH, consumerH := telemetrytest.New(t), telemetrytest.New(t), telemetrytest.New(t)
	addr := startBroker(t, brokerH)
	producer, consumer := dial(t, addr, producerH), dial(t, addr, consumerH)
	require.NoError(t, producer.CreateQueue(ctxT(t), "t", client.QueueConfig{}))

	ctx, root := producerH.TracerProvider.Tracer("app").Start(ctxT(t), "checkout")
	id, err := producer.Enqueue(ctx, "t", map[string]string{"k": "v"}, []byte("order"))
	require.NoError(t, err)
	root.End()
	traceID := root.SpanContext().TraceID()
	send := producerH.FindSpan(t, "send t", nil)
	telemetrytest.RequireChildOf(t, send, root.SpanContext())

	// The broker's spans are in the producer's trace.
	require.Equal(t, traceID, brokerH.FindSpan(t, "fila.v1.FilaService/Enqueue", nil).SpanContext().TraceID())
	require.Equal(t, traceID, brokerH.FindSpan(t, telemetry.SpanEnqueue, nil).SpanContext().TraceID())
	// The message carries the producer's traceparent too; in the call's own
	// trace the queue actor's span stays a child of the RPC's server span.
	telemetrytest.RequireChildOf(t, brokerH.FindSpan(t, telemetry.SpanEnqueue, nil),
		brokerH.FindSpan(t, "fila.v1.FilaService/Enqueue", nil).SpanContext())

	// A consumer on its own tracer provider joins the same trace.
	cctx, cancel := context.WithCancel(ctxT(t))
	got := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- consumer.Consume(cctx, "t", client.ConsumeOptions{}, func(ctx context.Context, m *filav1.Message) error {
			got <- m.GetId()
			return nil
		})
	}()
	require.Equal(t, id, <-got)
	require.Eventually(t, func() bool { return len(consumerH.Spans("process t")) == 1 }, 20*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	process := consumerH.Spans("process t")[0]
	require.Equal(t, traceID, process.SpanContext().TraceID(), "the process span is in the producer's trace")
	telemetrytest.RequireChildOf(t, process, send.SpanContext())
	telemetrytest.RequireLinked(t, process, send.SpanContext())
	// The broker's delivery span is in that trace too, under the span that
	// created the message.
	require.Eventually(t, func() bool { return len(brokerH.Spans(telemetry.SpanDeliver)) == 1 }, 20*time.Second, time.Millisecond)
	telemetrytest.RequireChildOf(t, brokerH.Spans(telemetry.SpanDeliver)[0], brokerH.FindSpan(t, telemetry.SpanEnqueue, nil).SpanContext())
	// Consume's ack went in an "ack t" client span (the conventions'
	// "{operation} {destination}") linked to the process span.
	settle := consumerH.FindSpan(t, "ack t", nil)
	require.Equal(t, trace.SpanKindClient, settle.SpanKind())
	telemetrytest.RequireLinked(t, settle, process.SpanContext())
	require.True(t, telemetrytest.HasAttr(settle, attribute.String("messaging.operation.name", "ack")))
	require.True(t, telemetrytest.HasAttr(settle, attribute.String("messaging.operation.type", "settle")))
	require.True(t, telemetrytest.HasAttr(settle, attribute.String("server.address", "127.0.0.1")))

	// The consumer stopped by cancelling: its Consume stream's span says
	// CANCELLED but is no error (issue 21, Deliver 8).
	stream := consumerH.FindSpan(t, filav1.FilaService_Consume_FullMethodName[1:], nil)
	require.True(t, telemetrytest.HasAttr(stream, attribute.String("rpc.response.status_code", "CANCELLED")))
	require.Equal(t, otelcodes.Ok, stream.Status().Code, "a clean shutdown is not an ERROR span")

	// The conventions' client metrics (issue 21, Deliver 7), one each.
	on := func(op string, extra ...attribute.KeyValue) []attribute.KeyValue {
		return metricAttrs(t, addr, op, "t", extra...)
	}
	producerH.AssertCounter(t, "messaging.client.sent.messages", on("send"), 1)
	require.EqualValues(t, 1, producerH.HistogramCount(t, "messaging.client.operation.duration", on("send", attribute.String("messaging.operation.type", "send"))...))
	consumerH.AssertCounter(t, "messaging.client.consumed.messages", on("receive"), 1)
	require.EqualValues(t, 1, consumerH.HistogramCount(t, "messaging.process.duration", on("process")...))
	require.EqualValues(t, 1, consumerH.HistogramCount(t, "messaging.client.operation.duration", on("ack", attribute.String("messaging.operation.type", "settle"))...))
}

// metricAttrs are the attributes of a client metric of op on queue, from a
// client of the broker at addr.
func metricAttrs(t *testing.T, addr, op, queue string, extra ...attribute.KeyValue) []attribute.KeyValue {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	return append([]attribute.KeyValue{attribute.String("messaging.system", "fila"), attribute.String("messaging.operation.name", op),
		attribute.String("messaging.destination.name", queue), attribute.String("server.address", "127.0.0.1"), attribute.Int("server.port", p)}, extra...)
}

// TestUntracedConsumerAddsNothingToTheProducersTrace (issue 21, Deliver
// 8): a consumer that traces nothing makes no process span, and an Ack
// under the context StartProcessSpan returns is not sent as a child of the
// producer's span (the broker's Ack span starts a trace of its own).
func TestUntracedConsumerAddsNothingToTheProducersTrace(t *testing.T) {
	t.Parallel()
	brokerH, producerH := telemetrytest.New(t), telemetrytest.New(t)
	addr := startBroker(t, brokerH)
	producer := dial(t, addr, producerH)
	consumer, err := client.Dial(addr, client.Options{Propagator: propagation.TraceContext{}, TracerProvider: tracenoop.NewTracerProvider()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = consumer.Close() })
	require.NoError(t, producer.CreateQueue(ctxT(t), "u", client.QueueConfig{}))
	_, err = producer.Enqueue(ctxT(t), "u", nil, nil)
	require.NoError(t, err)
	send := producerH.FindSpan(t, "send u", nil)

	s, err := consumer.Lease(ctxT(t), "u", 1)
	require.NoError(t, err)
	m, err := s.Next()
	require.NoError(t, err)
	ctx, span := consumer.StartProcessSpan(ctxT(t), "u", m)
	require.False(t, trace.SpanContextFromContext(ctx).IsValid(), "no producer context under an untraced consumer")
	require.NoError(t, consumer.Ack(ctx, m))
	span.End()
	ack := brokerH.FindSpan(t, filav1.FilaService_Ack_FullMethodName[1:], nil)
	require.NotEqual(t, send.SpanContext().TraceID(), ack.SpanContext().TraceID(), "the Ack is not in the producer's trace")
}

// TestSettleSpansSayWhatFailed: a late Ack (the lease expired) fails its
// settle span with error.type naming the gRPC code.
func TestSettleSpansSayWhatFailed(t *testing.T) {
	t.Parallel()
	h := telemetrytest.New(t)
	addr := startBroker(t, nil)
	c := dial(t, addr, h)
	require.NoError(t, c.CreateQueue(ctxT(t), "late", client.QueueConfig{VisibilityTimeoutMS: 10}))
	_, err := c.Enqueue(ctxT(t), "late", nil, nil)
	require.NoError(t, err)
	s, err := c.Lease(ctxT(t), "late", 1)
	require.NoError(t, err)
	first, err := s.Next()
	require.NoError(t, err)
	again, err := s.Next() // delivered again: the first lease expired
	require.NoError(t, err)
	require.Equal(t, first.GetId(), again.GetId())
	require.Error(t, c.Ack(ctxT(t), first))
	settle := h.FindSpan(t, "ack late", nil)
	require.True(t, telemetrytest.HasAttr(settle, attribute.String("error.type", "FailedPrecondition")))
	require.True(t, telemetrytest.HasAttr(settle, attribute.String("messaging.message.id", first.GetId())))
}

// TestConsumeExtendsLongHandlers: a handler that runs for several visibility
// timeouts keeps its message (Consume extends the lease) and its ack lands.
func TestConsumeExtendsLongHandlers(t *testing.T) {
	t.Parallel()
	c := dial(t, startBroker(t, nil), nil)
	// Extension comes at half the lease's remaining time: with 2 s a busy
	// machine has a second of slack at each (it had 100 ms with 200 ms,
	// and missed it under load).
	const vt = 2 * time.Second
	require.NoError(t, c.CreateQueue(ctxT(t), "slow", client.QueueConfig{VisibilityTimeoutMS: uint64(vt / time.Millisecond)}))
	_, err := c.Enqueue(ctxT(t), "slow", nil, []byte("work"))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(ctxT(t))
	calls := make(chan uint32, 10)
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, "slow", client.ConsumeOptions{MaxInFlight: 2}, func(_ context.Context, m *filav1.Message) error {
			calls <- m.GetMetadata().GetAttemptCount()
			// The handler's running time is what this test is about: more
			// than two visibility timeouts, which only extension survives.
			time.Sleep(5 * vt / 2)
			return nil
		})
	}()
	require.Zero(t, <-calls, "first delivery")
	require.Eventually(t, func() bool {
		st, err := c.Stats(ctxT(t), "slow")
		return err == nil && st.GetDepth() == 0 && st.GetInFlight() == 0
	}, 20*time.Second, 5*time.Millisecond, "acked")
	cancel()
	require.NoError(t, <-done)
	require.Empty(t, calls, "never redelivered while the handler ran")
}

// TestProducerBatchesConcurrentCallers: under -race, many goroutines enqueue
// through one Producer; each gets its own id (or its own error), nothing is
// lost, and the calls travel in far fewer RPCs than messages.
func TestProducerBatchesConcurrentCallers(t *testing.T) {
	t.Parallel()
	addr := startBroker(t, nil)
	h := telemetrytest.New(t)
	var batches atomic.Int64
	c, err := client.Dial(addr, client.Options{MeterProvider: h.MeterProvider, DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if strings.HasSuffix(method, "/EnqueueBatch") {
				batches.Add(1)
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		})}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.CreateQueue(ctxT(t), "p", client.QueueConfig{}))
	p := c.NewProducer(client.ProducerOptions{Linger: 2 * time.Millisecond, MaxBatch: 64})
	const goroutines, each = 32, 50
	ids := make(chan string, goroutines*each)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				id, err := p.Enqueue(ctxT(t), "p", map[string]string{"n": fmt.Sprint(g*each + i)}, []byte("x"))
				if err != nil {
					t.Errorf("enqueue: %v", err)
					return
				}
				ids <- id
			}
		})
	}
	// One caller's bad item fails only that caller.
	_, err = p.Enqueue(ctxT(t), "missing", nil, nil)
	require.Equal(t, codes.NotFound, status.Code(err))
	wg.Wait()
	require.NoError(t, p.Close())
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		require.False(t, seen[id])
		seen[id] = true
	}
	require.Len(t, seen, goroutines*each)
	st, err := c.Stats(ctxT(t), "p")
	require.NoError(t, err)
	require.EqualValues(t, goroutines*each, st.GetDepth())
	t.Logf("%d messages in %d EnqueueBatch calls", goroutines*each, batches.Load())
	require.Less(t, batches.Load(), int64(goroutines*each/4), "calls were batched")
	// Counted per batch, the sum is still one per message, by outcome.
	h.AssertCounter(t, "messaging.client.sent.messages", metricAttrs(t, addr, "send", "p"), goroutines*each)
	h.AssertCounter(t, "messaging.client.sent.messages", metricAttrs(t, addr, "send", "missing", attribute.String("error.type", "NotFound")), 1)
	require.EqualValues(t, goroutines*each, h.HistogramCount(t, "messaging.client.operation.duration", metricAttrs(t, addr, "send", "p", attribute.String("messaging.operation.type", "send"))...))

	// A cancelled caller is released at once; a closed producer refuses.
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	p2 := c.NewProducer(client.ProducerOptions{})
	_, err = p2.Enqueue(ctx, "p", nil, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, p2.Close())
	_, err = p2.Enqueue(ctxT(t), "p", nil, nil)
	require.ErrorIs(t, err, client.ErrProducerClosed)
}

// TestEnqueueOrderedCountsEachMessage: one ordered batch is one send
// operation and as many sent messages as it stored (issue 21, Deliver 7).
func TestEnqueueOrderedCountsEachMessage(t *testing.T) {
	t.Parallel()
	h := telemetrytest.New(t)
	addr := startBroker(t, nil)
	c := dial(t, addr, h)
	require.NoError(t, c.CreateQueue(ctxT(t), "o", client.QueueConfig{}))
	rs, err := c.EnqueueOrdered(ctxT(t), "o", nil, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	require.NoError(t, err)
	require.Len(t, rs, 3)
	h.AssertCounter(t, "messaging.client.sent.messages", metricAttrs(t, addr, "send", "o"), 3)
	require.EqualValues(t, 1, h.HistogramCount(t, "messaging.client.operation.duration", metricAttrs(t, addr, "send", "o", attribute.String("messaging.operation.type", "send"))...))
}
