package gateway

import (
	"regexp"
	"strings"
	"testing"
)

var queueNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,255}$`)

// FuzzValidateQueueName: the validator accepts exactly the names SPEC §4
// allows, and never panics.
func FuzzValidateQueueName(f *testing.F) {
	for _, s := range []string{"orders", "", "a b", strings.Repeat("x", 256), "é", "a\x00b", "q.v1_x-y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := validateQueueName("queue", name)
		if want := queueNameRE.MatchString(name); (err == nil) != want {
			t.Fatalf("validateQueueName(%q) = %v, want valid=%v", name, err, want)
		}
	})
}

// FuzzValidateMessage: an error exactly when a limit is broken, and the
// error never contains a header value.
func FuzzValidateMessage(f *testing.F) {
	f.Add("k", "v", 3, 10, 100)
	f.Add(strings.Repeat("k", 300), "v", 1, 0, 100)
	f.Add("k", strings.Repeat("v", 9000), 1, 0, 100)
	f.Add("k", "v", 70, 0, 100)
	f.Add("k", "v", 1, 101, 100)
	f.Fuzz(func(t *testing.T, key, value string, nHeaders, payload, limit int) {
		if nHeaders < 0 || nHeaders > 200 || payload < 0 || limit < 0 {
			t.Skip()
		}
		headers := map[string]string{}
		for i := range nHeaders {
			headers[key+strings.Repeat("#", i)] = value
		}
		err := validateMessage(headers, payload, limit)
		broken := payload > limit || len(headers) > MaxHeaders
		for k, v := range headers {
			broken = broken || len(k) > MaxHeaderKeyBytes || len(v) > MaxHeaderValueBytes
		}
		if (err != nil) != broken {
			t.Fatalf("validateMessage: err=%v, limits broken=%v", err, broken)
		}
		if err != nil && len(value) >= 8 && strings.Contains(err.Error(), value) {
			t.Fatalf("error %q echoes a header value", err)
		}
	})
}

// FuzzValidateMessageID never panics and accepts only 36-byte UUIDs.
func FuzzValidateMessageID(f *testing.F) {
	f.Add("01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e")
	f.Add("")
	f.Add("urn:uuid:01936f0e-7b4c-7d2a-9c3e-2f1a0b9c8d7e")
	f.Fuzz(func(t *testing.T, id string) {
		if validateMessageID(id) == nil && len(id) != 36 {
			t.Fatalf("accepted %q", id)
		}
	})
}
