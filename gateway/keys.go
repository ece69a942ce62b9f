package gateway

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/auth"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/telemetry"
)

// The API-key RPCs follow Fila's key model (docs/compatibility.md): a key
// has a key_id, may be a superadmin, and may be created with no permissions
// and granted them later with SetAcl. Keys live in the runtime config store
// under auth.KeyPrefix + name, and the broker's key commands (CreateKey,
// RevokeKey, SetAcl) are their one writer: it checks that a key exists, or
// does not, in the step that writes it (SetConfig refuses the prefix).
// s.keysMu orders what follows a change here (ending the key's streams)
// with the changes after it, so that a revoke's end of streams cannot land
// on the key of that name created after it.

// maxExpiresAtMs is the latest expires_at_ms a key may have (auth's limit).
var maxExpiresAtMs = uint64(time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).UnixMilli())

// CreateApiKey implements filav1.FilaAdminServer: it stores the new key's
// hash and permissions and returns its secret, this once. Only a superadmin
// (or the bootstrap key) may create a superadmin, as in Fila.
func (s *Server) CreateApiKey(ctx context.Context, req *filav1.CreateApiKeyRequest) (*filav1.CreateApiKeyResponse, error) {
	if req.GetIsSuperadmin() {
		if caller := callerOf(ctx); caller != nil && !caller.Superadmin {
			return nil, status.Error(codes.PermissionDenied, "is_superadmin: only a superadmin key (or the bootstrap key) may create a superadmin key")
		}
	}
	k := &auth.Key{ID: auth.NewKeyID(), Name: req.GetName(), Superadmin: req.GetIsSuperadmin(), CreatedAt: time.Now().UTC()}
	for _, p := range req.GetPermissions() {
		perm := auth.Permission{Pattern: p.GetQueuePattern()}
		for _, a := range p.GetActions() {
			perm.Actions = append(perm.Actions, auth.Action(a))
		}
		k.Permissions = append(k.Permissions, perm)
	}
	if ms := req.GetExpiresAtMs(); ms != 0 {
		if ms > maxExpiresAtMs {
			return nil, toStatus(invalid("expires_at_ms: %d is after the limit of 9999-12-31T23:59:59Z (%d)", ms, maxExpiresAtMs))
		}
		k.ExpiresAt = time.UnixMilli(int64(ms)).UTC()
	}
	if err := k.Validate(); err != nil {
		return nil, toStatus(invalid("%v", err))
	}
	if k.Name == auth.BootstrapName {
		return nil, toStatus(invalid("name: %q is the config's bootstrap key", auth.BootstrapName))
	}
	secret, err := auth.NewSecret()
	if err != nil {
		return nil, toStatus(err)
	}
	k.Hash = auth.Hash(secret)
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if _, err := s.keyCommand(ctx, &actors.CreateKey{Key: k}); err != nil {
		return nil, err
	}
	return &filav1.CreateApiKeyResponse{KeyId: k.KeyID(), Key: secret, IsSuperadmin: k.Superadmin, Name: k.Name}, nil
}

// RevokeApiKey implements filav1.FilaAdminServer: the key, named by key_id
// or by name, stops working at once, and its open Consume streams end
// (UNAUTHENTICATED).
func (s *Server) RevokeApiKey(ctx context.Context, req *filav1.RevokeApiKeyRequest) (*filav1.RevokeApiKeyResponse, error) {
	if req.GetKeyId() == "" && req.GetName() == "" {
		return nil, toStatus(invalid("key_id: required (or name)"))
	}
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	k, err := s.keyCommand(ctx, &actors.RevokeKey{ID: req.GetKeyId(), Name: req.GetName()})
	if err != nil {
		return nil, err
	}
	if s.opts.Auth != nil {
		s.opts.Auth.revoked(k.Name)
	}
	return &filav1.RevokeApiKeyResponse{}, nil
}

// ListApiKeys implements filav1.FilaAdminServer: ids, names, rights and
// dates, never secrets. The bootstrap key is not listed: it is not stored.
func (s *Server) ListApiKeys(_ context.Context, _ *filav1.ListApiKeysRequest) (*filav1.ListApiKeysResponse, error) {
	resp := &filav1.ListApiKeysResponse{}
	for _, k := range s.sys.RuntimeConfig().APIKeys() {
		info := &filav1.ApiKeyInfo{
			KeyId: k.KeyID(), Name: k.Name, CreatedAtMs: unixMs(k.CreatedAt), ExpiresAtMs: unixMs(k.ExpiresAt),
			IsSuperadmin: k.Superadmin, Fingerprint: k.Hash[:min(8, len(k.Hash))],
		}
		for _, p := range k.Permissions {
			perm := &filav1.Permission{QueuePattern: p.Pattern}
			for _, a := range p.Actions {
				perm.Actions = append(perm.Actions, string(a))
			}
			info.Permissions = append(info.Permissions, perm)
		}
		resp.Keys = append(resp.Keys, info)
	}
	return resp, nil
}

// SetAcl implements filav1.FilaAdminServer: the key's permissions become
// the request's (none leaves it no rights). Its open Consume streams on a
// queue it may no longer consume from end with PERMISSION_DENIED.
func (s *Server) SetAcl(ctx context.Context, req *filav1.SetAclRequest) (*filav1.SetAclResponse, error) {
	if req.GetKeyId() == "" {
		return nil, toStatus(invalid("key_id: required"))
	}
	perms := make([]auth.Permission, len(req.GetPermissions()))
	for i, p := range req.GetPermissions() {
		perms[i] = auth.Permission{Pattern: p.GetPattern(), Actions: []auth.Action{auth.Action(p.GetKind())}}
	}
	if err := auth.ValidatePermissions(perms); err != nil {
		return nil, toStatus(invalid("%v", err))
	}
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	k, err := s.keyCommand(ctx, &actors.SetAcl{KeyID: req.GetKeyId(), Permissions: perms})
	if err != nil {
		return nil, err
	}
	if s.opts.Auth != nil {
		s.opts.Auth.aclChanged(k)
	}
	return &filav1.SetAclResponse{}, nil
}

// GetAcl implements filav1.FilaAdminServer: one AclPermission per kind
// and pattern, in the order granted.
func (s *Server) GetAcl(_ context.Context, req *filav1.GetAclRequest) (*filav1.GetAclResponse, error) {
	if req.GetKeyId() == "" {
		return nil, toStatus(invalid("key_id: required"))
	}
	k, err := s.keyByID(req.GetKeyId())
	if err != nil {
		return nil, err
	}
	resp := &filav1.GetAclResponse{KeyId: k.KeyID(), IsSuperadmin: k.Superadmin}
	for _, p := range k.Permissions {
		for _, a := range p.Actions {
			resp.Permissions = append(resp.Permissions, &filav1.AclPermission{Kind: string(a), Pattern: p.Pattern})
		}
	}
	return resp, nil
}

// keyCommand has the broker run a key command, and returns the key it
// changed (nil for CreateKey).
func (s *Server) keyCommand(ctx context.Context, m any) (*auth.Key, error) {
	res, err := s.sys.Ask(ctx, s.sys.Broker(), telemetry.InjectHeaders(ctx), m)
	if err != nil {
		return nil, toStatus(err)
	}
	switch r := res.(type) {
	case *actors.AdminReply:
		return nil, toStatus(r.Err)
	case *actors.KeyReply:
		return r.Key, toStatus(r.Err)
	}
	return nil, status.Errorf(codes.Internal, "gateway: unexpected reply %T to %T", res, m)
}

// keyByID is the stored key whose key_id is id, or NOT_FOUND.
func (s *Server) keyByID(id string) (*auth.Key, error) {
	k, err := s.sys.RuntimeConfig().KeyByID(id)
	return k, toStatus(err)
}

// unixMs is t in Unix milliseconds; 0 for the zero time.
func unixMs(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(max(t.UnixMilli(), 0)) // keys are never dated before 1970
}
