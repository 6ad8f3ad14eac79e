package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestDistributedLock(t *testing.T) {
	var out bytes.Buffer
	st := &storage{}
	if err := run(&out, st); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())

	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.rejected) != 1 || st.rejected[0].worker != "worker-1" || st.rejected[0].data != "report v1, late" {
		t.Fatalf("rejected writes %+v, want only worker-1's late write", st.rejected)
	}
	if len(st.accepted) != 4 {
		t.Fatalf("accepted writes %+v, want 4: worker-1, the two others, worker-1 again", st.accepted)
	}
	if first := st.accepted[0]; first.worker != "worker-1" || first.token != st.rejected[0].token {
		t.Errorf("first accepted write %+v, want worker-1's with the token of its late write", first)
	}
	for i := 1; i < len(st.accepted); i++ {
		if prev, cur := st.accepted[i-1], st.accepted[i]; cur.token <= prev.token {
			t.Errorf("accepted token %d (%s) after %d (%s): not strictly increasing",
				cur.token, cur.worker, prev.token, prev.worker)
		}
	}
	if !strings.Contains(out.String(), "ember rejects /resource/last-writer=worker-1: IsOwner fails") {
		t.Errorf("the IsOwner guard did not stop worker-1's late write to ember")
	}
	if n := strings.Count(out.String(), "ember accepts"); n != 4 {
		t.Errorf("%d guarded writes to ember accepted, want 4", n)
	}
}
