package gateway

import (
	"context"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// A batch call becomes one actor message per queue it touches. Each item is
// validated as its single call would be; an item refused here or by its
// queue fails alone, in its own result slot.

// part is the items of one batch bound for one queue, with their positions
// in the batch.
type part[T any] struct {
	pid   *actor.PID
	items []T
	at    []int
}

// StopAtRefusalMetadata is the request metadata key with which an
// EnqueueBatch asks that every item after the first refused one be refused
// too (actors.ErrNotAttempted, ABORTED) rather than stored; client sends it
// for an ordered bulk load (fila enqueue --lines). Fila's clients never send
// it and get Fila's rule: each item fails alone.
const StopAtRefusalMetadata = "fila-batch-stop-at-refusal"

// stopAtRefusal reports whether the call asked for StopAtRefusalMetadata.
func stopAtRefusal(ctx context.Context) bool {
	v := metadata.ValueFromIncomingContext(ctx, StopAtRefusalMetadata)
	return len(v) > 0 && v[0] == "true"
}

// split translates every item and groups the good ones by queue, in batch
// order; a refused item's error goes to fail, and with stop, so does every
// item after it. An item for a queue another node leads, when this node
// proxies, is not refused: it goes to away, to be forwarded to that node.
func split[T any](s *Server, ctx context.Context, reqs []any, stop bool, convert func(any) T, fail func(i int, err error), away remote) []*part[T] {
	var parts []*part[T]
	byPID := map[string]*part[T]{}
	for i, req := range reqs {
		pid, msg, err := s.translator.translate(&call{req: req})
		if node := s.forwardable(ctx, err); node != 0 {
			away.add(node, i, refusedQueue(toStatus(err)))
			continue
		}
		if err != nil {
			fail(i, err)
			if stop {
				for j := i + 1; j < len(reqs); j++ {
					fail(j, actors.ErrNotAttempted)
				}
				break
			}
			continue
		}
		p := byPID[pid.Id]
		if p == nil {
			p = &part[T]{pid: pid}
			byPID[pid.Id] = p
			parts = append(parts, p)
		}
		p.items = append(p.items, convert(msg))
		p.at = append(p.at, i)
	}
	return parts
}

// askParts sends each part to its queue at once and calls answer with each
// reply, or with the error the whole part got.
func askParts[T any](s *Server, ctx context.Context, parts []*part[T], msg func(*part[T]) any, answer func(*part[T], any, error)) {
	header := telemetry.InjectHeaders(ctx)
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Go(func() {
			res, err := s.sys.Ask(ctx, p.pid, header, msg(p))
			if e, ok := res.(error); ok && err == nil {
				err = e
			}
			answer(p, res, err)
		})
	}
	wg.Wait()
}

// checkBatch refuses a whole batch over the configured limits.
func (s *Server) checkBatch(field string, items, bytes int) error {
	if s.closing.Load() {
		return toStatus(actors.ErrShuttingDown)
	}
	if items > s.opts.MaxBatchItems {
		return toStatus(invalid("%s: %d items is over the limit of %d (server.max_batch_items)", field, items, s.opts.MaxBatchItems))
	}
	if bytes > s.opts.MaxBatchBytes {
		return toStatus(invalid("%s: %d bytes is over the limit of %d (server.max_batch_bytes)", field, bytes, s.opts.MaxBatchBytes))
	}
	return nil
}

// EnqueueBatch implements filav1.FilaServiceServer.
func (s *Server) EnqueueBatch(ctx context.Context, req *filav1.EnqueueBatchRequest) (*filav1.EnqueueBatchResponse, error) {
	msgs := req.GetMessages()
	size := 0
	for _, m := range msgs {
		size += len(m.GetPayload())
		for k, v := range m.GetHeaders() {
			size += len(k) + len(v)
		}
	}
	if err := s.checkBatch("messages", len(msgs), size); err != nil {
		return nil, err
	}
	annotateBatch(ctx, telemetry.OpSend, len(msgs))
	linkCreationContexts(ctx, msgs)
	results := make([]*filav1.EnqueueResult, len(msgs))
	fail := func(i int, err error) {
		results[i] = &filav1.EnqueueResult{Result: &filav1.EnqueueResult_Error{Error: itemStatus(err)}}
	}
	reqs := make([]any, len(msgs))
	for i, m := range msgs {
		reqs[i] = m
	}
	stop := stopAtRefusal(ctx)
	away := newRemote()
	parts := split(s, ctx, reqs, stop, func(m any) *actors.Enqueue { return m.(*actors.Enqueue) }, fail, away)
	forwarding := forwardParts(s, ctx, away, filav1.FilaService_EnqueueBatch_FullMethodName,
		func(at []int) (proto.Message, proto.Message) {
			sub := &filav1.EnqueueBatchRequest{Messages: make([]*filav1.EnqueueRequest, len(at))}
			for j, i := range at {
				sub.Messages[j] = msgs[i]
			}
			return sub, &filav1.EnqueueBatchResponse{}
		},
		func(at []int, reply proto.Message, err error) {
			got := reply.(*filav1.EnqueueBatchResponse).GetResults()
			for j, i := range at {
				switch {
				case err != nil:
					results[i] = &filav1.EnqueueResult{Result: &filav1.EnqueueResult_Error{Error: statusOf(err)}}
				case len(got) != len(at):
					fail(i, errUnexpectedReply(reply))
				default:
					results[i] = got[j]
				}
			}
		},
		func(i int) codes.Code { return codes.Code(results[i].GetError().GetCode()) })
	askParts(s, ctx, parts,
		func(p *part[*actors.Enqueue]) any { return &actors.EnqueueBatch{Items: p.items, StopAtRefusal: stop} },
		func(p *part[*actors.Enqueue], res any, err error) {
			r, ok := res.(*actors.EnqueueBatchReply)
			for j, i := range p.at {
				switch {
				case err != nil:
					fail(i, err)
				case !ok || j >= len(r.Results):
					fail(i, errUnexpectedReply(res))
				case r.Results[j].Err != nil:
					fail(i, r.Results[j].Err)
				default:
					results[i] = &filav1.EnqueueResult{Result: &filav1.EnqueueResult_MessageId{MessageId: r.Results[j].ID}}
				}
			}
		})
	forwarding.Wait()
	return &filav1.EnqueueBatchResponse{Results: results}, nil
}

// AckBatch implements filav1.FilaServiceServer.
func (s *Server) AckBatch(ctx context.Context, req *filav1.AckBatchRequest) (*filav1.SettleBatchResponse, error) {
	reqs := make([]any, len(req.GetAcks()))
	for i, a := range req.GetAcks() {
		reqs[i] = a
	}
	return s.settleBatch(ctx, "acks", reqs)
}

// NackBatch implements filav1.FilaServiceServer.
func (s *Server) NackBatch(ctx context.Context, req *filav1.NackBatchRequest) (*filav1.SettleBatchResponse, error) {
	reqs := make([]any, len(req.GetNacks()))
	for i, n := range req.GetNacks() {
		reqs[i] = n
	}
	return s.settleBatch(ctx, "nacks", reqs)
}

func (s *Server) settleBatch(ctx context.Context, field string, reqs []any) (*filav1.SettleBatchResponse, error) {
	if err := s.checkBatch(field, len(reqs), 0); err != nil {
		return nil, err
	}
	op := telemetry.OpAck
	if field == "nacks" {
		op = telemetry.OpNack
	}
	annotateBatch(ctx, op, len(reqs))
	results := make([]*filav1.Status, len(reqs))
	fail := func(i int, err error) { results[i] = itemStatus(err) }
	away := newRemote()
	parts := split(s, ctx, reqs, false, func(m any) actors.SettleItem {
		switch m := m.(type) {
		case *actors.Ack:
			return actors.SettleItem{ID: m.ID, LeaseID: m.LeaseID}
		case *actors.Nack:
			return actors.SettleItem{ID: m.ID, LeaseID: m.LeaseID, Nack: true, Error: m.Error}
		}
		panic("gateway: not a settle")
	}, fail, away)
	method, build := filav1.FilaService_AckBatch_FullMethodName, func(at []int) proto.Message {
		sub := &filav1.AckBatchRequest{}
		for _, i := range at {
			sub.Acks = append(sub.Acks, reqs[i].(*filav1.AckRequest))
		}
		return sub
	}
	if field == "nacks" {
		method, build = filav1.FilaService_NackBatch_FullMethodName, func(at []int) proto.Message {
			sub := &filav1.NackBatchRequest{}
			for _, i := range at {
				sub.Nacks = append(sub.Nacks, reqs[i].(*filav1.NackRequest))
			}
			return sub
		}
	}
	forwarding := forwardParts(s, ctx, away, method,
		func(at []int) (proto.Message, proto.Message) { return build(at), &filav1.SettleBatchResponse{} },
		func(at []int, reply proto.Message, err error) {
			got := reply.(*filav1.SettleBatchResponse).GetResults()
			for j, i := range at {
				switch {
				case err != nil:
					results[i] = statusOf(err)
				case len(got) != len(at):
					fail(i, errUnexpectedReply(reply))
				default:
					results[i] = got[j]
				}
			}
		},
		func(i int) codes.Code { return codes.Code(results[i].GetCode()) })
	askParts(s, ctx, parts,
		func(p *part[actors.SettleItem]) any { return &actors.SettleBatch{Items: p.items} },
		func(p *part[actors.SettleItem], res any, err error) {
			r, ok := res.(*actors.SettleBatchReply)
			for j, i := range p.at {
				switch {
				case err != nil:
					fail(i, err)
				case !ok || j >= len(r.Errs):
					fail(i, errUnexpectedReply(res))
				default:
					results[i] = itemStatus(r.Errs[j])
				}
			}
		})
	forwarding.Wait()
	return &filav1.SettleBatchResponse{Results: results}, nil
}

// statusOf is an item's result when the call forwarding it failed as a
// whole: that call's code and message.
func statusOf(err error) *filav1.Status {
	st := status.Convert(err)
	return &filav1.Status{Code: int32(st.Code()), Message: st.Message()}
}

// itemStatus is an item's result: code 0 for nil, else the code and
// message its single call would have got.
func itemStatus(err error) *filav1.Status {
	if err == nil {
		return &filav1.Status{}
	}
	st, _ := status.FromError(toStatus(err))
	return &filav1.Status{Code: int32(st.Code()), Message: st.Message()}
}
