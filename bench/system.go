package main

import (
	"context"
	"fmt"

	"github.com/ember-kv/ember/internal/freeport"
)

// A system is one of the stores under comparison. start opens members on loopback, each with a
// data dir under root, and returns once every member is ready.
type system struct {
	name  string
	start func(ctx context.Context, members int, root string) (cluster, error)
}

var systems = []system{
	{"ember", startEmber},
	{"etcd", startEtcd},
}

// A cluster is a running set of members.
type cluster interface {
	// client returns the in-process client of the leader, or of a follower.
	client(follower bool) client
	close() error
}

// event is one watch event, reduced to what the workloads check.
type event struct {
	rev int64
	val []byte
}

// client is the subset of the etcd v3 API the workloads use, implemented by each system's
// native in-process client, so that a workload is written once.
type client interface {
	put(ctx context.Context, key, val string) (rev int64, err error)
	get(ctx context.Context, key string, serializable bool) error
	// cas puts val if key's mod revision is still modRev. It returns the key's mod revision
	// afterwards: the new one on success, the current one on a conflict.
	cas(ctx context.Context, key string, modRev int64, val string) (ok bool, rev int64, err error)
	// leasePut grants a lease and attaches a new key to it; oneEntry asks for both in one
	// request where the system has one (ember's GrantAndDo; etcd has none and makes two).
	leasePut(ctx context.Context, key, val string, ttl int64, oneEntry bool) error
	// watch returns once the watch is established; fn is called with each response's events on
	// the watch's own goroutine until ctx ends, or once with an error if the watch fails.
	watch(ctx context.Context, key string, prefix bool, fn func([]event, error)) error
}

// freeAddr returns a loopback address whose port was free a moment ago and was never returned
// before in this process.
func freeAddr() (string, error) { return freeport.Addr() }

func memberName(i int) string { return fmt.Sprintf("m%d", i+1) }
