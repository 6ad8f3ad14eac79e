// Command etcd-gateway serves etcd's v3 API from a single ember member, so that etcdctl and
// programs written against etcd's clientv3 work with ember unchanged. It stores its data under
// ./data (or -data DIR), serves on 127.0.0.1:2379 (or -listen ADDR), and stops cleanly on
// Ctrl-C or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/etcdapi"
)

func main() {
	dir := flag.String("data", "data", "data directory of the ember member")
	listen := flag.String("listen", "127.0.0.1:2379", "address to serve etcd's v3 API on")
	peer := flag.String("peer", "", "host:port to listen on for other ember members (member list shows it as the peer URL); empty: a single member without a peer listener")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	var opts []ember.Option
	if *peer != "" {
		opts = append(opts, ember.WithBindAddr(*peer))
	}
	if err := run(ctx, os.Stdout, *dir, l, opts...); err != nil {
		log.Fatal(err)
	}
}

// run serves etcd's API for the member in dir on l until ctx ends.
func run(ctx context.Context, w io.Writer, dir string, l net.Listener, opts ...ember.Option) error {
	defer l.Close()
	s, err := ember.Open(dir, opts...)
	if err != nil {
		return err
	}
	defer s.Close()
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.WaitReady(readyCtx); err != nil {
		return err
	}

	fmt.Fprintf(w, "ember member %s serves etcd's API on %s\n", s.ID(), l.Addr())
	fmt.Fprintf(w, "try: etcdctl --endpoints=%s put foo bar\n", l.Addr())
	if err := etcdapi.Serve(ctx, s, l); err != nil {
		return err
	}
	fmt.Fprintln(w, "stopped")
	return nil
}
