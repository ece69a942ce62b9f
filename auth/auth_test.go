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
	for _, bad := range []string{"", ".*", "a b", "orders/*", "*.orders", strings.Repeat("q", 257)} {
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
	require.True(t, (&Key{ExpiresAt: time.Unix(1, 0)}).Expired(time.Unix(1, 0)))
	require.False(t, (&Key{}).Expired(time.Now()), "no expiry")

	for _, bad := range []*Key{
		{Name: "", Permissions: k.Permissions},
		{Name: "a b", Permissions: k.Permissions},
		{Name: "k"},
		{Name: "k", Permissions: []Permission{{Pattern: "q"}}},
		{Name: "k", Permissions: []Permission{{Pattern: "q", Actions: []Action{"delete"}}}},
	} {
		require.Error(t, bad.Validate(), "%+v", bad)
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
	k := &Key{Name: "k", Hash: Hash(s1), Permissions: []Permission{{Pattern: "*", Actions: []Action{Produce}}}, CreatedAt: time.Unix(5, 0).UTC()}
	back, err := Decode(k.Encode())
	require.NoError(t, err)
	require.Equal(t, k, back)
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
