package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ember-kv/ember/internal/syncbuf"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestGateway(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var out syncbuf.Buffer // what run prints, read while it runs
	done := make(chan error, 1)
	go func() { done <- run(ctx, &out, t.TempDir(), l) }()

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{l.Addr().String()},
		DialTimeout: 30 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cli.Put(rctx, "foo", "bar"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(rctx, "foo")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "bar" {
		t.Fatalf("get foo = %v, want bar", resp.Kvs)
	}
	cli.Close()

	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := "try: etcdctl --endpoints=" + l.Addr().String() + " put foo bar"
	if !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
}
