package main

import (
	"bytes"
	"maps"
	"testing"
)

func TestServiceDiscovery(t *testing.T) {
	var out bytes.Buffer
	cl := newClient()
	if err := run(&out, cl); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())

	cl.mu.Lock()
	defer cl.mu.Unlock()
	want := []change{
		{up: true, id: "web-3", addr: "127.0.0.1:8083"},
		{up: false, id: "web-1"},
		{up: false, id: "web-2"},
		{up: true, id: "web-1", addr: "127.0.0.1:9081"},
	}
	if len(cl.seen) != len(want) {
		t.Fatalf("client saw %v, want %v", cl.seen, want)
	}
	for i, ch := range cl.seen {
		if i > 0 && ch.rev <= cl.seen[i-1].rev {
			t.Errorf("change %v at revision %d after revision %d", ch, ch.rev, cl.seen[i-1].rev)
		}
		ch.rev = 0
		if ch != want[i] {
			t.Errorf("change %d is %v, want %v", i, ch, want[i])
		}
	}
	wantLive := map[string]string{"web-1": "127.0.0.1:9081", "web-3": "127.0.0.1:8083"}
	if !maps.Equal(cl.live, wantLive) {
		t.Errorf("final live set %v, want %v", cl.live, wantLive)
	}
}
