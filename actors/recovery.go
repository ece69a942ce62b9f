package actors

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Recovery: every queue actor loads its messages and leases when it
// starts (queue_store.go). Start waits for all of them, and for their
// readings to be published, before it returns, so that the server serves
// (and answers its health check) only once no queue can look emptier than
// it is (issue 22: a queue of 99,989 messages read 0 for three seconds).

type (
	// awaitLoaded asks a queue actor to answer once it has loaded (its
	// mailbox holds the message until Started's load is done).
	awaitLoaded struct{}
	// loaded is its answer: how many messages the queue holds.
	loaded struct{ messages int }
	// syncReadings asks the telemetry actor to publish what it has at once
	// and answer.
	syncReadings struct{}
)

// recoveryProgressEvery is how often a long recovery logs its progress.
const recoveryProgressEvery = 5 * time.Second

// awaitRecovery waits until every queue actor has loaded, logging the
// progress of a long recovery and its totals.
func (s *System) awaitRecovery() error {
	names := s.dir.Names()
	if len(names) == 0 {
		return nil
	}
	start := time.Now()
	messages := 0
	for i, name := range names {
		ref := s.dir.Lookup(name)
		if ref == nil {
			continue
		}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), recoveryProgressEvery)
			res, err := s.Ask(ctx, ref.PID, nil, &awaitLoaded{})
			cancel()
			if err == nil {
				messages += res.(*loaded).messages
				break
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			s.opts.Logger.Info("recovering queues", slog.Int("queues_loaded", i), slog.Int("queues", len(names)),
				slog.Int("messages_loaded", messages), slog.String("loading", name), slog.Float64("seconds", time.Since(start).Seconds()))
		}
	}
	if _, err := s.Ask(context.Background(), s.telemetry, nil, &syncReadings{}); err != nil {
		return err
	}
	s.opts.Logger.Info("recovery finished", slog.Int("queues", len(names)), slog.Int("messages", messages),
		slog.Float64("seconds", time.Since(start).Seconds()))
	return nil
}
