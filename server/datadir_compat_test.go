package server_test

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestDataDirFromBeforeIssue20: a data directory written by commit 5d39806,
// the last before fila.v1 took Fila's numbering, opens and serves unchanged
// (issue 20, Deliver 5: the storage records did not change, so no data
// migration). testdata/datadir-5d39806/generate.go wrote it, at that commit:
// an API key of the old form (no key_id), runtime config, three queues
// with every config field, four messages with script-set weights and
// throttle keys, one of them leased and one dead-lettered.
func TestDataDirFromBeforeIssue20(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	untar(t, filepath.Join("testdata", "datadir-5d39806", "data.tar.gz"), dir)
	raw, err := os.ReadFile(filepath.Join(dir, "expect.json"))
	require.NoError(t, err)
	var want map[string]string
	require.NoError(t, json.Unmarshal(raw, &want))
	const boot = "datadir-compat-bootstrap-0123456789abcdef" // generate.go's
	b := asKey(t, setup(t, setupOpts{dataDir: filepath.Join(dir, "data"),
		cfg: func(c *config.Config) { c.Auth = config.Auth{Mode: "on", BootstrapKey: boot} }}), boot)
	legacy := asKey(t, b, want["legacy_secret"])

	// Queue configs, every field as written.
	off := false
	wantOrders := &filav1.QueueConfig{
		VisibilityTimeoutMs: 60000, FairnessKeyHeader: "tenant", MaxDepth: 1000, MaxBytes: 1 << 20, MaxAttempts: 5,
		RetryBackoff:    &filav1.RetryBackoff{InitialMs: 100, MaxMs: 1000, Multiplier: 3},
		OnEnqueueScript: `function on_enqueue(msg) return { weight = 2, throttle_keys = { "provider:x" } } end`,
	}
	got := b.stats(t, "orders").GetConfig()
	require.True(t, got.GetDeadLetter(), "unset: on")
	got.DeadLetter = nil
	require.True(t, proto.Equal(wantOrders, got), "orders: %v", got)
	jobs := b.stats(t, "jobs").GetConfig()
	require.Equal(t, uint32(1), jobs.GetMaxAttempts())
	require.Equal(t, &off, jobs.DeadLetter)

	// Runtime config and throttles.
	v, err := b.admin.GetConfig(ctxT(t), &filav1.GetConfigRequest{Key: "app.region"})
	require.NoError(t, err)
	require.Equal(t, "eu", v.GetValue())
	th := b.stats(t, "orders").GetPerThrottleStats()
	require.Len(t, th, 1)
	require.Equal(t, "provider:x", th[0].GetKey())
	require.Equal(t, 500.0, th[0].GetRatePerSecond())
	require.Equal(t, 7.0, th[0].GetBurst())

	// The old key: its name is its key_id, its rights are unchanged.
	keys, err := b.admin.ListApiKeys(ctxT(t), &filav1.ListApiKeysRequest{})
	require.NoError(t, err)
	require.Len(t, keys.GetKeys(), 1)
	k := keys.GetKeys()[0]
	require.Equal(t, "legacy", k.GetKeyId())
	require.Equal(t, "legacy", k.GetName())
	require.Positive(t, k.GetCreatedAtMs())
	require.False(t, k.GetIsSuperadmin())
	acl, err := b.admin.GetAcl(ctxT(t), &filav1.GetAclRequest{KeyId: "legacy"})
	require.NoError(t, err)
	require.Len(t, acl.GetPermissions(), 2)
	_, err = legacy.svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "mail", Payload: []byte("x")})
	requireCode(t, err, codes.PermissionDenied)

	// The messages, through the old key. m1's lease was stored; once it has
	// expired it is redelivered with attempt_count 1, and before that its
	// holder may still settle it with its lease_id.
	expiry, err := strconv.ParseInt(want["m1_lease_expires_ms"], 10, 64)
	require.NoError(t, err)
	ids := []string{want["m2"], want["m3"]}
	if time.Now().UnixMilli() < expiry {
		_, err := legacy.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "orders", MessageId: want["m1"], LeaseId: want["m1_lease_id"]})
		require.NoError(t, err, "the recovered lease keeps its id")
	} else {
		ids = append(ids, want["m1"])
	}
	stream, _ := legacy.lease(t, "orders")
	byID := map[string]*filav1.Message{}
	for _, m := range recvN(t, stream, len(ids)) {
		byID[m.GetId()] = m
	}
	payloads := map[string]string{want["m1"]: "one", want["m2"]: "two", want["m3"]: "three"}
	tenants := map[string]string{want["m1"]: "a", want["m2"]: "b", want["m3"]: "a"}
	for _, id := range ids {
		m := byID[id]
		require.NotNil(t, m, "message %s", id)
		require.Equal(t, payloads[id], string(m.GetPayload()))
		md := m.GetMetadata()
		require.Equal(t, tenants[id], md.GetFairnessKey())
		require.Equal(t, uint32(2), md.GetWeight())
		require.Equal(t, []string{"provider:x"}, md.GetThrottleKeys())
		require.Equal(t, "orders", md.GetQueueId())
		wantAttempts := uint32(0)
		if id == want["m1"] {
			wantAttempts = 1
		}
		require.Equal(t, wantAttempts, md.GetAttemptCount(), "message %s", id)
		_, err := legacy.svc.Ack(ctxT(t), &filav1.AckRequest{Queue: "orders", MessageId: id, LeaseId: m.GetLeaseId()})
		require.NoError(t, err)
	}
	b.requireEmpty(t, "orders")

	// The dead letter redrives.
	require.Equal(t, uint64(1), b.stats(t, "mail.dlq").GetDepth())
	r, err := b.admin.Redrive(ctxT(t), &filav1.RedriveRequest{DlqQueue: "mail.dlq"})
	require.NoError(t, err)
	require.Equal(t, uint64(1), r.GetRedriven())
	mail, _ := b.lease(t, "mail")
	m := recvN(t, mail, 1)[0]
	require.Equal(t, want["m4"], m.GetId())
	require.Equal(t, "dead", string(m.GetPayload()))

	// Revoked by key_id, the old key stops working.
	_, err = b.admin.RevokeApiKey(ctxT(t), &filav1.RevokeApiKeyRequest{KeyId: "legacy"})
	require.NoError(t, err)
	_, err = legacy.admin.ListQueues(ctxT(t), &filav1.ListQueuesRequest{})
	requireCode(t, err, codes.Unauthenticated)
}

// untar extracts the gzipped tar archive at path into dir.
func untar(t *testing.T, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	require.NoError(t, err)
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		require.NoError(t, err)
		target := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			require.NoError(t, os.MkdirAll(target, 0o755))
		case tar.TypeReg:
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			require.NoError(t, err)
			_, err = io.Copy(out, tr)
			require.NoError(t, err)
			require.NoError(t, out.Close())
		}
	}
}
