package watchcheck

import (
	"slices"
	"strings"
	"testing"
)

func put(key, val string, create, mod, ver int64) Event {
	return Event{Type: Put, Kv: KeyValue{Key: key, Value: val, CreateRevision: create, ModRevision: mod, Version: ver}}
}

func del(key string, mod int64) Event {
	return Event{Type: Delete, Kv: KeyValue{Key: key, ModRevision: mod}}
}

func withPrev(e Event, p Event) Event {
	e.PrevKv = &p.Kv
	return e
}

// The history every case below is checked against.
var (
	a2 = put("a", "1", 2, 2, 1)
	b3 = put("b", "1", 3, 3, 1)
	c3 = put("c", "1", 3, 3, 1)
	a4 = withPrev(put("a", "2", 2, 4, 2), a2)
	b5 = withPrev(del("b", 5), b3)
	b6 = put("b", "2", 6, 6, 1)
	a6 = withPrev(del("a", 6), a4)
	c7 = withPrev(put("c", "2", 3, 7, 2), c3)

	history = []Revision{
		{2, []Event{a2}},
		{3, []Event{b3, c3}}, // a transaction
		{4, []Event{a4}},
		{5, []Event{b5}},
		{6, []Event{b6, a6}},
		{7, []Event{c7}},
	}
)

// evs is a response with the header revision of its last event, as a synced watch sends it.
func evs(es ...Event) Response {
	var rev int64
	for _, e := range es {
		rev = max(rev, e.Kv.ModRevision)
	}
	return Response{HeaderRev: rev, Events: es}
}

func progress(rev int64) Response { return Response{HeaderRev: rev} }

// stripPrev drops PrevKv, as a watch without WithPrevKV delivers.
func stripPrev(rs ...Response) []Response {
	out := make([]Response, len(rs))
	for i, r := range rs {
		out[i] = r
		out[i].Events = nil
		for _, e := range r.Events {
			e.PrevKv = nil
			out[i].Events = append(out[i].Events, e)
		}
	}
	return out
}

// everything watches all keys from revision 2 with PrevKV; its valid responses.
func everything(rs ...Response) Watch {
	return Watch{Key: "", End: "\x00", StartRev: 2, PrevKV: true, Responses: rs}
}

func kinds(vs []Violation) []Kind {
	var ks []Kind
	for _, v := range vs {
		if !slices.Contains(ks, v.Kind) {
			ks = append(ks, v.Kind)
		}
	}
	slices.Sort(ks)
	return ks
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		w      Watch
		wKinds []Kind
	}{
		{
			name: "valid: everything with bookmarks",
			w:    everything(evs(a2), evs(b3, c3, a4), progress(4), evs(b5, b6, a6), evs(c7), progress(7)),
		},
		{
			name: "valid: single key without PrevKV",
			w:    Watch{Key: "a", StartRev: 1, Responses: stripPrev(evs(a2), evs(a4), progress(5), evs(a6))},
		},
		{
			name: "valid: prefix range, deletes filtered, late start",
			w: Watch{Key: "b", End: "c", StartRev: 4, FilterDelete: true, PrevKV: true,
				Responses: []Response{evs(b6), progress(7)}},
		},
		{
			name: "valid: from-key, puts filtered",
			w:    Watch{Key: "b", End: "\x00", StartRev: 2, FilterPut: true, Responses: stripPrev(evs(b5), progress(6))},
		},
		{
			name: "valid: start 0 after a created response at 4",
			w: Watch{Key: "", End: "\x00", Responses: stripPrev(Response{HeaderRev: 4, Created: true},
				evs(b5), evs(b6, a6, c7), progress(7))},
		},
		{
			name: "valid: start 0 with CreatedRev, nothing delivered yet",
			w:    Watch{Key: "a", CreatedRev: 7, Responses: []Response{progress(7)}},
		},
		{
			name: "valid: future start revision",
			w:    Watch{Key: "a", StartRev: 5, Responses: stripPrev(progress(5), evs(a6))},
		},
		{
			name: "valid: compacted start is canceled",
			w: Watch{Key: "a", StartRev: 2, StartCompacted: true,
				Responses: []Response{{HeaderRev: 7, CompactRevision: 5, Canceled: true}}},
		},
		{
			name: "valid: canceled as compacted after falling behind",
			w: everything(evs(a2), evs(b3, c3),
				Response{HeaderRev: 7, CompactRevision: 5, Canceled: true}),
		},
		{
			name: "valid: PrevKv dropped by compaction",
			w: Watch{Key: "a", StartRev: 4, PrevKV: true, PrevCompactedThrough: 4,
				Responses: []Response{evs(put("a", "2", 2, 4, 2)), evs(a6)}},
		},
		{
			name:   "ordered: a transaction's events swapped",
			w:      everything(evs(a2), evs(c3, b3), evs(a4)),
			wKinds: []Kind{KindOrdered},
		},
		{
			name:   "ordered: revision goes backwards",
			w:      everything(evs(a2), evs(a4), evs(b3, c3), evs(b5)),
			wKinds: []Kind{KindOrdered},
		},
		{
			name:   "unique: a revision delivered twice",
			w:      everything(evs(a2), evs(b3, c3), evs(a4), evs(a4), progress(4)),
			wKinds: []Kind{KindUnique},
		},
		{
			name:   "unique: an event twice in one response",
			w:      everything(evs(a2), evs(b3, c3, c3)),
			wKinds: []Kind{KindUnique},
		},
		{
			name:   "reliable: a revision dropped in the middle",
			w:      everything(evs(a2), evs(b3, c3), evs(a4), evs(b6, a6), evs(c7)),
			wKinds: []Kind{KindReliable},
		},
		{
			name:   "reliable: events dropped before a compaction cancel",
			w:      everything(evs(a2), evs(a4), Response{HeaderRev: 7, CompactRevision: 6, Canceled: true}),
			wKinds: []Kind{KindReliable},
		},
		{
			name:   "atomic: a transaction split over two responses",
			w:      everything(evs(a2), evs(b3), evs(c3), evs(a4)),
			wKinds: []Kind{KindAtomic},
		},
		{
			name:   "atomic and reliable: part of a revision never arrives",
			w:      everything(evs(a2), evs(b3), evs(a4)),
			wKinds: []Kind{KindAtomic, KindReliable},
		},
		{
			name:   "resumable: the stream starts late",
			w:      everything(evs(b3, c3), evs(a4)),
			wKinds: []Kind{KindResumable},
		},
		{
			name: "resumable: an event before the start revision",
			w: Watch{Key: "a", StartRev: 3, PrevKV: true,
				Responses: []Response{evs(a2), evs(a4)}},
			wKinds: []Kind{KindResumable},
		},
		{
			name:   "resumable: an event before a created response's revision",
			w:      Watch{Key: "a", Responses: stripPrev(Response{HeaderRev: 4, Created: true}, evs(a4), evs(a6))},
			wKinds: []Kind{KindResumable},
		},
		{
			name: "resumable: a compacted start delivers events",
			w: Watch{Key: "a", StartRev: 2, StartCompacted: true,
				Responses: stripPrev(evs(a2))},
			wKinds: []Kind{KindResumable},
		},
		{
			name: "resumable: canceled as compacted below its next revision",
			w: everything(evs(a2), evs(b3, c3), evs(a4),
				Response{HeaderRev: 7, CompactRevision: 3, Canceled: true}),
			wKinds: []Kind{KindResumable},
		},
		{
			name: "resumable: a response after the cancel",
			w: everything(evs(a2), Response{HeaderRev: 7, CompactRevision: 4, Canceled: true},
				evs(b3, c3)),
			wKinds: []Kind{KindResumable},
		},
		{
			name:   "bookmarkable: progress before the events it covers",
			w:      everything(evs(a2), evs(b3, c3), evs(a4), progress(5), evs(b5)),
			wKinds: []Kind{KindBookmarkable},
		},
		{
			name:   "bookmarkable: progress behind delivered events",
			w:      everything(evs(a2), evs(b3, c3), evs(a4), progress(3)),
			wKinds: []Kind{KindBookmarkable},
		},
		{
			name:   "filter: a delete despite FilterDelete",
			w:      Watch{Key: "b", End: "c", StartRev: 2, FilterDelete: true, Responses: stripPrev(evs(b3), evs(b5), evs(b6))},
			wKinds: []Kind{KindFilter},
		},
		{
			name:   "filter: a key outside the range",
			w:      Watch{Key: "a", StartRev: 2, Responses: stripPrev(evs(a2), evs(b3, c3), evs(a4))},
			wKinds: []Kind{KindFilter},
		},
		{
			name: "prevkv: wrong previous value",
			w: everything(evs(a2), evs(b3, c3), evs(withPrev(put("a", "2", 2, 4, 2), put("a", "0", 2, 2, 1))),
				evs(b5, b6, a6), evs(c7)),
			wKinds: []Kind{KindPrevKV},
		},
		{
			name:   "prevkv: missing above the compaction",
			w:      everything(evs(a2), evs(b3, c3), evs(put("a", "2", 2, 4, 2))),
			wKinds: []Kind{KindPrevKV},
		},
		{
			name:   "prevkv: on a creation",
			w:      everything(evs(a2), evs(b3, withPrev(c3, a2))),
			wKinds: []Kind{KindPrevKV},
		},
		{
			name:   "prevkv: without WithPrevKV",
			w:      Watch{Key: "a", StartRev: 2, Responses: []Response{evs(a2), evs(a4)}},
			wKinds: []Kind{KindPrevKV},
		},
		{
			name:   "content: wrong value",
			w:      everything(evs(a2), evs(b3, c3), evs(withPrev(put("a", "X", 2, 4, 2), a2))),
			wKinds: []Kind{KindContent},
		},
		{
			name:   "content: a delete carrying a value",
			w:      everything(evs(a2), evs(b3, c3), evs(a4), evs(withPrev(Event{Type: Delete, Kv: KeyValue{Key: "b", Value: "1", ModRevision: 5}}, b3))),
			wKinds: []Kind{KindContent},
		},
		{
			name:   "content: a change that never happened",
			w:      everything(evs(a2), evs(b3, c3), evs(put("z", "1", 4, 4, 1))),
			wKinds: []Kind{KindContent},
		},
		{
			name:   "content: header revision below the events",
			w:      everything(evs(a2), Response{HeaderRev: 2, Events: []Event{b3, c3}}),
			wKinds: []Kind{KindContent},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := Check(history, tt.w)
			if got := kinds(vs); !slices.Equal(got, tt.wKinds) {
				var b strings.Builder
				for _, v := range vs {
					b.WriteString("\n\t" + v.String())
				}
				t.Fatalf("violated %v, want %v:%s", got, tt.wKinds, b.String())
			}
		})
	}
}

// A violation's detail names where it happened, so a failing test can be diagnosed from it.
func TestCheck_DetailNamesTheEvent(t *testing.T) {
	vs := Check(history, everything(evs(a2), evs(b3, c3), evs(a4), evs(b6, a6), evs(c7)))
	if len(vs) != 1 {
		t.Fatalf("got %v, want one violation", vs)
	}
	if w := `1 matching events missing, from DELETE "b"@5 to DELETE "b"@5`; !strings.Contains(vs[0].Detail, w) {
		t.Fatalf("detail %q does not contain %q", vs[0].Detail, w)
	}
}

func TestCheckHistory(t *testing.T) {
	tests := []struct {
		name    string
		history []Revision
		wCount  int
	}{
		{name: "valid", history: history},
		{name: "valid: starts mid-way, first changes judged by their PrevKv",
			history: history[2:]},
		{name: "revisions out of order",
			history: []Revision{history[0], history[2], history[1]}, wCount: 1},
		{name: "empty revision",
			history: []Revision{history[0], {Rev: 3}}, wCount: 1},
		{name: "change filed under another revision",
			history: []Revision{{2, []Event{a2, put("b", "1", 3, 3, 1)}}}, wCount: 2},
		{name: "key changed twice in a revision",
			history: []Revision{{2, []Event{a2, put("a", "2", 2, 2, 2)}}}, wCount: 1},
		{name: "version does not follow",
			history: []Revision{{2, []Event{a2}}, {3, []Event{put("a", "2", 2, 3, 3)}}}, wCount: 1},
		{name: "recreation keeps the old create revision",
			history: []Revision{{2, []Event{a2}}, {3, []Event{del("a", 3)}}, {4, []Event{put("a", "2", 2, 4, 2)}}}, wCount: 1},
		{name: "delete of a deleted key",
			history: []Revision{{2, []Event{a2}}, {3, []Event{del("a", 3)}}, {4, []Event{del("a", 4)}}}, wCount: 1},
		{name: "recorded PrevKv differs",
			history: []Revision{{2, []Event{a2}}, {3, []Event{withPrev(put("a", "2", 2, 3, 2), put("a", "0", 2, 2, 1))}}}, wCount: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := CheckHistory(tt.history)
			for _, v := range vs {
				if v.Kind != KindHistory {
					t.Errorf("kind %q, want %q", v.Kind, KindHistory)
				}
			}
			if len(vs) != tt.wCount {
				t.Fatalf("got %d violations %v, want %d", len(vs), vs, tt.wCount)
			}
		})
	}
}
