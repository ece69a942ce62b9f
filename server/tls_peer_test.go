package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fila-dev/filad/config"
	"github.com/fila-dev/filad/internal/testpki"
)

// A member dialing a peer checks the peer's certificate against the host
// it dialed, an IP address included (Go's handshake sends no server name
// for one), and takes only a member's certificate: both key usages, a
// member's host.
func TestPeerCertificatesMustBeAMembersForTheHostDialed(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root := testpki.NewCA(t, "members CA")
	mine, mineKey := root.IssueNode(t, "node-1", 1)
	f, err := loadTLS(config.TLS{CertFile: write("n1.pem", mine), KeyFile: write("n1.key", mineKey)}, write("ca.pem", root.PEM), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	other, otherKey := root.IssueNodeAt(t, "node-x", 2, "10.9.9.9")
	good, goodKey := root.IssueNode(t, "node-2", 3)
	serve := func(certPEM, keyPEM []byte) string {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}
		}()
		return l.Addr().String()
	}
	dial := func(addr string) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Minute}, "tcp", addr, f.peerClientConfig(addr))
		if err == nil {
			_ = c.Close()
		}
		return err
	}
	if err := dial(serve(good, goodKey)); err != nil {
		t.Fatalf("a member's certificate for the host dialed: %v", err)
	}
	if err := dial(serve(other, otherKey)); err == nil {
		t.Fatal("a member's certificate for another host was taken at 127.0.0.1")
	}

	parse := func(certPEM []byte) *x509.Certificate {
		b, _ := pem.Decode(certPEM)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	clientOnly, _ := root.Issue(t, "a-client", 4, false, time.Now().Add(time.Hour))
	for name, tc := range map[string]struct {
		cert []byte
		ok   bool
	}{
		"a member's":              {good, true},
		"a client's (clientAuth)": {clientOnly, false},
		"another host's":          {other, false},
	} {
		if err := f.verifyMember(parse(tc.cert)); (err == nil) != tc.ok {
			t.Errorf("%s certificate: %v, want ok=%v", name, err, tc.ok)
		}
	}
}
