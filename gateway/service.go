package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

func errUnexpectedReply(res any) error { return fmt.Errorf("gateway: unexpected reply %T", res) }

// Enqueue implements filav1.FilaServiceServer.
func (s *Server) Enqueue(ctx context.Context, req *filav1.EnqueueRequest) (*filav1.EnqueueResponse, error) {
	annotate(ctx, telemetry.OpSend, req.GetQueue(), "")
	r, err := askFor(s, ctx, &call{req: req}, func(r *actors.EnqueueReply) error { return r.Err })
	if err != nil {
		return nil, err
	}
	annotate(ctx, "", "", r.ID, telemetry.KeyFairnessKey.String(r.FairnessKey))
	return &filav1.EnqueueResponse{MessageId: r.ID}, nil
}

// Ack implements filav1.FilaServiceServer.
func (s *Server) Ack(ctx context.Context, req *filav1.AckRequest) (*filav1.AckResponse, error) {
	annotate(ctx, telemetry.OpAck, req.GetQueue(), req.GetMessageId())
	if _, err := askFor(s, ctx, &call{req: req}, settleErr); err != nil {
		return nil, err
	}
	return &filav1.AckResponse{}, nil
}

// Nack implements filav1.FilaServiceServer.
func (s *Server) Nack(ctx context.Context, req *filav1.NackRequest) (*filav1.NackResponse, error) {
	annotate(ctx, telemetry.OpNack, req.GetQueue(), req.GetMessageId())
	if _, err := askFor(s, ctx, &call{req: req}, settleErr); err != nil {
		return nil, err
	}
	return &filav1.NackResponse{}, nil
}

func settleErr(r *actors.SettleReply) error { return r.Err }

// Extend implements filav1.FilaServiceServer.
func (s *Server) Extend(ctx context.Context, req *filav1.ExtendRequest) (*filav1.ExtendResponse, error) {
	annotate(ctx, telemetry.OpExtend, req.GetQueue(), req.GetMessageId())
	r, err := askFor(s, ctx, &call{req: req}, func(r *actors.ExtendReply) error { return r.Err })
	if err != nil {
		return nil, err
	}
	return &filav1.ExtendResponse{LeaseExpiresAt: timestamppb.New(r.ExpiresAt)}, nil
}

// Consume implements filav1.FilaServiceServer. The stream subscribes a
// consumer to the queue actor and sends on what the actor leases to it, at
// most max_in_flight unsettled at a time; if the queue actor is restarted
// by its supervisor, the stream subscribes again.
func (s *Server) Consume(req *filav1.ConsumeRequest, stream filav1.FilaService_ConsumeServer) error {
	ctx := stream.Context()
	annotate(ctx, telemetry.OpReceive, req.GetQueue(), "")
	size := s.opts.DefaultMaxInFlight
	if n := req.GetMaxInFlight(); n > 0 {
		if n > MaxConsumerInFlight {
			return toStatus(invalid("max_in_flight: %d is over the limit of %d", n, MaxConsumerInFlight))
		}
		size = int(n)
	}
	frame := max(int(req.GetMaxBatch()), 1)
	if frame > MaxLeaseBatch {
		return toStatus(invalid("max_batch: %d is over the limit of %d", frame, MaxLeaseBatch))
	}
	for {
		c := actors.NewConsumer(size, frame)
		// The transport cancels ctx when the client ends the stream, before
		// it reads that client's next calls: a nack sent after closing a
		// stream can never be redelivered to it.
		c.Gone = ctx.Done()
		r, err := askFor(s, ctx, &call{req: req, consumer: c}, func(*actors.SubscribeReply) error { return nil })
		if err != nil {
			return err
		}
		err = s.pump(ctx, stream, c, r, frame)
		if !actors.IsRestart(err) {
			return toStatus(err)
		}
	}
}

// pump sends deliveries until the stream or the consumer ends: one per
// ConsumeResponse, or with frame > 1, as many as are ready (up to frame) in
// one, never waiting for more.
func (s *Server) pump(ctx context.Context, stream filav1.FilaService_ConsumeServer, c *actors.Consumer, sub *actors.SubscribeReply, frame int) error {
	var batch []*filav1.Message
	var taken []*actors.Delivery // this frame's, handed back if it is never sent
	for {
		var first *actors.Delivery
		select {
		case first = <-c.Deliveries:
		case <-c.Done():
			return c.Err()
		case <-ctx.Done():
			s.sys.Send(sub.Queue, &actors.Unsubscribe{ConsumerID: c.ID()})
			return ctx.Err()
		}
		// A buffer that was full when we took from it may have been passed
		// over by the queue: tell it there is room (once per frame).
		wasFull := len(c.Deliveries) == cap(c.Deliveries)-1
		resp := &filav1.ConsumeResponse{}
		taken = append(taken[:0], first)
		if frame == 1 {
			resp.Message = toProto(first)
		} else {
			batch = append(batch[:0], toProto(first))
		take:
			for len(batch) < frame {
				if len(c.Deliveries) == cap(c.Deliveries) {
					wasFull = true
				}
				select {
				case d := <-c.Deliveries:
					batch = append(batch, toProto(d))
					taken = append(taken, d)
				default:
					break take
				}
			}
			resp.Messages = batch
		}
		if wasFull {
			s.sys.Send(sub.Queue, &actors.ConsumerReady{})
		}
		for _, d := range taken {
			if err := d.Written.Wait(ctx); err != nil {
				// The lease is not durable (a cluster's leader deposed
				// meanwhile): nothing of the frame may be sent.
				return s.leaseNotWritten(ctx, c, sub, taken, err)
			}
		}
		if err := stream.Send(resp); err != nil {
			// The stream is gone (or going): what this frame took was never
			// sent; the queue returns it at once with what is still buffered.
			s.sys.Send(sub.Queue, &actors.Unsubscribe{ConsumerID: c.ID(), Unsent: slices.Clone(taken)})
			return err
		}
	}
}

// leaseNotWritten ends a frame whose lease write failed with err. When the
// write's outcome is unknown (the partition's leader lost its term while it
// was proposed) the queue reloads or stops, and ends every consumer with
// the reason a client can act on: subscribe again (actors.IsRestart), or
// the leader to go to. The stream waits for that rather than answering the
// store's error, which is INTERNAL to a client that only has to retry. A
// refusal (a plain not-leader, a closed store) is the answer itself.
func (s *Server) leaseNotWritten(ctx context.Context, c *actors.Consumer, sub *actors.SubscribeReply, taken []*actors.Delivery, err error) error {
	if errors.Is(err, storage.ErrOutcomeUnknown) {
		select {
		case <-c.Done():
			return c.Err() // the reload took the frame's leases back with the rest
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	s.sys.Send(sub.Queue, &actors.Unsubscribe{ConsumerID: c.ID(), Unsent: slices.Clone(taken)})
	return err
}

func toProto(d *actors.Delivery) *filav1.Message {
	rec := d.Record
	return &filav1.Message{
		Id:      d.ID,
		LeaseId: d.LeaseID,
		Headers: rec.GetHeaders(),
		Payload: rec.GetPayload(),
		Metadata: &filav1.MessageMetadata{
			FairnessKey:  rec.GetFairnessKey(),
			Weight:       rec.GetWeight(),
			ThrottleKeys: rec.GetThrottleKeys(),
			AttemptCount: rec.GetAttemptCount(),
			QueueId:      d.Queue,
		},
		Timestamps: &filav1.MessageTimestamps{
			EnqueuedAt:     timestamppb.New(time.Unix(0, rec.GetEnqueuedAtUnixNs())),
			LeasedAt:       timestamppb.New(d.LeasedAt),
			LeaseExpiresAt: timestamppb.New(d.ExpiresAt),
		},
	}
}
