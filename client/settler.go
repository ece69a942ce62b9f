package client

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// settler coalesces a consumer's acks and nacks: what the handlers queue
// while one AckBatch or NackBatch is on its way goes in the next, so a busy
// consumer settles many messages per call and an idle one at once.
type settler struct {
	c       *Client
	timeout time.Duration
	mu      sync.Mutex
	acks    []settleReq
	nacks   []settleReq
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

type settleReq struct {
	m        *filav1.Message
	reason   string
	process  trace.SpanContext // the handler's span, linked from the settle span
	answered func(error)
}

// maxSettleBatch stays under the broker's default server.max_batch_items.
const maxSettleBatch = 1000

func (c *Client) newSettler(timeout time.Duration) *settler {
	s := &settler{c: c, timeout: timeout, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *settler) ack(m *filav1.Message, process trace.SpanContext, answered func(error)) {
	s.queue(&s.acks, settleReq{m: m, process: process, answered: answered})
}

func (s *settler) nack(m *filav1.Message, reason string, process trace.SpanContext, answered func(error)) {
	s.queue(&s.nacks, settleReq{m: m, reason: reason, process: process, answered: answered})
}

func (s *settler) queue(list *[]settleReq, r settleReq) {
	s.mu.Lock()
	*list = append(*list, r)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // a flush is already due
	}
}

// close sends what is queued and stops.
func (s *settler) close() {
	close(s.stop)
	<-s.done
}

func (s *settler) run() {
	defer close(s.done)
	for {
		select {
		case <-s.kick:
			s.flush()
		case <-s.stop:
			s.flush()
			return
		}
	}
}

func (s *settler) flush() {
	for {
		s.mu.Lock()
		acks, nacks := s.acks, s.nacks
		s.acks, s.nacks = nil, nil
		s.mu.Unlock()
		if len(acks) == 0 && len(nacks) == 0 {
			return
		}
		for len(acks) > 0 {
			n := min(len(acks), maxSettleBatch)
			s.send(acks[:n], false)
			acks = acks[n:]
		}
		for len(nacks) > 0 {
			n := min(len(nacks), maxSettleBatch)
			s.send(nacks[:n], true)
			nacks = nacks[n:]
		}
	}
}

// send settles reqs (of one consumer's queue) in one call, under a
// "ack <queue>" or "nack <queue>" span linked to each message's process
// span.
func (s *settler) send(reqs []settleReq, nack bool) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	op, links := telemetry.OpAck, make([]trace.Link, 0, len(reqs))
	if nack {
		op = telemetry.OpNack
	}
	for _, r := range reqs {
		if r.process.IsValid() {
			links = append(links, trace.Link{SpanContext: r.process})
		}
	}
	queue := reqs[0].m.GetMetadata().GetQueueId()
	ctx, span := s.c.startSettle(ctx, op, queue, len(reqs), links...)
	var resp *filav1.SettleBatchResponse
	var err error
	if nack {
		req := &filav1.NackBatchRequest{}
		for _, r := range reqs {
			req.Nacks = append(req.Nacks, &filav1.NackRequest{Queue: r.m.GetMetadata().GetQueueId(), MessageId: r.m.GetId(), LeaseId: r.m.GetLeaseId(), Error: r.reason})
		}
		resp, err = s.c.svc.NackBatch(ctx, req)
	} else {
		req := &filav1.AckBatchRequest{}
		for _, r := range reqs {
			req.Acks = append(req.Acks, &filav1.AckRequest{Queue: r.m.GetMetadata().GetQueueId(), MessageId: r.m.GetId(), LeaseId: r.m.GetLeaseId()})
		}
		resp, err = s.c.svc.AckBatch(ctx, req)
	}
	s.c.recordOperation(ctx, op, queue, start, err)
	fail(span, err)
	span.End() // before the answers: Consume returns once they are all in
	for i, r := range reqs {
		switch {
		case err != nil:
			r.answered(err)
		case i < len(resp.GetResults()) && resp.GetResults()[i].GetCode() != 0:
			st := resp.GetResults()[i]
			r.answered(status.Error(codes.Code(st.GetCode()), st.GetMessage()))
		default:
			r.answered(nil)
		}
	}
}
