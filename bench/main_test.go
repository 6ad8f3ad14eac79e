package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

// TestCells runs one short cell of each kind the systems share, on one member of each system
// and on each -log-store, so that a change in ember's or etcd's API or in the harness shows up
// in CI.
func TestCells(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters")
	}
	for _, ls := range []ember.LogStore{ember.LogStoreBolt, ember.LogStoreWAL} {
		t.Run(ls.String(), func(t *testing.T) {
			saved := logStore
			logStore = ls
			t.Cleanup(func() { logStore = saved })
			testCells(t)
		})
	}
}

func testCells(t *testing.T) {
	b := &bench{warmup: 100 * time.Millisecond, duration: 300 * time.Millisecond, log: io.Discard}
	cfg := config{systems: systems, leaders: true}
	tiny := []workload{
		{name: "put", cells: []variant{{"put", 1, runPut}}},
		{name: "get", setup: preload, cells: []variant{{"get lin", 4, runGet(false)}}},
		{name: "cas", cells: []variant{{"cas txn", 4, runCAS}}},
		{name: "lease", cells: []variant{{"lease+put", 4, runLease}}},
		{name: "watch", cells: []variant{{"watch prefix", 4, runWatch}}},
		{name: "raft", systems: []system{{"raft", startRaft}}, cells: []variant{{"raft apply", 1, runPut}}},
	}
	for _, w := range tiny {
		if err := b.runWorkload(context.Background(), w, 1, cfg); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range b.results {
		if r.Err != "" || r.Ops == 0 {
			t.Errorf("%s %s: %d ops, error %q", r.System, r.Workload, r.Ops, r.Err)
		}
		if r.Workload == "watch prefix" && !r.Delivered {
			t.Errorf("%s watch: events missing or out of order: %s", r.System, r.Notes)
		}
	}
	var out bytes.Buffer
	printTables(&out, b.results, nil)
	if !strings.Contains(out.String(), "| put | 1 | leader | 1 |") {
		t.Errorf("table lacks the put row:\n%s", out.String())
	}
}
