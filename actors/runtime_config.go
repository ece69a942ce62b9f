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
// that operators set (SetConfig) and queue policy reads. Reads are
// lock-free snapshots, safe from any goroutine; the broker actor is the one
// writer, so writes are serialised and each is durable before it shows.
type RuntimeConfig struct {
	entries atomic.Pointer[[]storage.ConfigEntry] // sorted by key
	version atomic.Uint64                         // grows with every change
	limits  RuntimeConfigLimits
	// usage is what the limits count now; only the writer touches it.
	usage configUsage
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

// set writes key durably, then publishes it; "" deletes. Only the broker
// actor calls it.
func (r *RuntimeConfig) set(store storage.Store, key, value string) error {
	es := *r.entries.Load()
	i, found := slices.BinarySearchFunc(es, key, func(e storage.ConfigEntry, k string) int { return strings.Compare(e.Key, k) })
	next := r.usage
	if found {
		next.add(key, es[i].Value, -1)
	}
	if value != "" {
		next.add(key, value, 1)
		if err := r.limits.check(r.usage, next); err != nil {
			return err
		}
	}
	var b storage.Batch
	if value == "" {
		b.DeleteConfig(key)
	} else {
		b.PutConfig(key, value)
	}
	if err := store.Write(&b); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	es = slices.Clone(es)
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
	r.version.Add(1)
	return nil
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
