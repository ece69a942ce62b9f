package actors

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/fila-dev/filad/storage"
)

// MaxRuntimeConfigKeys bounds the runtime config store.
const MaxRuntimeConfigKeys = 10_000

// RuntimeConfig is the runtime config store: a durable key/value table
// that operators set (SetConfig) and queue policy reads. Reads are
// lock-free snapshots, safe from any goroutine; the broker actor is the one
// writer, so writes are serialised and each is durable before it shows.
type RuntimeConfig struct {
	entries atomic.Pointer[[]storage.ConfigEntry] // sorted by key
	version atomic.Uint64                         // grows with every change
}

// Version grows with every change; readers cache by it.
func (r *RuntimeConfig) Version() uint64 { return r.version.Load() }

func loadRuntimeConfig(store storage.Store) (*RuntimeConfig, error) {
	entries, err := store.ConfigEntries()
	if err != nil {
		return nil, fmt.Errorf("actors: load runtime config: %w", err)
	}
	r := &RuntimeConfig{}
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
	if !found && value != "" && len(es) >= MaxRuntimeConfigKeys {
		return fmt.Errorf("%w: the runtime config store holds %d keys, the limit", ErrOverloaded, MaxRuntimeConfigKeys)
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
	next := slices.Clone(es)
	switch {
	case value == "" && found:
		next = slices.Delete(next, i, i+1)
	case value != "" && found:
		next[i].Value = value
	case value != "":
		next = slices.Insert(next, i, storage.ConfigEntry{Key: key, Value: value})
	}
	r.entries.Store(&next)
	r.version.Add(1)
	return nil
}
