package server

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// startProfiling serves Go's runtime profiles (net/http/pprof's CPU,
// heap, allocation, goroutine, block, mutex and execution-trace handlers)
// on server.pprof_listen_addr when it is set. Config accepts only a
// loopback address: profiles show code paths and timings, and a
// goroutine dump shows the stacks of calls in flight, so they are for an
// operator or a benchmark on the same machine. The command line handler
// is left out (it is not a profile). Nothing is served by default.
func (s *Server) startProfiling() error {
	addr := s.cfg.Server.PprofListenAddr
	if addr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server.pprof_listen_addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // and every named profile under it
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.profiling = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.profilingAddr = lis.Addr()
	go func() { _ = s.profiling.Serve(lis) }()
	s.log.Info("runtime profiles served", slog.String("url", "http://"+lis.Addr().String()+"/debug/pprof/"))
	return nil
}

// ProfilingAddr is where the runtime profiles are served, nil when
// server.pprof_listen_addr is not set.
func (s *Server) ProfilingAddr() net.Addr { return s.profilingAddr }
