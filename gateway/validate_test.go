package gateway

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateQueueName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, wantErr string
	}{
		{"ok", "orders.v1_eu-west", ""},
		{"max length", strings.Repeat("a", 255), ""},
		{"empty", "", "queue: must not be empty"},
		{"too long", strings.Repeat("a", 256), "over the limit of 255"},
		{"space", "a b", "outside [A-Za-z0-9._-]"},
		{"slash", "a/b", "outside"},
		{"nul", "a\x00b", "outside"},
		{"unicode", "café", "outside"},
		// The character and its byte offset, not the first byte of its
		// UTF-8 encoding read as Latin-1 (issue 22, Why 7: "byte 1 ('Ã')").
		{"unicode names the rune", "héllo", "queue: 'é' at byte 1 is outside [A-Za-z0-9._-]"},
		{"rune after a multibyte one", "éa b", "queue: 'é' at byte 0"},
		{"space after unicode-free prefix", "ab c", "queue: ' ' at byte 2 is outside"},
		{"invalid UTF-8", "ab\xffc", "queue: byte 2 (0xff) is not valid UTF-8"},
		{"literal U+FFFD", "a\uFFFDb", "queue: '\uFFFD' at byte 1"},
	}
	for _, tt := range tests {
		err := validateQueueName("queue", tt.in)
		if tt.wantErr == "" {
			require.NoError(t, err, tt.name)
		} else {
			require.ErrorContains(t, err, tt.wantErr, tt.name)
		}
	}
}

func TestValidateMessage(t *testing.T) {
	t.Parallel()
	many := map[string]string{}
	for i := range 65 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	tests := []struct {
		name     string
		headers  map[string]string
		payload  int
		wantErr  string
		leakTest string
	}{
		{name: "ok", headers: map[string]string{"a": "b"}, payload: 10},
		{name: "payload at limit", payload: 100},
		{name: "payload over limit", payload: 101, wantErr: "payload: 101 bytes is over the limit of 100"},
		{name: "too many headers", headers: many, wantErr: "65 headers is over the limit of 64"},
		{name: "long key", headers: map[string]string{strings.Repeat("k", 257): "v"}, wantErr: "key of 257 bytes"},
		{name: "long value", headers: map[string]string{"k": strings.Repeat("SECRET", 1400)}, wantErr: "over the limit of 8192", leakTest: "SECRET"},
	}
	for _, tt := range tests {
		err := validateMessage(tt.headers, tt.payload, 100)
		if tt.wantErr == "" {
			require.NoError(t, err, tt.name)
			continue
		}
		require.ErrorContains(t, err, tt.wantErr, tt.name)
		if tt.leakTest != "" {
			require.NotContains(t, err.Error(), tt.leakTest)
		}
	}
}

func TestValidateMessageID(t *testing.T) {
	t.Parallel()
	require.NoError(t, validateMessageID("01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e"))
	for _, bad := range []string{"", "x", "01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7", "01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7z", "{01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d}"} {
		require.Error(t, validateMessageID(bad), bad)
	}
}
