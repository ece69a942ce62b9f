package client

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// stopAtRefusalMetadata is gateway.StopAtRefusalMetadata (the client does
// not import the server's packages).
const stopAtRefusalMetadata = "fila-batch-stop-at-refusal"

// EnqueueResult is one message's outcome in EnqueueOrdered: its id, or the
// error it was refused with.
type EnqueueResult struct {
	ID  string
	Err error
}

// EnqueueOrdered stores payloads in queue, in order, in one EnqueueBatch,
// all with the same headers, and asks filad to stop at the first refused
// message: the messages after it are not stored and get ABORTED. So the
// results are some stored ids, then (perhaps) the one refused message, then
// ABORTED ones; a caller that stops at the first error has stored exactly
// the messages before it. An error return means the call as a whole failed
// (for UNAVAILABLE or DEADLINE_EXCEEDED, the batch may still have been
// stored; for a refusal such as a batch over server.max_batch_bytes, none of
// it was). One "send <queue>" span covers the batch, and one
// messaging.client.operation.duration; messaging.client.sent.messages
// counts each message by its outcome.
func (c *Client) EnqueueOrdered(ctx context.Context, queue string, headers map[string]string, payloads [][]byte) ([]EnqueueResult, error) {
	start := time.Now()
	ctx, span, h := c.startSend(ctx, queue, headers)
	defer span.End()
	span.SetAttributes(attribute.Int("messaging.batch.message_count", len(payloads)))
	req := &filav1.EnqueueBatchRequest{Messages: make([]*filav1.EnqueueRequest, len(payloads))}
	for i, p := range payloads {
		req.Messages[i] = &filav1.EnqueueRequest{Queue: queue, Headers: h, Payload: p}
	}
	ctx = metadata.AppendToOutgoingContext(ctx, stopAtRefusalMetadata, "true")
	resp, err := c.svc.EnqueueBatch(ctx, req)
	c.recordOperation(ctx, telemetry.OpSend, queue, start, err)
	if err != nil {
		c.recordSent(ctx, queue, len(payloads), err)
		fail(span, err)
		return nil, err
	}
	out := make([]EnqueueResult, len(payloads))
	sent := sentCounts{}
	for i := range out {
		out[i] = batchResult(resp, i)
		sent.add(queue, out[i].Err)
	}
	sent.record(ctx, c)
	return out, nil
}

// batchResult is item i of an EnqueueBatch answer: its id, or its error
// (Internal when the answer is short).
func batchResult(resp *filav1.EnqueueBatchResponse, i int) EnqueueResult {
	switch r := resp.GetResults(); {
	case i >= len(r):
		return EnqueueResult{Err: status.Error(codes.Internal, "client: short EnqueueBatch answer")}
	case r[i].GetError() != nil:
		return EnqueueResult{Err: status.Error(codes.Code(r[i].GetError().GetCode()), r[i].GetError().GetMessage())}
	default:
		return EnqueueResult{ID: r[i].GetMessageId()}
	}
}

// sentCounts counts a batch's messages by queue and outcome code, so that
// messaging.client.sent.messages is recorded once per pair, not per message.
type sentCounts map[sentKey]int

type sentKey struct {
	queue string
	code  codes.Code
}

func (s sentCounts) add(queue string, err error) { s[sentKey{queue, status.Code(err)}]++ }

func (s sentCounts) record(ctx context.Context, c *Client) {
	for k, n := range s {
		var err error
		if k.code != codes.OK {
			err = status.Error(k.code, "") // by code, as error.type
		}
		c.recordSent(ctx, k.queue, n, err)
	}
}
