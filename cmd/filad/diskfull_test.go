package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestDiskFullOnARealFileSystem runs filad on a small tmpfs (512 MiB: the store allocates about 200 MiB of it ahead, memtable logs and a value log file) and fills it to
// the last byte, three times, with its queue holding a backlog: filad must
// refuse Enqueue, keep serving leases and acks (its store writes on), never
// crash, and take Enqueue again by itself once the space is back; a kill -9
// between episodes loses nothing answered. Then a start on a disk that is
// already full is refused with a message saying why, and succeeds once
// there is room. It needs to mount a tmpfs (root on Linux); where it cannot,
// server.TestDiskFullEpisodesUnderLoad covers full-disk writes with an
// injected ENOSPC store, and this test says so and skips.
func TestDiskFullOnARealFileSystem(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("no tmpfs here (mount: %v: %s); server.TestDiskFullEpisodesUnderLoad covers full-disk writes with an injected ENOSPC store",
			err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	t.Log("disk-full episodes on a real 512 MiB tmpfs")
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dataDir := filepath.Join(mnt, "data")
	// The alarm at 96 MiB free, the reserve (64 MiB) given up below 64 MiB.
	// The monitor looks every second: the disk fills faster than that, so
	// filad's first writes after fill (enqueues until the alarm, leases
	// and acks) meet a disk with no byte free and the reserve still held,
	// which must not crash it (a write to a sparse page of badger's
	// mmapped memtable log raised SIGBUS there).
	env := []string{"FILA_LIMITS__MIN_FREE_DISK_BYTES=100663296", "FILA_LIMITS__DISK_RESERVE_BYTES=67108864", "FILA_LIMITS__CHECK_INTERVAL_MS=1000"}
	p := startFilad(t, dataDir, env...)
	c := connect(t, p.addr)
	// Short leases: what a drain leaves in its stream's buffer comes back soon.
	_, err := c.admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: "full", Config: &filav1.QueueConfig{VisibilityTimeoutMs: 500}})
	require.NoError(t, err)

	answered := map[string]bool{}
	enqueue := func(n int) error {
		req := &filav1.EnqueueBatchRequest{}
		for range n {
			req.Messages = append(req.Messages, &filav1.EnqueueRequest{Queue: "full", Payload: make([]byte, 1024)})
		}
		resp, err := c.svc.EnqueueBatch(ctx, req)
		if err != nil {
			return err
		}
		for _, r := range resp.GetResults() {
			if id := r.GetMessageId(); id != "" {
				answered[id] = true
			} else {
				return status.Error(codes.Code(r.GetError().GetCode()), r.GetError().GetMessage())
			}
		}
		return nil
	}
	hog := filepath.Join(mnt, "hog")
	releases := 0 // the reserve releases p has logged by the episode's end
	for episode := range 3 {
		for range 20 {
			require.NoError(t, enqueue(100))
		}
		fill(t, hog)
		// Enqueue is refused once the monitor has seen it.
		require.Eventually(t, func() bool {
			err := enqueue(1)
			return status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "disk")
		}, 10*time.Second, 10*time.Millisecond, "episode %d: Enqueue refused for the full disk", episode)
		// Consumers go on: 500 leases and acks written on the full disk.
		drain(t, ctx, c, 500, answered)
		// The monitor gives the reserve up on its next look at the disk,
		// which a drain on a busy machine may finish before.
		releases++
		require.Eventually(t, func() bool { return p.loggedTimes("gave the disk reserve to the store") >= releases },
			10*time.Second, 10*time.Millisecond, "episode %d: the reserve was released", episode)
		select {
		case <-p.done:
			t.Fatalf("episode %d: filad died on the full disk", episode)
		default:
		}
		require.NoError(t, os.Remove(hog))
		require.Eventually(t, func() bool { return enqueue(1) == nil }, 10*time.Second, 10*time.Millisecond,
			"episode %d: Enqueue taken again once space is back", episode)
		t.Logf("%v episode %d: Enqueue refused on the full disk, 500 acks written, Enqueue taken again", time.Since(began), episode)
		if episode == 1 {
			p.kill9(t)
			p = startFilad(t, dataDir, env...)
			c = connect(t, p.addr)
			releases = 0
		}
	}

	// A start on a full disk without its reserve is refused, saying why.
	p.kill9(t)
	require.NoError(t, os.Remove(filepath.Join(dataDir, "DISK_RESERVE")))
	fill(t, hog)
	start := exec.Command(filadBin, "--config", "", "--data-dir", dataDir)
	start.Env = append(os.Environ(), env...)
	out, err := start.CombinedOutput()
	require.Error(t, err, "filad started on a full disk")
	require.Contains(t, string(out), "has 0 bytes free, less than limits.disk_reserve_bytes 67108864")
	require.NoError(t, os.Remove(hog))
	p = startFilad(t, dataDir, env...)
	c = connect(t, p.addr)

	t.Logf("%v a start on the full disk was refused: %s", time.Since(began), lastLine(out))
	// Nothing answered was lost.
	drain(t, ctx, c, len(answered), answered)
	require.Empty(t, answered, "every answered message delivered")
}

// fill writes path with as many bytes as the file system had free when it
// began: another program taking the disk, not one taking every byte freed
// after (nothing could keep a store writing then).
func fill(t *testing.T, path string) {
	t.Helper()
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(filepath.Dir(path), &st))
	left := int64(st.Bavail) * st.Bsize
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, 1<<20)
	for left > 0 {
		n, err := f.Write(buf[:min(int64(len(buf)), left)])
		if errors.Is(err, syscall.ENOSPC) {
			return // the store took some meanwhile
		}
		require.NoError(t, err)
		left -= int64(n)
	}
}

// drain leases and acks n messages of queue "full", crossing each off
// answered.
func drain(t *testing.T, ctx context.Context, c client, n int, answered map[string]bool) {
	t.Helper()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	stream, err := c.svc.Consume(sctx, &filav1.ConsumeRequest{Queue: "full", MaxInFlight: 100, MaxBatch: 100})
	require.NoError(t, err)
	for got := 0; got < n; {
		resp, err := stream.Recv()
		require.NoError(t, err, fmt.Sprintf("after %d of %d", got, n))
		var acks []*filav1.AckRequest
		for _, m := range resp.GetMessages() {
			acks = append(acks, &filav1.AckRequest{Queue: "full", MessageId: m.GetId(), LeaseId: m.GetLeaseId()})
		}
		res, err := c.svc.AckBatch(ctx, &filav1.AckBatchRequest{Acks: acks})
		require.NoError(t, err)
		for i, r := range res.GetResults() {
			require.Zero(t, r.GetCode(), r.GetMessage())
			delete(answered, acks[i].GetMessageId())
		}
		got += len(acks)
	}
}

// loggedTimes is how many lines of p's log contain s.
func (p *proc) loggedTimes(s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.logs {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
