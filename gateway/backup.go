package gateway

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// backupChunkBytes is the size of one BackupChunk: well under gRPC's 4 MiB
// default receive limit.
const backupChunkBytes = 256 << 10

// Backup implements filav1.FilaAdminServer: the store's snapshot, in
// chunks, as the client reads them (a slow client slows the backup, not
// the broker: the snapshot is a read at one timestamp).
func (s *Server) Backup(_ *filav1.BackupRequest, stream filav1.FilaAdmin_BackupServer) error {
	if s.opts.Backup == nil {
		return status.Error(codes.Unimplemented, "this filad's store has no online backup: a cluster node's is not built yet (docs/backup.md), and an in-memory store has none")
	}
	w := &chunkWriter{stream: stream, buf: make([]byte, 0, backupChunkBytes)}
	if err := s.opts.Backup(w); err != nil {
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			return err // the stream's own failure: the client went away
		}
		if stream.Context().Err() != nil {
			return status.FromContextError(stream.Context().Err()).Err()
		}
		return status.Errorf(codes.Internal, "backup failed: %v", err)
	}
	return w.flush()
}

// chunkWriter sends what it is given in chunks of backupChunkBytes.
type chunkWriter struct {
	stream filav1.FilaAdmin_BackupServer
	buf    []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(len(p), backupChunkBytes-len(w.buf))
		w.buf = append(w.buf, p[:take]...)
		p = p[take:]
		if len(w.buf) == backupChunkBytes {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.stream.Send(&filav1.BackupChunk{Data: w.buf})
	w.buf = w.buf[:0]
	return err
}
