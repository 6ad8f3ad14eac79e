package ember_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ember-kv/ember"
)

type byteCounter int64

func (c *byteCounter) Write(p []byte) (int, error) { *c += byteCounter(len(p)); return len(p), nil }

// Writes whose results are large (puts and a delete range WithPrevKV, a transaction that reads
// what it writes), then a full compaction: the dedup table, as Status and the metric report it,
// and the snapshot stay within the budget. They used to keep every result for 100,000 log
// entries, so a backup here was as large as every value ever overwritten.
func TestStore_Dedup_BudgetBoundsTableAndSnapshot(t *testing.T) {
	const budget = 2 << 20
	reg := prometheus.NewRegistry()
	s := openMemStore(t, ember.WithDedupResultBytes(budget), ember.WithMetricsRegisterer(reg))
	ctx := ctxFor(t, time.Minute)
	writes := 0
	for i := range 5 {
		val := strings.Repeat(fmt.Sprint(i), 512<<10+i*128<<10) // 512 KiB to 1 MiB
		if _, err := s.Put(ctx, "k", val, ember.WithPrevKV()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, fmt.Sprintf("r/%d", i), val); err != nil {
			t.Fatal(err)
		}
		writes += 2
	}
	if _, err := s.Delete(ctx, "r/", ember.WithPrefix(), ember.WithPrevKV()); err != nil {
		t.Fatal(err)
	}
	tr, err := s.Txn(ctx).Then(ember.OpPut("n", "1"), ember.OpGet("k")).Commit()
	if err != nil || len(tr.Responses[1].Get().Kvs) != 1 {
		t.Fatalf("txn: %v", err)
	}
	writes += 2
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx, st.Revision); err != nil {
		t.Fatal(err)
	}
	writes++
	if st, err = s.Status(ctx); err != nil {
		t.Fatal(err)
	}
	// Every remembered write costs a record and a short result of at most 56 bytes beyond the
	// budget (the leader's start entry carries no request ID).
	limit := int64(budget + writes*56)
	if st.DedupBytes <= 0 || st.DedupBytes > limit {
		t.Fatalf("Status.DedupBytes = %d, want within (0, %d]", st.DedupBytes, limit)
	}
	if got := metric(t, reg, "ember_dedup_bytes"); got != float64(st.DedupBytes) {
		t.Fatalf("ember_dedup_bytes = %v, Status.DedupBytes = %d", got, st.DedupBytes)
	}
	var n byteCounter
	if err := s.Snapshot(ctx, &n); err != nil {
		t.Fatal(err)
	}
	if max := st.DBSizeInUse + st.DedupBytes + 4<<10; int64(n) > max {
		t.Fatalf("snapshot %d bytes, want at most %d (data %d, dedup table %d)", n, max, st.DBSizeInUse, st.DedupBytes)
	}
}

func TestOpen_WithDedupResultBytes_Negative(t *testing.T) {
	if s, err := ember.Open("", ember.WithDedupResultBytes(-1)); err == nil {
		s.Close()
		t.Fatal("Open accepted a negative dedup budget")
	}
}
