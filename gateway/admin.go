package gateway

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/config"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/telemetry"
)

// ClusterView is what the admin handlers report of the cluster
// (cluster.Placement implements it). Its answers come from memory.
type ClusterView interface {
	// Queue is the node leading queue's partition as this node knows it (0:
	// none known now) and the partition's voters.
	Queue(queue string) (leader uint64, voters int)
	// Members is the number of the cluster's members.
	Members() int
	// Status is this node's view of the members and groups
	// (GetClusterStatus).
	Status() *filav1.GetClusterStatusResponse
	// AddNode and RemoveNode change the members (cluster.Replica's); a
	// node that does not lead the meta group refuses naming its leader,
	// so that the call is forwarded there.
	AddNode(ctx context.Context, id uint64, internalAddr string) error
	RemoveNode(ctx context.Context, id uint64) error

	// TransferLeader moves group's leadership to node and answers the
	// term it leads in once this node sees it lead; a refusal is a gRPC
	// status, or an actors.NotLeaderError when another node leads the
	// group (the call is forwarded there).
	TransferLeader(ctx context.Context, group, node uint64) (term uint64, err error)
}

// GetClusterStatus answers this node's view of the cluster; a single node
// says it is none.
func (s *Server) GetClusterStatus(context.Context, *filav1.GetClusterStatusRequest) (*filav1.GetClusterStatusResponse, error) {
	if s.opts.Cluster == nil {
		return &filav1.GetClusterStatusResponse{}, nil
	}
	return s.opts.Cluster.Status(), nil
}

// AddNode implements filav1.FilaAdminServer (membership).
func (s *Server) AddNode(ctx context.Context, req *filav1.AddNodeRequest) (*filav1.AddNodeResponse, error) {
	if err := s.membershipRequest(req.GetNodeId()); err != nil {
		return nil, err
	}
	if err := config.DialableAddr(req.GetInternalAddr()); err != nil {
		return nil, toStatus(invalid("internal_addr: must be host:port, the node's cluster.internal_listen_addr as the members reach it: %v", err))
	}
	if err := s.opts.Cluster.AddNode(ctx, req.GetNodeId(), req.GetInternalAddr()); err != nil {
		return nil, toStatus(err)
	}
	return &filav1.AddNodeResponse{}, nil
}

// RemoveNode implements filav1.FilaAdminServer (membership).
func (s *Server) RemoveNode(ctx context.Context, req *filav1.RemoveNodeRequest) (*filav1.RemoveNodeResponse, error) {
	if err := s.membershipRequest(req.GetNodeId()); err != nil {
		return nil, err
	}
	if err := s.opts.Cluster.RemoveNode(ctx, req.GetNodeId()); err != nil {
		return nil, toStatus(err)
	}
	return &filav1.RemoveNodeResponse{}, nil
}

// membershipRequest refuses a call about the cluster's members (a
// membership change, a leader transfer) on a single node, and a node id
// of 0.
func (s *Server) membershipRequest(id uint64) error {
	if s.opts.Cluster == nil {
		return status.Error(codes.FailedPrecondition, "a single node has no members to change or leaders to move: [cluster] is not enabled")
	}
	if id == 0 {
		return toStatus(invalid("node_id: must be a member's id (> 0)"))
	}
	return nil
}

// TransferLeader implements filav1.FilaAdminServer (issue 25's leader
// transfer): on a single node, FAILED_PRECONDITION.
func (s *Server) TransferLeader(ctx context.Context, req *filav1.TransferLeaderRequest) (*filav1.TransferLeaderResponse, error) {
	if err := s.membershipRequest(req.GetNodeId()); err != nil {
		return nil, err
	}
	term, err := s.opts.Cluster.TransferLeader(ctx, req.GetGroupId(), req.GetNodeId())
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = toStatus(err) // a NotLeaderError keeps the leader's hint: the proxy forwards it there
		}
		return nil, err
	}
	return &filav1.TransferLeaderResponse{Term: term}, nil
}

// replication is queue's leader_node_id and replication_count: 0 and 1 on
// a single node (one copy, no node id).
func (s *Server) replication(queue string) (leader uint64, count uint32) {
	if s.opts.Cluster == nil {
		return 0, 1
	}
	leader, voters := s.opts.Cluster.Queue(queue)
	return leader, uint32(voters)
}

// clusterNodes is ListQueues' cluster_node_count: 1 on a single node.
func (s *Server) clusterNodes() uint32 {
	if s.opts.Cluster == nil {
		return 1
	}
	return uint32(s.opts.Cluster.Members())
}

func adminErr(r *actors.AdminReply) error { return r.Err }

// CreateQueue implements filav1.FilaAdminServer. The queue's id is its name.
func (s *Server) CreateQueue(ctx context.Context, req *filav1.CreateQueueRequest) (*filav1.CreateQueueResponse, error) {
	annotate(ctx, "", req.GetName(), "")
	if _, err := askFor(s, ctx, &call{req: req}, adminErr); err != nil {
		return nil, err
	}
	return &filav1.CreateQueueResponse{QueueId: req.GetName()}, nil
}

// DeleteQueue implements filav1.FilaAdminServer.
func (s *Server) DeleteQueue(ctx context.Context, req *filav1.DeleteQueueRequest) (*filav1.DeleteQueueResponse, error) {
	annotate(ctx, "", req.GetQueue(), "")
	if _, err := askFor(s, ctx, &call{req: req}, adminErr); err != nil {
		return nil, err
	}
	return &filav1.DeleteQueueResponse{}, nil
}

// GetStats implements filav1.FilaAdminServer; the figures are the queue
// actor's own, exact at the moment it answered.
func (s *Server) GetStats(ctx context.Context, req *filav1.GetStatsRequest) (*filav1.GetStatsResponse, error) {
	annotate(ctx, "", req.GetQueue(), "")
	st, err := askFor(s, ctx, &call{req: req}, func(*actors.QueueStats) error { return nil })
	if err != nil {
		return nil, err
	}
	page, next, err := keyPage(st.Keys, req.GetSort(), req.GetLimit(), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &filav1.GetStatsResponse{
		Depth:              uint64(st.Depth),
		InFlight:           uint64(st.InFlight),
		ActiveFairnessKeys: uint64(len(st.Keys)),
		ActiveConsumers:    uint32(st.Consumers),
		Quantum:            uint32(st.Quantum),
		NextPageToken:      next,
		Delayed:            uint64(st.Delayed),
		Config:             configProto(st.Config),
	}
	resp.LeaderNodeId, resp.ReplicationCount = s.replication(req.GetQueue())
	for _, ts := range s.sys.Throttles().Stats(time.Now()) {
		resp.PerThrottleStats = append(resp.PerThrottleStats, &filav1.PerThrottleKeyStats{
			Key: ts.Key, Tokens: ts.Tokens, RatePerSecond: ts.RatePerSec, Burst: float64(ts.Burst),
		})
	}
	for _, k := range page {
		resp.PerKeyStats = append(resp.PerKeyStats, &filav1.PerFairnessKeyStats{
			Key: k.Key, PendingCount: uint64(k.Pending), CurrentDeficit: k.Deficit, Weight: uint32(k.Weight),
		})
	}
	return resp, nil
}

// ListQueues implements filav1.FilaAdminServer. It reads the telemetry
// actor's published readings rather than asking every queue, so it never
// waits on a busy queue; the figures trail the queues by at most one
// mailbox burst.
func (s *Server) ListQueues(ctx context.Context, _ *filav1.ListQueuesRequest) (*filav1.ListQueuesResponse, error) {
	if s.closing.Load() {
		return nil, toStatus(actors.ErrShuttingDown)
	}
	readings := s.sys.Board().Snapshot()
	resp := &filav1.ListQueuesResponse{ClusterNodeCount: s.clusterNodes()}
	for _, name := range s.sys.Directory().Names() {
		g := readings[name]
		// A queue led elsewhere has no reading here (its gauges are its
		// leader's): its zeros come with the node to ask.
		leader, _ := s.replication(name)
		resp.Queues = append(resp.Queues, &filav1.QueueInfo{
			LeaderNodeId:    leader,
			Name:            name,
			Depth:           uint64(g.Gauges[telemetry.Depth]),
			InFlight:        uint64(g.Gauges[telemetry.LeasesActive]),
			ActiveConsumers: uint32(g.Gauges[telemetry.ConsumersActive]),
			Delayed:         uint64(g.Gauges[telemetry.Delayed]),
		})
	}
	return resp, nil
}

// UpdateQueue implements filav1.FilaAdminServer.
func (s *Server) UpdateQueue(ctx context.Context, req *filav1.UpdateQueueRequest) (*filav1.UpdateQueueResponse, error) {
	annotate(ctx, "", req.GetName(), "")
	r, err := askFor(s, ctx, &call{req: req}, func(r *actors.UpdateQueueReply) error { return r.Err })
	if err != nil {
		return nil, err
	}
	return &filav1.UpdateQueueResponse{Config: configProto(r.Config)}, nil
}

func moveErr(r *actors.MoveReply) error { return r.Err }

// Redrive implements filav1.FilaAdminServer.
func (s *Server) Redrive(ctx context.Context, req *filav1.RedriveRequest) (*filav1.RedriveResponse, error) {
	annotate(ctx, "", req.GetDlqQueue(), "")
	r, err := askFor(s, ctx, &call{req: req}, moveErr)
	if err != nil {
		return nil, err
	}
	return &filav1.RedriveResponse{Redriven: r.Moved}, nil
}

// PurgeQueue implements filav1.FilaAdminServer.
func (s *Server) PurgeQueue(ctx context.Context, req *filav1.PurgeQueueRequest) (*filav1.PurgeQueueResponse, error) {
	annotate(ctx, "", req.GetQueue(), "")
	r, err := askFor(s, ctx, &call{req: req}, moveErr)
	if err != nil {
		return nil, err
	}
	return &filav1.PurgeQueueResponse{Purged: r.Moved}, nil
}

// MaxPeekBytes bounds the payload bytes of one Peek answer: a page ends
// early rather than go over it (it always holds at least one message).
const MaxPeekBytes = 4 << 20

// Peek implements filav1.FilaAdminServer.
func (s *Server) Peek(ctx context.Context, req *filav1.PeekRequest) (*filav1.PeekResponse, error) {
	annotate(ctx, "", req.GetQueue(), "")
	r, err := askFor(s, ctx, &call{req: req}, func(*actors.PeekReply) error { return nil })
	if err != nil {
		return nil, err
	}
	resp := &filav1.PeekResponse{}
	bytes := 0
	for i, m := range r.Messages {
		rec := m.Record
		if req.GetIncludePayload() && i > 0 && bytes+len(rec.GetPayload()) > MaxPeekBytes {
			r.More = true
			break
		}
		pm := &filav1.PeekedMessage{
			Id:          m.ID,
			Headers:     rec.GetHeaders(),
			PayloadSize: uint64(len(rec.GetPayload())),
			Metadata: &filav1.MessageMetadata{
				FairnessKey: rec.GetFairnessKey(), Weight: rec.GetWeight(), ThrottleKeys: rec.GetThrottleKeys(),
				AttemptCount: rec.GetAttemptCount(), QueueId: req.GetQueue(),
			},
			EnqueuedAt: timestamppb.New(time.Unix(0, rec.GetEnqueuedAtUnixNs())),
		}
		if req.GetIncludePayload() {
			pm.Payload = rec.GetPayload()
			bytes += len(rec.GetPayload())
		}
		if !m.ReadyAt.IsZero() {
			pm.ReadyAt = timestamppb.New(m.ReadyAt)
		}
		resp.Messages = append(resp.Messages, pm)
	}
	if r.More && len(resp.Messages) > 0 {
		resp.NextPageToken = resp.Messages[len(resp.Messages)-1].GetId()
	}
	return resp, nil
}

// SetConfig implements filav1.FilaAdminServer.
func (s *Server) SetConfig(ctx context.Context, req *filav1.SetConfigRequest) (*filav1.SetConfigResponse, error) {
	if _, err := askFor(s, ctx, &call{req: req}, adminErr); err != nil {
		return nil, err
	}
	return &filav1.SetConfigResponse{}, nil
}

// GetConfig implements filav1.FilaAdminServer; a key that is not set
// answers an empty value, as in Fila (SetConfig of "" deletes a key, so ""
// and unset are one state).
func (s *Server) GetConfig(_ context.Context, req *filav1.GetConfigRequest) (*filav1.GetConfigResponse, error) {
	if err := validateConfigKey("key", req.GetKey()); err != nil {
		return nil, toStatus(err)
	}
	if strings.HasPrefix(req.GetKey(), reservedConfigPrefix) {
		return &filav1.GetConfigResponse{}, nil
	}
	v, _ := s.sys.RuntimeConfig().Get(req.GetKey())
	return &filav1.GetConfigResponse{Value: v}, nil
}

// ListConfig implements filav1.FilaAdminServer. It answers the first
// MaxKeyPage entries under the prefix, in key order, within MaxPeekBytes of
// values; total_count counts them all, so a client sees when to narrow the
// prefix.
func (s *Server) ListConfig(_ context.Context, req *filav1.ListConfigRequest) (*filav1.ListConfigResponse, error) {
	if p := req.GetPrefix(); p != "" {
		if err := validateConfigKey("prefix", p); err != nil {
			return nil, toStatus(err)
		}
	}
	entries := slices.DeleteFunc(s.sys.RuntimeConfig().List(req.GetPrefix()), func(e storage.ConfigEntry) bool {
		return strings.HasPrefix(e.Key, reservedConfigPrefix)
	})
	resp := &filav1.ListConfigResponse{TotalCount: uint32(len(entries))}
	bytes := 0
	for _, e := range entries {
		if bytes += len(e.Value); len(resp.Entries) == MaxKeyPage || bytes > MaxPeekBytes {
			break
		}
		resp.Entries = append(resp.Entries, &filav1.ConfigEntry{Key: e.Key, Value: e.Value})
	}
	return resp, nil
}

// reservedConfigPrefix holds the api keys in the runtime config store: the
// config RPCs neither show nor change it.
const reservedConfigPrefix = "auth."
