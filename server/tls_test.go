package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/testpki"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}

// call makes one RPC over a fresh connection with creds.
func call(t *testing.T, addr net.Addr, creds grpc.DialOption) error {
	t.Helper()
	conn, err := grpc.NewClient(addr.String(), creds)
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = filav1.NewFilaAdminClient(conn).ListQueues(ctx, &filav1.ListQueuesRequest{})
	return err
}

func TestTLSAndMTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root, stranger := testpki.NewCA(t, "filad test CA"), testpki.NewCA(t, "another CA")
	cert, key := root.Issue(t, "filad", 10, true, time.Now().Add(time.Hour))
	tlsCfg := config.TLS{
		CertFile: writeFile(t, dir, "server.pem", cert), KeyFile: writeFile(t, dir, "server.key", key),
		ClientCAFile: writeFile(t, dir, "ca.pem", root.PEM), MinVersion: "1.2",
	}
	b := setup(t, setupOpts{cfg: func(c *config.Config) { c.Server.TLS = tlsCfg }})
	addr := b.srv.Addr()

	goodCert, goodKey := root.Issue(t, "producer-1", 20, false, time.Now().Add(time.Hour))
	strangeCert, strangeKey := stranger.Issue(t, "intruder", 30, false, time.Now().Add(time.Hour))
	expiredCert, expiredKey := root.Issue(t, "late", 40, false, time.Now().Add(-time.Minute))
	tests := []struct {
		name  string
		creds grpc.DialOption
		ok    bool
	}{
		{"mTLS with a certificate from the CA", grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, goodCert, goodKey))), true},
		{"plaintext client on the TLS port", grpc.WithTransportCredentials(insecure.NewCredentials()), false},
		{"TLS without a client certificate", grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, nil, nil))), false},
		{"a client certificate from another CA", grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, strangeCert, strangeKey))), false},
		{"an expired client certificate", grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, expiredCert, expiredKey))), false},
	}
	for _, tt := range tests {
		err := call(t, addr, tt.creds)
		if tt.ok {
			require.NoError(t, err, tt.name)
		} else {
			require.Error(t, err, tt.name)
		}
	}
}

// TestTLSReload: new certificate files take effect for new handshakes on
// ReloadTLS (SIGHUP in filad), and a connection made before keeps working.
func TestTLSReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := testpki.NewCA(t, "filad test CA")
	cert, key := root.Issue(t, "filad", 100, true, time.Now().Add(time.Hour))
	certFile, keyFile := writeFile(t, dir, "server.pem", cert), writeFile(t, dir, "server.key", key)
	b := setup(t, setupOpts{cfg: func(c *config.Config) {
		c.Server.TLS = config.TLS{CertFile: certFile, KeyFile: keyFile, MinVersion: "1.3"}
	}})
	served := func() int64 {
		conn, err := tls.Dial("tcp", b.srv.Addr().String(), &tls.Config{RootCAs: root.ClientConfig(t, nil, nil).RootCAs, NextProtos: []string{"h2"}})
		require.NoError(t, err)
		defer conn.Close()
		require.Equal(t, uint16(tls.VersionTLS13), conn.ConnectionState().Version, "min_version 1.3")
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	require.EqualValues(t, 100, served())
	old, err := grpc.NewClient(b.srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, nil, nil))))
	require.NoError(t, err)
	defer old.Close()
	admin := filav1.NewFilaAdminClient(old)
	_, err = admin.ListQueues(ctxT(t), &filav1.ListQueuesRequest{})
	require.NoError(t, err)

	cert, key = root.Issue(t, "filad", 101, true, time.Now().Add(time.Hour))
	writeFile(t, dir, "server.pem", cert)
	writeFile(t, dir, "server.key", key)
	require.NoError(t, b.srv.ReloadTLS())
	require.EqualValues(t, 101, served(), "new handshakes get the new certificate")
	_, err = admin.ListQueues(ctxT(t), &filav1.ListQueuesRequest{})
	require.NoError(t, err, "the connection made before the reload still works")

	writeFile(t, dir, "server.key", []byte("not a key"))
	require.Error(t, b.srv.ReloadTLS(), "a bad file is refused")
	require.EqualValues(t, 101, served(), "and the last good certificate stays")
}
