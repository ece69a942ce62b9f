package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/fila-dev/filad/config"
)

// tlsFiles holds the listener's certificate and client CAs as last read
// from their files. ReloadTLS (SIGHUP in cmd/filad) reads them again;
// every handshake after that uses the new ones, and connections already
// open keep theirs. A reload that fails keeps the old material.
type tlsFiles struct {
	cfg     config.TLS
	current atomic.Pointer[tls.Config]
}

func loadTLS(cfg config.TLS) (*tlsFiles, error) {
	f := &tlsFiles{cfg: cfg}
	return f, f.reload()
}

// reload reads the files and builds the config handshakes use.
func (f *tlsFiles) reload() error {
	cert, err := tls.LoadX509KeyPair(f.cfg.CertFile, f.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("server.tls: %w", err)
	}
	c := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"}, // gRPC is HTTP/2
	}
	if f.cfg.MinVersion == "1.3" {
		c.MinVersion = tls.VersionTLS13
	}
	if f.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(f.cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("server.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("server.tls.client_ca_file: no PEM certificate in it")
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	f.current.Store(c)
	return nil
}

// serverConfig is the listener's TLS config: each handshake takes the
// material current at that moment.
func (f *tlsFiles) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.current.Load(), nil
		},
	}
}
