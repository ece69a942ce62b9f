package gateway

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Invalid UTF-8 in a string field makes protobuf refuse the whole request,
// and grpc-go answers every decode failure INTERNAL, which SPEC §4 keeps for
// storage failures. So filad's server codec finds the field, decodes the
// request with the bad bytes replaced, and remembers which field it was;
// the interceptors below then answer INVALID_ARGUMENT naming it before any
// handler runs. Nothing else about decoding changes.

// ServerOptions are the grpc.Server options the gateway's services need:
// the codec and interceptors that make request decoding errors name their
// field, and the interceptors that put the leader's address in the
// trailers of a call refused by a non-leader (status.go).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(utf8Codec{encoding.GetCodecV2("proto")}),
		grpc.ChainUnaryInterceptor(rejectInvalidUTF8Unary, leaderHintUnary),
		grpc.ChainStreamInterceptor(rejectInvalidUTF8Stream, leaderHintStream),
	}
}

// badUTF8 maps a decoded request (by pointer) to the field that held
// invalid UTF-8; the interceptor that sees the request takes the entry out.
var badUTF8 sync.Map // any → string

type utf8Codec struct{ encoding.CodecV2 }

func (c utf8Codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	m, isProto := v.(proto.Message)
	if err == nil || !isProto || !strings.Contains(err.Error(), "UTF-8") {
		return err
	}
	raw := data.Materialize()
	fixed, field, ok := sanitizeUTF8(raw, m.ProtoReflect().Descriptor(), "")
	if !ok || field == "" {
		return err
	}
	if err := proto.Unmarshal(fixed, m); err != nil {
		return err
	}
	badUTF8.Store(v, field)
	return nil
}

func rejectInvalidUTF8Unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := invalidUTF8(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func rejectInvalidUTF8Stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, utf8Stream{ss})
}

type utf8Stream struct{ grpc.ServerStream }

func (s utf8Stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return invalidUTF8(m)
}

func invalidUTF8(req any) error {
	if field, bad := badUTF8.LoadAndDelete(req); bad {
		return status.Error(codes.InvalidArgument, fmt.Sprintf("%s: not valid UTF-8", field))
	}
	return nil
}

// sanitizeUTF8 rewrites the wire bytes b of a message of type md with every
// invalid UTF-8 string replaced by a valid one, and returns the path of the
// first such field. ok is false if b is not well-formed.
func sanitizeUTF8(b []byte, md protoreflect.MessageDescriptor, prefix string) (out []byte, field string, ok bool) {
	out = make([]byte, 0, len(b))
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, "", false
		}
		tag := b[:n]
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if typ != protowire.BytesType || fd == nil || (fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.MessageKind) {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, "", false
			}
			out = append(out, tag...)
			out = append(out, b[:m]...)
			b = b[m:]
			continue
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return nil, "", false
		}
		b = b[m:]
		path := prefix + string(fd.Name())
		if fd.Kind() == protoreflect.StringKind {
			if !utf8.Valid(v) {
				v = []byte(strings.ToValidUTF8(string(v), "\uFFFD"))
				field = cmp.Or(field, path)
			}
		} else {
			sub := path + "."
			if fd.IsMap() {
				sub = prefix // a map entry's key and value are the map's
			}
			inner, bad, ok := sanitizeUTF8(v, fd.Message(), sub)
			if !ok {
				return nil, "", false
			}
			if fd.IsMap() && bad != "" {
				bad = path
			}
			v, field = inner, cmp.Or(field, bad)
		}
		out = append(out, tag...)
		out = protowire.AppendBytes(out, v)
	}
	return out, field, true
}
