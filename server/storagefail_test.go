package server_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	failWith  error // the error a failing write gets; errDisk when nil
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

func (f *faultStore) failure() error {
	if f.failWith != nil {
		return fmt.Errorf("injected: %w", f.failWith)
	}
	return errDisk
}

func (f *faultStore) Submit(b *storage.Batch, done func(error)) {
	if f.panicNext.CompareAndSwap(true, false) {
		panic("storage bug injected by a test")
	}
	if f.failing.Load() {
		done(f.failure())
		return
	}
	f.Store.Submit(b, done)
}

func (f *faultStore) Defer(b *storage.Batch, done func(error)) {
	if f.failing.Load() {
		done(f.failure())
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

// TestDiskFullEpisodesUnderLoad: while producers and consumers run, the
// store fails every write with ENOSPC in three episodes (an injected fault:
// a real full disk needs a small file system this test cannot mount
// everywhere). Clients get RESOURCE_EXHAUSTED, filad serves on, recovers by
// itself when space returns, and no answered Enqueue is lost.
func TestDiskFullEpisodesUnderLoad(t *testing.T) {
	t.Parallel()
	fs := openFaultStore(t)
	fs.failWith = syscall.ENOSPC
	b := setup(t, setupOpts{opts: server.Options{Store: fs}})
	b.createQueue(t, "full", &filav1.QueueConfig{VisibilityTimeoutMs: 500})
	var (
		mu       sync.Mutex
		answered = map[string]bool{} // Enqueue answered OK
		acked    = map[string]bool{}
		refused  atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := b.svc.Enqueue(bgCtx(), &filav1.EnqueueRequest{Queue: "full", Payload: []byte("p")})
				switch {
				case err == nil:
					mu.Lock()
					answered[resp.GetMessageId()] = true
					mu.Unlock()
				case status.Code(err) == codes.ResourceExhausted:
					refused.Add(1)
				default:
					t.Errorf("enqueue: %v", err)
					return
				}
			}
		})
	}
	consume := func(until func() bool) {
		stream, cancel := b.lease(t, "full")
		defer cancel()
		for !until() {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			m := resp.GetMessage()
			_, err = b.svc.Ack(bgCtx(), &filav1.AckRequest{Queue: "full", MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
			if err == nil {
				mu.Lock()
				acked[m.GetId()] = true
				mu.Unlock()
			} else if c := status.Code(err); c != codes.ResourceExhausted && c != codes.FailedPrecondition {
				t.Errorf("ack: %v", err)
			}
		}
	}
	wg.Go(func() {
		consume(func() bool {
			select {
			case <-stop:
				return true
			default:
				return false
			}
		})
	})
	for range 3 {
		// Each episode lasts until a client has been refused, then space returns.
		before := refused.Load()
		fs.failing.Store(true)
		require.Eventually(t, func() bool { return refused.Load() > before }, waitFor, time.Millisecond, "a refusal")
		fs.failing.Store(false)
		mark := len(snapshot(&mu, answered))
		require.Eventually(t, func() bool { return len(snapshot(&mu, answered)) > mark+10 }, waitFor, time.Millisecond, "enqueues resume")
	}
	close(stop)
	wg.Wait()
	// Drain: every answered Enqueue is delivered (and acked) in the end.
	consume(func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id := range answered {
			if !acked[id] {
				return false
			}
		}
		return true
	})
	b.requireEmpty(t, "full")
	t.Logf("%d enqueues answered, %d refused for a full disk, all delivered", len(answered), refused.Load())
}

func snapshot(mu *sync.Mutex, m map[string]bool) map[string]bool {
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(m)
}
