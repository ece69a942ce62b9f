package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPatterns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, queue string
		match          bool
	}{
		{"orders", "orders", true},
		{"orders", "orders.dlq", false},
		{"orders.*", "orders.eu", true},
		{"orders.*", "orders.dlq", true},
		{"orders.*", "orders", false},
		{"orders.*", "ordersx", false},
		{"*", "anything", true},
	}
	for _, tt := range tests {
		require.NoError(t, ValidatePattern(tt.pattern))
		require.Equal(t, tt.match, Matches(tt.pattern, tt.queue), "%s ~ %s", tt.pattern, tt.queue)
	}
	// "orders.dlq" could never take effect (a DLQ's rights are its
	// source's), so it is refused; "orders.dlq.*" names ordinary queues.
	require.NoError(t, ValidatePattern("orders.dlq.*"))
	for _, bad := range []string{"", ".*", "a b", "orders/*", "*.orders", strings.Repeat("q", 257), "orders.dlq", ".dlq"} {
		require.Error(t, ValidatePattern(bad), bad)
	}
}

func TestKeyAllows(t *testing.T) {
	t.Parallel()
	k := &Key{Name: "k", Permissions: []Permission{
		{Pattern: "orders", Actions: []Action{Produce}},
		{Pattern: "jobs.*", Actions: []Action{Consume, Admin}},
	}}
	require.NoError(t, k.Validate())
	require.True(t, k.Allows(Produce, "orders"))
	require.False(t, k.Allows(Consume, "orders"))
	require.True(t, k.Allows(Admin, "jobs.eu"))
	require.False(t, k.Allows(Admin, ""), "broker-wide calls need *")
	star := &Key{Name: "s", Permissions: []Permission{{Pattern: "*", Actions: []Action{Admin}}}}
	require.True(t, star.Allows(Admin, ""))
	super := &Key{Name: "root", Superadmin: true}
	require.NoError(t, super.Validate(), "a key may be created with no permissions")
	require.True(t, super.Allows(Admin, ""), "a superadmin passes every check")
	require.True(t, super.Allows(Consume, "orders.dlq"))
	require.False(t, (&Key{Name: "none"}).Allows(Consume, "orders"), "no permissions, no rights")
	require.True(t, (&Key{ExpiresAt: time.Unix(1, 0)}).Expired(time.Unix(1, 0)))
	require.False(t, (&Key{}).Expired(time.Now()), "no expiry")

	for _, bad := range []*Key{
		{Name: "", Permissions: k.Permissions},
		{Name: "a b", Permissions: k.Permissions},
		{Name: "k", Permissions: make([]Permission, MaxPermissions+1)},
		{Name: "k", Permissions: []Permission{{Pattern: "q"}}},
		{Name: "k", Permissions: []Permission{{Pattern: "q", Actions: []Action{"delete"}}}},
	} {
		require.Error(t, bad.Validate(), "%+v", bad)
	}
}

// TestDLQRightsAreTheSources: every right on "<name>.dlq" is decided by
// the key's rights on "<name>" (issue 19, row 4: admin,consume on
// "orders.*" reached "orders.dlq").
func TestDLQRightsAreTheSources(t *testing.T) {
	t.Parallel()
	perm := func(pattern string, actions ...Action) Permission {
		return Permission{Pattern: pattern, Actions: actions}
	}
	tests := []struct {
		name   string
		perms  []Permission
		action Action
		queue  string
		want   bool
	}{
		{"orders.* does not reach orders.dlq", []Permission{perm("orders.*", Admin, Consume)}, Admin, "orders.dlq", false},
		{"nor to consume from it", []Permission{perm("orders.*", Admin, Consume)}, Consume, "orders.dlq", false},
		{"orders.* still reaches orders.eu", []Permission{perm("orders.*", Admin)}, Admin, "orders.eu", true},
		{"admin on orders is admin on orders.dlq", []Permission{perm("orders", Admin)}, Admin, "orders.dlq", true},
		{"the same right: consume on orders is not admin on orders.dlq", []Permission{perm("orders", Consume)}, Admin, "orders.dlq", false},
		{"orders.* reaches the DLQ of orders.eu", []Permission{perm("orders.*", Consume)}, Consume, "orders.eu.dlq", true},
		{"orders.eu does not reach orders.dlq", []Permission{perm("orders.eu", Admin)}, Admin, "orders.dlq", false},
		{"a DLQ name's DLQ is the same source's", []Permission{perm("orders", Admin)}, Admin, "orders.dlq.dlq", true},
		{"and not reached through the DLQ's name", []Permission{perm("orders.*", Admin)}, Admin, "orders.dlq.dlq", false},
		{"orders.dlq.* names ordinary queues", []Permission{perm("orders.dlq.*", Admin)}, Admin, "orders.dlq.x", true},
		{"a queue named .dlq belongs to the broker", []Permission{{Pattern: ".dlq", Actions: []Action{Admin}}}, Admin, ".dlq", false},
		{"which * reaches", []Permission{perm("*", Admin)}, Admin, ".dlq", true},
		{"a stored exact DLQ pattern is inert", []Permission{{Pattern: "orders.dlq", Actions: []Action{Admin}}}, Admin, "orders.dlq", false},
		{"ordersdlq is no DLQ", []Permission{perm("ordersdlq", Admin)}, Admin, "ordersdlq", true},
	}
	for _, tt := range tests {
		k := &Key{Name: "k", Permissions: tt.perms}
		require.Equal(t, tt.want, k.Allows(tt.action, tt.queue), tt.name)
	}
	require.Equal(t, "orders", Owner("orders.dlq.dlq"))
	require.Equal(t, "orders.eu", Owner("orders.eu"))
}

// TestKeyExpiry: a new key's expires_at is in the future (issue 19, item
// 8: one in the past was accepted) and storable.
func TestKeyExpiry(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	perms := []Permission{{Pattern: "*", Actions: []Action{Produce}}}
	tests := []struct {
		name      string
		expiresAt time.Time
		wantErr   string
	}{
		{"none", time.Time{}, ""},
		{"in the future", now.Add(time.Second), ""},
		{"the last storable second", maxExpiresAt, ""},
		{"in the past", now.Add(-time.Second), "expires_at_ms: 2026-12-01T11:59:59Z is not in the future"},
		{"now", now, "expires_at_ms: 2026-12-01T12:00:00Z is not in the future"},
		{"long ago", time.Unix(0, 0), "expires_at_ms: 1970-01-01T00:00:00Z is not in the future"},
		{"past what a key can store", maxExpiresAt.Add(time.Second), "expires_at_ms: 10000-01-01T00:00:00Z is after the limit of 9999-12-31T23:59:59Z"},
	}
	for _, tt := range tests {
		k := &Key{Name: "k", Permissions: perms, ExpiresAt: tt.expiresAt}
		err := k.validate(now)
		if tt.wantErr == "" {
			require.NoError(t, err, tt.name)
			back, err := Decode(k.Encode())
			require.NoError(t, err, tt.name)
			require.True(t, k.ExpiresAt.Equal(back.ExpiresAt), tt.name)
			continue
		}
		require.ErrorContains(t, err, tt.wantErr, tt.name)
	}
	require.ErrorContains(t, (&Key{Name: "k", Permissions: perms, ExpiresAt: time.Now().Add(-time.Minute)}).Validate(), "expires_at", "Validate checks against the clock")
}

// TestBearerSecret: the scheme of "authorization: Bearer <key>" is
// case-insensitive (RFC 6750; issue 19, item 8: "bearer" was refused).
func TestBearerSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header, secret string
		ok             bool
	}{
		{"Bearer fila_x", "fila_x", true},
		{"bearer fila_x", "fila_x", true},
		{"BEARER fila_x", "fila_x", true},
		{"bEaReR fila_x", "fila_x", true},
		{"Bearer   fila_x", "fila_x", true},
		{"Bearer fila_x ", "fila_x ", true}, // the key is what follows, unchanged: it then matches no key
		{"Basic fila_x", "", false},
		{"Bearerfila_x", "", false},
		{"Bearer ", "", false},
		{"Bearer", "", false},
		{"fila_x", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		secret, ok := BearerSecret(tt.header)
		require.Equal(t, tt.ok, ok, "%q", tt.header)
		require.Equal(t, tt.secret, secret, "%q", tt.header)
	}
}

func TestSecretsAndRoundTrip(t *testing.T) {
	t.Parallel()
	s1, err := NewSecret()
	require.NoError(t, err)
	s2, _ := NewSecret()
	require.NotEqual(t, s1, s2)
	require.True(t, strings.HasPrefix(s1, SecretPrefix))
	require.Len(t, Hash(s1), 64)
	require.Equal(t, Hash(s1)[:8], Fingerprint(s1))
	k := &Key{ID: NewKeyID(), Name: "k", Hash: Hash(s1), Permissions: []Permission{{Pattern: "*", Actions: []Action{Produce}}}, Superadmin: true, CreatedAt: time.Unix(5, 0).UTC()}
	back, err := Decode(k.Encode())
	require.NoError(t, err)
	require.Equal(t, k, back)
	require.Equal(t, k.ID, back.KeyID())
	require.NotEqual(t, k.ID, NewKeyID())
	require.NotContains(t, k.Encode(), s1, "the secret is never stored")
}

// FuzzValidatePattern: any string is accepted or refused without panic, and
// a valid pattern without a wildcard matches exactly itself.
func FuzzValidatePattern(f *testing.F) {
	for _, s := range []string{"orders", "orders.*", "*", ".*", "a.*.*", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if ValidatePattern(p) != nil {
			return
		}
		if p != "*" && !strings.HasSuffix(p, ".*") && !Matches(p, p) {
			t.Fatalf("%q does not match itself", p)
		}
		if strings.HasSuffix(p, ".*") && Matches(p, strings.TrimSuffix(p, ".*")) {
			t.Fatalf("%q matches its bare prefix", p)
		}
	})
}

// TestKeyStoredBeforeKeyIDs: a key stored by an older filad (no id, no
// superadmin) decodes with its name as key_id and its rights unchanged.
func TestKeyStoredBeforeKeyIDs(t *testing.T) {
	t.Parallel()
	old := `{"name":"ci","hash":"` + Hash("s") + `","permissions":[{"pattern":"orders","actions":["produce"]}],"created_at":"2026-11-01T00:00:00Z"}`
	k, err := Decode(old)
	require.NoError(t, err)
	require.Equal(t, "ci", k.KeyID())
	require.False(t, k.Superadmin)
	require.True(t, k.Allows(Produce, "orders"))
	require.False(t, k.Allows(Consume, "orders"))
	r := NewKeyring(staticSource{{Key: KeyPrefix + "ci", Value: old}}, "")
	require.Same(t, r.ByName("ci"), r.ByID("ci"))
}

// staticSource is a Source that never changes.
type staticSource []Entry

func (staticSource) Version() uint64 { return 1 }
func (s staticSource) Keys() []Entry { return s }
