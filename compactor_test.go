package ember

import (
	"context"
	"testing"
	"time"
)

func withCompactInterval(d time.Duration) Option {
	return func(c *config) error { c.autoCompactInterval = d; return nil }
}

func TestAutoCompaction(t *testing.T) {
	tests := []struct {
		name      string
		mode, ret string
		interval  time.Duration
		// wAtLeast/wAtMost bound the compaction revision after the writes and a wait.
		wait     time.Duration
		wAtLeast func(rev int64) int64
		wAtMost  func(rev int64) int64
	}{
		{"revision keeps the last 10 revisions", "revision", "10", 20 * time.Millisecond, 300 * time.Millisecond,
			func(rev int64) int64 { return rev - 10 }, func(rev int64) int64 { return rev - 10 }},
		{"periodic keeps the last 200ms", "periodic", "200ms", 0, 600 * time.Millisecond,
			func(rev int64) int64 { return 2 }, func(rev int64) int64 { return rev }},
		{"retention 0 is off", "revision", "0", 20 * time.Millisecond, 200 * time.Millisecond,
			func(int64) int64 { return 0 }, func(int64) int64 { return 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := []Option{WithAutoCompaction(tc.mode, tc.ret)}
			if tc.interval > 0 {
				opts = append(opts, withCompactInterval(tc.interval))
			}
			s := openMem(t, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var rev int64
			for i := 0; i < 50; i++ {
				p, err := s.Put(ctx, "k", "v")
				if err != nil {
					t.Fatal(err)
				}
				rev = p.Header.Revision
			}
			time.Sleep(tc.wait)
			st, err := s.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.CompactRevision < tc.wAtLeast(rev) || st.CompactRevision > tc.wAtMost(rev) {
				t.Fatalf("compact revision %d after writes up to %d, want [%d, %d]", st.CompactRevision, rev, tc.wAtLeast(rev), tc.wAtMost(rev))
			}
		})
	}
}

func TestWithAutoCompaction_Parsing(t *testing.T) {
	tests := []struct {
		mode, ret string
		wErr      bool
		wPeriod   time.Duration
		wRevs     int64
	}{
		{"periodic", "1h", false, time.Hour, 0},
		{"periodic", "2", false, 2 * time.Hour, 0},
		{"periodic", "-1h", true, 0, 0},
		{"periodic", "soon", true, 0, 0},
		{"revision", "1000", false, 0, 1000},
		{"revision", "1h", true, 0, 0},
		{"hourly", "1", true, 0, 0},
	}
	for _, tc := range tests {
		var c config
		err := WithAutoCompaction(tc.mode, tc.ret)(&c)
		if (err != nil) != tc.wErr || c.autoCompactRetention != tc.wPeriod || c.autoCompactRevisions != tc.wRevs {
			t.Errorf("WithAutoCompaction(%q, %q): err %v, period %v, revisions %d", tc.mode, tc.ret, err, c.autoCompactRetention, c.autoCompactRevisions)
		}
	}
}
