package clustertest

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Report is the checker's verdict on a history. The failure lists name
// message ids, sorted; the counts describe the run.
type Report struct {
	// Lost: ids whose enqueue was answered ok, or that were delivered (so
	// the enqueue happened), that no ok or unknown ack settled and that the
	// drain did not find. A correct broker keeps a message until an ack.
	Lost []string
	// Resurrected: ids delivered by a lease taken after an ok ack of them
	// had returned, or found by the drain after such an ack.
	Resurrected []string
	// Phantoms: ids delivered that no ok or unknown enqueue sent (a failed
	// enqueue's id included: the broker said it was not stored).
	Phantoms []string
	// Forked: ids delivered under two broker message ids: one Enqueue call
	// became two messages.
	Forked []string
	// NotLinearizable: ids whose operations admit no order consistent with
	// the model (porcupine).
	NotLinearizable []string
	// Drained is false when the history has no DrainEnd: the checks that
	// need the final state could not run, and the report fails.
	Drained bool

	IDs                                      int
	EnqueueOK, EnqueueUnknown, EnqueueFailed int
	Deliveries, DrainDeliveries              int
	AckOK, AckUnknown, AckFailed             int
	// Duplicates counts ids delivered more than once (redelivery after a
	// lease expired, a crash, or an unknown ack): allowed, at-least-once.
	Duplicates int
	// Redeliveries counts deliveries beyond each id's first.
	Redeliveries int
	// Porcupine is how long the linearizability check took.
	Porcupine time.Duration
}

// OK reports whether the history passed every check.
func (r Report) OK() bool {
	return r.Drained && len(r.Lost)+len(r.Resurrected)+len(r.Phantoms)+len(r.Forked)+len(r.NotLinearizable) == 0
}

// String is a one-paragraph summary, naming at most a few ids per failure.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ids; enqueue ok/unknown/failed %d/%d/%d; deliveries %d (%d to the drain); ack ok/unknown/failed %d/%d/%d; duplicates %d ids (%d redeliveries); porcupine %v",
		r.IDs, r.EnqueueOK, r.EnqueueUnknown, r.EnqueueFailed, r.Deliveries, r.DrainDeliveries,
		r.AckOK, r.AckUnknown, r.AckFailed, r.Duplicates, r.Redeliveries, r.Porcupine.Round(time.Microsecond))
	if !r.Drained {
		b.WriteString("; NO DRAIN in the history")
	}
	for _, f := range []struct {
		name string
		ids  []string
	}{{"lost", r.Lost}, {"resurrected", r.Resurrected}, {"phantoms", r.Phantoms}, {"forked", r.Forked}, {"not linearizable", r.NotLinearizable}} {
		fmt.Fprintf(&b, "; %s %d", f.name, len(f.ids))
		if len(f.ids) > 0 {
			fmt.Fprintf(&b, " %v", f.ids[:min(len(f.ids), 5)])
		}
	}
	return b.String()
}

// perID is one message id's operations.
type perID struct {
	enqueues   []Op
	deliveries []Op
	acks       []Op
}

// Check runs every check on a history that ends with a drain.
func Check(ops []Op) Report {
	var r Report
	byID, drainEnd := group(ops)
	for _, op := range ops {
		switch op.Kind {
		case Enqueue:
			count(op.Outcome, &r.EnqueueOK, &r.EnqueueUnknown, &r.EnqueueFailed)
		case Deliver:
			r.Deliveries++
			if op.Drain {
				r.DrainDeliveries++
			}
		case Ack:
			count(op.Outcome, &r.AckOK, &r.AckUnknown, &r.AckFailed)
		case DrainEnd:
			r.Drained = true
		}
	}
	r.IDs = len(byID)
	for id, p := range byID {
		held := heldAtDrain(p.deliveries)
		if len(p.deliveries) > 1 {
			r.Duplicates++
			r.Redeliveries += len(p.deliveries) - 1
		}
		sent, enqOK := false, false
		for _, e := range p.enqueues {
			sent = sent || e.Outcome != Failed
			enqOK = enqOK || e.Outcome == OK
		}
		settled := false // by an ok or unknown ack
		var ackedAt int64 = Open
		for _, a := range p.acks {
			if a.Outcome != Failed {
				settled = true
			}
			if a.Outcome == OK {
				ackedAt = min(ackedAt, a.Return)
			}
		}
		if r.Drained && (enqOK || len(p.deliveries) > 0) && !settled && held == "" {
			r.Lost = append(r.Lost, id)
		}
		resurrected := r.Drained && ackedAt != Open && held != ""
		brokerIDs := map[string]bool{}
		for _, d := range p.deliveries {
			resurrected = resurrected || d.Call > ackedAt
			brokerIDs[d.MessageID] = true
		}
		if resurrected {
			r.Resurrected = append(r.Resurrected, id)
		}
		if len(p.deliveries) > 0 && !sent {
			r.Phantoms = append(r.Phantoms, id)
		}
		if len(brokerIDs) > 1 {
			r.Forked = append(r.Forked, id)
		}
	}
	if r.Drained {
		start := time.Now()
		r.NotLinearizable = notLinearizable(byID, drainEnd)
		r.Porcupine = time.Since(start)
	}
	for _, l := range [][]string{r.Lost, r.Resurrected, r.Phantoms, r.Forked} {
		sort.Strings(l)
	}
	return r
}

func count(o Outcome, ok, unknown, failed *int) {
	switch o {
	case OK:
		*ok++
	case Unknown:
		*unknown++
	case Failed:
		*failed++
	}
}

// heldAtDrain is the token under which the drain holds the message (its
// last drain delivery), or "" when the drain did not find it.
func heldAtDrain(deliveries []Op) string {
	held, at := "", int64(-1)
	for _, d := range deliveries {
		if d.Drain && d.Return > at {
			held, at = d.Token, d.Return
		}
	}
	return held
}

// The per-id model. A message is absent, then ready once enqueued, leased
// under a token when delivered, acked once an ack of that token takes
// effect. What a correct at-least-once broker may also do, unseen by any
// client, is let a lease go (it expired, or a crash lost a lease that was
// not yet durable): leased(t) becomes ready again, which the model folds
// into the next delivery (from ready or from any other lease).
type phase int

const (
	absent phase = iota
	ready
	leased
	acked
)

type state struct {
	phase phase
	token string
}

func (s state) String() string {
	if s.phase == leased {
		return "leased(" + s.token + ")"
	}
	return [...]string{"absent", "ready", "leased", "acked"}[s.phase]
}

// input is one porcupine operation's input; the outcome rides along, as
// the model's answer to an unknown op is "either".
type input struct {
	kind    Kind
	token   string
	outcome Outcome
	final   bool // the drain's verdict: held under token, or gone ("")
}

// step is the nondeterministic model: the states a correct broker may be
// in after in, from s.
func step(s state, in input) []state {
	switch {
	case in.final && in.token != "":
		// Held by the drain, whose long lease cannot have expired.
		if s.phase == leased && s.token == in.token {
			return []state{s}
		}
	case in.final:
		// Gone at the end: never enqueued, or acked.
		if s.phase == absent || s.phase == acked {
			return []state{s}
		}
	case in.kind == Enqueue:
		if s.phase != absent {
			return nil // each id is sent once
		}
		if in.outcome == Unknown {
			return []state{{phase: ready}, s}
		}
		return []state{{phase: ready}}
	case in.kind == Deliver:
		if s.phase == ready || (s.phase == leased && s.token != in.token) {
			return []state{{phase: leased, token: in.token}}
		}
	case in.kind == Ack:
		took := s.phase == leased && s.token == in.token
		if in.outcome == OK {
			if took {
				return []state{{phase: acked}}
			}
			return nil
		}
		if took { // unknown: it took effect, or it did not
			return []state{{phase: acked}, s}
		}
		return []state{s}
	}
	return nil
}

var model = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, o := range history {
			id := o.Metadata.(string)
			if _, seen := by[id]; !seen {
				keys = append(keys, id)
			}
			by[id] = append(by[id], o)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() []any { return []any{state{}} },
	Step: func(s, in, _ any) []any {
		var out []any
		for _, n := range step(s.(state), in.(input)) {
			out = append(out, n)
		}
		return out
	},
	DescribeOperation: func(in, _ any) string {
		i := in.(input)
		if i.final {
			return "drain holds " + cmpOr(i.token, "nothing")
		}
		return fmt.Sprintf("%s %s (%s)", i.kind, i.token, i.outcome)
	},
	DescribeState: func(s any) string { return fmt.Sprint(s) },
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// notLinearizable checks every id's operations with porcupine, partitioned
// by id, and returns the ids that fail. Failed operations are left out:
// they changed nothing. Each id also gets the drain's verdict, at the
// drain's end, after everything that returned.
func notLinearizable(byID map[string]*perID, drainEnd int64) []string {
	m := model.ToModel()
	history := porcupineHistory(byID, drainEnd)
	if porcupine.CheckOperations(m, history) {
		return nil
	}
	// Name the ids: each partition alone.
	var bad []string
	for _, part := range m.Partition(history) {
		if !porcupine.CheckOperations(m, part) {
			bad = append(bad, part[0].Metadata.(string))
		}
	}
	sort.Strings(bad)
	return bad
}

// Visualize writes porcupine's HTML view of the ids in ids (their
// operations, and the longest orders the model accepts) to path: what to
// open when Check names an id not linearizable.
func Visualize(ops []Op, ids []string, path string) error {
	byID, drainEnd := group(ops)
	only := map[string]*perID{}
	for _, id := range ids {
		if p := byID[id]; p != nil {
			only[id] = p
		}
	}
	m := model.ToModel()
	_, info := porcupine.CheckOperationsVerbose(m, porcupineHistory(only, drainEnd), 0)
	return porcupine.VisualizePath(m, info, path)
}

// group sorts ops by id and finds the drain's end (0 without one).
func group(ops []Op) (map[string]*perID, int64) {
	byID := map[string]*perID{}
	var drainEnd int64
	for _, op := range ops {
		if op.Kind == DrainEnd {
			drainEnd = op.Call
			continue
		}
		p := byID[op.ID]
		if p == nil {
			p = &perID{}
			byID[op.ID] = p
		}
		switch op.Kind {
		case Enqueue:
			p.enqueues = append(p.enqueues, op)
		case Deliver:
			p.deliveries = append(p.deliveries, op)
		case Ack:
			p.acks = append(p.acks, op)
		}
	}
	return byID, drainEnd
}

// porcupineHistory is the operations porcupine checks.
func porcupineHistory(byID map[string]*perID, drainEnd int64) []porcupine.Operation {
	var history []porcupine.Operation
	add := func(id string, op Op, in input) {
		history = append(history, porcupine.Operation{ClientId: op.Client, Input: in, Call: op.Call, Return: op.Return, Metadata: id})
	}
	for id, p := range byID {
		for _, group := range [][]Op{p.enqueues, p.deliveries, p.acks} {
			for _, op := range group {
				if op.Outcome != Failed {
					add(id, op, input{kind: op.Kind, token: op.Token, outcome: op.Outcome})
				}
			}
		}
		add(id, Op{Call: drainEnd, Return: drainEnd}, input{final: true, token: heldAtDrain(p.deliveries)})
	}
	return history
}
