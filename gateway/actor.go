package gateway

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/scripting"
)

// call is one gRPC request on its way to the actors.
type call struct {
	req any
	// consumer is set for Consume calls: the stream's delivery buffer.
	consumer *actors.Consumer
}

// translator turns calls into actor messages on the calling goroutine: it
// validates, resolves the queue's route, applies admission control, and
// names the actor (a queue actor or the broker) the message goes to. It
// keeps no state, so one value serves every call at once.
type translator struct {
	dir        *actors.Directory
	broker     *actor.PID
	maxPayload int
	maxMailbox int64
	alarms     *Alarms
	// queueDefaults holds the values a CreateQueue may leave unset.
	queueDefaults actors.QueueConfig
	// lua bounds the scripts a queue config brings (checked on arrival).
	lua scripting.Limits
	log *slog.Logger
}

// target is translate with a panic turned into the call's error: a bug in
// translating one request fails that request at once (INTERNAL) instead of
// taking the process down with it.
func (g *translator) target(c *call) (pid *actor.PID, msg any, err error) {
	defer func() {
		if r := recover(); r != nil {
			g.log.Error("gateway: request translation panicked", slog.String("request", fmt.Sprintf("%T", c.req)), slog.Any("panic", r))
			pid, msg, err = nil, nil, fmt.Errorf("gateway: internal error translating %T", c.req)
		}
	}()
	return g.translate(c)
}

func (g *translator) translate(c *call) (*actor.PID, any, error) {
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
	case *filav1.ConsumeRequest:
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
		cfg, err := queueConfig(r, g.queueDefaults, g.lua)
		if err != nil {
			return nil, nil, err
		}
		return g.broker, &actors.CreateQueue{Config: cfg}, nil
	case *filav1.UpdateQueueRequest:
		if err := validateQueueName("name", r.GetName()); err != nil {
			return nil, nil, err
		}
		p, err := queuePatch(r.GetConfig(), r.GetUpdateMask().GetPaths(), g.queueDefaults, g.lua)
		if err != nil {
			return nil, nil, err
		}
		return g.broker, &actors.UpdateQueue{Name: r.GetName(), Patch: p}, nil
	case *filav1.RedriveRequest:
		ref, err := g.queue("dlq_queue", r.GetDlqQueue())
		if err != nil {
			return nil, nil, err
		}
		if !actors.IsDLQ(ref.Name) {
			return nil, nil, invalid("dlq_queue: %q is not a dead-letter queue (its name does not end in %q)", ref.Name, actors.DLQSuffix)
		}
		return ref.PID, &actors.Redrive{Count: r.GetCount()}, nil
	case *filav1.PeekRequest:
		ref, err := g.queue("queue", r.GetQueue())
		if err != nil {
			return nil, nil, err
		}
		limit, err := pageLimit(r.GetLimit())
		if err != nil {
			return nil, nil, err
		}
		if t := r.GetPageToken(); t != "" {
			if err := validateMessageID(t); err != nil {
				return nil, nil, invalid("page_token: not one this server issued")
			}
		}
		return ref.PID, &actors.Peek{After: r.GetPageToken(), Limit: limit}, nil
	case *filav1.PurgeQueueRequest:
		ref, err := g.queue("queue", r.GetQueue())
		if err != nil {
			return nil, nil, err
		}
		return ref.PID, &actors.Purge{}, nil
	case *filav1.SetConfigRequest:
		if err := validateConfigKey("key", r.GetKey()); err != nil {
			return nil, nil, err
		}
		if err := validateConfigValue(r.GetValue()); err != nil {
			return nil, nil, err
		}
		if strings.HasPrefix(r.GetKey(), reservedConfigPrefix) {
			return nil, nil, invalid("key: %q is reserved for api keys (CreateApiKey, RevokeApiKey)", reservedConfigPrefix)
		}
		if strings.HasPrefix(r.GetKey(), actors.ThrottlePrefix) && r.GetValue() != "" {
			if _, _, err := actors.ParseThrottle(r.GetValue()); err != nil {
				return nil, nil, invalid("value of %s: %v", r.GetKey(), err)
			}
		}
		return g.broker, &actors.SetConfig{Key: r.GetKey(), Value: r.GetValue()}, nil
	case *filav1.DeleteQueueRequest:
		if err := validateQueueName("queue", r.GetQueue()); err != nil {
			return nil, nil, err
		}
		return g.broker, &actors.DeleteQueue{Name: r.GetQueue()}, nil
	}
	return nil, nil, fmt.Errorf("gateway: unexpected request %T", c.req)
}

// queue validates a queue name and resolves its route: name → QueueRef →
// Location. It is the one place a call learns where its queue lives. A
// queue led by another node is refused with that node's address (Fila's
// redirect); a cluster's proxy for unary calls (docs/architecture.md,
// "Routing") replaces that refusal here.
func (g *translator) queue(field, name string) (*actors.QueueRef, error) {
	if err := validateQueueName(field, name); err != nil {
		return nil, err
	}
	ref := g.dir.Lookup(name)
	if ref == nil {
		return nil, actors.QueueNotFound(name)
	}
	if loc := ref.Location; !loc.Local() {
		return nil, loc.NotLeader(name)
	}
	return ref, nil
}

func (g *translator) settleTarget(queue, id, leaseID string) (*actors.QueueRef, error) {
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

func queueConfig(r *filav1.CreateQueueRequest, defaults actors.QueueConfig, lua scripting.Limits) (actors.QueueConfig, error) {
	name := r.GetName()
	if err := validateQueueName("name", name); err != nil {
		return actors.QueueConfig{}, err
	}
	if room := MaxQueueNameBytes - len(actors.DLQSuffix); !actors.IsDLQ(name) && len(name) > room {
		return actors.QueueConfig{}, invalid("name: %d bytes is over the limit of %d for a queue with a dead-letter queue (whose name adds %q)",
			len(name), room, actors.DLQSuffix)
	}
	p, err := queuePatch(r.GetConfig(), nil, defaults, lua)
	if err != nil {
		return actors.QueueConfig{}, err
	}
	cfg := defaults
	cfg.Name, cfg.DeadLetter = name, true
	return p.Apply(cfg), nil
}
