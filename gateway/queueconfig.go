package gateway

import (
	"math"
	"time"
	"unicode/utf8"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
	"github.com/fila-dev/filad/scripting"
)

// queueConfigFields are the QueueConfig fields an update_mask may name.
var queueConfigFields = []string{
	"visibility_timeout_ms", "fairness_key_header", "max_depth", "max_bytes",
	"max_attempts", "retry_backoff", "dead_letter", "on_enqueue_script", "on_failure_script",
}

// queuePatch turns the named fields of c into a patch, checking each. With
// no paths, every field set to a non-zero value counts (AIP-134), which is
// also how CreateQueue reads its config. 0 or "" for visibility_timeout_ms
// or fairness_key_header means the server's default, from defaults.
func queuePatch(c *filav1.QueueConfig, paths []string, defaults actors.QueueConfig, lua scripting.Limits) (actors.QueuePatch, error) {
	var p actors.QueuePatch
	if c == nil {
		c = &filav1.QueueConfig{}
	}
	if len(paths) == 0 {
		paths = setFields(c)
	}
	for _, path := range paths {
		switch path {
		case "visibility_timeout_ms":
			vt, err := visibilityTimeout("config.visibility_timeout_ms", c.GetVisibilityTimeoutMs())
			if err != nil {
				return p, err
			}
			if vt == 0 {
				vt = defaults.VisibilityTimeout
			}
			p.VisibilityTimeout = &vt
		case "fairness_key_header":
			h := c.GetFairnessKeyHeader()
			if len(h) > MaxHeaderKeyBytes {
				return p, invalid("config.fairness_key_header: %d bytes is over the limit of %d", len(h), MaxHeaderKeyBytes)
			}
			if h == "" {
				h = defaults.FairnessKeyHeader
			}
			p.FairnessKeyHeader = &h
		case "max_depth":
			p.MaxDepth = ptr(c.GetMaxDepth())
		case "max_bytes":
			p.MaxBytes = ptr(c.GetMaxBytes())
		case "max_attempts":
			if n := c.GetMaxAttempts(); n > actors.MaxAttemptsLimit {
				return p, invalid("config.max_attempts: %d is over the limit of %d", n, actors.MaxAttemptsLimit)
			}
			p.MaxAttempts = ptr(c.GetMaxAttempts())
		case "retry_backoff":
			b, err := backoff(c.GetRetryBackoff())
			if err != nil {
				return p, err
			}
			p.Backoff = &b
		case "on_enqueue_script", "on_failure_script":
			src, hook, into := c.GetOnEnqueueScript(), scripting.OnEnqueue, &p.OnEnqueueScript
			if path == "on_failure_script" {
				src, hook, into = c.GetOnFailureScript(), scripting.OnFailure, &p.OnFailureScript
			}
			if src != "" {
				if _, err := scripting.Compile(hook, src, hook, lua); err != nil {
					return p, invalid("config.%s: %v", path, err)
				}
			}
			*into = &src
		case "dead_letter":
			p.DeadLetter = ptr(c.DeadLetter == nil || *c.DeadLetter) // unset: on, the default
		default:
			return p, invalid("update_mask: %q is not a QueueConfig field (one of %v)", path, queueConfigFields)
		}
	}
	return p, nil
}

// setFields names the fields of c with a non-zero value.
func setFields(c *filav1.QueueConfig) []string {
	var out []string
	for i, set := range []bool{
		c.GetVisibilityTimeoutMs() != 0, c.GetFairnessKeyHeader() != "", c.GetMaxDepth() != 0, c.GetMaxBytes() != 0,
		c.GetMaxAttempts() != 0, c.GetRetryBackoff() != nil, c.DeadLetter != nil,
		c.GetOnEnqueueScript() != "", c.GetOnFailureScript() != "",
	} {
		if set {
			out = append(out, queueConfigFields[i])
		}
	}
	return out
}

func backoff(b *filav1.RetryBackoff) (actors.Backoff, error) {
	maxMS := uint64(actors.MaxDelay / time.Millisecond)
	switch m := b.GetMultiplier(); {
	case b.GetInitialMs() > maxMS:
		return actors.Backoff{}, invalid("config.retry_backoff.initial_ms: %d is over the limit of %d", b.GetInitialMs(), maxMS)
	case b.GetMaxMs() > maxMS:
		return actors.Backoff{}, invalid("config.retry_backoff.max_ms: %d is over the limit of %d", b.GetMaxMs(), maxMS)
	case b.GetMaxMs() != 0 && b.GetMaxMs() < b.GetInitialMs():
		return actors.Backoff{}, invalid("config.retry_backoff.max_ms: %d is below initial_ms %d", b.GetMaxMs(), b.GetInitialMs())
	case math.IsNaN(m) || m != 0 && (m < 1 || m > 10):
		return actors.Backoff{}, invalid("config.retry_backoff.multiplier: %v is outside 1..10 (0 means %d)", m, actors.DefaultBackoffMultiplier)
	}
	return actors.Backoff{
		Initial:    time.Duration(b.GetInitialMs()) * time.Millisecond,
		Max:        time.Duration(b.GetMaxMs()) * time.Millisecond,
		Multiplier: b.GetMultiplier(),
	}, nil
}

// configProto is cfg as the API shows it.
func configProto(cfg actors.QueueConfig) *filav1.QueueConfig {
	c := &filav1.QueueConfig{
		VisibilityTimeoutMs: uint64(cfg.VisibilityTimeout / time.Millisecond),
		FairnessKeyHeader:   cfg.FairnessKeyHeader,
		MaxDepth:            cfg.MaxDepth,
		MaxBytes:            cfg.MaxBytes,
		MaxAttempts:         cfg.MaxAttempts,
		DeadLetter:          ptr(cfg.DeadLetter),
		OnEnqueueScript:     cfg.OnEnqueueScript,
		OnFailureScript:     cfg.OnFailureScript,
	}
	if cfg.Backoff.Initial > 0 {
		c.RetryBackoff = &filav1.RetryBackoff{
			InitialMs:  uint64(cfg.Backoff.Initial / time.Millisecond),
			MaxMs:      uint64(cfg.Backoff.Max / time.Millisecond),
			Multiplier: cfg.Backoff.Multiplier,
		}
	}
	return c
}

func ptr[T any](v T) *T { return &v }

// Runtime config keys and values.
const (
	MaxConfigKeyBytes   = 256
	MaxConfigValueBytes = 64 << 10
)

// validateConfigKey checks a runtime config key (or a prefix of one, as
// field): 1 to MaxConfigKeyBytes bytes of [A-Za-z0-9._:/-].
func validateConfigKey(field, key string) error {
	return validateToken(field, key, MaxConfigKeyBytes, "._:/-")
}

// validateConfigValue checks a runtime config value (never echoed).
func validateConfigValue(v string) error {
	if len(v) > MaxConfigValueBytes {
		return invalid("value: %d bytes is over the limit of %d", len(v), MaxConfigValueBytes)
	}
	if !utf8.ValidString(v) {
		return invalid("value: not valid UTF-8")
	}
	return nil
}
