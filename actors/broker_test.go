package actors

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/auth"
	"github.com/fila-dev/filad/storage"
)

// sendToBroker sends msg to the broker and returns the future its answer
// completes: the message is in the broker's mailbox when it returns.
func (f *fixture) sendToBroker(msg any) *actor.Future {
	fut := actor.NewFuture(f.sys.as, waitFor)
	f.sys.Send(f.sys.Broker(), &actor.MessageEnvelope{Message: msg, Sender: fut.PID()})
	return fut
}

// brokerRoundTrip asks the broker a non-command request and fails unless
// it answers: the messages sent to it before have been taken.
func (f *fixture) brokerRoundTrip() {
	f.t.Helper()
	require.IsType(f.t, &AdminReply{}, f.ask(nil, &EndStreams{}))
}

// replyErr is the error a command's reply carries.
func replyErr(t *testing.T, fut *actor.Future) error {
	t.Helper()
	res, err := fut.Result()
	require.NoError(t, err, "the command was answered")
	switch r := res.(type) {
	case *AdminReply:
		return r.Err
	case *KeyReply:
		return r.Err
	case *UpdateQueueReply:
		return r.Err
	}
	t.Fatalf("unexpected reply %T", res)
	return nil
}

// testKey is an API key named name with no rights.
func testKey(name string) *auth.Key {
	return &auth.Key{ID: auth.NewKeyID(), Name: name, Hash: auth.Hash("secret-" + name), CreatedAt: time.Now().UTC()}
}

// TestBrokerServesWhileACommandIsWritten: while a command's batch is being
// written, the broker answers other requests, the command's change does
// not show (it applies once durable), and the commands sent after it wait
// their turn and apply in order.
func TestBrokerServesWhileACommandIsWritten(t *testing.T) {
	t.Parallel()
	f, steps := newStepFixture(t)
	release := steps.holdFirst()
	first := f.sendToBroker(&SetConfig{Key: "k", Value: "1"})
	steps.waitHeld(t)
	second := f.sendToBroker(&SetConfig{Key: "k", Value: "2"})

	// The first write is held: a broker that waited on it would not answer.
	f.brokerRoundTrip()
	_, set := f.sys.RuntimeConfig().Get("k")
	require.False(t, set, "nothing shows before it is durable")
	require.Equal(t, []int{1}, steps.submitted(), "the second command waits: its batch is not submitted yet")

	close(release)
	require.NoError(t, replyErr(t, first))
	require.NoError(t, replyErr(t, second))
	v, _ := f.sys.RuntimeConfig().Get("k")
	require.Equal(t, "2", v, "applied in the order sent")
}

// TestBrokerPreconditionsSeeCommandsInFlight: two commands that cannot both
// succeed, sent at once, the first held in its write while the second
// arrives: the second is decided against the first's effect, so exactly
// one succeeds and the other answers what the state after the first
// calls for. Without the broker's FIFO both would pass their checks.
func TestBrokerPreconditionsSeeCommandsInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(f *fixture)
		cmd   any
		want  error // the loser's error
	}{
		{"create queue", func(*fixture) {}, &CreateQueue{Config: QueueConfig{Name: "q", VisibilityTimeout: time.Minute}}, ErrQueueExists},
		{"delete queue", func(f *fixture) { f.create("q", time.Minute) }, &DeleteQueue{Name: "q"}, ErrQueueNotFound},
		{"create key", func(*fixture) {}, &CreateKey{Key: testKey("k")}, ErrExists},
		{"revoke key", func(f *fixture) {
			require.NoError(t, f.ask(nil, &CreateKey{Key: testKey("k")}).(*AdminReply).Err)
		}, &RevokeKey{Name: "k"}, ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, steps := newStepFixture(t)
			tc.setup(f)
			release := steps.holdFirst()
			first := f.sendToBroker(tc.cmd)
			steps.waitHeld(t)
			second := f.sendToBroker(tc.cmd)
			f.brokerRoundTrip() // the second is in the broker before the first is durable
			close(release)
			require.NoError(t, replyErr(t, first))
			require.ErrorIs(t, replyErr(t, second), tc.want)
		})
	}
}

// TestKeyCommands: the API key commands check what a key's life needs in
// the broker, with the errors and the wording clients get.
func TestKeyCommands(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := testKey("k")
	require.NoError(t, f.ask(nil, &CreateKey{Key: k}).(*AdminReply).Err)

	err := f.ask(nil, &CreateKey{Key: testKey("k")}).(*AdminReply).Err
	require.ErrorIs(t, err, ErrExists)
	require.NotErrorIs(t, err, ErrQueueExists, "a key is not a queue")
	require.EqualError(t, err, `api key "k" exists (revoke it first)`)
	stored, err := f.sys.RuntimeConfig().KeyByID(k.KeyID())
	require.NoError(t, err)
	require.Equal(t, k.Hash, stored.Hash, "the first key stays")

	grants := []auth.Permission{{Pattern: "q*", Actions: []auth.Action{auth.Consume}}}
	r := f.ask(nil, &SetAcl{KeyID: k.KeyID(), Permissions: grants}).(*KeyReply)
	require.NoError(t, r.Err)
	require.Equal(t, grants, r.Key.Permissions)
	stored, err = f.sys.RuntimeConfig().KeyByID(k.KeyID())
	require.NoError(t, err)
	require.Equal(t, grants, stored.Permissions)

	for _, tc := range []struct {
		name string
		cmd  any
		kind error
		msg  string
	}{
		{"revoke by an unknown key_id", &RevokeKey{ID: "nope"}, ErrNotFound, `api key with key_id "nope" does not exist`},
		{"revoke by an unknown name", &RevokeKey{Name: "nope"}, ErrNotFound, `api key "nope" does not exist`},
		{"revoke with another key's name", &RevokeKey{ID: k.KeyID(), Name: "other"}, ErrInvalid,
			fmt.Sprintf(`name: "other" is not the name of key_id %q`, k.KeyID())},
		{"set the acl of an unknown key_id", &SetAcl{KeyID: "nope"}, ErrNotFound, `api key with key_id "nope" does not exist`},
	} {
		err := f.ask(nil, tc.cmd).(*KeyReply).Err
		require.ErrorIs(t, err, tc.kind, tc.name)
		require.EqualError(t, err, tc.msg, tc.name)
	}

	r = f.ask(nil, &RevokeKey{ID: k.KeyID(), Name: "k"}).(*KeyReply)
	require.NoError(t, r.Err)
	require.Equal(t, "k", r.Key.Name)
	_, err = f.sys.RuntimeConfig().KeyByID(k.KeyID())
	require.ErrorIs(t, err, ErrNotFound, "revoked")
}

// TestMigrationsRunOnce: a data dir from before schema versions (a queue
// with no dead-letter queue, as filad left it before DLQs) is migrated on
// its first start, before recovery, and the version is stored with the
// change; a second start does not run the migration again (the DLQ record
// removed behind the broker's back stays removed). Data from a newer filad
// is refused.
func TestMigrationsRunOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, err := storage.Open(storage.Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	write := func(b *storage.Batch) { require.NoError(t, db.Write(b)) }
	var legacy storage.Batch
	legacy.PutQueue(QueueConfig{Name: "legacy", VisibilityTimeout: time.Minute, FairnessKeyHeader: "key"}.record())
	write(&legacy)
	v, err := db.SchemaVersion()
	require.NoError(t, err)
	require.Zero(t, v, "no version stored before versions")

	store := &faultyStore{Store: db}
	f := startOn(t, store)
	require.NotNil(t, f.sys.Directory().Lookup("legacy.dlq"), "the migration defined the DLQ, recovery started it")
	v, err = db.SchemaVersion()
	require.NoError(t, err)
	require.Equal(t, SchemaVersion, v)
	f.stop()

	var drop storage.Batch
	drop.DeleteQueue("legacy.dlq")
	write(&drop)
	f = startOn(t, store)
	require.NotNil(t, f.sys.Directory().Lookup("legacy"))
	require.Nil(t, f.sys.Directory().Lookup("legacy.dlq"), "the migration did not run again")
	f.stop()

	var newer storage.Batch
	newer.SetSchemaVersion(SchemaVersion + 1)
	write(&newer)
	err = migrate(store, QueueConfig{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.ErrorContains(t, err, fmt.Sprintf("schema version %d, newer than this filad's %d", SchemaVersion+1, SchemaVersion))
}
