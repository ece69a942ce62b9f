// Package actors is filad's supervisor tree, built on protoactor-go:
//
//	broker   creates, recovers, updates, deletes and supervises queue actors (broker.go)
//	└─ <queue>  one per queue: ready messages by DRR, consumers, leases,
//	            visibility timers, ack and nack (queue*.go; queue.go lists them)
//	telemetry  aggregates the queues' readings (telemetry_actor.go)
//
// Each actor is the single owner of its state: no locks, no other goroutine
// touching it. Storage completions and timers come back as messages.
package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/trace"

	"github.com/fila-dev/filad/scripting"
	"github.com/fila-dev/filad/telemetry"
)

// System is a running supervisor tree.
type System struct {
	opts      Options
	as        *actor.ActorSystem
	broker    *actor.PID
	telemetry *actor.PID
	dir       *Directory
	runtime   *RuntimeConfig
	throttles *Throttles
	// cache is the queues' message cache (queue_cache.go).
	cache *messageCache
	// dispatcher runs every actor's mailbox (dispatcher.go).
	dispatcher *workerDispatcher
	// replies takes the replies to Ask (replies.go).
	replies *replies
}

// Start migrates the stored data to this filad's schema version, builds
// the actor system, and recovers every stored queue before it returns.
func Start(opts Options) (*System, error) {
	opts, err := opts.validate()
	if err != nil {
		return nil, err
	}
	if err := migrate(opts.Store, opts.DefaultQueue, opts.Logger); err != nil {
		return nil, err
	}
	runtime, err := loadRuntimeConfig(opts.Store, opts.ConfigStore)
	if err != nil {
		return nil, err
	}
	protoLog := slog.New(minLevel{opts.Logger.Handler(), slog.LevelWarn}).With("component", "protoactor")
	as := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return protoLog }))
	s := &System{opts: opts, as: as, dir: &Directory{}, runtime: runtime, throttles: NewThrottles(runtime),
		cache: newMessageCache(opts.MessageCacheBytes), dispatcher: newWorkerDispatcher(mailboxThroughput, maxParkedWorkers), replies: newReplies()}
	started := false
	defer func() {
		if !started { // an error below: leave no actors or workers behind
			as.Shutdown()
			s.dispatcher.close()
		}
	}()
	if _, ok := as.ProcessRegistry.Add(s.replies, repliesID); !ok {
		return nil, fmt.Errorf("actors: register the replies process: %q is taken", repliesID)
	}
	s.telemetry, err = as.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return newTelemetryActor(opts.Board)
	}, actor.WithDispatcher(s.dispatcher)), "telemetry")
	if err != nil {
		return nil, fmt.Errorf("actors: spawn telemetry: %w", err)
	}
	s.broker, err = as.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &brokerActor{opts: opts, dir: s.dir, runtime: s.runtime,
			deps: queueDeps{
				store:      opts.Store,
				quantum:    opts.Quantum,
				log:        opts.Logger,
				tracer:     opts.TracerProvider.Tracer(telemetry.ScopeName, trace.WithInstrumentationVersion(telemetry.Version)),
				series:     opts.Series,
				telemetry:  s.telemetry,
				dir:        s.dir,
				fairness:   opts.FairnessKeys,
				lua:        opts.Lua,
				runtime:    s.runtime,
				throttles:  s.throttles,
				onTick:     opts.onTick,
				cache:      s.cache,
				dispatcher: s.dispatcher,
				// A Placement means a cluster (nil is a single node).
				gateDeliveries: opts.Placement != nil,
			},
			children: map[string]*child{}, deleting: map[string]bool{},
			reaping: map[string]*reaping{}, unfinished: map[string]bool{}, retiring: map[string]*retiring{}}
	}, actor.WithSupervisor(supervisorStrategy(opts.Logger)), actor.WithDispatcher(s.dispatcher)), "broker")
	if err != nil {
		return nil, fmt.Errorf("actors: spawn broker: %w", err)
	}
	// A round trip proves the broker's recovery (run on Started) has
	// finished: every queue actor is spawned. Then each has to load.
	if _, err := s.Ask(context.Background(), s.broker, nil, &EndStreams{}); err != nil {
		return nil, err
	}
	if err := s.awaitRecovery(); err != nil {
		return nil, err
	}
	started = true
	return s, nil
}

// Throttles are the throttle keys' token buckets.
func (s *System) Throttles() *Throttles { return s.throttles }

// LuaLimits bound the queues' scripts (Options.Lua).
func (s *System) LuaLimits() scripting.Limits { return s.opts.Lua }

// DefaultQueue is what a queue definition that leaves a field unset gets
// (Options.DefaultQueue).
func (s *System) DefaultQueue() QueueConfig { return s.opts.DefaultQueue }

// RuntimeConfig is the runtime config store (written through SetConfig
// to the broker).
func (s *System) RuntimeConfig() *RuntimeConfig { return s.runtime }

// Directory is the table of live queue actors.
func (s *System) Directory() *Directory { return s.dir }

// Broker is the broker actor, for CreateQueue, DeleteQueue and EndStreams.
func (s *System) Broker() *actor.PID { return s.broker }

// Board is where the telemetry actor publishes the queues' readings.
func (s *System) Board() *telemetry.Board { return s.opts.Board }

// Send delivers msg to pid with no reply expected.
func (s *System) Send(pid *actor.PID, msg any) { s.as.Root.Send(pid, msg) }

// SyncQueues waits until the Directory holds every queue definition
// committed before the call: in a cluster whose Placement is a
// MetaSyncer, until this node has applied its meta group that far and its
// broker has reconciled with it; on a single node it returns nil at once.
// A caller that found no queue asks it before answering NOT_FOUND.
func (s *System) SyncQueues(ctx context.Context) error {
	ms, ok := s.opts.Placement.(MetaSyncer)
	if !ok {
		return nil
	}
	if err := ms.SyncMeta(ctx); err != nil {
		return err
	}
	res, err := s.Ask(ctx, s.Broker(), nil, &MetaApplied{})
	if err != nil {
		return err
	}
	if r, ok := res.(*AdminReply); ok && r.Err != nil {
		return r.Err
	}
	return nil
}

// stepwise marks the requests whose reply comes once an operation of many
// steps has finished: a purge, a redrive, the delete of a full queue. The
// actor serves other requests between the steps, so such an operation on a
// big queue may rightly take longer than Options.RequestTimeout, which
// bounds a reply that one turn of an actor gives. Their wait is bounded by
// the caller: its deadline, or its going away.
type stepwise interface{ stepwise() }

func (*Purge) stepwise()       {}
func (*Redrive) stepwise()     {}
func (*DeleteQueue) stepwise() {}

// stepwiseTimeout bounds a stepwise request whose caller set no deadline,
// so that a lost reply cannot hold the waiting goroutine for ever.
const stepwiseTimeout = 24 * time.Hour

// Ask sends msg to pid in an envelope carrying header (may be nil) and waits
// for the reply, bounded by Options.RequestTimeout and ctx. A purge, a
// redrive or a queue's delete is bounded by ctx alone.
func (s *System) Ask(ctx context.Context, pid *actor.PID, header map[string]string, msg any) (any, error) {
	timeout, callerBound := s.opts.RequestTimeout, false
	_, long := msg.(stepwise)
	if long {
		timeout = stepwiseTimeout
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout, callerBound = time.Until(dl), true
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	id, ch := s.replies.await()
	sender := &actor.PID{Address: s.as.ProcessRegistry.Address, Id: repliesID, RequestId: id}
	s.as.Root.Send(pid, &actor.MessageEnvelope{Header: header, Message: msg, Sender: sender})
	res, err := s.replies.wait(ctx, id, ch, timeout)
	_, dead := res.(*actor.DeadLetterResponse)
	if dead || errors.Is(err, actor.ErrDeadLetter) {
		// The actor stopped before it took msg: its queue was deleted, or
		// is served by another node now.
		name := path.Base(pid.Id)
		if ref := s.dir.Lookup(name); ref != nil && !ref.Location.Local() {
			return nil, ref.Location.NotLeader(name)
		}
		return nil, QueueNotFound(name)
	}
	if errors.Is(err, actor.ErrTimeout) && callerBound {
		// The caller's deadline, not filad's own bound, ended the wait.
		return nil, fmt.Errorf("actors: no reply from %s: %w", pid.Id, context.DeadlineExceeded)
	}
	if err != nil {
		return nil, fmt.Errorf("actors: no reply from %s: %w", pid.Id, err)
	}
	return res, nil
}

// Stop stops the queue actors (they end their streams), then the telemetry
// actor, then the actor system. Storage is the caller's to close afterwards.
func (s *System) Stop() {
	_ = s.as.Root.PoisonFuture(s.broker).Wait()
	_ = s.as.Root.PoisonFuture(s.telemetry).Wait()
	s.as.Shutdown()
	s.dispatcher.close()
}

// minLevel filters a slog handler to records at or above a level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
