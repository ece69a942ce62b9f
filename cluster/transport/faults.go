package transport

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
)

// Faults are rules that cut links between nodes, for tests: a node drops
// what it would send to a cut peer and what arrives from one. Each node
// keeps its own rules, so a partition of {1} from {2, 3} is node 1 cutting
// 2 and 3 (or 2 and 3 each cutting 1; either side alone is enough). The
// zero value cuts nothing; a nil *Faults cuts nothing and costs nothing.
type Faults struct {
	mu       sync.RWMutex
	sendTo   map[uint64]bool
	recvFrom map[uint64]bool
}

// Direction says which way a cut applies.
type Direction int

// Directions of a cut.
const (
	Both Direction = iota
	Outgoing
	Incoming
)

// Cut drops messages to peer (Outgoing), from it (Incoming), or both.
func (f *Faults) Cut(peer uint64, d Direction) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendTo == nil {
		f.sendTo, f.recvFrom = map[uint64]bool{}, map[uint64]bool{}
	}
	if d != Incoming {
		f.sendTo[peer] = true
	}
	if d != Outgoing {
		f.recvFrom[peer] = true
	}
}

// Heal removes every rule.
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sendTo, f.recvFrom = nil, nil
}

// Allows reports whether a call from → to (a forwarded client call) passes
// the rules of the node that holds f, as a raft message would; a nil
// *Faults allows everything.
func (f *Faults) Allows(from, to uint64) bool { return f.allows(from, to) }

// allows reports whether a message from → to passes the rules of the node
// that holds f (which is from or to).
func (f *Faults) allows(from, to uint64) bool {
	if f == nil {
		return true
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return !f.sendTo[to] && !f.recvFrom[from]
}

// ControlHandler serves the rules over HTTP for a test harness that
// drives real processes:
//
//	POST /cut?peer=2&dir=both|out|in   cut a link
//	POST /heal                         remove every rule
//
// It must only ever listen on a loopback address that the node's config
// names for tests.
func (f *Faults) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /cut", func(w http.ResponseWriter, r *http.Request) {
		peer, err := strconv.ParseUint(r.URL.Query().Get("peer"), 10, 64)
		if err != nil || peer == 0 {
			http.Error(w, "peer: a node id > 0 is required", http.StatusBadRequest)
			return
		}
		d, ok := map[string]Direction{"": Both, "both": Both, "out": Outgoing, "in": Incoming}[r.URL.Query().Get("dir")]
		if !ok {
			http.Error(w, "dir: one of both, out, in", http.StatusBadRequest)
			return
		}
		f.Cut(peer, d)
		fmt.Fprintf(w, "cut %d\n", peer)
	})
	mux.HandleFunc("POST /heal", func(w http.ResponseWriter, _ *http.Request) {
		f.Heal()
		fmt.Fprintln(w, "healed")
	})
	return mux
}
