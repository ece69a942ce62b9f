package server_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
	"github.com/fila-dev/filad/telemetry/telemetrytest"
)

// failingStore fails every write while failing is set, as a full or broken
// disk would, and passes everything else to the real store.
type failingStore struct {
	storage.Store
	failing atomic.Bool
}

var errDisk = errors.New("injected disk failure")

func (f *failingStore) Submit(b *storage.Batch, done func(error)) {
	if f.failing.Load() {
		done(errDisk)
		return
	}
	f.Store.Submit(b, done)
}

func (f *failingStore) Defer(b *storage.Batch, done func(error)) {
	if f.failing.Load() {
		done(errDisk)
		return
	}
	f.Store.Defer(b, done)
}

// TestStorageFailureIsInternalAndHalfAppliesNothing: SPEC §4's last row.
func TestStorageFailureIsInternalAndHalfAppliesNothing(t *testing.T) {
	t.Parallel()
	fs := &failingStore{}
	h := telemetrytest.New(t)
	b := setup(t, setupOpts{opts: server.Options{
		TracerProvider: h.TracerProvider, MeterProvider: h.MeterProvider,
		WrapStore: func(s storage.Store) storage.Store {
			fs.Store = s
			return fs
		},
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
