package etcdapi_test

import (
	"context"
	"testing"
	"time"
)

// asEtcdStep is one action of a comparison with etcd: run does it on one target (ember's
// gateway or etcd) and describes the outcome.
type asEtcdStep[T any] struct {
	name string
	run  func(ctx context.Context, tg T) string
}

// sameAsEtcd runs the steps in order on targets["ember"] and targets["etcd"] and fails every
// step whose outcomes differ; equal ones are logged.
func sameAsEtcd[T any](t *testing.T, targets map[string]T, steps []asEtcdStep[T]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails the test
	defer cancel()
	for _, s := range steps {
		got := map[string]string{}
		for name, tg := range targets {
			got[name] = s.run(ctx, tg)
		}
		if got["ember"] != got["etcd"] {
			t.Errorf("%s:\n ember: %s\n  etcd: %s", s.name, got["ember"], got["etcd"])
		} else {
			t.Logf("%s: %s", s.name, got["etcd"])
		}
	}
}
