package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember"
)

// TestMain lets the test binary serve as the scale suite's child process.
func TestMain(m *testing.M) {
	runScaleChildIfAsked()
	os.Exit(m.Run())
}

// TestScale runs the scale suite on 2,000 keys for each system on 1 member (and 3 with
// EMBER_SOAK=1: their elections, leader transfers and restarts add 10-20 s), each in a child
// process as in a real run, and checks that every figure is there and positive (no timing is
// asserted).
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters")
	}
	b := &bench{log: io.Discard}
	cfg := scaleConfig{Keys: 2000, ValueSize: 1024, Duration: 300 * time.Millisecond, Settle: 10 * time.Millisecond, CompactRounds: 2, PacedRounds: 1}
	members := []int{1}
	if os.Getenv("EMBER_SOAK") == "1" {
		members = append(members, 3)
	}
	rs := b.measureScale(context.Background(), systems, members, cfg)
	if len(rs) != len(members)*len(systems) {
		t.Fatalf("%d results, want %d", len(rs), len(members)*len(systems))
	}
	for i, r := range rs {
		m := members[i/len(systems)]
		if r.Err != "" {
			t.Errorf("%s, %d members: %s", r.System, r.Members, r.Err)
			continue
		}
		if r.Keys != cfg.Keys || r.ValueSize != cfg.ValueSize || r.Members != m {
			t.Errorf("%s: %d keys of %d B on %d members, want %d of %d on %d", r.System, r.Keys, r.ValueSize, r.Members, cfg.Keys, cfg.ValueSize, m)
		}
		if len(r.CompactRuns) != cfg.CompactRounds+cfg.PacedRounds {
			t.Errorf("%s, %d members: %d compaction rounds, want %d", r.System, r.Members, len(r.CompactRuns), cfg.CompactRounds+cfg.PacedRounds)
		}
		for i, c := range r.CompactRuns {
			if want := i >= cfg.CompactRounds; c.Paced != want {
				t.Errorf("%s, %d members: compaction round %d paced %v, want %v", r.System, r.Members, i+1, c.Paced, want)
			}
		}
		for _, row := range scaleRows {
			switch v := row.val(r); {
			case row.multi && m == 1:
			case row.zeroOK && !(v >= 0):
				t.Errorf("%s, %d members: %s = %v, want >= 0", r.System, r.Members, row.name, v)
			case !row.zeroOK && !(v > 0):
				t.Errorf("%s, %d members: %s = %v, want > 0", r.System, r.Members, row.name, v)
			}
		}
	}
	var out bytes.Buffer
	printScale(&out, rs)
	if len(members) > 1 && !strings.Contains(out.String(), "| scale, 3 members") {
		t.Errorf("no 3-member table:\n%s", out.String())
	}
	for _, row := range scaleRows {
		if !row.multi && !strings.Contains(out.String(), "| "+row.name+" | ") {
			t.Errorf("table lacks the row %q:\n%s", row.name, out.String())
		}
	}
}

// TestPrintScale_MultiRowsWithMoreMembersOnly: the rows of the cells that need more than one
// member (the wipe cell) are in the tables of 3 members and not in those of 1, and its figures
// are in the JSON.
func TestPrintScale_MultiRowsWithMoreMembersOnly(t *testing.T) {
	var rs []scaleResult
	for _, m := range []int{1, 3} {
		for _, sys := range []string{"ember", "etcd"} {
			r := scaleResult{System: sys, Members: m, Keys: 100, ValueSize: 10, LoadRate: 1}
			if m > 1 {
				r.WipeCatchUp, r.WipeRateBefore, r.WipeRateDuring, r.WipeSnapshots = 1500*time.Millisecond, 1000, 600, 1
			}
			rs = append(rs, r)
		}
	}
	var out bytes.Buffer
	printScale(&out, rs)
	one, three, ok := strings.Cut(out.String(), "| scale, 3 members")
	if !ok {
		t.Fatalf("no 3-member table:\n%s", out.String())
	}
	for _, row := range scaleRows {
		if row.rounds || row.paced {
			continue // TestPrintScale_RoundsRows
		}
		if in := strings.Contains(one, "| "+row.name+" | "); in == row.multi {
			t.Errorf("1-member table has the row %q: %v, want %v", row.name, in, !row.multi)
		}
		if !strings.Contains(three, "| "+row.name+" | ") {
			t.Errorf("3-member table lacks the row %q", row.name)
		}
	}
	for _, want := range []string{
		"| wiped follower re-added: catch-up to the leader's revision | 1.50 s | 1.50 s | 1.00× |",
		"| put rate during / before | 0.60 | 0.60 | 1.00× |",
		"| snapshots installed by the re-added member | 1 | 1 | 1.00× |",
	} {
		if !strings.Contains(three, want) {
			t.Errorf("3-member table lacks %q:\n%s", want, three)
		}
	}
	js, err := json.Marshal(rs[2])
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"wipe_catch_up_ns":1500000000`, `"wipe_puts_per_sec_before":1000`, `"wipe_puts_per_sec_during":600`, `"wipe_snapshot_installs":1`, `"wipe_put_errors":0`} {
		if !strings.Contains(string(js), field) {
			t.Errorf("JSON lacks %s: %s", field, js)
		}
	}
}

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
		{name: "lease", cells: []variant{{"lease+put", 4, runLease(false)}, {"lease+put 1 entry", 4, runLease(true)}}},
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

// TestPrintScale_RoundsRows checks that the rows over closed compaction rounds are printed only
// with more than one, those over paced rounds only with one or more, each with the median and the
// worst round's wait of its own rounds.
func TestPrintScale_RoundsRows(t *testing.T) {
	runs := func(paced bool, n ...int) []compactRun {
		var out []compactRun
		for _, v := range n {
			out = append(out, compactRun{Paced: paced, Time: time.Second, MaxPut: time.Duration(v) * time.Millisecond, MaxGet: 2 * time.Duration(v) * time.Millisecond, Puts: 1, Gets: 1})
		}
		return out
	}
	ms := func(n ...int) []compactRun { return runs(false, n...) }
	tests := []struct {
		name string
		runs []compactRun
		want []string // rows the table must have; none of the rounds rows if empty
	}{
		{"one round", ms(40), nil},
		{"odd rounds", ms(90, 30, 50), []string{
			"| longest put during compact, median of the rounds | 50.0 ms | 50.0 ms | 1.00× |",
			"| longest put during compact, worst round | 90.0 ms | 90.0 ms | 1.00× |",
			"| longest linearizable get during compact, median of the rounds | 100.0 ms | 100.0 ms | 1.00× |",
			"| longest linearizable get during compact, worst round | 180.0 ms | 180.0 ms | 1.00× |",
		}},
		{"even rounds", ms(20, 80, 40, 10), []string{
			"| longest put during compact, median of the rounds | 30.0 ms | 30.0 ms | 1.00× |",
			"| longest put during compact, worst round | 80.0 ms | 80.0 ms | 1.00× |",
		}},
		{"closed and paced rounds", append(ms(90, 30, 50), runs(true, 10, 20)...), []string{
			"| longest put during compact, median of the rounds | 50.0 ms | 50.0 ms | 1.00× |",
			"| longest put during compact, worst round | 90.0 ms | 90.0 ms | 1.00× |",
			"| paced load: longest put during compact, median of the rounds | 15.0 ms | 15.0 ms | 1.00× |",
			"| paced load: longest put during compact, worst round | 20.0 ms | 20.0 ms | 1.00× |",
			"| paced load: longest linearizable get during compact, median of the rounds | 30.0 ms | 30.0 ms | 1.00× |",
			"| paced load: longest linearizable get during compact, worst round | 40.0 ms | 40.0 ms | 1.00× |",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rs []scaleResult
			for _, sys := range []string{"ember", "etcd"} {
				rs = append(rs, scaleResult{System: sys, Members: 1, Keys: 100, ValueSize: 10, CompactRuns: tt.runs})
			}
			var out bytes.Buffer
			printScale(&out, rs)
			if len(tt.want) == 0 && strings.Contains(out.String(), "of the rounds") {
				t.Errorf("one round, yet rounds rows:\n%s", out.String())
			}
			if paced := slices.ContainsFunc(tt.runs, func(c compactRun) bool { return c.Paced }); paced != strings.Contains(out.String(), "paced load") {
				t.Errorf("paced rounds %v, paced rows %v:\n%s", paced, !paced, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("table lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
