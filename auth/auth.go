// Package auth is who may do what: API keys (stored as hashes), their
// permissions per queue pattern and action, and the check the gateway
// makes before any actor is asked (docs/security.md).
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Action is what a permission allows on a queue.
type Action string

// The actions.
const (
	Produce Action = "produce" // Enqueue, EnqueueBatch
	Consume Action = "consume" // Consume, Ack, Nack, Extend and their batches
	Admin   Action = "admin"   // the FilaAdmin RPCs
)

// Permission allows Actions on the queues Pattern matches: an exact name,
// "prefix.*" (every queue whose name starts with "prefix."), or "*".
type Permission struct {
	Pattern string   `json:"pattern"`
	Actions []Action `json:"actions"`
}

// Key is an API key as filad keeps it: never its secret, only a hash.
type Key struct {
	// ID is the key's key_id (Fila's opaque id), set when it is created;
	// empty in keys stored before key ids existed, whose KeyID is their name.
	ID          string       `json:"id,omitempty"`
	Name        string       `json:"name"`
	Hash        string       `json:"hash"` // hex SHA-256 of the secret
	Permissions []Permission `json:"permissions"`
	// Superadmin keys pass every permission check.
	Superadmin bool      `json:"superadmin,omitempty"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
}

// NewKeyID makes a key's key_id: a random UUID, as Fila's are.
func NewKeyID() string { return uuid.NewString() }

// KeyID is the key's key_id: its ID, or for a key stored before key ids
// existed, its name (unique too), so that such a key can still be revoked
// and granted rights by key_id.
func (k *Key) KeyID() string {
	if k.ID != "" {
		return k.ID
	}
	return k.Name
}

// Limits on keys.
const (
	MaxKeyNameBytes  = 128
	MaxPermissions   = 64
	MaxPatternBytes  = 256
	SecretPrefix     = "fila_"
	secretRandomSize = 32
)

// maxExpiresAt is the latest expires_at a key may have: a stored key is
// JSON, and encoding/json cannot write a time past the year 9999.
var maxExpiresAt = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// DLQSuffix ends the name of a dead-letter queue: the broker makes
// "<name>.dlq" for every queue "<name>" (actors.DLQSuffix, which a gateway
// test holds equal; auth does not import the actors).
const DLQSuffix = ".dlq"

// Owner is the queue whose rights decide the rights on queue: queue itself,
// or for a dead-letter queue "<name>.dlq" the owner of "<name>". A DLQ
// holds its source's messages (payloads, headers, the error that killed
// them), so whoever may not touch the source may not touch them there.
// The rule is by name alone, whether or not "<name>" exists: the broker
// adopts an existing "<name>.dlq" as the DLQ of a "<name>" created later,
// and a rule that changed with that would hand the adopted dead letters to
// whoever had rights on the old name. "" (from a queue named ".dlq") is the
// whole broker: only a permission on "*" reaches it.
func Owner(queue string) string {
	for strings.HasSuffix(queue, DLQSuffix) {
		queue = strings.TrimSuffix(queue, DLQSuffix)
	}
	return queue
}

// NewSecret makes a key's secret: 256 random bits, so its SHA-256 is as
// good as a slow hash (nothing to guess), and checking one costs a
// microsecond.
func NewSecret() (string, error) {
	var b [secretRandomSize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Hash is the stored form of a secret.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Fingerprint names a secret in logs without giving it away: the first 8
// hex digits of its hash.
func Fingerprint(secret string) string { return Hash(secret)[:8] }

// ValidatePattern checks a queue pattern.
func ValidatePattern(p string) error {
	if p == "" || len(p) > MaxPatternBytes {
		return fmt.Errorf("queue pattern must be 1 to %d bytes", MaxPatternBytes)
	}
	if p == "*" {
		return nil
	}
	body := strings.TrimSuffix(p, ".*")
	if bad := Outside(body, "._-"); bad != "" {
		return fmt.Errorf("queue pattern %q: %s (a pattern is a name, name.* or *)", p, bad)
	}
	if body == "" {
		return fmt.Errorf("queue pattern %q: nothing before .*", p)
	}
	if !strings.HasSuffix(p, ".*") && strings.HasSuffix(p, DLQSuffix) {
		// It could never take effect: grant it on the source instead.
		return fmt.Errorf("queue pattern %q names a dead-letter queue, whose rights are those on %q; grant them there", p, Owner(p))
	}
	return nil
}

// Matches reports whether pattern matches queue.
func Matches(pattern, queue string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasSuffix(pattern, ".*"):
		return strings.HasPrefix(queue, strings.TrimSuffix(pattern, "*"))
	}
	return pattern == queue
}

// Allows reports whether k may do action on queue ("" for broker-wide
// admin calls, which need a permission whose pattern is "*"). The rights on
// a dead-letter queue are those on its Owner: "orders.*" does not reach
// "orders.dlq" unless it is allowed on "orders" too. A superadmin key may
// do everything.
func (k *Key) Allows(action Action, queue string) bool {
	if k.Superadmin {
		return true
	}
	queue = Owner(queue)
	for _, p := range k.Permissions {
		if queue == "" && p.Pattern != "*" {
			continue
		}
		if !Matches(p.Pattern, queue) {
			continue
		}
		for _, a := range p.Actions {
			if a == action {
				return true
			}
		}
	}
	return false
}

// Expired reports whether k has expired at now.
func (k *Key) Expired(now time.Time) bool { return !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) }

// Validate checks a new key's name, permissions and expiry. A key may have
// no permissions: it is granted them later (SetAcl), as in Fila.
func (k *Key) Validate() error { return k.validate(time.Now()) }

func (k *Key) validate(now time.Time) error {
	if k.Name == "" || len(k.Name) > MaxKeyNameBytes {
		return fmt.Errorf("name must be 1 to %d bytes", MaxKeyNameBytes)
	}
	if bad := Outside(k.Name, "._-:@"); bad != "" {
		return fmt.Errorf("name: %s", bad)
	}
	if err := ValidatePermissions(k.Permissions); err != nil {
		return err
	}
	if !k.ExpiresAt.IsZero() && !k.ExpiresAt.After(now) {
		// It would be refused from its first call: surely a mistake.
		return fmt.Errorf("expires_at_ms: %s is not in the future (now %s)",
			k.ExpiresAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if k.ExpiresAt.After(maxExpiresAt) {
		return fmt.Errorf("expires_at_ms: %s is after the limit of %s", k.ExpiresAt.UTC().Format(time.RFC3339), maxExpiresAt.Format(time.RFC3339))
	}
	return nil
}

// ValidatePermissions checks a key's permissions: at most MaxPermissions,
// each a valid pattern with at least one known action.
func ValidatePermissions(perms []Permission) error {
	if len(perms) > MaxPermissions {
		return fmt.Errorf("permissions: at most %d, got %d", MaxPermissions, len(perms))
	}
	for i, p := range perms {
		if err := ValidatePattern(p.Pattern); err != nil {
			return fmt.Errorf("permissions[%d]: %w", i, err)
		}
		if len(p.Actions) == 0 {
			return fmt.Errorf("permissions[%d]: no actions (produce, consume, admin)", i)
		}
		for _, a := range p.Actions {
			if a != Produce && a != Consume && a != Admin {
				return fmt.Errorf("permissions[%d]: action %q is not produce, consume or admin", i, a)
			}
		}
	}
	return nil
}

// Encode is the stored form of k.
func (k *Key) Encode() string {
	b, _ := json.Marshal(k) // plain fields: cannot fail
	return string(b)
}

// Decode reads a stored key.
func Decode(s string) (*Key, error) {
	k := &Key{}
	if err := json.Unmarshal([]byte(s), k); err != nil {
		return nil, err
	}
	return k, nil
}

// BearerSecret reads the key from an "authorization" header value,
// "Bearer <key>". The scheme is case-insensitive (RFC 6750 §2.1, RFC 9110
// §11.1), and one or more spaces may follow it; ok is false for another
// scheme or no key.
func BearerSecret(header string) (secret string, ok bool) {
	scheme, rest, found := strings.Cut(header, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	secret = strings.TrimLeft(rest, " ")
	return secret, secret != ""
}

// KeyPrefix is where keys live in the runtime config store; the config
// RPCs neither show nor change it.
const KeyPrefix = "auth.key."

// BootstrapName is the name of the key given in config.
const BootstrapName = "bootstrap"

// Entry is one stored key entry.
type Entry struct{ Key, Value string }

// Source is the store keys are read from.
type Source interface {
	// Version changes whenever the keys may have; cheap, read on every call.
	Version() uint64
	// Keys returns the entries under KeyPrefix.
	Keys() []Entry
}

// Keyring finds keys by their secret's hash, name or key_id, from the stored
// keys (decoded once per change) and the bootstrap key. Safe for
// concurrent use.
type Keyring struct {
	src       Source
	bootstrap *Key
	cache     atomic.Pointer[index]
}

type index struct {
	version uint64
	byHash  map[string]*Key
	byName  map[string]*Key
	byID    map[string]*Key
}

// NewKeyring reads keys from src; bootstrap, when not empty, is the secret
// of a superadmin key, never stored.
func NewKeyring(src Source, bootstrap string) *Keyring {
	r := &Keyring{src: src}
	if bootstrap != "" {
		r.bootstrap = &Key{Name: BootstrapName, Hash: Hash(bootstrap), Superadmin: true,
			Permissions: []Permission{{Pattern: "*", Actions: []Action{Produce, Consume, Admin}}}}
	}
	return r
}

func (r *Keyring) current() *index {
	// The version before the entries: a change in between only makes the
	// next call decode again.
	version := r.src.Version()
	if ix := r.cache.Load(); ix != nil && ix.version == version {
		return ix
	}
	entries := r.src.Keys()
	ix := &index{version: version, byHash: map[string]*Key{}, byName: map[string]*Key{}, byID: map[string]*Key{}}
	if r.bootstrap != nil {
		ix.byHash[r.bootstrap.Hash], ix.byName[r.bootstrap.Name] = r.bootstrap, r.bootstrap
	}
	for _, e := range entries {
		if k, err := Decode(e.Value); err == nil {
			ix.byHash[k.Hash], ix.byName[k.Name], ix.byID[k.KeyID()] = k, k, k
		}
	}
	r.cache.Store(ix)
	return ix
}

// BySecret returns the key whose secret this is, or nil.
func (r *Keyring) BySecret(secret string) *Key { return r.current().byHash[Hash(secret)] }

// ByName returns the key named name, or nil.
func (r *Keyring) ByName(name string) *Key { return r.current().byName[name] }

// ByID returns the stored key whose key_id this is, or nil; the bootstrap
// key has none (it is not stored, so it can be neither granted nor revoked).
func (r *Keyring) ByID(id string) *Key { return r.current().byID[id] }

// List returns every key, the bootstrap key included, by name.
func (r *Keyring) List() []*Key {
	ix := r.current()
	out := make([]*Key, 0, len(ix.byName))
	for _, k := range ix.byName {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Outside checks that s holds only [A-Za-z0-9] and the ASCII bytes of
// extra. It returns "" if so, else what is wrong with the first character
// that is not, named as a person reads it: the character (not the first
// byte of its UTF-8 encoding) and its byte offset, as in
// `'é' at byte 1 is outside [A-Za-z0-9._-]`.
func Outside(s, extra string) string {
	for i, r := range s {
		switch {
		case 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9':
		case r < utf8.RuneSelf && strings.IndexByte(extra, byte(r)) >= 0:
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			return fmt.Sprintf("byte %d (0x%02x) is not valid UTF-8", i, s[i])
		default:
			return fmt.Sprintf("%q at byte %d is outside [A-Za-z0-9%s]", r, i, extra)
		}
	}
	return ""
}
