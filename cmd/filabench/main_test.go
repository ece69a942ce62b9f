package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// An -only that matches no workload is an error naming it, and says
// when the cluster workloads were left out, rather than an empty table.
func TestOnlyMatchingNothingIsAnError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       benchFlags
		want    string
		without string
	}{
		{"no cluster", benchFlags{only: "catch-up", noNATS: true}, `-only "catch-up" matches no workload (the cluster workloads run only with -cluster N)`, ""},
		{"with a cluster", benchFlags{only: "no such workload", noNATS: true, cluster: 3}, `-only "no such workload" matches no workload`, "-cluster N"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.f, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.without != "" && strings.Contains(err.Error(), tc.without)) {
				t.Fatalf("run: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
