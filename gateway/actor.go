package gateway

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// call is one gRPC request on its way to the actors. The caller's span
// context travels in the envelope header, and the gateway actor forwards it
// in the envelope of the message it makes.
type call struct {
	req any
	// consumer is set for Lease calls: the stream's delivery buffer.
	consumer *actors.Consumer
}

// gatewayActor turns calls into actor messages: it validates, resolves the
// queue, applies admission control, and forwards to the queue actor (or the
// broker) with the caller as sender, so the reply goes straight back. It keeps
// no state, so a pool of them serves calls in parallel.
type gatewayActor struct {
	dir        *actors.Directory
	broker     *actor.PID
	maxPayload int
	maxMailbox int64
	alarms     *Alarms
	// queueDefaults holds the values a CreateQueue may leave unset.
	queueDefaults actors.QueueConfig
}

// Receive implements actor.Actor.
func (g *gatewayActor) Receive(ctx actor.Context) {
	c, ok := ctx.Message().(*call)
	if !ok {
		return
	}
	target, msg, err := g.translate(c)
	if err != nil {
		ctx.Respond(err)
		return
	}
	var header map[string]string
	if h := ctx.MessageHeader(); h != nil && h.Length() > 0 {
		header = h.ToMap()
	}
	ctx.Send(target, &actor.MessageEnvelope{Header: header, Message: msg, Sender: ctx.Sender()})
}

func (g *gatewayActor) translate(c *call) (*actor.PID, any, error) {
	switch r := c.req.(type) {
	case *filav1.EnqueueRequest:
		ref, err := g.queue("queue", r.GetQueue())
		if err != nil {
			return nil, nil, err
		}
		if err := validateMessage(r.GetHeaders(), len(r.GetPayload()), g.maxPayload); err != nil {
			return nil, nil, err
		}
		if err := g.alarms.refuse(); err != nil {
			return nil, nil, err
		}
		if d := ref.MailboxDepth(); d >= g.maxMailbox {
			return nil, nil, fmt.Errorf("%w: queue %s has %d requests waiting (limit %d)", actors.ErrOverloaded, ref.Name, d, g.maxMailbox)
		}
		return ref.PID, &actors.Enqueue{Headers: r.GetHeaders(), Payload: r.GetPayload()}, nil
	case *filav1.AckRequest:
		ref, err := g.settleTarget(r.GetQueue(), r.GetMessageId(), r.GetLeaseId())
		if err != nil {
			return nil, nil, err
		}
		return ref.PID, &actors.Ack{ID: r.GetMessageId(), LeaseID: r.GetLeaseId()}, nil
	case *filav1.NackRequest:
		ref, err := g.settleTarget(r.GetQueue(), r.GetMessageId(), r.GetLeaseId())
		if err != nil {
			return nil, nil, err
		}
		return ref.PID, &actors.Nack{ID: r.GetMessageId(), LeaseID: r.GetLeaseId(), Error: r.GetError()}, nil
	case *filav1.ExtendRequest:
		ref, err := g.settleTarget(r.GetQueue(), r.GetMessageId(), r.GetLeaseId())
		if err != nil {
			return nil, nil, err
		}
		timeout, err := visibilityTimeout("visibility_timeout_ms", r.GetVisibilityTimeoutMs())
		if err != nil {
			return nil, nil, err
		}
		return ref.PID, &actors.Extend{ID: r.GetMessageId(), LeaseID: r.GetLeaseId(), Timeout: timeout}, nil
	case *filav1.LeaseRequest:
		ref, err := g.queue("queue", r.GetQueue())
		if err != nil {
			return nil, nil, err
		}
		return ref.PID, &actors.Subscribe{Consumer: c.consumer}, nil
	case *filav1.GetStatsRequest:
		ref, err := g.queue("queue", r.GetQueue())
		if err != nil {
			return nil, nil, err
		}
		return ref.PID, &actors.GetStats{}, nil
	case *filav1.CreateQueueRequest:
		cfg, err := queueConfig(r, g.queueDefaults)
		if err != nil {
			return nil, nil, err
		}
		return g.broker, &actors.CreateQueue{Config: cfg}, nil
	case *filav1.DeleteQueueRequest:
		if err := validateQueueName("queue", r.GetQueue()); err != nil {
			return nil, nil, err
		}
		return g.broker, &actors.DeleteQueue{Name: r.GetQueue()}, nil
	}
	return nil, nil, fmt.Errorf("gateway: unexpected request %T", c.req)
}

// queue validates a queue name and finds its actor.
func (g *gatewayActor) queue(field, name string) (*actors.QueueRef, error) {
	if err := validateQueueName(field, name); err != nil {
		return nil, err
	}
	ref := g.dir.Lookup(name)
	if ref == nil {
		return nil, actors.QueueNotFound(name)
	}
	return ref, nil
}

func (g *gatewayActor) settleTarget(queue, id, leaseID string) (*actors.QueueRef, error) {
	if err := validateQueueName("queue", queue); err != nil {
		return nil, err
	}
	if err := validateMessageID(id); err != nil {
		return nil, err
	}
	if len(leaseID) > MaxLeaseIDBytes {
		return nil, invalid("lease_id: %d bytes is over the limit of %d", len(leaseID), MaxLeaseIDBytes)
	}
	return g.queue("queue", queue)
}

// visibilityTimeout checks a timeout in milliseconds; 0 means the queue's.
func visibilityTimeout(field string, ms uint64) (time.Duration, error) {
	if ms != 0 && (ms > config.MaxVisibilityTimeoutMS || ms < config.MinVisibilityTimeoutMS) {
		return 0, invalid("%s: %d is outside %d..%d", field, ms, config.MinVisibilityTimeoutMS, config.MaxVisibilityTimeoutMS)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func queueConfig(r *filav1.CreateQueueRequest, defaults actors.QueueConfig) (actors.QueueConfig, error) {
	if err := validateQueueName("name", r.GetName()); err != nil {
		return actors.QueueConfig{}, err
	}
	cfg := defaults
	cfg.Name = r.GetName()
	vt, err := visibilityTimeout("config.visibility_timeout_ms", r.GetConfig().GetVisibilityTimeoutMs())
	if err != nil {
		return cfg, err
	}
	if vt != 0 {
		cfg.VisibilityTimeout = vt
	}
	cfg.MaxDepth, cfg.MaxBytes = r.GetConfig().GetMaxDepth(), r.GetConfig().GetMaxBytes()
	if h := r.GetConfig().GetFairnessKeyHeader(); h != "" {
		if len(h) > MaxHeaderKeyBytes {
			return cfg, invalid("config.fairness_key_header: %d bytes is over the limit of %d", len(h), MaxHeaderKeyBytes)
		}
		cfg.FairnessKeyHeader = h
	}
	return cfg, nil
}
