package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
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
	// members are the members' internal addresses by node id: a peer's
	// certificate must name the host of one of them, and of the one whose
	// id the peer claims (verifyMemberID). The node table the meta group
	// applied keeps it current (setMembers): a node added is admitted, a
	// removed one no longer.
	members atomic.Pointer[map[uint64]string]
	// joinAddrs are the addresses a joining node asks (cluster.join): the
	// members there are the ones it dials before it knows their ids.
	joinAddrs []string
	current   atomic.Pointer[tls.Config]
	// peers is the internal port's config as a server: the same
	// certificate, and the members' CA required of every caller.
	peers atomic.Pointer[tls.Config]
}

func loadTLS(cfg config.TLS, peerCAFile string, members map[uint64]string, joinAddrs ...string) (*tlsFiles, error) {
	f := &tlsFiles{cfg: cfg, peerCAFile: peerCAFile, joinAddrs: joinAddrs}
	f.setMembers(members)
	return f, f.reload()
}

// setMembers makes members the members' internal addresses from now on
// (handshakes and checks after it).
func (f *tlsFiles) setMembers(members map[uint64]string) { f.members.Store(&members) }

// memberHosts are the hosts a member's certificate may name: the
// members', and the join addresses'.
func (f *tlsFiles) memberHosts() []string {
	var hosts []string
	for _, addr := range *f.members.Load() {
		hosts = append(hosts, hostOf(addr))
	}
	for _, addr := range f.joinAddrs {
		hosts = append(hosts, hostOf(addr))
	}
	return hosts
}

// verifyMember checks what the chain check does not: that a peer's
// certificate is a member's (both key usages, as every member's has) and
// names one of the members' hosts. Without it any certificate of the CA
// with clientAuth, a client's, would pass on the internal port.
func (f *tlsFiles) verifyMember(cert *x509.Certificate) error {
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return errors.New("cluster: the peer certificate lacks the serverAuth and clientAuth key usages of a member's")
	}
	for _, host := range f.memberHosts() {
		if cert.VerifyHostname(host) == nil {
			return nil
		}
	}
	return errors.New("cluster: the peer certificate names none of the members' hosts")
}

// nodeURIScheme is the scheme of the URI SAN that names the node id a
// member's certificate is for: fila-node://7 is node 7's. Optional; a
// certificate that names one or more may speak only for those.
const nodeURIScheme = "fila-node"

// verifyMemberID checks that cert, a member's (verifyMember), may speak
// for member id: it names the host of that member's internal address,
// and, if it names node ids (nodeURIScheme), id among them. Members that
// share a host share its name, so only the node id tells their
// certificates apart (docs/security.md).
func (f *tlsFiles) verifyMemberID(cert *x509.Certificate, id uint64) error {
	addr, ok := (*f.members.Load())[id]
	if !ok {
		return fmt.Errorf("node %d is no member, and the certificate names %s", id, certNames(cert))
	}
	return verifyNode(cert, id, addr)
}

// verifyNode checks that cert may speak for node id at internal address
// addr: it names addr's host, and id if it names node ids. A joining
// node's Join is checked so against the record it asks for.
func verifyNode(cert *x509.Certificate, id uint64, addr string) error {
	if host := hostOf(addr); cert.VerifyHostname(host) != nil {
		return fmt.Errorf("the certificate names %s, not %s, the host of node %d's internal address", certNames(cert), host, id)
	}
	if ids, named := nodeIDs(cert); named && !slices.Contains(ids, id) {
		return fmt.Errorf("the certificate is for %s, not node %d", certNames(cert), id)
	}
	return nil
}

// nodeIDs are the node ids cert names (nodeURIScheme URI SANs); named
// reports whether it names any, a malformed one included (which then
// matches no id).
func nodeIDs(cert *x509.Certificate) (ids []uint64, named bool) {
	for _, u := range cert.URIs {
		if u.Scheme != nodeURIScheme {
			continue
		}
		named = true
		if id, err := strconv.ParseUint(u.Host, 10, 64); err == nil && id > 0 && u.Path == "" && u.User == nil {
			ids = append(ids, id)
		}
	}
	return ids, named
}

// certNames lists what cert names (DNS names, IP addresses, URIs) for an
// error: a certificate's names are not secret.
func certNames(cert *x509.Certificate) string {
	var names []string
	names = append(names, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	if len(names) == 0 {
		return "no host"
	}
	return "[" + strings.Join(names, " ") + "]"
}

// hostOf is the host of a host:port address (addr itself without a port).
func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
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
//
// A certificate that names node ids (nodeURIScheme) must name the member
// this node dials there.
func (f *tlsFiles) peerClientConfig(addr string) *tls.Config {
	host := hostOf(addr)
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
			var dialed []uint64 // the members at addr, as known at this handshake
			for id, a := range *f.members.Load() {
				if a == addr {
					dialed = append(dialed, id)
				}
			}
			if ids, named := nodeIDs(cs.PeerCertificates[0]); named && len(dialed) > 0 && !slices.ContainsFunc(ids, func(id uint64) bool { return slices.Contains(dialed, id) }) {
				return fmt.Errorf("cluster: the member at %s presented a certificate for %s, not for node(s) %v", addr, certNames(cs.PeerCertificates[0]), dialed)
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
