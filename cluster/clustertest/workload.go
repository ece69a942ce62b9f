package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/fila-dev/filad/client"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// OpTimeout bounds each recorded call. A call that runs out of it is
// Unknown, which the checker accepts either way, so this value decides no
// verdict; it only has to outlast a pause for most calls to be answered.
const OpTimeout = 5 * time.Second

// retryPause is the wait between a refused call or a broken stream and
// the next attempt while a node is down: it spares the CPU, nothing more.
const retryPause = 20 * time.Millisecond

// FastReconnect makes a gRPC client redial a restarted node within tens of
// milliseconds instead of gRPC's default backoff of a second and more:
// the workload resumes sooner after a kill, which only makes runs denser.
func FastReconnect() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 250 * time.Millisecond},
		MinConnectTimeout: time.Second,
	})
}

// Produce enqueues up to n messages to queue, one at a time, until ctx
// ends, each after wait returns (nil: no wait; a workload uses it to keep
// the backlog within what its consumers settle), each with a fresh id "<prefix>-<i>" as its payload, and records
// each call. It never retries an id: a retry of an unknown enqueue is a
// second message, which the per-id model would not know.
func Produce(ctx context.Context, c *client.Client, h *History, queue string, worker int, prefix string, n int, wait func(context.Context)) int {
	sent := 0
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if wait != nil {
			if wait(ctx); ctx.Err() != nil {
				break
			}
		}
		id := fmt.Sprintf("%s-%d", prefix, i)
		call := h.Now()
		callCtx, cancel := context.WithTimeout(context.Background(), OpTimeout)
		_, err := c.Enqueue(callCtx, queue, nil, []byte(id))
		cancel()
		out := OutcomeOf(err)
		h.Add(Op{Kind: Enqueue, ID: id, Client: worker, Call: call, Return: h.Now(), Outcome: out})
		sent++
		if out != OK {
			pause(ctx)
		}
	}
	return sent
}

// Consume leases from queue until ctx ends, reopening its stream whenever
// it breaks (a node killed, restarted, paused past a deadline). It acks a
// delivery with probability ackRate and abandons the others, which the
// broker redelivers when their lease expires: duplicates on purpose.
func Consume(ctx context.Context, c *client.Client, h *History, queue string, worker int, rng *rand.Rand, ackRate float64) {
	for ctx.Err() == nil {
		opened := h.Now()
		s, err := c.Lease(ctx, queue, 16)
		if err != nil {
			pause(ctx)
			continue
		}
		for {
			m, err := s.Next()
			if err != nil {
				break
			}
			d := record(h, m, worker, opened, false)
			if rng.Float64() >= ackRate {
				continue
			}
			call := h.Now()
			ackCtx, cancel := context.WithTimeout(context.Background(), OpTimeout)
			err = c.Ack(ackCtx, m)
			cancel()
			h.Add(Op{Kind: Ack, ID: d.ID, Token: d.Token, MessageID: d.MessageID, Client: worker, Call: call, Return: h.Now(), Outcome: OutcomeOf(err)})
		}
		pause(ctx)
	}
}

// record adds the Deliver of m, received now on a stream opened at opened.
func record(h *History, m *filav1.Message, worker int, opened int64, drain bool) Op {
	received := h.Now()
	op := Op{Kind: Deliver, ID: string(m.GetPayload()), Token: m.GetLeaseId(), MessageID: m.GetId(), Client: worker,
		Call: DeliverCall(m.GetTimestamps().GetLeasedAt().AsTime(), opened, received), Return: received, Outcome: OK, Drain: drain}
	h.Add(op)
	return op
}

func pause(ctx context.Context) {
	t := time.NewTimer(retryPause)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// DrainTimeout bounds the drain. Running out of it fails the test (the
// broker kept a message out of reach); it decides no checker verdict.
const DrainTimeout = 2 * time.Minute

// drainMaxInFlight is filad's limit on a stream's leases: the drain can
// hold at most that many messages, so a run must leave fewer behind.
const drainMaxInFlight = 10_000

// drainLease is the drain's visibility timeout: far beyond the check, so
// nothing the drain holds goes back to ready while it finishes.
const drainLease = time.Hour

// Drain is the final read, after the faults have healed and the workload
// stopped: it sets queue's visibility timeout to an hour, leases
// everything (messages under the workload's short leases come as those
// expire), records each delivery with Drain set, and ends, recording
// DrainEnd, once the broker reports nothing ready or delayed and as many
// in flight as the drain holds. Its stream ends when it returns; the
// messages stay leased for the hour, so the broker's state stays as the
// drain found it while the test checks it.
func Drain(ctx context.Context, c *client.Client, h *History, queue string, worker int) error {
	ctx, cancel := context.WithTimeout(ctx, DrainTimeout)
	defer cancel()
	// In a cluster a call can meet a partition between leaders just after
	// the heal: UNAVAILABLE says nothing was done, so it is asked again.
	if err := untilAvailable(ctx, func() error {
		_, err := c.Admin().UpdateQueue(ctx, &filav1.UpdateQueueRequest{Name: queue,
			Config:     &filav1.QueueConfig{VisibilityTimeoutMs: uint64(drainLease / time.Millisecond)},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"visibility_timeout_ms"}}})
		return err
	}); err != nil {
		return fmt.Errorf("drain: set the visibility timeout: %w", err)
	}
	var held atomic.Int64
	streamCtx, stop := context.WithCancel(ctx)
	defer stop()
	streamErr := make(chan error, 1)
	go func() {
		seen := map[string]bool{}
		for {
			// A stream that a leader change ends is opened again: what the
			// last one held stays leased (drainLease), and counts as held.
			opened := h.Now()
			s, err := c.Lease(streamCtx, queue, drainMaxInFlight)
			for err == nil {
				var m *filav1.Message
				if m, err = s.Next(); err == nil {
					record(h, m, worker, opened, true)
					if !seen[m.GetId()] {
						seen[m.GetId()] = true
						held.Add(1)
					}
				}
			}
			if status.Code(err) != codes.Unavailable || streamCtx.Err() != nil {
				streamErr <- err
				return
			}
			pause(streamCtx)
		}
	}()
	defer func() { stop(); <-streamErr }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// held is read before the stats: if the broker then reports exactly
		// that many in flight and nothing else, every message it has is one
		// the drain already received (see docs/cluster-checker.md).
		n := held.Load()
		st, err := c.Stats(ctx, queue)
		if err == nil && st.GetDepth() == 0 && st.GetDelayed() == 0 && int64(st.GetInFlight()) == n {
			end := h.Now()
			h.Add(Op{Kind: DrainEnd, Client: worker, Call: end, Return: end, Outcome: OK})
			return nil
		}
		select {
		case <-tick.C:
		case err := <-streamErr:
			streamErr <- err
			return fmt.Errorf("drain: stream ended: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("drain: not complete after %v (held %d of at most %d; last stats %v, %v)", DrainTimeout, n, drainMaxInFlight, st, err)
		}
	}
}

// untilAvailable calls f until it answers anything but UNAVAILABLE, or ctx
// ends.
func untilAvailable(ctx context.Context, f func() error) error {
	for {
		err := f()
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		pause(ctx)
	}
}
