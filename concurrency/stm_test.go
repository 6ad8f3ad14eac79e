package concurrency_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/concurrency"
)

var isolations = []struct {
	name string
	iso  concurrency.Isolation
}{
	{"SerializableSnapshot", concurrency.SerializableSnapshot},
	{"Serializable", concurrency.Serializable},
	{"RepeatableReads", concurrency.RepeatableReads},
	{"ReadCommitted", concurrency.ReadCommitted},
}

// balance reads an account through stm; a malformed balance aborts the transaction.
func balance(stm concurrency.STM, acct string) (int, error) {
	return strconv.Atoi(stm.Get(acct))
}

// transfer moves amount from one account to another inside stm. between, if set, runs between
// the two reads.
func transfer(stm concurrency.STM, from, to string, amount int, between func()) error {
	a, err := balance(stm, from)
	if err != nil {
		return err
	}
	if between != nil {
		between()
	}
	b, err := balance(stm, to)
	if err != nil {
		return err
	}
	stm.Put(from, strconv.Itoa(a-amount))
	stm.Put(to, strconv.Itoa(b+amount))
	return nil
}

func total(t testing.TB, s *ember.Store, accts []string) int {
	t.Helper()
	sum := 0
	for _, a := range accts {
		n, err := strconv.Atoi(value(t, s, a))
		if err != nil {
			t.Fatal(err)
		}
		sum += n
	}
	return sum
}

// TestSTM_Isolation runs concurrent random transfers at each isolation level. Every level but
// ReadCommitted must keep the total; ReadCommitted may lose updates, so it is only reported.
func TestSTM_Isolation(t *testing.T) {
	s := openStore(t)
	for _, lvl := range isolations {
		t.Run(lvl.name, func(t *testing.T) {
			accts := make([]string, 4)
			for i := range accts {
				accts[i] = fmt.Sprintf("/bank/%s/%d", lvl.name, i)
				put(t, s, accts[i], "100")
			}
			ctx := testCtx(t)
			var attempts atomic.Int32
			var wg sync.WaitGroup
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 10; i++ {
						p := rand.Perm(len(accts))
						_, err := concurrency.NewSTM(s, func(stm concurrency.STM) error {
							attempts.Add(1)
							return transfer(stm, accts[p[0]], accts[p[1]], 1+rand.IntN(10), nil)
						}, concurrency.WithIsolation(lvl.iso), concurrency.WithAbortContext(ctx))
						if err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			got := total(t, s, accts)
			t.Logf("40 transfers took %d attempts; total %d", attempts.Load(), got)
			if lvl.iso == concurrency.ReadCommitted {
				return
			}
			if got != 400 {
				t.Fatalf("total = %d, want 400", got)
			}
		})
	}
}

// TestSTM_ReadSkew commits a transfer between the two reads of another one. Every level but
// ReadCommitted notices and re-runs the second transfer.
func TestSTM_ReadSkew(t *testing.T) {
	s := openStore(t)
	for _, lvl := range isolations {
		t.Run(lvl.name, func(t *testing.T) {
			a, b := "/skew/"+lvl.name+"/a", "/skew/"+lvl.name+"/b"
			put(t, s, a, "100")
			put(t, s, b, "100")
			attempts := 0
			_, err := concurrency.NewSTM(s, func(stm concurrency.STM) error {
				attempts++
				return transfer(stm, a, b, 10, func() {
					if attempts == 1 {
						_, err := concurrency.NewSTM(s, func(stm concurrency.STM) error {
							return transfer(stm, a, b, 10, nil)
						})
						if err != nil {
							t.Error(err)
						}
					}
				})
			}, concurrency.WithIsolation(lvl.iso))
			if err != nil {
				t.Fatal(err)
			}
			got := total(t, s, []string{a, b})
			if lvl.iso == concurrency.ReadCommitted {
				if got == 200 || attempts != 1 {
					t.Fatalf("total %d after %d attempts; ReadCommitted should commit the skewed read", got, attempts)
				}
				return
			}
			if got != 200 || attempts != 2 {
				t.Fatalf("total %d after %d attempts, want 200 after 2", got, attempts)
			}
			if value(t, s, a) != "80" {
				t.Fatalf("a = %s, want 80", value(t, s, a))
			}
		})
	}
}

// TestSTM_BlindWrite writes a key the transaction did not read after another writer changed
// it. Only SerializableSnapshot treats that as a conflict.
func TestSTM_BlindWrite(t *testing.T) {
	s := openStore(t)
	tests := []struct {
		iso          concurrency.Isolation
		wantAttempts int
	}{
		{concurrency.SerializableSnapshot, 2},
		{concurrency.Serializable, 1},
	}
	for _, tt := range tests {
		pfx := fmt.Sprintf("/blind/%d/", tt.iso)
		put(t, s, pfx+"read", "r")
		attempts := 0
		_, err := concurrency.NewSTM(s, func(stm concurrency.STM) error {
			attempts++
			stm.Get(pfx + "read")
			if attempts == 1 {
				put(t, s, pfx+"written", "other")
			}
			stm.Put(pfx+"written", "mine")
			return nil
		}, concurrency.WithIsolation(tt.iso))
		if err != nil {
			t.Fatal(err)
		}
		if attempts != tt.wantAttempts || value(t, s, pfx+"written") != "mine" {
			t.Fatalf("isolation %d: %d attempts, value %q; want %d and mine",
				tt.iso, attempts, value(t, s, pfx+"written"), tt.wantAttempts)
		}
	}
}

func TestSTM_SnapshotReads(t *testing.T) {
	s := openStore(t)
	tests := []struct {
		name     string
		opts     []concurrency.STMOption
		wantSeen string // b as the first attempt sees it after a concurrent write
	}{
		{"SerializableSnapshot", nil, "old"},
		{"RepeatableReads", []concurrency.STMOption{concurrency.WithIsolation(concurrency.RepeatableReads)}, "new"},
		{"RepeatableReads with prefetch", []concurrency.STMOption{
			concurrency.WithIsolation(concurrency.RepeatableReads), concurrency.WithPrefetch("/snap/b")}, "old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			put(t, s, "/snap/a", "a")
			put(t, s, "/snap/b", "old")
			var seen []string
			_, err := concurrency.NewSTM(s, func(stm concurrency.STM) error {
				stm.Get("/snap/a")
				if len(seen) == 0 {
					put(t, s, "/snap/b", "new")
				}
				seen = append(seen, stm.Get("/snap/b"))
				return nil
			}, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if seen[0] != tt.wantSeen {
				t.Fatalf("first attempt read %q, want %q", seen[0], tt.wantSeen)
			}
			if last := seen[len(seen)-1]; last != "new" {
				t.Fatalf("committed attempt read %q, want new", last)
			}
		})
	}
}

func TestSTM_ReadYourWrites(t *testing.T) {
	s := openStore(t)
	put(t, s, "/ryw/k", "stored")
	storedRev := func() int64 {
		resp, err := s.Get(testCtx(t), "/ryw/k")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Kvs[0].ModRevision
	}()
	resp, err := concurrency.NewSTM(s, func(stm concurrency.STM) error {
		if got := stm.Get("/ryw/missing"); got != "" {
			return fmt.Errorf("Get of a missing key = %q", got)
		}
		if got := stm.Rev("/ryw/missing"); got != 0 {
			return fmt.Errorf("Rev of a missing key = %d", got)
		}
		stm.Put("/ryw/k", "buffered")
		if got := stm.Get("/ryw/k"); got != "buffered" {
			return fmt.Errorf("Get after Put = %q", got)
		}
		if got := stm.Rev("/ryw/k"); got != storedRev {
			return fmt.Errorf("Rev after Put = %d, want the stored %d", got, storedRev)
		}
		stm.Del("/ryw/k")
		if got := stm.Get("/ryw/k"); got != "" {
			return fmt.Errorf("Get after Del = %q", got)
		}
		stm.Put("/ryw/new", "v")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Succeeded {
		t.Fatal("NewSTM returned a failed commit")
	}
	if exists(t, s, "/ryw/k") || value(t, s, "/ryw/new") != "v" {
		t.Fatal("the buffered writes were not committed")
	}
}

func TestSTM_Aborts(t *testing.T) {
	s := openStore(t)
	put(t, s, "/abort/k", "v")
	errApply := errors.New("apply failed")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name  string
		apply func(concurrency.STM) error
		opts  []concurrency.STMOption
		want  error
	}{
		{"apply error", func(stm concurrency.STM) error {
			stm.Put("/abort/k", "changed")
			return errApply
		}, nil, errApply},
		{"context cancelled", func(stm concurrency.STM) error {
			stm.Get("/abort/k")
			stm.Put("/abort/k", "changed")
			return nil
		}, []concurrency.STMOption{concurrency.WithAbortContext(cancelled)}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := concurrency.NewSTM(s, tt.apply, tt.opts...)
			if !errors.Is(err, tt.want) || resp != nil {
				t.Fatalf("NewSTM = %v, %v; want nil, %v", resp, err, tt.want)
			}
			if v := value(t, s, "/abort/k"); v != "v" {
				t.Fatalf("aborted transaction wrote %q", v)
			}
		})
	}
}

func TestSTM_PanicPropagates(t *testing.T) {
	s := openStore(t)
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v, want the apply function's panic", r)
		}
	}()
	concurrency.NewSTM(s, func(concurrency.STM) error { panic("boom") })
}
