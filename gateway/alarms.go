package gateway

import (
	"fmt"
	"sync/atomic"

	"github.com/fila-dev/filad/actors"
)

// Alarm is a broker-wide resource alarm (RabbitMQ's disk and memory alarms
// are the model): while one is raised, Enqueue is refused with
// RESOURCE_EXHAUSTED naming the limit, and everything that lets consumers
// drain (Lease, Ack, Nack, Extend) goes on.
type Alarm int

// The alarms.
const (
	AlarmDisk Alarm = iota
	AlarmMemory
	numAlarms
)

// AlarmNames are the alarms' names, as the fila.alarm.active gauge labels them.
var AlarmNames = [numAlarms]string{AlarmDisk: "disk", AlarmMemory: "memory"}

// Alarms is the alarms' state: written by the resource monitor, read by
// every call's translation without locks. The zero value has none raised.
type Alarms struct {
	reasons [numAlarms]atomic.Pointer[string]
}

// Raise sets alarm a with the reason Enqueue is told; it reports whether
// a was clear before.
func (s *Alarms) Raise(a Alarm, reason string) bool { return s.reasons[a].Swap(&reason) == nil }

// Clear clears alarm a; it reports whether a was raised before.
func (s *Alarms) Clear(a Alarm) bool { return s.reasons[a].Swap(nil) != nil }

// Raised reports whether alarm a is raised.
func (s *Alarms) Raised(a Alarm) bool { return s.reasons[a].Load() != nil }

// refuse returns the error an Enqueue gets while any alarm is raised.
func (s *Alarms) refuse() error {
	if s == nil {
		return nil
	}
	for i := range s.reasons {
		if r := s.reasons[i].Load(); r != nil {
			return fmt.Errorf("%w: %s alarm: %s", actors.ErrOverloaded, AlarmNames[i], *r)
		}
	}
	return nil
}
