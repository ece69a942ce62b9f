package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// TestConfigStoreLimitsThroughTheAPI: the runtime config store holds at
// most limits.max_config_keys entries and limits.max_config_bytes of keys
// and values, and API keys have limits.max_api_keys of their own; a write
// past one is RESOURCE_EXHAUSTED naming it and changes nothing (issue 19,
// Deliver 8: on 44452e1 API keys counted toward the config store's keys,
// CreateApiKey on a full store said "queue is overloaded", and the store
// had no bound on bytes).
func TestConfigStoreLimitsThroughTheAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *config.Config) {
		c.Limits.MaxConfigKeys, c.Limits.MaxConfigBytes, c.Limits.MaxAPIKeys = 20, config.MinConfigBytes, 2
	}})
	set := func(key, value string) error {
		_, err := b.admin.SetConfig(ctxT(t), &filav1.SetConfigRequest{Key: key, Value: value})
		return err
	}
	refused := func(err error, limit string) {
		t.Helper()
		requireCode(t, err, codes.ResourceExhausted)
		require.Contains(t, status.Convert(err).Message(), limit)
		require.NotContains(t, status.Convert(err).Message(), "queue")
	}
	createKey := func(name string) error {
		_, err := b.admin.CreateApiKey(ctxT(t), &filav1.CreateApiKeyRequest{Name: name,
			Permissions: []*filav1.Permission{{QueuePattern: "*", Actions: []string{"consume"}}}})
		return err
	}

	// Bytes: 15 values of 64 KiB fit in 1 MiB, the 16th does not.
	big := strings.Repeat("v", 64<<10)
	for i := range 15 {
		require.NoError(t, set(fmt.Sprintf("big.%02d", i), big))
	}
	refused(set("big.15", big), "limits.max_config_bytes")
	got, err := b.admin.GetConfig(ctxT(t), &filav1.GetConfigRequest{Key: "big.15"})
	require.NoError(t, err)
	require.Empty(t, got.GetValue(), "nothing stored")
	require.NoError(t, set("big.00", "small"), "a write that shrinks the store")
	require.NoError(t, set("big.15", big), "room again")

	// Keys: 20 entries, whatever their size.
	for i := 16; i < 20; i++ {
		require.NoError(t, set(fmt.Sprintf("k.%d", i), "1"))
	}
	refused(set("k.20", "1"), "limits.max_config_keys")
	require.NoError(t, set("k.19", "2"), "changing a key adds none")

	// API keys have a budget of their own: the full store takes them.
	require.NoError(t, createKey("a"))
	require.NoError(t, createKey("b"))
	refused(createKey("c"), "limits.max_api_keys")
	_, err = b.admin.RevokeApiKey(ctxT(t), &filav1.RevokeApiKeyRequest{Name: "a"})
	require.NoError(t, err)
	require.NoError(t, createKey("c"), "a revoked key frees its slot")
	refused(set("k.20", "1"), "limits.max_config_keys") // and still none for config
}
