package actors

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/fila-dev/filad/auth"
	"github.com/fila-dev/filad/storage"
)

// RuntimeConfigLimits bound the runtime config store (Options.ConfigStore;
// the [limits] max_config_keys, max_config_bytes and max_api_keys). API
// keys (auth.KeyPrefix entries) have a budget of their own, so that config
// entries cannot lock operators out of creating keys, nor keys fill the
// store for policy. A write past a limit is ErrLimit naming it, and changes
// nothing; deletes, and writes that do not grow what a limit counts, are
// always accepted, so a store over a lowered limit can be brought under it.
type RuntimeConfigLimits struct {
	// MaxKeys bounds the entries other than API keys. Required: at least 1.
	MaxKeys int
	// MaxBytes bounds the bytes of those entries' keys and values together.
	// Required: at least 1.
	MaxBytes int
	// MaxAPIKeys bounds the API keys. Required: at least 1.
	MaxAPIKeys int
}

func (l RuntimeConfigLimits) valid() bool {
	return l.MaxKeys >= 1 && l.MaxBytes >= 1 && l.MaxAPIKeys >= 1
}

// RuntimeConfig is the runtime config store: a durable key/value table
// that operators set (SetConfig) and queue policy reads, and where the API
// keys live. Reads are lock-free snapshots, safe from any goroutine; the
// broker actor is the one writer (its commands), so writes are serialised
// and each is durable before it shows.
type RuntimeConfig struct {
	entries atomic.Pointer[[]storage.ConfigEntry] // sorted by key
	version atomic.Uint64                         // grows with every change
	limits  RuntimeConfigLimits
	// usage is what the limits count now; only the writer touches it.
	usage configUsage
	// changed is closed, and replaced, at every change (Changed).
	changed atomic.Pointer[chan struct{}]
}

// Changed returns a channel closed at the next change of the snapshot,
// whichever node wrote it: a watcher takes it, reads the snapshot, and
// waits on it.
func (r *RuntimeConfig) Changed() <-chan struct{} { return *r.changed.Load() }

// published bumps the version and wakes the watchers of Changed; the
// writer calls it after storing a new snapshot.
func (r *RuntimeConfig) published() {
	r.version.Add(1)
	next := make(chan struct{})
	close(*r.changed.Swap(&next))
}

// configUsage is what RuntimeConfigLimits count.
type configUsage struct{ keys, bytes, apiKeys int }

// add counts e in (n = 1) or out (n = -1).
func (u *configUsage) add(key, value string, n int) {
	if strings.HasPrefix(key, auth.KeyPrefix) {
		u.apiKeys += n
		return
	}
	u.keys += n
	u.bytes += n * (len(key) + len(value))
}

// Version grows with every change; readers cache by it.
func (r *RuntimeConfig) Version() uint64 { return r.version.Load() }

// loadRuntimeConfig reads the stored entries. A store over limits (written
// under higher ones) loads whole: the limits refuse only what grows it.
func loadRuntimeConfig(store storage.Store, limits RuntimeConfigLimits) (*RuntimeConfig, error) {
	entries, err := store.ConfigEntries()
	if err != nil {
		return nil, fmt.Errorf("actors: load runtime config: %w", err)
	}
	r := &RuntimeConfig{limits: limits}
	first := make(chan struct{})
	r.changed.Store(&first)
	for _, e := range entries {
		r.usage.add(e.Key, e.Value, 1)
	}
	r.entries.Store(&entries)
	return r, nil
}

// Get returns key's value, and whether it is set.
func (r *RuntimeConfig) Get(key string) (string, bool) {
	es := *r.entries.Load()
	i, ok := slices.BinarySearchFunc(es, key, func(e storage.ConfigEntry, k string) int { return strings.Compare(e.Key, k) })
	if !ok {
		return "", false
	}
	return es[i].Value, true
}

// List returns the entries whose keys start with prefix, in key order.
func (r *RuntimeConfig) List(prefix string) []storage.ConfigEntry {
	es := *r.entries.Load()
	i, _ := slices.BinarySearchFunc(es, prefix, func(e storage.ConfigEntry, k string) int { return strings.Compare(e.Key, k) })
	j := i
	for j < len(es) && strings.HasPrefix(es[j].Key, prefix) {
		j++
	}
	return slices.Clone(es[i:j])
}

// checkSet is nil if key may be set to value ("" deletes) within the
// limits. Only the broker calls it, when it decides a command.
func (r *RuntimeConfig) checkSet(key, value string) error {
	if value == "" {
		return nil
	}
	return r.limits.check(r.usage, r.usageAfter(key, value))
}

// usageAfter is what the limits would count once key holds value.
func (r *RuntimeConfig) usageAfter(key, value string) configUsage {
	next := r.usage
	if old, found := r.Get(key); found {
		next.add(key, old, -1)
	}
	if value != "" {
		next.add(key, value, 1)
	}
	return next
}

// apply publishes key's new value ("" deletes it), once it is durable.
// Only the broker calls it, from its one apply.
func (r *RuntimeConfig) apply(key, value string) {
	next := r.usageAfter(key, value)
	es := slices.Clone(*r.entries.Load())
	i, found := slices.BinarySearchFunc(es, key, func(e storage.ConfigEntry, k string) int { return strings.Compare(e.Key, k) })
	switch {
	case value == "" && found:
		es = slices.Delete(es, i, i+1)
	case value != "" && found:
		es[i].Value = value
	case value != "":
		es = slices.Insert(es, i, storage.ConfigEntry{Key: key, Value: value})
	}
	r.usage = next
	r.entries.Store(&es)
	r.published()
}

// APIKeys are the API keys stored (auth.KeyPrefix entries), by name; an
// entry that does not decode is skipped.
func (r *RuntimeConfig) APIKeys() []*auth.Key {
	var out []*auth.Key
	for _, e := range r.List(auth.KeyPrefix) {
		if k, err := auth.Decode(e.Value); err == nil {
			out = append(out, k)
		}
	}
	return out
}

// KeyByID is the stored API key whose key_id is id, or an ErrNotFound
// naming it (the bootstrap key has none: it is not stored).
func (r *RuntimeConfig) KeyByID(id string) (*auth.Key, error) {
	for _, k := range r.APIKeys() {
		if k.KeyID() == id {
			return k, nil
		}
	}
	return nil, errorOf(ErrNotFound, "api key with key_id %q does not exist", id)
}

// keyByName is the stored API key named name, or an ErrNotFound naming it.
func (r *RuntimeConfig) keyByName(name string) (*auth.Key, error) {
	if v, ok := r.Get(auth.KeyPrefix + name); ok {
		if k, err := auth.Decode(v); err == nil {
			return k, nil
		}
	}
	return nil, errorOf(ErrNotFound, "api key %q does not exist", name)
}

// check refuses a write that takes usage from now to next when it grows a
// count past its limit.
func (l RuntimeConfigLimits) check(now, next configUsage) error {
	switch {
	case next.apiKeys > now.apiKeys && next.apiKeys > l.MaxAPIKeys:
		return fmt.Errorf("%w: %d api keys exist, the limit (limits.max_api_keys); revoke one first", ErrLimit, now.apiKeys)
	case next.keys > now.keys && next.keys > l.MaxKeys:
		return fmt.Errorf("%w: the runtime config store holds %d keys, the limit (limits.max_config_keys)", ErrLimit, now.keys)
	case next.bytes > now.bytes && next.bytes > l.MaxBytes:
		return fmt.Errorf("%w: the runtime config store would hold %d bytes of keys and values, over limits.max_config_bytes (%d)",
			ErrLimit, next.bytes, l.MaxBytes)
	}
	return nil
}

// Commands of the runtime config store and the API keys in it (see
// commands.go). API keys are entries under auth.KeyPrefix; SetConfig
// writes any key (the gateway refuses that prefix on its SetConfig RPC),
// the key commands only theirs, and they check what a key's life needs.
type (
	// CreateKey stores a new API key. A name already stored is ErrExists;
	// the api key limit is ErrLimit. Reply: *AdminReply.
	CreateKey struct{ Key *auth.Key }
	// RevokeKey deletes the API key whose key_id is ID, or (ID "") named
	// Name; with both, Name must be that key's name (ErrInvalid). A key not
	// stored is ErrNotFound. Reply: *KeyReply, with the key revoked.
	RevokeKey struct{ ID, Name string }
	// SetAcl replaces the permissions of the API key whose key_id is KeyID
	// (ErrNotFound if none). Reply: *KeyReply, with the key as now stored.
	SetAcl struct {
		KeyID       string
		Permissions []auth.Permission
	}
	// KeyReply answers RevokeKey and SetAcl.
	KeyReply struct {
		Key *auth.Key
		Err error
	}
)

// decide checks a SetConfig against the limits.
func (m *SetConfig) decide(b *brokerActor) (*decision, error) {
	if err := b.runtime.checkSet(m.Key, m.Value); err != nil {
		return nil, err
	}
	return &decision{entry: &configSet{key: m.Key, value: m.Value}, done: answer(&AdminReply{})}, nil
}

func (m *SetConfig) refuse(err error) any { return &AdminReply{Err: err} }

// decide checks a CreateKey: its name must be free, and within the api
// key limit.
func (m *CreateKey) decide(b *brokerActor) (*decision, error) {
	key, value := auth.KeyPrefix+m.Key.Name, m.Key.Encode()
	if _, taken := b.runtime.Get(key); taken {
		return nil, errorOf(ErrExists, "api key %q exists (revoke it first)", m.Key.Name)
	}
	if err := b.runtime.checkSet(key, value); err != nil {
		return nil, err
	}
	return &decision{entry: &configSet{key: key, value: value}, done: answer(&AdminReply{})}, nil
}

func (m *CreateKey) refuse(err error) any { return &AdminReply{Err: err} }

// decide checks a RevokeKey: the key must be stored.
func (m *RevokeKey) decide(b *brokerActor) (*decision, error) {
	var k *auth.Key
	var err error
	if m.ID != "" {
		if k, err = b.runtime.KeyByID(m.ID); err != nil {
			return nil, err
		}
		if m.Name != "" && m.Name != k.Name {
			return nil, errorOf(ErrInvalid, "name: %q is not the name of key_id %q", m.Name, m.ID)
		}
	} else if k, err = b.runtime.keyByName(m.Name); err != nil {
		return nil, err
	}
	return &decision{entry: &configSet{key: auth.KeyPrefix + k.Name}, done: answer(&KeyReply{Key: k})}, nil
}

func (m *RevokeKey) refuse(err error) any { return &KeyReply{Err: err} }

// decide checks a SetAcl: the key must be stored. The new key is the
// stored one with the new permissions, read and written by the one
// writer, so a SetAcl cannot bring back a key revoked meanwhile.
func (m *SetAcl) decide(b *brokerActor) (*decision, error) {
	k, err := b.runtime.KeyByID(m.KeyID)
	if err != nil {
		return nil, err
	}
	k.Permissions = m.Permissions
	key, value := auth.KeyPrefix+k.Name, k.Encode()
	if err := b.runtime.checkSet(key, value); err != nil {
		return nil, err
	}
	return &decision{entry: &configSet{key: key, value: value}, done: answer(&KeyReply{Key: k})}, nil
}

func (m *SetAcl) refuse(err error) any { return &KeyReply{Err: err} }
