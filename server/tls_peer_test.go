package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
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
	f, err := loadTLS(config.TLS{CertFile: write("n1.pem", mine), KeyFile: write("n1.key", mineKey)}, write("ca.pem", root.PEM), map[uint64]string{1: "127.0.0.1:7555"})
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

// A member's certificate speaks for a member id only if it names that
// member's host, and, when it names node ids (fila-node://<id>), that id:
// the one way to tell apart members that share a host.
func TestPeerCertificateSpeaksForTheMembersItNames(t *testing.T) {
	root := testpki.NewCA(t, "members CA")
	f := &tlsFiles{}
	f.setMembers(map[uint64]string{1: "127.0.0.1:7555", 2: "127.0.0.2:7556", 3: "127.0.0.1:7557"})
	parse := func(certPEM []byte, _ []byte) *x509.Certificate {
		b, _ := pem.Decode(certPEM)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	hostA := parse(root.IssueNodeAt(t, "a", 1, "127.0.0.1"))
	hostB := parse(root.IssueNodeAt(t, "b", 2, "127.0.0.2"))
	node1 := parse(root.IssueNodeAt(t, "n1", 3, "127.0.0.1", "fila-node://1"))
	bad := parse(root.IssueNodeAt(t, "x", 4, "127.0.0.1", "fila-node://one"))
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		id   uint64
		ok   bool
	}{
		{"host A as node 1", hostA, 1, true},
		{"host A as node 3, on the same host", hostA, 3, true}, // the limit the node id URI lifts
		{"host A as node 2", hostA, 2, false},
		{"host B as node 2", hostB, 2, true},
		{"host B as node 1", hostB, 1, false},
		{"host A as no member", hostA, 9, false},
		{"node 1's as node 1", node1, 1, true},
		{"node 1's as node 3, on its host", node1, 3, false},
		{"a malformed node id as node 1", bad, 1, false},
	} {
		err := f.verifyMemberID(tc.cert, tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprint("node ", tc.id)) {
			t.Errorf("%s: %q does not name the claimed node", tc.name, err)
		}
	}
}

// Dialing a member, a certificate that names node ids must name the
// member dialed; one that names none is judged by its host alone.
func TestDialedMemberCertificateMustNameTheNodeDialed(t *testing.T) {
	dir := t.TempDir()
	root := testpki.NewCA(t, "members CA")
	mine, mineKey := root.IssueNode(t, "node-1", 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	certFile, keyFile, caFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key"), filepath.Join(dir, "ca.pem")
	for p, b := range map[string][]byte{certFile: mine, keyFile: mineKey, caFile: root.PEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f, err := loadTLS(config.TLS{CertFile: certFile, KeyFile: keyFile}, caFile, map[uint64]string{1: "127.0.0.1:1", 2: addr})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		uris []string
		ok   bool
	}{
		{"no node id", nil, true},
		{"node 2's, the one dialed", []string{"fila-node://2"}, true},
		{"node 1's", []string{"fila-node://1"}, false},
	} {
		cert, key := root.IssueNodeAt(t, "peer", 5, "127.0.0.1", tc.uris...)
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		l, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{pair}})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			if c, err := l.Accept(); err == nil {
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}
		}()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Minute}, "tcp", addr, f.peerClientConfig(addr))
		if err == nil {
			_ = c.Close()
		}
		_ = l.Close()
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
