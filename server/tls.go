package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync/atomic"

	"github.com/fila-dev/filad/config"
)

// tlsFiles holds the listener's certificate and client CAs as last read
// from their files. ReloadTLS (SIGHUP in cmd/filad) reads them again;
// every handshake after that uses the new ones, and connections already
// open keep theirs. A reload that fails keeps the old material.
type tlsFiles struct {
	cfg config.TLS
	// peerCAFile, for a cluster node, is the CA of the members'
	// certificates (cluster.tls_ca_file); "" on a single node.
	peerCAFile string
	// memberHosts are the hosts of the members' internal addresses: a
	// peer's certificate must name one of them.
	memberHosts []string
	current     atomic.Pointer[tls.Config]
	// peers is the internal port's config as a server: the same
	// certificate, and the members' CA required of every caller.
	peers atomic.Pointer[tls.Config]
}

func loadTLS(cfg config.TLS, peerCAFile string, memberHosts []string) (*tlsFiles, error) {
	f := &tlsFiles{cfg: cfg, peerCAFile: peerCAFile, memberHosts: memberHosts}
	return f, f.reload()
}

// verifyMember checks what the chain check does not: that a peer's
// certificate is a member's (both key usages, as every member's has) and
// names one of the members' hosts. Without it any certificate of the CA
// with clientAuth, a client's, would pass on the internal port.
func (f *tlsFiles) verifyMember(cert *x509.Certificate) error {
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return errors.New("cluster: the peer certificate lacks the serverAuth and clientAuth key usages of a member's")
	}
	for _, h := range f.memberHosts {
		if cert.VerifyHostname(h) == nil {
			return nil
		}
	}
	return errors.New("cluster: the peer certificate names none of the members' hosts")
}

// readCAs reads a PEM file of CA certificates; key names it in errors.
func readCAs(path, key string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", key)
	}
	return pool, nil
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
		pool, err := readCAs(f.cfg.ClientCAFile, "server.tls.client_ca_file")
		if err != nil {
			return err
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	var p *tls.Config
	if f.peerCAFile != "" {
		pool, err := readCAs(f.peerCAFile, "cluster.tls_ca_file")
		if err != nil {
			return err
		}
		p = c.Clone()
		// RootCAs: the same pool verifies the members this node dials.
		p.ClientCAs, p.ClientAuth, p.RootCAs = pool, tls.RequireAndVerifyClientCert, pool
		p.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster: the caller presented no certificate")
			}
			return f.verifyMember(cs.PeerCertificates[0])
		}
	}
	f.current.Store(c)
	if p != nil {
		f.peers.Store(p)
	}
	return nil
}

// peerServerConfig is the internal port's TLS config: mutual, each
// handshake with the material current at that moment.
func (f *tlsFiles) peerServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.peers.Load(), nil
		},
	}
}

// peerClientConfig is the config this node dials the member at addr
// with: it presents its certificate and verifies the member's against the
// members' CA and addr's host, both as current at each handshake (a
// reload reaches new connections; the transport redials a broken one).
// The host is checked here, not through the handshake's server name,
// which Go leaves empty for an IP address.
func (f *tlsFiles) peerClientConfig(addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &f.peers.Load().Certificates[0], nil
		},
		// Go's own verification would read RootCAs fixed at dial time;
		// VerifyConnection does the same checks (chain to the members'
		// CA, the name dialed) against the pool current at the handshake.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster: the member presented no certificate")
			}
			opts := x509.VerifyOptions{DNSName: host, Roots: f.peers.Load().RootCAs, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return err
			}
			return f.verifyMember(cs.PeerCertificates[0])
		},
	}
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
