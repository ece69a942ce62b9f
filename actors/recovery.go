package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"time"

	"github.com/fila-dev/filad/storage"
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

// awaitRecovery waits until every queue actor of this node has loaded,
// logging the progress of a long recovery and its totals.
func (s *System) awaitRecovery() error {
	names := slices.DeleteFunc(s.dir.Names(), func(name string) bool {
		ref := s.dir.Lookup(name)
		return ref == nil || !ref.Location.Local()
	})
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
	// Loading left garbage about the size of the index (the records read,
	// the lists and maps grown): hand it back to the OS now, not at the
	// resource monitor's next release, so that what stays resident is what
	// the queues hold (issue 26: resident memory per queued message).
	debug.FreeOSMemory()
	s.opts.Logger.Info("recovery finished", slog.Int("queues", len(names)), slog.Int("messages", messages),
		slog.Float64("seconds", time.Since(start).Seconds()))
	return nil
}

// A migration brings data stored by an older filad up to one schema
// version. Each is written as one batch with that version
// (storage.Batch.SetSchemaVersion), so it runs once: a start finds the
// version stored and skips it, and a crash during it leaves neither its
// changes nor its version.
type migration struct {
	version uint64
	name    string
	// plan returns the changes the migration makes to store.
	plan func(store storage.Store, defaults QueueConfig) (*storage.Batch, error)
}

// migrations are in version order. A new one takes the next version and
// leaves the ones before it as they are: some data dir may still need them.
var migrations = []migration{
	{version: 1, name: "dead-letter queues for the queues created before them", plan: planDLQs},
	{version: 2, name: "index records beside message records", plan: planIndexRecords},
}

// SchemaVersion is the schema version of the data this filad writes: the
// last migration's.
var SchemaVersion = migrations[len(migrations)-1].version

// migrate runs, in order, the migrations the store has not had. It runs
// at start, before the broker recovers the queues.
func migrate(store storage.Store, defaults QueueConfig, log *slog.Logger) error {
	have, err := store.SchemaVersion()
	if err != nil {
		return fmt.Errorf("actors: read schema version: %w", err)
	}
	if have > SchemaVersion {
		return fmt.Errorf("actors: the data is at schema version %d, newer than this filad's %d: run a newer filad", have, SchemaVersion)
	}
	for _, m := range migrations {
		if m.version <= have {
			continue
		}
		b, err := m.plan(store, defaults)
		if err != nil {
			return fmt.Errorf("actors: migration %d (%s): %w", m.version, m.name, err)
		}
		b.SetSchemaVersion(m.version)
		if err := store.Write(b); errors.Is(err, ErrNotLeader) {
			// A cluster node that does not lead the meta group: its leader
			// migrates, and the change reaches this node through the log.
			log.Info("data not migrated here: the meta group's leader does it", slog.Uint64("schema_version", m.version))
			return nil
		} else if err != nil {
			return fmt.Errorf("actors: migration %d (%s): %w", m.version, m.name, err)
		}
		log.Info("data migrated", slog.Uint64("schema_version", m.version), slog.String("migration", m.name), slog.Int("changes", b.Len()-1))
	}
	return nil
}

// planIndexRecords changes nothing: each queue writes the index records
// of its messages stored without one when it next loads (indexQueue), as
// its own family's write (in a cluster, its leader's). The version is what
// matters: a filad from before index records refuses the data from now
// on, since it would store messages without them, which a queue marked
// indexed would never load.
func planIndexRecords(storage.Store, QueueConfig) (*storage.Batch, error) {
	return &storage.Batch{}, nil
}

// planDLQs defines the dead-letter queue of every queue stored without
// one (created before dead-letter queues existed), with the server's
// defaults, as CreateQueue does. A queue or DLQ whose delete a crash cut
// short is left to the reap that finishes it.
func planDLQs(store storage.Store, defaults QueueConfig) (*storage.Batch, error) {
	recs, err := store.Queues()
	if err != nil {
		return nil, err
	}
	deleted, err := store.DeletedQueues()
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, name := range deleted {
		have[name] = true
	}
	for _, rec := range recs {
		have[rec.GetName()] = true
	}
	b := &storage.Batch{}
	for _, rec := range recs {
		if name := rec.GetName(); !IsDLQ(name) && !have[DLQName(name)] && !slices.Contains(deleted, name) {
			b.PutQueue(dlqConfig(defaults, queueConfigFrom(rec)).record())
		}
	}
	return b, nil
}
