package etcdapi

import (
	"context"
	"reflect"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ember-kv/ember/embertest"
)

// Every method of every etcd service, called with clientv3.WithRequireLeader's metadata on a
// member cut off from the leader, is refused with etcd's "no leader" (a stream when it opens), as
// etcd's interceptors refuse them; without the metadata the member still serves a serializable
// read; after the heal the metadata no longer stops anything.
func TestRequireLeader_EveryMethod(t *testing.T) {
	c := embertest.NewCluster(t, 3)
	ctx := testCtx(t)
	f := c.Followers()[0]
	cli := serveTCP(t, f.Store())
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Get(ctx, "k"); err != nil { // linearizable: the member has applied the put
		t.Fatal(err)
	}
	c.Partition(f.ID)
	eventually(t, "the cut-off member to know no leader", func() bool {
		id, _ := f.Store().Leader()
		return id == ""
	})

	conn := cli.ActiveConnection()
	clients := []any{pb.NewKVClient(conn), pb.NewWatchClient(conn), pb.NewLeaseClient(conn),
		pb.NewClusterClient(conn), pb.NewMaintenanceClient(conn), pb.NewAuthClient(conn)}
	hasLeader := metadata.AppendToOutgoingContext(ctx, rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)
	called := 0
	for _, client := range clients {
		v := reflect.ValueOf(client)
		for i := range v.NumMethod() {
			name := v.Type().Method(i).Name
			err := callRequiringLeader(hasLeader, v.Method(i))
			if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != rpctypes.ErrorDesc(rpctypes.ErrGRPCNoLeader) {
				t.Errorf("%T.%s requiring a leader without one: %v, want %v", client, name, err, rpctypes.ErrGRPCNoLeader)
			}
			called++
		}
	}
	if called < 40 {
		t.Fatalf("called %d methods, want every method of the six services", called)
	}

	kv := pb.NewKVClient(conn)
	if r, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k"), Serializable: true}); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("serializable range without the metadata: %v, %v", r, err)
	}
	c.Heal()
	eventually(t, "a leader after the heal", func() bool {
		_, err := pb.NewClusterClient(conn).MemberList(hasLeader, &pb.MemberListRequest{})
		return err == nil
	})
	if _, err := kv.Put(hasLeader, &pb.PutRequest{Key: []byte("k"), Value: []byte("v2")}); err != nil {
		t.Fatalf("put requiring a leader after the heal: %v", err)
	}
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// callRequiringLeader calls one method of a generated etcd client with a zero request: a unary
// call's error, or a stream's first Recv error.
func callRequiringLeader(ctx context.Context, m reflect.Value) error {
	args := []reflect.Value{reflect.ValueOf(ctx)}
	if m.Type().NumIn() == 3 { // ctx, request, call options
		args = append(args, reflect.New(m.Type().In(1).Elem()))
	}
	out := m.Call(args)
	if err, _ := out[1].Interface().(error); err != nil {
		return err
	}
	recv := out[0].MethodByName("Recv")
	if !recv.IsValid() {
		return nil // a unary call that succeeded
	}
	err, _ := recv.Call(nil)[1].Interface().(error)
	return err
}
