package server

import "github.com/fila-dev/filad/storage"

// StoreForTest is the store the node's actors write through (in a
// cluster, the replicated store over its local replica), for tests that
// read a node's state directly.
func (s *Server) StoreForTest() storage.Store { return s.store }

// JoinRefused is joinRefused, for the external tests.
var JoinRefused = joinRefused
