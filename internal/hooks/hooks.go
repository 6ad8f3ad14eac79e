// Package hooks lets ember's own packages outside the root (the etcd gateway, package etcdapi)
// call what the public API leaves out. The root package sets every hook in its init, so any
// program that can hold a *ember.Store has them set; nothing else sets them.
package hooks

import "context"

// RaiseAlarm raises alarm (wire.AlarmNoSpace or wire.AlarmCorrupt) for member through st's log,
// as etcd's AlarmRequest ACTIVATE; st is an *ember.Store. Its errors are a write's.
var RaiseAlarm func(ctx context.Context, st any, member string, alarm uint8) error
