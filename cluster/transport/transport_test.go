package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/fila-dev/filad/protos/fila/cluster/v1"
)

// patience bounds how long a test waits for an event that must come; it
// only fails a test on a broken machine, never decides a healthy one.
const patience = 60 * time.Second

// node is one transport with its own gRPC server on a loopback port.
type node struct {
	t           *Transport
	addr        string
	srv         *grpc.Server
	got         chan arrival
	unreachable chan uint64
}

type arrival struct {
	from uint64
	msg  *clusterv1.GroupMessage
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, append(DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
}

// startNode serves a transport for id on lis (a new loopback port when nil).
func startNode(t *testing.T, id uint64, lis net.Listener, opts Options) *node {
	t.Helper()
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	n := &node{addr: lis.Addr().String(), got: make(chan arrival, 1<<16), unreachable: make(chan uint64, 1<<10)}
	opts.NodeID, opts.Dial = id, dial
	before := opts.Deliver // a test's hook: sees each delivery first
	opts.Deliver = func(from uint64, msgs []*clusterv1.GroupMessage) {
		if before != nil {
			before(from, msgs)
		}
		for _, m := range msgs {
			n.got <- arrival{from, m}
		}
	}
	opts.Unreachable = func(peer uint64) {
		select {
		case n.unreachable <- peer:
		default:
		}
	}
	tr, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	n.t, n.srv = tr, grpc.NewServer(ServerOptions()...)
	tr.Register(n.srv)
	go func() { _ = n.srv.Serve(lis) }()
	t.Cleanup(func() { n.srv.Stop(); tr.Close() })
	return n
}

// msg is the i-th message of these tests: a raft heartbeat of group from
// node 1 to node to, numbered by its commit index.
func msg(to, group uint64, i int) *clusterv1.GroupMessage {
	return raftMsg(group, &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(to), Commit: new(uint64(i))})
}

func raftMsg(group uint64, m *raftpb.Message) *clusterv1.GroupMessage {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return &clusterv1.GroupMessage{Group: group, Message: b}
}

// number is the number msg gave a message.
func number(t *testing.T, gm *clusterv1.GroupMessage) int {
	t.Helper()
	m := &raftpb.Message{}
	if err := proto.Unmarshal(gm.GetMessage(), m); err != nil {
		t.Fatal(err)
	}
	return int(m.GetCommit())
}

// next waits for n's next arrival.
func (n *node) next(t *testing.T) arrival {
	t.Helper()
	select {
	case a := <-n.got:
		return a
	case <-time.After(patience):
		t.Fatal("no message arrived")
		return arrival{}
	}
}

// expect waits for count arrivals from from, numbered first.. in order.
func (n *node) expect(t *testing.T, from uint64, first, count int) {
	t.Helper()
	for i := first; i < first+count; i++ {
		a := n.next(t)
		if got := number(t, a.msg); a.from != from || got != i {
			t.Fatalf("arrival %d: got %d from %d, want %d from %d", i-first, got, a.from, i, from)
		}
	}
}

func TestMessagesArriveInOrderFromTheirSender(t *testing.T) {
	n1, n2, n3 := startNode(t, 1, nil, Options{}), startNode(t, 2, nil, Options{}), startNode(t, 3, nil, Options{})
	for _, p := range []*node{n2, n3} {
		if err := n1.t.SetPeer(map[*node]uint64{n2: 2, n3: 3}[p], p.addr); err != nil {
			t.Fatal(err)
		}
	}
	const count = 1000 // under DefaultQueueLen: nothing may be dropped
	for i := range count {
		for _, to := range []uint64{2, 3} {
			if q := n1.t.Send(to, msg(to, uint64(i%3), i)); q != 1 {
				t.Fatalf("Send %d to %d queued %d", i, to, q)
			}
		}
	}
	n2.expect(t, 1, 0, count)
	n3.expect(t, 1, 0, count)
	if d, r := n2.t.Received(); d != count || r != 0 {
		t.Errorf("node 2 received %d, refused %d; want %d, 0", d, r, count)
	}
}

// A peer that does not answer must not hold the sender up: Send queues up
// to QueueLen and drops the rest at once, and what was queued goes out, in
// order, once the peer serves.
func TestSendNeverBlocksOnASilentPeer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0") // accepts, says nothing
	if err != nil {
		t.Fatal(err)
	}
	const queueLen = 64
	n1 := startNode(t, 1, nil, Options{QueueLen: queueLen})
	if err := n1.t.SetPeer(2, lis.Addr().String()); err != nil {
		t.Fatal(err)
	}
	queued := 0
	for i := range 10 * queueLen {
		queued += n1.t.Send(2, msg(2, 1, i))
	}
	if queued != queueLen {
		t.Fatalf("queued %d of %d for a silent peer, want the queue's %d", queued, 10*queueLen, queueLen)
	}
	if st := n1.t.Stats()[2]; st.Dropped != 9*queueLen || st.Sent != 0 {
		t.Fatalf("stats %+v, want %d dropped, none sent", st, 9*queueLen)
	}
	n2 := startNode(t, 2, lis, Options{}) // now it serves
	n2.expect(t, 1, 0, queueLen)
}

func TestFaultsCutALink(t *testing.T) {
	f1, f2 := &Faults{}, &Faults{}
	n1, n2 := startNode(t, 1, nil, Options{Faults: f1}), startNode(t, 2, nil, Options{Faults: f2})
	if err := n1.t.SetPeer(2, n2.addr); err != nil {
		t.Fatal(err)
	}

	f1.Cut(2, Outgoing)
	if q := n1.t.Send(2, msg(2, 1, 0), msg(2, 1, 1)); q != 0 {
		t.Fatalf("a cut link queued %d", q)
	}
	if st := n1.t.Stats()[2]; st.Dropped != 2 {
		t.Fatalf("stats %+v, want 2 dropped", st)
	}
	f1.Heal()

	f2.Cut(1, Incoming)
	for i := 2; i < 12; i++ {
		n1.t.Send(2, msg(2, 1, i))
	}
	deadline := time.Now().Add(patience)
	for _, refused := n2.t.Received(); refused < 10; _, refused = n2.t.Received() {
		if time.Now().After(deadline) {
			t.Fatalf("node 2 refused %d of 10 messages from a cut peer", refused)
		}
		time.Sleep(time.Millisecond) // polls a counter; the outcome is the counter's
	}
	f2.Heal()
	n1.t.Send(2, msg(2, 1, 12))
	n2.expect(t, 1, 12, 1) // the first to arrive: nothing cut came through
}

// A batch meant for another node is refused, and the sender hears that the
// peer it meant is unreachable.
func TestMisroutedBatchIsRefused(t *testing.T) {
	n1, n2 := startNode(t, 1, nil, Options{}), startNode(t, 2, nil, Options{})
	if err := n1.t.SetPeer(3, n2.addr); err != nil { // node 3's address is node 2's
		t.Fatal(err)
	}
	n1.t.Send(3, msg(3, 1, 0))
	select {
	case peer := <-n1.unreachable:
		if peer != 3 {
			t.Fatalf("unreachable %d, want 3", peer)
		}
	case <-time.After(patience):
		t.Fatal("the sender was never told")
	}
	if d, _ := n2.t.Received(); d != 0 {
		t.Fatalf("node 2 took %d messages meant for node 3", d)
	}
}

// A restarted peer hears its senders again without anyone reconfiguring.
func TestReconnectsToARestartedPeer(t *testing.T) {
	n1, n2 := startNode(t, 1, nil, Options{}), startNode(t, 2, nil, Options{})
	if err := n1.t.SetPeer(2, n2.addr); err != nil {
		t.Fatal(err)
	}
	n1.t.Send(2, msg(2, 1, 0))
	n2.expect(t, 1, 0, 1)
	n2.srv.Stop()
	lis, err := net.Listen("tcp", n2.addr)
	if err != nil {
		t.Fatalf("port %s not free again once its server stopped: %v", n2.addr, err)
	}
	n2b := startNode(t, 2, lis, Options{})
	// Messages sent while the old stream breaks may be lost (raft resends):
	// send until one arrives.
	deadline := time.Now().Add(patience)
	for i := 1; ; i++ {
		n1.t.Send(2, msg(2, 1, i))
		select {
		case a := <-n2b.got:
			if a.from != 1 {
				t.Fatalf("arrival from %d", a.from)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no message reached the restarted peer")
		}
	}
}

func TestPeerIDs(t *testing.T) {
	n1 := startNode(t, 1, nil, Options{})
	for _, id := range []uint64{0, 1} {
		if err := n1.t.SetPeer(id, "127.0.0.1:1"); err == nil {
			t.Errorf("SetPeer(%d) accepted", id)
		}
	}
	if _, err := New(Options{Deliver: func(uint64, []*clusterv1.GroupMessage) {}, Dial: dial}); err == nil {
		t.Error("New without a NodeID accepted")
	}
	if q := n1.t.Send(9, msg(9, 1, 0)); q != 0 {
		t.Errorf("Send to an unknown peer queued %d", q)
	}
}

func TestControlHandler(t *testing.T) {
	f := &Faults{}
	srv := httptest.NewServer(f.ControlHandler())
	defer srv.Close()
	for _, tc := range []struct {
		path     string
		code     int
		from, to uint64 // a link to check afterwards
		allowed  bool
	}{
		{"/cut?peer=2&dir=out", http.StatusOK, 1, 2, false},
		{"/heal", http.StatusOK, 1, 2, true},
		{"/cut?peer=3&dir=in", http.StatusOK, 3, 1, false},
		{"/cut?peer=3&dir=in", http.StatusOK, 1, 3, true},
		{"/cut?peer=4", http.StatusOK, 4, 1, false},
		{"/cut?peer=0", http.StatusBadRequest, 1, 2, true},
		{"/cut?peer=x", http.StatusBadRequest, 1, 2, true},
		{"/cut?peer=2&dir=sideways", http.StatusBadRequest, 1, 2, true},
	} {
		resp, err := http.Post(srv.URL+tc.path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.code)
		}
		if got := f.allows(tc.from, tc.to); got != tc.allowed {
			t.Errorf("after %s: %d→%d allowed %v, want %v", tc.path, tc.from, tc.to, got, tc.allowed)
		}
	}
	if (*Faults)(nil).allows(1, 2) != true {
		t.Error("nil Faults cut a link")
	}
}

// The interface: PUT /faults replaces the rules with drops both
// ways, GET shows them, DELETE heals; bad bodies change nothing.
func TestControlHandlerFaultsResource(t *testing.T) {
	f := &Faults{}
	srv := httptest.NewServer(f.ControlHandler())
	defer srv.Close()
	do := func(method, body string) (int, string) {
		req, err := http.NewRequest(method, srv.URL+"/faults", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	f.Cut(9, Outgoing)
	if code, _ := do(http.MethodPut, `{"drop": [2, 3]}`); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	if f.allows(1, 2) || f.allows(3, 1) || !f.allows(1, 9) {
		t.Error("PUT did not replace the rules with drops of 2 and 3 both ways")
	}
	if _, got := do(http.MethodGet, ""); got != `{"drop":[2,3],"in":[],"out":[]}` {
		t.Errorf("GET: %s", got)
	}
	for _, bad := range []string{`{"drop": [0]}`, `{"drop": "2"}`, `{"cut": [2]}`, `nonsense`} {
		if code, _ := do(http.MethodPut, bad); code != http.StatusBadRequest {
			t.Errorf("PUT %s: %d, want 400", bad, code)
		}
	}
	if f.allows(1, 2) {
		t.Error("a refused PUT changed the rules")
	}
	if code, _ := do(http.MethodDelete, ""); code != http.StatusOK || !f.allows(1, 2) || !f.allows(3, 1) {
		t.Errorf("DELETE: %d; still cut", code)
	}
	if _, got := do(http.MethodGet, ""); got != `{"drop":[],"in":[],"out":[]}` {
		t.Errorf("GET after DELETE: %s", got)
	}
}

// A heartbeat does not wait behind appends: with the delivery of a log
// append to node 2 held up (as a follower taking megabytes of catch-up is
// slow to take more), a heartbeat sent after it arrives. On one stream it
// would wait for the append, and the follower, hearing nothing, would
// take its leader for dead.
func TestHeartbeatsDoNotWaitBehindAppends(t *testing.T) {
	held, release := make(chan struct{}, 1), make(chan struct{})
	n2 := startNode(t, 2, nil, Options{Deliver: func(_ uint64, msgs []*clusterv1.GroupMessage) {
		for _, m := range msgs {
			if typ, _, _, _ := header(m.GetMessage()); typ == raftpb.MsgApp {
				held <- struct{}{}
				<-release
			}
		}
	}})
	t.Cleanup(func() { close(release) }) // before node 2 stops: its stream's goroutine is held
	n1 := startNode(t, 1, nil, Options{})
	if err := n1.t.SetPeer(2, n2.addr); err != nil {
		t.Fatal(err)
	}
	app := raftMsg(1, &raftpb.Message{Type: raftpb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2)), Entries: []*raftpb.Entry{{Data: []byte("e")}}})
	if q := n1.t.Send(2, app); q != 1 {
		t.Fatalf("queued %d of 1", q)
	}
	select {
	case <-held:
	case <-time.After(patience):
		t.Fatal("the append never reached node 2")
	}
	n1.t.Send(2, msg(2, 1, 7))
	if a := n2.next(t); number(t, a.msg) != 7 {
		t.Fatalf("arrived %d, want the heartbeat (7)", number(t, a.msg))
	}
}

// A raft message holds at least one whole entry, and an entry is a storage
// batch of up to server.max_batch_bytes: one over gRPC's default 4 MiB
// must still reach the peer, or its group could never replicate it.
func TestLargeMessagesArrive(t *testing.T) {
	n1, n2 := startNode(t, 1, nil, Options{}), startNode(t, 2, nil, Options{})
	if err := n1.t.SetPeer(2, n2.addr); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 20<<20)
	for i := range 3 { // three together would be 60 MiB in one send without the byte bound
		n1.t.Send(2, msg(2, 1, i), raftMsg(1, &raftpb.Message{Type: raftpb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2)), Entries: []*raftpb.Entry{{Data: big}}}))
	}
	for range 6 {
		if a := n2.next(t); a.from != 1 {
			t.Fatalf("arrival from %d", a.from)
		}
	}
}

// rawStream opens a raft stream to n as a client of its own, to send what
// an honest transport never would.
func rawStream(t *testing.T, n *node) clusterv1.Raft_StreamClient {
	t.Helper()
	conn, err := dial(n.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	s, err := clusterv1.NewRaftClient(conn).Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ended sends b on s, then closes it, and returns how the receiver ended
// the stream: nil when it took everything.
func ended(t *testing.T, s clusterv1.Raft_StreamClient, bs ...*clusterv1.RaftBatch) error {
	t.Helper()
	for _, b := range bs {
		if err := s.Send(b); err != nil {
			break // the receiver ended it; Recv says why
		}
	}
	_ = s.CloseSend()
	_, err := s.Recv()
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// A raft message is delivered only as its stream's sender's, to this
// node: one that names another sender or another receiver is dropped
// (and counted), the rest of its batch delivered.
func TestMessagesNotTheSendersAreDropped(t *testing.T) {
	n2 := startNode(t, 2, nil, Options{})
	forged := raftMsg(1, &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(uint64(3)), To: new(uint64(2)), Commit: new(uint64(7))})
	elsewhere := raftMsg(1, &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(3)), Commit: new(uint64(8))})
	garbage := &clusterv1.GroupMessage{Group: 1, Message: []byte{0xff}}
	err := ended(t, rawStream(t, n2), &clusterv1.RaftBatch{From: 1, To: 2, Messages: []*clusterv1.GroupMessage{msg(2, 1, 0), forged, elsewhere, garbage, msg(2, 1, 1)}})
	if err != nil {
		t.Fatalf("the stream ended with %v", err)
	}
	n2.expect(t, 1, 0, 2)
	if d, r := n2.t.Received(); d != 2 || r != 3 {
		t.Fatalf("delivered %d, refused %d; want 2, 3", d, r)
	}
}

// With Authenticate, a stream is refused with its status before anything
// of it is delivered, and a stream that was admitted as one node's cannot
// go on as another's.
func TestStreamsAreBoundToTheSenderAuthenticated(t *testing.T) {
	var claims []uint64
	var mu sync.Mutex
	n2 := startNode(t, 2, nil, Options{Authenticate: func(_ context.Context, claimed uint64) error {
		mu.Lock()
		defer mu.Unlock()
		claims = append(claims, claimed)
		if claimed != 1 {
			return status.Errorf(codes.PermissionDenied, "not node %d", claimed)
		}
		return nil
	}})
	forged := raftMsg(1, &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(uint64(3)), To: new(uint64(2))})
	if err := ended(t, rawStream(t, n2), &clusterv1.RaftBatch{From: 3, To: 2, Messages: []*clusterv1.GroupMessage{forged}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a claim Authenticate refused: %v, want PermissionDenied", err)
	}
	err := ended(t, rawStream(t, n2),
		&clusterv1.RaftBatch{From: 1, To: 2, Messages: []*clusterv1.GroupMessage{msg(2, 1, 0)}},
		&clusterv1.RaftBatch{From: 3, To: 2, Messages: []*clusterv1.GroupMessage{forged}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a stream that changed its sender: %v, want PermissionDenied", err)
	}
	n2.expect(t, 1, 0, 1)
	if d, _ := n2.t.Received(); d != 1 {
		t.Fatalf("delivered %d, want only the admitted sender's 1", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(claims, []uint64{3, 1}) {
		t.Fatalf("Authenticate saw %v, want once per stream: [3 1]", claims)
	}
}

// AdmitProposal decides the proposals a peer forwards; other messages
// pass without it.
func TestForwardedProposalsAreAdmittedOrDropped(t *testing.T) {
	n2 := startNode(t, 2, nil, Options{AdmitProposal: func(from uint64, b []byte) error {
		m := &raftpb.Message{}
		if err := proto.Unmarshal(b, m); err != nil || from != 1 {
			return errors.New("not decoded")
		}
		if len(m.GetEntries()) == 1 && string(m.GetEntries()[0].GetData()) == "ok" {
			return nil
		}
		return errors.New("not admitted")
	}})
	prop := func(data string) *clusterv1.GroupMessage {
		return raftMsg(0, &raftpb.Message{Type: raftpb.MsgProp.Enum(), From: new(uint64(1)), To: new(uint64(2)), Entries: []*raftpb.Entry{{Data: []byte(data)}}})
	}
	if err := ended(t, rawStream(t, n2), &clusterv1.RaftBatch{From: 1, To: 2, Messages: []*clusterv1.GroupMessage{prop("bad"), prop("ok"), msg(2, 0, 5)}}); err != nil {
		t.Fatalf("the stream ended with %v", err)
	}
	a := n2.next(t)
	m := &raftpb.Message{}
	if err := proto.Unmarshal(a.msg.GetMessage(), m); err != nil || m.GetType() != raftpb.MsgProp || string(m.GetEntries()[0].GetData()) != "ok" {
		t.Fatalf("first arrival %v (%v), want the admitted proposal", m, err)
	}
	n2.expect(t, 1, 5, 1)
	if d, r := n2.t.Received(); d != 2 || r != 1 {
		t.Fatalf("delivered %d, refused %d; want 2, 1", d, r)
	}
}

// The per-message check on arrival reads three fields off the wire; next
// to the decode the driver does anyway it should cost next to nothing.
// go test -run - -bench Screen ./cluster/transport/
func BenchmarkScreenVersusDecode(b *testing.B) {
	app := raftMsg(1, &raftpb.Message{Type: raftpb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(3)),
		Entries: []*raftpb.Entry{{Data: make([]byte, 4096)}, {Data: make([]byte, 4096)}}}).GetMessage()
	b.Run("header", func(b *testing.B) {
		for b.Loop() {
			if _, from, _, err := header(app); err != nil || from != 1 {
				b.Fatal(from, err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			if err := proto.Unmarshal(app, &raftpb.Message{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// typeOf reads the type as header does, from the first field when raft
// put it there, else by walking the message.
func TestTypeOf(t *testing.T) {
	for _, typ := range []raftpb.MessageType{raftpb.MsgHup, raftpb.MsgApp, raftpb.MsgSnap, raftpb.MsgHeartbeat, raftpb.MsgAppResp} {
		gm := raftMsg(1, &raftpb.Message{Type: typ.Enum(), From: new(uint64(1)), To: new(uint64(2)), Entries: []*raftpb.Entry{{Data: []byte("e")}}})
		want, _, _, err := header(gm.GetMessage())
		if err != nil || want != typ {
			t.Fatalf("header of %v: %v, %v", typ, want, err)
		}
		if got := typeOf(gm.GetMessage()); got != typ {
			t.Errorf("typeOf = %v, want %v", got, typ)
		}
	}
	// Type not first (hand-made): read by the walk.
	b := protowire.AppendTag(nil, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, 2)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(raftpb.MsgApp))
	if got := typeOf(b); got != raftpb.MsgApp {
		t.Errorf("typeOf with the type second = %v, want MsgApp", got)
	}
}
