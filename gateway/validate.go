package gateway

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/fila-dev/filad/actors"
	"github.com/fila-dev/filad/auth"
	"github.com/fila-dev/filad/config"
)

// Request limits of SPEC §4.
const (
	MaxQueueNameBytes   = 255
	MaxHeaders          = 64
	MaxHeaderKeyBytes   = config.MaxHeaderKeyBytes
	MaxHeaderValueBytes = actors.MaxHeaderValueBytes
	// MaxLeaseIDBytes is the longest lease_id accepted (filad's are ~20 bytes).
	MaxLeaseIDBytes = 64
	// MaxLeaseBatch is the largest max_batch a Lease may ask for.
	MaxLeaseBatch = 1000
	// MaxConsumerInFlight is the largest max_in_flight a Lease may ask for.
	MaxConsumerInFlight = config.MaxInFlightLimit
)

// invalidError is a request that breaks a rule; its text names the field and
// the limit.
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }

func invalid(format string, a ...any) error { return &invalidError{fmt.Sprintf(format, a...)} }

// validateQueueName checks a queue name; field is the request field's name.
func validateQueueName(field, name string) error {
	return validateToken(field, name, MaxQueueNameBytes, "._-")
}

// validateToken checks that s is 1 to max bytes of [A-Za-z0-9] and the
// bytes of extra.
func validateToken(field, s string, max int, extra string) error {
	if s == "" {
		return invalid("%s: must not be empty", field)
	}
	if len(s) > max {
		return invalid("%s: %d bytes is over the limit of %d", field, len(s), max)
	}
	if bad := auth.Outside(s, extra); bad != "" {
		return invalid("%s: %s", field, bad)
	}
	return nil
}

// validateMessage checks an Enqueue's headers and payload size. Values are
// never echoed: they may be secret.
func validateMessage(headers map[string]string, payloadLen, maxPayload int) error {
	if payloadLen > maxPayload {
		return invalid("payload: %d bytes is over the limit of %d (server.max_message_bytes)", payloadLen, maxPayload)
	}
	if len(headers) > MaxHeaders {
		return invalid("headers: %d headers is over the limit of %d", len(headers), MaxHeaders)
	}
	for k, v := range headers {
		if len(k) > MaxHeaderKeyBytes {
			return invalid("headers: a key of %d bytes is over the limit of %d", len(k), MaxHeaderKeyBytes)
		}
		if len(v) > MaxHeaderValueBytes {
			return invalid("headers[%q]: value of %d bytes is over the limit of %d", k, len(v), MaxHeaderValueBytes)
		}
	}
	return nil
}

// validateMessageID checks that id is a UUID as Enqueue returns them.
func validateMessageID(id string) error {
	if id == "" {
		return invalid("message_id: must not be empty")
	}
	if len(id) != 36 {
		return invalid("message_id: must be a 36-character UUID, got %d characters", len(id))
	}
	if _, err := uuid.Parse(id); err != nil {
		return invalid("message_id: not a UUID")
	}
	return nil
}
