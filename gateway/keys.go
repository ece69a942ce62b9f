package gateway

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/auth"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// The API-key RPCs follow Fila's key model (docs/compatibility.md): a key
// has a key_id, may be a superadmin, and may be created with no permissions
// and granted them later with SetAcl. Keys live in the runtime config store
// under auth.KeyPrefix + name; every change to them goes through s.keysMu,
// so that a SetAcl's read-modify-write cannot bring back a key revoked
// meanwhile (the gateway is their only writer: SetConfig refuses the
// prefix).

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
	if err := s.setConfig(ctx, &actors.SetConfig{Key: auth.KeyPrefix + k.Name, Value: k.Encode(), IfAbsent: true}); err != nil {
		if status.Code(err) == codes.AlreadyExists {
			return nil, status.Errorf(codes.AlreadyExists, "api key %q exists (revoke it first)", k.Name)
		}
		return nil, err
	}
	return &filav1.CreateApiKeyResponse{KeyId: k.KeyID(), Key: secret, IsSuperadmin: k.Superadmin, Name: k.Name}, nil
}

// RevokeApiKey implements filav1.FilaAdminServer: the key, named by key_id
// or by name, stops working at once, and its open Consume streams end
// (UNAUTHENTICATED).
func (s *Server) RevokeApiKey(ctx context.Context, req *filav1.RevokeApiKeyRequest) (*filav1.RevokeApiKeyResponse, error) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	var k *auth.Key
	switch id, name := req.GetKeyId(), req.GetName(); {
	case id == "" && name == "":
		return nil, toStatus(invalid("key_id: required (or name)"))
	case id != "":
		var err error
		if k, err = s.keyByID(id); err != nil {
			return nil, err
		}
		if name != "" && name != k.Name {
			return nil, toStatus(invalid("name: %q is not the name of key_id %q", name, id))
		}
	default:
		if k = s.storedKey(name); k == nil {
			return nil, status.Errorf(codes.NotFound, "api key %q does not exist", name)
		}
	}
	if err := s.setConfig(ctx, &actors.SetConfig{Key: auth.KeyPrefix + k.Name}); err != nil {
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
	for _, k := range s.storedKeys() {
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
	k, err := s.keyByID(req.GetKeyId())
	if err != nil {
		return nil, err
	}
	k.Permissions = perms
	if err := s.setConfig(ctx, &actors.SetConfig{Key: auth.KeyPrefix + k.Name, Value: k.Encode()}); err != nil {
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

// storedKeys are the keys in the runtime config store, by name.
func (s *Server) storedKeys() []*auth.Key {
	var out []*auth.Key
	for _, e := range s.sys.RuntimeConfig().List(auth.KeyPrefix) {
		if k, err := auth.Decode(e.Value); err == nil {
			out = append(out, k)
		}
	}
	return out
}

// storedKey is the stored key named name, or nil.
func (s *Server) storedKey(name string) *auth.Key {
	v, ok := s.sys.RuntimeConfig().Get(auth.KeyPrefix + name)
	if !ok {
		return nil
	}
	k, err := auth.Decode(v)
	if err != nil {
		return nil
	}
	return k
}

// keyByID is the stored key whose key_id is id, or NOT_FOUND (the
// bootstrap key has none: it is not stored).
func (s *Server) keyByID(id string) (*auth.Key, error) {
	for _, k := range s.storedKeys() {
		if k.KeyID() == id {
			return k, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "api key with key_id %q does not exist", id)
}

// unixMs is t in Unix milliseconds; 0 for the zero time.
func unixMs(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(max(t.UnixMilli(), 0)) // keys are never dated before 1970
}
