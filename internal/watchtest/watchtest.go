// Package watchtest converts ember's watch responses to watchcheck's plain types, for the tests
// that check watch guarantees (watchcheck itself stays free of ember).
package watchtest

import (
	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/watchcheck"
)

// KV converts one key-value pair.
func KV(kv *ember.KeyValue) watchcheck.KeyValue {
	return watchcheck.KeyValue{Key: string(kv.Key), Value: string(kv.Value), CreateRevision: kv.CreateRevision,
		ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
}

// Response converts one watch response, events and their previous versions included.
func Response(resp ember.WatchResponse) watchcheck.Response {
	r := watchcheck.Response{HeaderRev: resp.Header.Revision, CompactRevision: resp.CompactRevision,
		Created: resp.Created, Canceled: resp.Canceled}
	for _, e := range resp.Events {
		ev := watchcheck.Event{Type: watchcheck.EventType(e.Type), Kv: KV(e.Kv)}
		if e.PrevKv != nil {
			p := KV(e.PrevKv)
			ev.PrevKv = &p
		}
		r.Events = append(r.Events, ev)
	}
	return r
}
