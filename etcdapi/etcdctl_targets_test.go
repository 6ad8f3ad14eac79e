package etcdapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
	"github.com/ember-kv/ember/etcdapi"
	"github.com/ember-kv/ember/internal/syncbuf"
)

// How long one etcdctl command, or one wait for a background command's output, may take.
const ctlTimeout = 15 * time.Second

var (
	etcdctlOnce sync.Once
	etcdctlPath string
	etcdctlErr  error
)

// etcdctl returns the path of the real etcdctl binary, built once per test binary from the
// module's tool dependency. `go tool -n` builds it like `go build` would and leaves it in the
// build cache, so there is no temporary copy to clean up and later runs reuse it.
func etcdctl(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the etcdctl binary; skipped with -short")
	}
	etcdctlOnce.Do(func() {
		var stderr bytes.Buffer
		cmd := exec.Command("go", "tool", "-n", "etcdctl")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			etcdctlErr = fmt.Errorf("building etcdctl: %v\n%s", err, stderr.Bytes())
			return
		}
		etcdctlPath = strings.TrimSpace(string(out))
	})
	if etcdctlErr != nil {
		t.Fatal(etcdctlErr)
	}
	return etcdctlPath
}

// startEtcd starts a single-member etcd, the reference, and returns its client address. opts
// change its configuration.
func startEtcd(t testing.TB, opts ...func(*embed.Config)) string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	client := url.URL{Scheme: "http", Host: embertest.FreeAddr(t)}
	peer := url.URL{Scheme: "http", Host: embertest.FreeAddr(t)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	for _, o := range opts {
		o(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatal(err)
	case <-time.After(ctlTimeout):
		t.Fatal("etcd did not become ready")
	}
	return client.Host
}

// startEmber opens a single-member Store with a peer address, as a gateway deployment has, and
// serves the etcd API for it on a loopback port. opts are the Store's options.
func startEmber(t testing.TB, opts ...ember.Option) string {
	t.Helper()
	return startEmberGateway(t, nil, opts...)
}

// startEmberGateway is startEmber with the gateway's options gw.
func startEmberGateway(t testing.TB, gw []etcdapi.Option, opts ...ember.Option) string {
	t.Helper()
	st, err := ember.Open(t.TempDir(), append([]ember.Option{ember.WithBindAddr(embertest.FreeAddr(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	if err := st.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- etcdapi.Serve(sctx, st, l, gw...) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// newClient returns a clientv3 client for endpoint, used only to observe state between steps.
func newClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: ctlTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// result is what one etcdctl invocation printed and how it exited: exit is the exit status,
// -1 when a signal ended it, -2 when it could not run, -3 while it is still running.
type result struct {
	stdout, stderr string
	exit           int
}

// ctlCommand prepares an etcdctl invocation against endpoint, isolated from any ETCDCTL_*
// settings of the environment running the tests.
func ctlCommand(ctx context.Context, bin, endpoint string, args []string) *exec.Cmd {
	full := append([]string{"--endpoints=" + endpoint, "--dial-timeout=5s", "--command-timeout=10s"}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCDCTL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// exitCode is the process's exit status, or -1 when a signal ended it.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -2
	}
	return 0
}

// runCtl runs one etcdctl command to completion.
func runCtl(t testing.TB, bin, endpoint string, args []string, stdin string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	cmd := ctlCommand(ctx, bin, endpoint, args)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		fmt.Fprintf(&stderr, "(test: killed after %v)\n", ctlTimeout)
	}
	return result{stdout.String(), stderr.String(), exitCode(err)}
}

// bgCtl is an etcdctl command that keeps running across steps: watch, lock, elect.
type bgCtl struct {
	cmd            *exec.Cmd
	stdin          *os.File // held open: interactive watch exits on EOF
	stdout, stderr syncbuf.Buffer
	done           chan struct{}
	err            error
}

// startCtl starts etcdctl in the background; t.Cleanup kills it if a step did not stop it.
func startCtl(t testing.TB, bin, endpoint string, args []string, stdin string) *bgCtl {
	t.Helper()
	b := &bgCtl{done: make(chan struct{})}
	b.cmd = ctlCommand(context.Background(), bin, endpoint, args)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b.stdin = w
	b.cmd.Stdin, b.cmd.Stdout, b.cmd.Stderr = r, &b.stdout, &b.stderr
	err = b.cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	go func() {
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-b.done
		b.stdin.Close()
	})
	if _, err := w.WriteString(stdin); err != nil {
		t.Fatal(err)
	}
	return b
}

// waitFor waits until the process's stdout matches re, and reports whether it did.
func (b *bgCtl) waitFor(re *regexp.Regexp) bool {
	deadline := time.Now().Add(ctlTimeout)
	for !re.MatchString(b.stdout.String()) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-b.done:
			return re.MatchString(b.stdout.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

// stop interrupts the process, as a user's Ctrl-C would, and returns everything it printed.
func (b *bgCtl) stop() result {
	b.cmd.Process.Signal(syscall.SIGINT)
	return b.wait()
}

// wait waits for the process to end and returns everything it printed.
func (b *bgCtl) wait() result {
	select {
	case <-b.done:
	case <-time.After(ctlTimeout):
		b.cmd.Process.Kill()
		<-b.done
		b.stderr.Write([]byte("(test: killed, it did not end)\n"))
	}
	b.stdin.Close()
	return b.output()
}

func (b *bgCtl) output() result {
	exit := 0
	select {
	case <-b.done:
		exit = exitCode(b.err)
	default:
		exit = -3 // still running
	}
	return result{b.stdout.String(), b.stderr.String(), exit}
}
