package freeport

import (
	"net"
	"strconv"
	"sync"
	"testing"
)

func TestAddr_NeverRepeats(t *testing.T) {
	const workers, each = 8, 200
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				a, err := Addr()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[a] {
					t.Errorf("address %s returned twice", a)
				}
				seen[a] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != workers*each {
		t.Fatalf("got %d distinct addresses, want %d", len(seen), workers*each)
	}
}

func TestAddr_OutsideEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	if low-lowest < 1000 {
		t.Skipf("ephemeral range starts at %d: no room below it", low)
	}
	for range 100 {
		a, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		_, p, _ := net.SplitHostPort(a)
		port, _ := strconv.Atoi(p)
		if port < lowest || port >= low {
			t.Fatalf("port %d outside [%d, %d)", port, lowest, low)
		}
	}
}
