//go:build unix

package crash

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ember-kv/ember"
	"github.com/ember-kv/ember/embertest"
)

// Options shapes a Cluster. Zero durations and counts leave ember's defaults.
type Options struct {
	Members           int
	HeartbeatTimeout  time.Duration
	ElectionTimeout   time.Duration
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	LogStore          ember.LogStore // 0 leaves ember's default
}

// Cluster is a set of member processes on loopback, each with its own data dir. Its methods
// may be called from several goroutines; a Member must be killed and started by one at a time.
type Cluster struct {
	t       testing.TB
	members []*Member
	client  *http.Client
}

// Member is one member process and its data dir, which outlives the process.
type Member struct {
	Config MemberConfig

	c       *Cluster
	logPath string

	mu     sync.Mutex
	proc   *process // nil while stopped
	starts int
}

type process struct {
	cmd   *exec.Cmd
	stdin io.Closer // its other end is the member's stdin: the member exits when it closes
	done  chan struct{}
	err   error // the process's exit, set before done closes
}

// NewCluster starts opts.Members member processes and waits until each is ready. A single
// member runs without a peer listener, as an embedded store does. Every process is killed in
// t.Cleanup, which also fails the test if any member's output shows a data race or a panic.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, client: &http.Client{
		// Longer than requestTimeout, so that the member's own answer arrives first.
		Timeout:   requestTimeout + 5*time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 16},
	}}
	logDir := t.TempDir()
	peers := map[string]string{}
	for i := 1; i <= opts.Members; i++ {
		id := fmt.Sprintf("m%d", i)
		m := &Member{c: c, logPath: filepath.Join(logDir, id+".log"), Config: MemberConfig{
			ID: id, Dir: t.TempDir(), ControlAddr: embertest.FreeAddr(t),
			HeartbeatTimeout: opts.HeartbeatTimeout, ElectionTimeout: opts.ElectionTimeout,
			SnapshotThreshold: opts.SnapshotThreshold, SnapshotInterval: opts.SnapshotInterval,
			TrailingLogs: opts.TrailingLogs,
			LogStore:     opts.LogStore,
		}}
		if opts.Members > 1 {
			m.Config.BindAddr = embertest.FreeAddr(t)
			peers[id] = m.Config.BindAddr
		}
		c.members = append(c.members, m)
	}
	for _, m := range c.members {
		if len(peers) > 0 {
			m.Config.InitialCluster = peers
		}
	}
	t.Cleanup(c.stopAll)
	for _, m := range c.members {
		c.Start(m)
	}
	for _, m := range c.members {
		if err := m.WaitReady(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Members returns every member, running or not.
func (c *Cluster) Members() []*Member { return c.members }

// Start starts m's process from its data dir; m must not be running.
func (c *Cluster) Start(m *Member) {
	c.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		c.t.Fatalf("start %s: already running", m.Config.ID)
	}
	env, err := json.Marshal(m.Config)
	if err != nil {
		c.t.Fatal(err)
	}
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	defer logf.Close()
	m.starts++
	fmt.Fprintf(logf, "=== crash: start %d of %s at %s\n", m.starts, m.Config.ID, time.Now().Format("15:04:05.000"))
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMember$", "-test.timeout=0")
	cmd.Env = append(os.Environ(), EnvMember+"="+string(env))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a kill reaches everything it might start, and a ^C at
	// the terminal reaches only the parent, which then kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", m.Config.ID, err)
	}
	p := &process{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	m.proc = p
}

// Kill sends SIGKILL to m's process group and waits until the process is gone.
func (m *Member) Kill() {
	t := m.c.t
	t.Helper()
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p == nil {
		return
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill %s: %v", m.Config.ID, err)
	}
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s (pid %d) still running 30s after SIGKILL", m.Config.ID, p.cmd.Process.Pid)
	}
}

// PID returns the process ID of m's process, or 0 while it is stopped.
func (m *Member) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.cmd.Process.Pid
}

// Exited returns a description of how m's process ended if it is supposed to run but is gone,
// and "" otherwise.
func (m *Member) Exited() string {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return ""
	}
	select {
	case <-p.done:
		return fmt.Sprintf("%s exited on its own (%v); its output ends:\n%s", m.Config.ID, p.err, m.LogTail(4096))
	default:
		return ""
	}
}

func (c *Cluster) stopAll() {
	for _, m := range c.members {
		m.Kill()
	}
	c.client.CloseIdleConnections()
	for _, m := range c.members {
		if bad := scanLog(m.logPath); bad != "" {
			c.t.Errorf("member %s: %s", m.Config.ID, bad)
		}
	}
}

// scanLog returns the first sign in a member's output of a data race, a panic or a fatal
// runtime error, with the lines after it.
func scanLog(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var found []string
	for sc.Scan() {
		l := sc.Text()
		if len(found) == 0 && (strings.HasPrefix(l, "WARNING: DATA RACE") ||
			strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ")) {
			found = append(found, l)
			continue
		}
		if len(found) > 0 {
			found = append(found, l)
			if len(found) == 40 {
				break
			}
		}
	}
	return strings.Join(found, "\n")
}

// LogTail returns the last n bytes of everything m's processes wrote.
func (m *Member) LogTail(n int64) string {
	f, err := os.Open(m.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// WaitReady waits until m answers /ready: its store has a leader and has caught up with it.
func (m *Member) WaitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if gone := m.Exited(); gone != "" {
			return errors.New(gone)
		}
		if last = m.call(http.MethodGet, "/ready", nil, nil); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v: %v", m.Config.ID, within, last)
}

// Put writes key=value through m and returns the revision of the acknowledged write.
func (m *Member) Put(key, value string) (int64, error) {
	var r PutResult
	err := m.call(http.MethodPut, "/kv", url.Values{"key": {key}, "value": {value}}, &r)
	return r.Revision, err
}

// Get reads key through m, linearizably.
func (m *Member) Get(key string) (RangeResult, error) {
	var r RangeResult
	err := m.call(http.MethodGet, "/kv", url.Values{"key": {key}}, &r)
	return r, err
}

// Range reads every key under prefix through m, linearizably.
func (m *Member) Range(prefix string) (RangeResult, error) {
	var r RangeResult
	err := m.call(http.MethodGet, "/kv", url.Values{"prefix": {prefix}}, &r)
	return r, err
}

// Status returns m's progress.
func (m *Member) Status() (StatusResult, error) {
	var r StatusResult
	err := m.call(http.MethodGet, "/status", nil, &r)
	return r, err
}

// Hash returns m's HashKV at rev.
func (m *Member) Hash(rev int64) (HashResult, error) {
	var r HashResult
	err := m.call(http.MethodGet, "/hash", url.Values{"rev": {strconv.FormatInt(rev, 10)}}, &r)
	return r, err
}

func (m *Member) call(method, path string, q url.Values, out any) error {
	u := "http://" + m.Config.ControlAddr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(context.Background(), method, u, nil)
	if err != nil {
		return err
	}
	resp, err := m.c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e errorResult
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s %s on %s: %s: %s", method, path, m.Config.ID, resp.Status, e.Error)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
