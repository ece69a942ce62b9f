package gateway

import (
	"context"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

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
		ActiveFairnessKeys: uint32(len(st.Keys)),
		ActiveConsumers:    uint32(st.Consumers),
		Quantum:            uint32(st.Quantum),
		NextPageToken:      next,
	}
	for _, k := range page {
		resp.PerKeyStats = append(resp.PerKeyStats, &filav1.PerKeyStats{
			Key: k.Key, Pending: uint64(k.Pending), Deficit: k.Deficit, Weight: uint32(k.Weight),
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
	resp := &filav1.ListQueuesResponse{}
	for _, name := range s.sys.Directory().Names() {
		g := readings[name]
		resp.Queues = append(resp.Queues, &filav1.QueueInfo{
			Name:            name,
			Depth:           uint64(g.Gauges[telemetry.Depth]),
			InFlight:        uint64(g.Gauges[telemetry.LeasesActive]),
			ActiveConsumers: uint32(g.Gauges[telemetry.ConsumersActive]),
		})
	}
	return resp, nil
}
