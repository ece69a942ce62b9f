package storage

import (
	"bytes"
	"testing"
)

// Every key kind of the layout lies under one of its owner's prefixes, so
// a snapshot of the meta group or of a partition (which scans them) takes
// it along. The node table was once left out of the meta group's.
func TestOwnerPrefixesCoverEveryKeyKind(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
		meta bool
	}{
		{"queue definition", queueKey("orders"), true},
		{"deletion mark", deletedKey("orders"), true},
		{"runtime config", configKey("throttle.x"), true},
		{"node", nodeKey(3), true},
		{"schema version", schemaKey(), true},
		{"message", itemKey(prefixMessage, "orders", "m1"), false},
		{"lease", itemKey(prefixLease, "orders", "m1"), false},
		{"index record", itemKey(prefixIndex, "orders", "m1"), false},
		{"indexed mark", indexedKey("orders"), false},
	} {
		o, ok := KeyOwner(tc.key)
		if !ok || o.Meta != tc.meta {
			t.Errorf("%s: owner %+v (ok %v), want meta=%v", tc.name, o, ok, tc.meta)
		}
		under := 0
		for _, p := range OwnerPrefixes(tc.meta) {
			if bytes.HasPrefix(tc.key, p) {
				under++
			}
		}
		if under != 1 {
			t.Errorf("%s: under %d of its owner's prefixes, want 1", tc.name, under)
		}
		for _, p := range OwnerPrefixes(!tc.meta) {
			if bytes.HasPrefix(tc.key, p) {
				t.Errorf("%s: under the other owner's prefix %q", tc.name, p)
			}
		}
	}
	for _, meta := range []bool{true, false} {
		ps := OwnerPrefixes(meta)
		for i := 1; i < len(ps); i++ {
			if bytes.Compare(ps[i-1], ps[i]) >= 0 {
				t.Errorf("prefixes (meta=%v) not in key order: %q before %q", meta, ps[i-1], ps[i])
			}
		}
	}
}
