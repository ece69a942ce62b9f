package storage

import (
	"bytes"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
)

// ErrMalformedBatch wraps every error UnmarshalBatch returns for bytes
// that are not a well-formed batch.
var ErrMalformedBatch = errors.New("storage: malformed batch")

// Marshal encodes b as a storagev1.BatchRecord, keeping its ops, its unit
// boundaries, its background flag and its owner, so that UnmarshalBatch
// returns a batch that applies to the same state. It fails for a batch
// that mixes owners (CheckOwner), which no store would apply.
func (b *Batch) Marshal() ([]byte, error) {
	if err := b.CheckOwner(); err != nil {
		return nil, err
	}
	rec := &storagev1.BatchRecord{
		Family:     b.owner.Family,
		Meta:       b.owner.Meta,
		Background: b.background,
		Ops:        make([]*storagev1.BatchOp, len(b.ops)),
		UnitStarts: make([]uint32, len(b.units)),
	}
	for i, o := range b.ops {
		bo := &storagev1.BatchOp{Key: o.key}
		switch {
		case o.prefix:
			bo.Kind = storagev1.BatchOp_KIND_DELETE_PREFIX
		case o.cond != nil:
			bo.Kind, bo.Value, bo.IfValue = storagev1.BatchOp_KIND_PUT_IF_VALUE, o.value, o.cond
		case o.value == nil:
			bo.Kind = storagev1.BatchOp_KIND_DELETE
		default:
			bo.Kind, bo.Value = storagev1.BatchOp_KIND_PUT, o.value
		}
		rec.Ops[i] = bo
	}
	for i, u := range b.units {
		rec.UnitStarts[i] = uint32(u)
	}
	return proto.Marshal(rec)
}

// UnmarshalBatch decodes what Marshal encoded. It returns an error
// wrapping ErrMalformedBatch, never a partial batch, when data does not
// decode, an op's kind is unknown, its key is none filad writes, its
// value does not fit its kind, a unit starts out of order or out of
// range, a DeletePrefix shares its unit with other ops or sits in a batch
// not marked background, or the owner recorded is not the ops' owner.
// More ops may be added to the batch returned; they start a unit of their
// own.
func UnmarshalBatch(data []byte) (*Batch, error) {
	rec := &storagev1.BatchRecord{}
	if err := proto.Unmarshal(data, rec); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedBatch, err)
	}
	b := &Batch{background: rec.GetBackground(), ops: make([]op, 0, len(rec.GetOps()))}
	for i, bo := range rec.GetOps() {
		o, owner, err := decodeOp(bo)
		if err != nil {
			return nil, fmt.Errorf("%w: op %d: %w", ErrMalformedBatch, i, err)
		}
		b.own(owner)
		b.prefixes = b.prefixes || o.prefix
		b.ops = append(b.ops, o)
		b.size += o.size()
	}
	if err := b.CheckOwner(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedBatch, err)
	}
	if want := (Owner{Family: rec.GetFamily(), Meta: rec.GetMeta()}); want != b.owner {
		return nil, fmt.Errorf("%w: owner %s recorded, the ops are %s's", ErrMalformedBatch, want, b.owner)
	}
	if b.prefixes && !b.background {
		return nil, fmt.Errorf("%w: a DeletePrefix in a batch not marked background", ErrMalformedBatch)
	}
	starts := rec.GetUnitStarts()
	if len(b.ops) > 0 && (len(starts) == 0 || starts[0] != 0) {
		return nil, fmt.Errorf("%w: the first unit does not start at op 0", ErrMalformedBatch)
	}
	b.units = make([]int, len(starts))
	for i, u := range starts {
		switch {
		case int64(u) >= int64(len(b.ops)):
			return nil, fmt.Errorf("%w: unit %d starts at op %d of %d", ErrMalformedBatch, i, u, len(b.ops))
		case i > 0 && u <= starts[i-1]:
			return nil, fmt.Errorf("%w: unit %d starts at op %d, not after unit %d's %d", ErrMalformedBatch, i, u, i-1, starts[i-1])
		}
		b.units[i] = int(u)
	}
	for u := range b.units {
		if n := prefixOps(b.unit(u)); n > 0 && n < len(b.unit(u)) {
			return nil, fmt.Errorf("%w: unit %d mixes DeletePrefix with other ops", ErrMalformedBatch, u)
		}
	}
	return b, nil
}

// decodeOp checks one op and returns it with its owner, read from its key.
func decodeOp(bo *storagev1.BatchOp) (op, Owner, error) {
	o := op{key: bo.GetKey()}
	owner, items, err := keyOwner(o.key)
	if err != nil {
		return op{}, Owner{}, err
	}
	switch bo.GetKind() {
	case storagev1.BatchOp_KIND_PUT:
		o.value = bo.GetValue()
		if o.value == nil {
			o.value = []byte{} // an empty value is a put, not a delete
		}
	case storagev1.BatchOp_KIND_DELETE:
		if len(bo.GetValue()) > 0 || len(bo.GetIfValue()) > 0 {
			return op{}, Owner{}, errors.New("a delete has a value")
		}
	case storagev1.BatchOp_KIND_DELETE_PREFIX:
		if len(bo.GetValue()) > 0 || !items {
			return op{}, Owner{}, errors.New("a DeletePrefix is not of a queue's message, index or lease prefix, or has a value")
		}
		o.prefix = true
	case storagev1.BatchOp_KIND_PUT_IF_VALUE:
		if len(bo.GetIfValue()) == 0 || len(bo.GetValue()) == 0 || owner != MetaOwner {
			return op{}, Owner{}, errors.New("a conditional put lacks a value or the value it replaces, or is not of the meta owner")
		}
		o.value, o.cond = bo.GetValue(), bo.GetIfValue()
	default:
		return op{}, Owner{}, fmt.Errorf("unknown kind %d", bo.GetKind())
	}
	if !o.prefix && items {
		return op{}, Owner{}, errors.New("a message or lease key has no id")
	}
	return o, owner, nil
}

// keyOwner returns the owner of key, one of the layout's (see the package
// doc), and whether key is a queue's whole message or lease prefix
// (queueItemsPrefix) rather than one item's key.
func keyOwner(key []byte) (o Owner, items bool, err error) {
	if len(key) < 2 || key[1] != sep {
		return Owner{}, false, fmt.Errorf("key of %d bytes is none of the layout's", len(key))
	}
	rest := key[2:]
	switch key[0] {
	case metaKinds[0], metaKinds[1], metaKinds[2], metaKinds[3], metaKinds[4]:
		return MetaOwner, false, nil
	case prefixIndexed:
		if len(rest) == 0 || bytes.IndexByte(rest, sep) >= 0 {
			return Owner{}, false, errors.New("a queue's indexed mark without its queue")
		}
		return FamilyOf(string(rest)), false, nil
	case prefixMessage, prefixLease, prefixIndex:
		queue, id, found := bytes.Cut(rest, []byte{sep})
		if !found || len(queue) == 0 {
			return Owner{}, false, errors.New("a message or lease key without its queue")
		}
		return FamilyOf(string(queue)), len(id) == 0, nil
	}
	return Owner{}, false, fmt.Errorf("key kind %q is none of the layout's", key[0])
}

// prefixUnit reports whether unit u is a DeletePrefix unit (its first op
// is a DeletePrefix; UnmarshalBatch and DeleteQueueItems keep such a unit
// free of other ops).
func (b *Batch) prefixUnit(u int) bool { return b.ops[b.units[u]].prefix }

// prefixOps counts the DeletePrefix ops in ops.
func prefixOps(ops []op) (n int) {
	for _, o := range ops {
		if o.prefix {
			n++
		}
	}
	return n
}

// metaKinds and familyKinds are the key kinds of the meta owner and of a
// queue family, each in key order: keyOwner and OwnerPrefixes read them,
// so a new kind is a change in one place.
var (
	metaKinds   = [...]byte{prefixConfig, prefixDeleted, prefixNode, prefixQueue, prefixSchema}
	familyKinds = [...]byte{prefixIndex, prefixIndexed, prefixLease, prefixMessage}
)

// OwnerPrefixes are the key prefixes under which the meta owner's keys
// (meta true) or every queue family's keys lie, in key order: what a
// snapshot of the meta group or of a partition scans.
func OwnerPrefixes(meta bool) [][]byte {
	kinds := familyKinds[:]
	if meta {
		kinds = metaKinds[:]
	}
	out := make([][]byte, len(kinds))
	for i, k := range kinds {
		out[i] = []byte{k, sep}
	}
	return out
}

// KeyOwner is the owner of a key of this package's layout (see the package
// doc): the meta owner for queue definitions, runtime config, deletion
// marks and the schema version, a queue family for messages, their index
// records, the indexed mark and leases.
// ok is false for a key outside the layout (a replicated log's own
// records), which belongs to no owner.
func KeyOwner(key []byte) (o Owner, ok bool) {
	o, _, err := keyOwner(key)
	return o, err == nil
}
