package transport

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
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

// Drop replaces every rule with cuts both ways to and from peers.
func (f *Faults) Drop(peers []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sendTo, f.recvFrom = map[uint64]bool{}, map[uint64]bool{}
	for _, p := range peers {
		f.sendTo[p], f.recvFrom[p] = true, true
	}
}

// Rules returns the peers cut both ways (drop), and those cut one way
// only (out: what this node sends them; in: what arrives from them), in
// id order.
func (f *Faults) Rules() (drop, out, in []uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for p := range f.sendTo {
		if f.recvFrom[p] {
			drop = append(drop, p)
		} else {
			out = append(out, p)
		}
	}
	for p := range f.recvFrom {
		if !f.sendTo[p] {
			in = append(in, p)
		}
	}
	slices.Sort(drop)
	slices.Sort(out)
	slices.Sort(in)
	return drop, out, in
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
// drives real processes, in the interface of issue 24 so that any tool
// can drive it:
//
//	PUT /faults {"drop": [2, 3]}       drop every internal message (raft,
//	                                   forwarded calls) to and from nodes
//	                                   2 and 3, replacing every rule
//	DELETE /faults                     heal: remove every rule
//	GET /faults                        {"drop": [...], "out": [...], "in": [...]}
//
// and, for one-way cuts:
//
//	POST /cut?peer=2&dir=both|out|in   add a cut
//	POST /heal                         as DELETE /faults
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
	heal := func(w http.ResponseWriter, _ *http.Request) {
		f.Heal()
		fmt.Fprintln(w, "healed")
	}
	mux.HandleFunc("POST /heal", heal)
	mux.HandleFunc("DELETE /faults", heal)
	mux.HandleFunc("PUT /faults", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Drop []uint64 `json:"drop"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			http.Error(w, `body: want {"drop": [node ids]}: `+err.Error(), http.StatusBadRequest)
			return
		}
		if slices.Contains(body.Drop, 0) {
			http.Error(w, "drop: node ids are > 0", http.StatusBadRequest)
			return
		}
		f.Drop(body.Drop)
		fmt.Fprintf(w, "dropping %v\n", body.Drop)
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, _ *http.Request) {
		drop, out, in := f.Rules()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string][]uint64{"drop": nonNil(drop), "out": nonNil(out), "in": nonNil(in)})
	})
	return mux
}

// nonNil makes an empty list encode as [], not null.
func nonNil(ids []uint64) []uint64 {
	if ids == nil {
		return []uint64{}
	}
	return ids
}
