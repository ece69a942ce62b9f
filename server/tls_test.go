package server_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/testpki"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/server"
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

// TestCertificateStandsForAKey: with mTLS and auth on, a client
// certificate whose common name is a key's name gets that key's
// permissions without sending the key; a bearer key still wins.
func TestCertificateStandsForAKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := testpki.NewCA(t, "filad test CA")
	cert, key := root.Issue(t, "filad", 10, true, time.Now().Add(time.Hour))
	logs := &logCapture{}
	b := setup(t, setupOpts{cfg: func(c *config.Config) {
		c.Server.TLS = config.TLS{CertFile: writeFile(t, dir, "s.pem", cert), KeyFile: writeFile(t, dir, "s.key", key),
			ClientCAFile: writeFile(t, dir, "ca.pem", root.PEM), MinVersion: "1.2"}
		c.Auth = config.Auth{Mode: "on", BootstrapKey: bootstrapKey}
	}, opts: server.Options{Logger: slog.New(logs)}})
	adminCert, adminKey := root.Issue(t, "operator", 11, false, time.Now().Add(time.Hour))
	conn, err := grpc.NewClient(b.srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, adminCert, adminKey))))
	require.NoError(t, err)
	defer conn.Close()
	admin := filav1.NewFilaAdminClient(conn)
	_, err = admin.CreateQueue(withKey(bootstrapKey), &filav1.CreateQueueRequest{Name: "orders"})
	require.NoError(t, err)
	_, err = admin.CreateApiKey(withKey(bootstrapKey), &filav1.CreateApiKeyRequest{Name: "worker-7",
		Permissions: []*filav1.Permission{{QueuePattern: "orders", Actions: []string{"produce"}}}})
	require.NoError(t, err)

	workerCert, workerKey := root.Issue(t, "worker-7", 12, false, time.Now().Add(time.Hour))
	wconn, err := grpc.NewClient(b.srv.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(root.ClientConfig(t, workerCert, workerKey))))
	require.NoError(t, err)
	defer wconn.Close()
	svc := filav1.NewFilaServiceClient(wconn)
	_, err = svc.Enqueue(ctxT(t), &filav1.EnqueueRequest{Queue: "orders"})
	require.NoError(t, err, "the certificate's CN is the key's name")
	stream, err := svc.Consume(ctxT(t), &filav1.ConsumeRequest{Queue: "orders"})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.PermissionDenied, status.Code(err), "and only its permissions")
	_, err = filav1.NewFilaAdminClient(conn).ListQueues(ctxT(t), &filav1.ListQueuesRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "a certificate without a key of its name is no key")

	// A flood of bad keys logs one line, and every refusal is counted.
	for range 200 {
		_, err := svc.Enqueue(withKey("fila_guess"), &filav1.EnqueueRequest{Queue: "orders"})
		require.Equal(t, codes.Unauthenticated, status.Code(err))
	}
	require.LessOrEqual(t, logs.count(slog.LevelWarn, "refused a call"), 2, "the WARN is rate-limited")
	require.NotContains(t, logs.text(), "fila_guess", "a guessed secret is logged by fingerprint only")
	require.NotContains(t, logs.text(), bootstrapKey)
}
