// Package mirror copies the keys under a prefix of an ember store, as etcd's client/v3/mirror:
// a Syncer reads them all at one revision, page by page (SyncBase), then follows their changes
// from the next revision on by watch (SyncUpdates). Applying the pages, then the events, to
// another store (of the same cluster, another cluster, or a namespace) seeds a copy and keeps it
// up to date, with no change missed or applied twice.
//
// Compaction bounds a mirror as it bounds a watch: a page or a watch whose revision has been
// compacted fails with ember.ErrCompacted, and the mirror must start over from a new revision.
package mirror

import (
	"context"
	"errors"

	"github.com/ember-kv/ember"
)

var (
	// batchLimit is the most keys one page of SyncBase holds, as etcd's.
	batchLimit int64 = 1000
	// respBuffer is how many pages SyncBase reads ahead of its consumer, as etcd's.
	respBuffer = 1024
)

// ErrNoRevision is the reason of the canceled response SyncUpdates sends when the Syncer has
// no revision to follow from yet: it was made with revision 0 and SyncBase has not chosen one.
// (etcd's Syncer panics there.) The response's Err() has the same text.
var ErrNoRevision = errors.New("mirror: no revision to follow from; call SyncBase first")

// Syncer copies the keys under a prefix of a store.
type Syncer interface {
	// SyncBase sends the keys under the prefix at the Syncer's revision, as responses of at
	// most 1,000 keys in key order, then closes the response channel. The error channel gets
	// the error that ended the copy early, if any (ember.ErrCompacted when the revision has been
	// compacted, or ctx's error), and is closed after the response channel.
	SyncBase(ctx context.Context) (<-chan ember.GetResponse, chan error)
	// SyncUpdates watches the keys under the prefix from the revision after the Syncer's, so
	// that its events follow SyncBase's pages with nothing skipped or repeated.
	SyncUpdates(ctx context.Context) ember.WatchChan
}

// NewSyncer returns a Syncer of the keys under prefix (every key if prefix is empty) at
// revision rev; 0 means the store's revision when SyncBase starts. A Syncer is not safe for
// concurrent use: call SyncBase, then SyncUpdates.
func NewSyncer(s *ember.Store, prefix string, rev int64) Syncer {
	return &syncer{s: s, prefix: prefix, rev: rev}
}

type syncer struct {
	s      *ember.Store
	prefix string
	rev    int64
}

func (y *syncer) SyncBase(ctx context.Context) (<-chan ember.GetResponse, chan error) {
	respc := make(chan ember.GetResponse, respBuffer)
	errc := make(chan error, 1)
	if y.rev == 0 {
		// Any read reports the store's revision; etcd reads the prefix (or "foo") for it.
		key := y.prefix
		if key == "" {
			key = "foo"
		}
		r, err := y.s.Get(ctx, key, ember.WithCountOnly())
		if err != nil {
			errc <- err
			close(respc)
			close(errc)
			return respc, errc
		}
		y.rev = r.Header.Revision
	}
	key, end := y.prefix, ember.GetPrefixRangeEnd(y.prefix)
	if y.prefix == "" {
		key, end = "\x00", "\x00" // every key
	}
	opts := []ember.OpOption{ember.WithRange(end), ember.WithRev(y.rev), ember.WithLimit(batchLimit)}
	go func() {
		defer close(errc)
		defer close(respc)
		for {
			r, err := y.s.Get(ctx, key, opts...)
			if err != nil {
				errc <- err
				return
			}
			select {
			case respc <- *r:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
			if !r.More {
				return
			}
			key = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00" // the next key after the page's last
		}
	}()
	return respc, errc
}

func (y *syncer) SyncUpdates(ctx context.Context) ember.WatchChan {
	if y.rev == 0 {
		wc := make(chan ember.WatchResponse, 1)
		wc <- ember.WatchResponse{Canceled: true, CancelReason: ErrNoRevision.Error()}
		close(wc)
		return wc
	}
	return y.s.Watch(ctx, y.prefix, ember.WithPrefix(), ember.WithRev(y.rev+1))
}
