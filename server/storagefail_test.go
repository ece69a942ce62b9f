package server_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// faultStore is badger in a temp dir with faults to inject: while failing is
// set every write fails, as a full or broken disk would; with panicNext
// set, the next Submit panics inside the queue actor that called it (a
// storage bug), which its supervisor answers with a restart.
type faultStore struct {
	storage.Store
	failing   atomic.Bool
	panicNext atomic.Bool
}

// openFaultStore opens the store and closes it after the server (cleanups
// run last-in first-out, and the server's is registered later).
func openFaultStore(t *testing.T) *faultStore {
	t.Helper()
	s, err := storage.Open(storage.Options{Dir: t.TempDir(), SyncWrites: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return &faultStore{Store: s}
}

var errDisk = errors.New("injected disk failure")

func (f *faultStore) Submit(b *storage.Batch, done func(error)) {
	if f.panicNext.CompareAndSwap(true, false) {
		panic("storage bug injected by a test")
	}
	if f.failing.Load() {
		done(errDisk)
		return
	}
	f.Store.Submit(b, done)
}

func (f *faultStore) Defer(b *storage.Batch, done func(error)) {
	if f.failing.Load() {
		done(errDisk)
		return
	}
	f.Store.Defer(b, done)
}

// TestStorageFailureIsInternalAndHalfAppliesNothing: SPEC §4's last row.
func TestStorageFailureIsInternalAndHalfAppliesNothing(t *testing.T) {
	t.Parallel()
	fs := openFaultStore(t)
	h := telemetrytest.New(t)
	b := setup(t, setupOpts{opts: server.Options{
		TracerProvider: h.TracerProvider, MeterProvider: h.MeterProvider, Store: fs,
	}})
	b.createQueue(t, "disk", nil)
	stream, _ := b.lease(t, "disk")
	id := b.enqueue(t, "disk", nil, []byte("kept"))
	require.Equal(t, id, recvN(t, stream, 1)[0].GetId())

	fs.failing.Store(true)
	_, err := b.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "disk", Payload: []byte("lost")})
	requireCode(t, err, codes.Internal)
	require.ErrorContains(t, err, "storage failure")
	_, err = b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "disk", MessageId: id})
	requireCode(t, err, codes.Internal)
	_, err = b.svc.Nack(ctxT(t), &filav1.NackRequest{Queue: "disk", MessageId: id})
	requireCode(t, err, codes.Internal)
	st := b.stats(t, "disk")
	require.Zero(t, st.GetDepth(), "the failed Enqueue added nothing")
	require.EqualValues(t, 1, st.GetInFlight(), "the failed Ack and Nack left the lease in place")

	fs.failing.Store(false)
	_, err = b.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "disk", MessageId: id})
	require.NoError(t, err, "once the disk is back, the same lease can be acked")
	b.requireEmpty(t, "disk")
	b.sync(t, "disk")
	h.AssertCounter(t, telemetry.MetricLeased, qattr("disk"), 1) // never redelivered
	h.AssertCounter(t, telemetry.MetricEnqueued, qattr("disk"), 1)
	h.AssertCounter(t, telemetry.MetricAcked, qattr("disk"), 1)
	h.AssertCounter(t, telemetry.MetricNacked, qattr("disk"), 0)
}

// crashQueue sends queue an Enqueue whose storage write panics (arm
// panicNext first). The request dies with the actor, so it is never
// answered: a short deadline ends the wait, as a client's would.
func crashQueue(t *testing.T, b *bundle, queue string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	_, err := b.svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: queue})
	requireCode(t, err, codes.DeadlineExceeded)
}
