package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/storage"
)

// startOn runs filad in-process on dataDir and returns its address.
func startOn(t *testing.T, dataDir string) string {
	t.Helper()
	return startBroker(t, func(c *config.Config) { c.Storage.DataDir = dataDir })
}

func clients(t *testing.T, addr string) (filav1.FilaServiceClient, filav1.FilaAdminClient) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return filav1.NewFilaServiceClient(conn), filav1.NewFilaAdminClient(conn)
}

// TestBackupUnderLoadRestoresTheAcknowledgedState: `fila admin backup`
// taken while producers enqueue and a consumer acks, restored into a new
// data directory, serves every message whose Enqueue was answered before
// the backup began and was not acked by then, none acked by then, and
// nothing never enqueued (issue 22, item 8).
func TestBackupUnderLoadRestoresTheAcknowledgedState(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr := startOn(t, t.TempDir())
	svc, admin := clients(t, addr)
	_, err := admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "jobs", Config: &filav1.QueueConfig{VisibilityTimeoutMs: 2000}})
	require.NoError(t, err)

	var (
		mu       sync.Mutex
		started  bool                // the backup call has begun
		enqueued = map[string]bool{} // answered Enqueues: id → before the backup
		acked    = map[string]bool{} // answered Acks: id → before the backup
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := svc.Enqueue(ctx, &filav1.EnqueueRequest{Queue: "jobs", Payload: []byte("payload")})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				enqueued[resp.GetMessageId()] = !started
				mu.Unlock()
			}
		})
	}
	consumeCtx, stopConsuming := context.WithCancel(ctx)
	stream, err := svc.Consume(consumeCtx, &filav1.ConsumeRequest{Queue: "jobs"})
	require.NoError(t, err)
	wg.Go(func() {
		for i := 0; ; i++ {
			resp, err := stream.Recv()
			if err != nil {
				return // stopConsuming
			}
			m := resp.GetMessage()
			if i%3 == 0 {
				continue // left leased: back after its visibility timeout
			}
			// Acks run at once, not one after another: in turn, on a loaded
			// machine the last of the 256 leases delivered together ran out
			// while the acks before it were answered, few acks succeeded,
			// and the test waited a minute for 200.
			wg.Go(func() {
				if _, err := svc.Ack(ctx, &filav1.AckRequest{Queue: "jobs", MessageId: m.GetId(), LeaseId: m.GetLeaseId()}); err != nil {
					return // its lease ran out first: it comes again
				}
				mu.Lock()
				acked[m.GetId()] = !started
				mu.Unlock()
			})
		}
	})
	// Some traffic first, then the backup in the middle of it.
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(enqueued) >= 1000 && len(acked) >= 200 },
		time.Minute, 5*time.Millisecond)
	file := filepath.Join(t.TempDir(), "filad.backup")
	mu.Lock()
	started = true
	mu.Unlock()
	r := fila(t, addr, "", "admin", "backup", file)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "backed up ")
	close(stop)
	stopConsuming()
	wg.Wait()

	// A deadline of its own for the restore and the drain.
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	restored := t.TempDir()
	require.NoError(t, storage.Restore(file, restored))
	svc2, admin2 := clients(t, startOn(t, restored))
	st, err := admin2.GetStats(ctx, &filav1.GetStatsRequest{Queue: "jobs"})
	require.NoError(t, err)
	total := int(st.GetDepth() + st.GetInFlight() + st.GetDelayed()) // the leased ones come back after their timeout
	require.Positive(t, total)
	drain, err := svc2.Consume(ctx, &filav1.ConsumeRequest{Queue: "jobs"})
	require.NoError(t, err)
	got := map[string]bool{}
	for len(got) < total {
		resp, err := drain.Recv()
		require.NoError(t, err)
		m := resp.GetMessage()
		got[m.GetId()] = true
		_, err = svc2.Ack(ctx, &filav1.AckRequest{Queue: "jobs", MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
		if status.Code(err) != codes.FailedPrecondition { // its lease ran out on a busy machine: it comes again
			require.NoError(t, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, before := range enqueued {
		// An Ack answered after the backup began may have been committed
		// before its snapshot: only never-acked messages must be there.
		if _, wasAcked := acked[id]; before && !wasAcked {
			require.True(t, got[id], "message %s was enqueued before the backup and is missing", id)
		}
	}
	for id := range got {
		_, known := enqueued[id]
		require.True(t, known, "message %s was never enqueued", id)
		ackedBefore, wasAcked := acked[id]
		require.False(t, wasAcked && ackedBefore, "message %s was acked before the backup and came back", id)
	}
	t.Logf("backup under load: %d enqueued (%d acked) in all, %d in the restored queue", len(enqueued), len(acked), total)
}

func TestRestoreRefusesWhatIsNotABackup(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "x")
	require.NoError(t, os.WriteFile(bad, []byte("hello"), 0o600))
	require.ErrorContains(t, storage.Restore(bad, t.TempDir()), "not a filad backup")
	full := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(full, "MANIFEST"), nil, 0o600))
	require.ErrorContains(t, storage.Restore(bad, full), "is not empty")

	// A backup cut short anywhere, at a record boundary too (badger's Load
	// takes that as a whole stream), is refused, and leaves no directory.
	addr := startBroker(t)
	_, admin := clients(t, addr)
	for i := range 50 {
		_, err := admin.CreateQueue(t.Context(), &filav1.CreateQueueRequest{Name: fmt.Sprintf("q%d", i)})
		require.NoError(t, err)
	}
	whole := filepath.Join(t.TempDir(), "whole.backup")
	require.Zero(t, fila(t, addr, "", "admin", "backup", whole).code)
	data, err := os.ReadFile(whole)
	require.NoError(t, err)
	for _, cut := range []int{len(data) / 3, len(data) / 2, len(data) - 1, len(data) - 16} {
		short := filepath.Join(t.TempDir(), "short.backup")
		require.NoError(t, os.WriteFile(short, data[:cut], 0o600))
		into := filepath.Join(t.TempDir(), "restored")
		require.ErrorContains(t, storage.Restore(short, into), "truncated", "cut at %d of %d", cut, len(data))
		require.NoDirExists(t, into, "a failed restore leaves nothing")
	}
	into := filepath.Join(t.TempDir(), "restored")
	require.NoError(t, storage.Restore(whole, into))
	require.DirExists(t, into)

	// A directory as the target is refused before the store is read.
	r := fila(t, addr, "", "admin", "backup", t.TempDir())
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "is a directory; give a file name")
}

// TestBackupKeepsAnExistingFileUnlessForced: a backup is often the only
// copy of something; a second backup to the same name must not replace it
// by accident.
func TestBackupKeepsAnExistingFileUnlessForced(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	file := filepath.Join(t.TempDir(), "filad.backup")
	require.NoError(t, os.WriteFile(file, []byte("an older backup"), 0o600))

	r := fila(t, addr, "", "admin", "backup", file)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "exists; give --force to replace it")
	kept, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, "an older backup", string(kept))

	r = fila(t, addr, "", "admin", "backup", filepath.Join(t.TempDir(), "no", "such", "dir", "x.backup"))
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "admin backup: cannot write beside")
	require.NotContains(t, r.stderr, ".partial-", "the temporary name is not the user's business")

	r = fila(t, addr, "", "admin", "backup", file, "--force")
	require.Zero(t, r.code, r.stderr)
	into := filepath.Join(t.TempDir(), "restored")
	require.NoError(t, storage.Restore(file, into), "the forced backup replaced the file whole")
}
