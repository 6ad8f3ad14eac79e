package watchcheck

import (
	"reflect"
	"testing"
)

func TestAppendEvents_GroupsByRevision(t *testing.T) {
	ev := func(key string, rev int64) Event { return Event{Kv: KeyValue{Key: key, ModRevision: rev}} }
	h := AppendEvents(nil, []Event{ev("a", 2), ev("b", 3), ev("c", 3)})
	h = AppendEvents(h, []Event{ev("d", 3), ev("e", 5)}) // a revision split across responses joins up
	want := []Revision{
		{Rev: 2, Events: []Event{ev("a", 2)}},
		{Rev: 3, Events: []Event{ev("b", 3), ev("c", 3), ev("d", 3)}},
		{Rev: 5, Events: []Event{ev("e", 5)}},
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("history %+v, want %+v", h, want)
	}
}
