// Package demo holds the scaffolding the multi-member examples share: a cluster of members in
// one process on loopback, and a writer that serializes their narration. It is not part of
// ember's API.
package demo

import (
	"context"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/internal/freeport"
)

// StartCluster opens one member per ID, each with a loopback peer address and a data dir under
// root, and waits until all are ready.
func StartCluster(ctx context.Context, root string, ids []string) (map[string]*ember.Store, error) {
	peers := map[string]string{}
	for _, id := range ids {
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		peers[id] = addr
	}
	stores := map[string]*ember.Store{}
	closeAll := func() {
		for _, s := range stores {
			s.Close()
		}
	}
	for _, id := range ids {
		s, err := ember.Open(filepath.Join(root, id),
			ember.WithNodeID(id),
			ember.WithBindAddr(peers[id]),
			ember.WithInitialCluster(peers),
			// Shorter than the 1s defaults, so that the cluster is ready quickly.
			ember.WithHeartbeatTimeout(500*time.Millisecond),
			ember.WithElectionTimeout(500*time.Millisecond))
		if err != nil {
			closeAll()
			return nil, err
		}
		stores[id] = s
	}
	for _, s := range stores {
		if err := s.WaitReady(ctx); err != nil {
			closeAll()
			return nil, err
		}
	}
	return stores, nil
}

// FreeAddr returns a loopback address whose port was free a moment ago and that no earlier
// call in this process returned, so that the demo's members can bind one each.
func FreeAddr() (string, error) { return freeport.Addr() }

// SyncWriter serializes the workers' narration.
type SyncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewSyncWriter returns a writer that serializes writes to w.
func NewSyncWriter(w io.Writer) *SyncWriter { return &SyncWriter{w: w} }

func (s *SyncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
