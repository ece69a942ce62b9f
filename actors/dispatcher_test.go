package actors

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// await yields until cond holds: the dispatcher's workers move on their
// own goroutines, and the test's timeout bounds the wait.
func await(cond func() bool) {
	for !cond() {
		runtime.Gosched()
	}
}

// parkedInSelect is how many of d's workers wait in their select, read
// from the goroutines' stacks (a trace shows the receiver): parked counts
// a worker a few instructions before it waits, and a run scheduled then
// starts another.
func parkedInSelect(d *workerDispatcher) int {
	frame := fmt.Sprintf("(*workerDispatcher).worker(%p", d)
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[select") && strings.Contains(g, frame) {
			n++
		}
	}
	return n
}

// TestWorkerDispatcherReusesItsWorkers: a run goes to a parked worker when
// one waits and to a new one otherwise, never more than maxParked wait,
// and close ends them.
func TestWorkerDispatcherReusesItsWorkers(t *testing.T) {
	d := newWorkerDispatcher(10, 1)
	require.Equal(t, 10, d.Throughput())
	run := func() (release chan struct{}, ran chan struct{}) {
		release, ran = make(chan struct{}), make(chan struct{})
		d.Schedule(func() { <-release; close(ran) })
		return release, ran
	}

	release, ran := run()
	require.EqualValues(t, 1, d.live.Load(), "the first run starts a worker")
	close(release)
	<-ran
	await(func() bool { return parkedInSelect(d) == 1 })

	release1, ran1 := run()
	require.EqualValues(t, 1, d.live.Load(), "the parked worker took the run")
	release2, ran2 := run()
	require.EqualValues(t, 2, d.live.Load(), "no worker waited: a new one")
	close(release1)
	close(release2)
	<-ran1
	<-ran2
	await(func() bool { return d.live.Load() == 1 })
	require.EqualValues(t, 1, d.parked.Load(), "one stays parked (maxParked), the other ended")

	d.close()
	await(func() bool { return d.live.Load() == 0 })
	done := make(chan struct{})
	d.Schedule(func() { close(done) })
	<-done // a run after close still runs
	await(func() bool { return d.live.Load() == 0 })
}
