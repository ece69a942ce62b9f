package server_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/filadtest"
)

// With server.pprof_listen_addr set, the runtime profiles are served
// there (a heap profile and a goroutine dump answer); without it, nothing
// is.
func TestRuntimeProfilesAreServedWhenAsked(t *testing.T) {
	t.Parallel()
	off := filadtest.Start(t, filadtest.Options{})
	require.Nil(t, off.Server.ProfilingAddr(), "off by default")

	on := filadtest.Start(t, filadtest.Options{Config: func(c *config.Config) { c.Server.PprofListenAddr = "127.0.0.1:0" }})
	addr := on.Server.ProfilingAddr()
	require.NotNil(t, addr)
	for path, want := range map[string]string{
		"/debug/pprof/heap?debug=1":      "heap profile:",
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
		"/debug/pprof/":                  "Types of profiles available",
	} {
		resp, err := http.Get("http://" + addr.String() + path)
		require.NoError(t, err, path)
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.Contains(t, string(body), want, path)
	}
	resp, err := http.Get("http://" + addr.String() + "/debug/pprof/cmdline")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.NotEqual(t, http.StatusOK, resp.StatusCode, "the command line is not served")
}
