package storage

import (
	"encoding/binary"
	"fmt"
)

// prefixSchema holds the schema version of the stored data (see the
// package doc's layout): which of filad's migrations have run on it.
const prefixSchema = 'v'

func schemaKey() []byte { return []byte{prefixSchema, sep} }

// SetSchemaVersion records that the stored data is at schema version v:
// every migration up to v has run. Put it in the batch of the migration's
// changes, so that a crash leaves the data either migrated and marked, or
// neither. The version is the meta owner's, as queue definitions are.
func (b *Batch) SetSchemaVersion(v uint64) {
	b.own(MetaOwner)
	b.add("", op{key: schemaKey(), value: binary.BigEndian.AppendUint64(nil, v)})
}

// schemaVersion is Store.SchemaVersion over scan.
func schemaVersion(scan scanFunc) (uint64, error) {
	var v uint64
	err := scan(schemaKey(), func(_, value []byte) error {
		if len(value) != 8 {
			return fmt.Errorf("storage: schema version of %d bytes, not 8", len(value))
		}
		v = binary.BigEndian.Uint64(value)
		return nil
	})
	return v, err
}

// SchemaVersion implements Store.
func (s *Badger) SchemaVersion() (uint64, error) { return schemaVersion(s.scan) }

// SchemaVersion implements Store.
func (m *Memory) SchemaVersion() (uint64, error) { return schemaVersion(m.scan) }
