// Package authctx carries, from the etcd gateway (etcdapi) to the store's write path, the auth
// revision a request was authorized at, so that the state machine refuses the write if the auth
// state changed before it applied, as etcd's auth applier refuses it ("revision of auth store
// is old"). Being internal, it cannot be set by users of the in-process API, which is not
// authenticated.
package authctx

import (
	"context"
	"errors"
)

type revKey struct{}

// WithRev returns ctx carrying the auth revision rev (non-zero) a write was authorized at.
func WithRev(ctx context.Context, rev uint64) context.Context {
	return context.WithValue(ctx, revKey{}, rev)
}

// Rev returns the auth revision ctx carries, 0 if none.
func Rev(ctx context.Context) uint64 {
	rev, _ := ctx.Value(revKey{}).(uint64)
	return rev
}

// ErrOldRevision is matched (errors.Is) by the store's error for a write refused because the
// auth state changed after it was authorized. Nothing was applied.
var ErrOldRevision = errors.New("ember: auth state changed since the request was authorized")
