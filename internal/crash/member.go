package crash

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember"
)

// EnvMember names the environment variable that carries a member process's MemberConfig.
const EnvMember = "EMBER_CRASH_MEMBER"

// MemberConfig is everything a member process needs to start, or to restart from its data dir.
type MemberConfig struct {
	ID          string
	Dir         string
	ControlAddr string // loopback host:port of the control API
	// BindAddr and InitialCluster are empty for a single member, which then runs as an
	// embedded single-node store without a peer listener.
	BindAddr       string
	InitialCluster map[string]string

	HeartbeatTimeout  time.Duration
	ElectionTimeout   time.Duration
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64         // raft log kept behind a snapshot; 0 leaves ember's default
	LogStore          ember.LogStore // the raft log store of a new dir; 0 leaves ember's default
}

// requestTimeout bounds one control request inside the member; the parent's HTTP client waits
// a little longer, so that a slow write is answered, as an error, rather than cut off.
const requestTimeout = 5 * time.Second

// HelperMember is the body of the test binary's TestHelperMember. Without EnvMember it skips;
// with it, it runs the member until the parent kills it, or until the parent dies (its stdin
// closes), and never returns normally.
func HelperMember(t testing.TB) {
	env := os.Getenv(EnvMember)
	if env == "" {
		t.Skip("runs only as a member process started by package crash")
	}
	var cfg MemberConfig
	if err := json.Unmarshal([]byte(env), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "crash member: bad %s: %v\n", EnvMember, err)
		os.Exit(2)
	}
	// Exiting here, not returning, keeps the testing package from tearing down a store that
	// the parent treats as still running.
	if err := serveMember(cfg, os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "crash member %s: %v\n", cfg.ID, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveMember opens the member and serves its control API until parent reaches EOF.
func serveMember(cfg MemberConfig, parent io.Reader) error {
	opts := []ember.Option{
		ember.WithNodeID(cfg.ID),
		ember.WithLogger(hclog.New(&hclog.LoggerOptions{
			Name: cfg.ID, Level: hclog.Warn, Output: os.Stderr, TimeFormat: "15:04:05.000",
		})),
	}
	if cfg.BindAddr != "" {
		opts = append(opts, ember.WithBindAddr(cfg.BindAddr), ember.WithInitialCluster(cfg.InitialCluster))
	}
	if cfg.HeartbeatTimeout > 0 {
		opts = append(opts, ember.WithHeartbeatTimeout(cfg.HeartbeatTimeout))
	}
	if cfg.ElectionTimeout > 0 {
		opts = append(opts, ember.WithElectionTimeout(cfg.ElectionTimeout))
	}
	if cfg.SnapshotThreshold > 0 {
		opts = append(opts, ember.WithSnapshotThreshold(cfg.SnapshotThreshold))
	}
	if cfg.SnapshotInterval > 0 {
		opts = append(opts, ember.WithSnapshotInterval(cfg.SnapshotInterval))
	}
	if cfg.TrailingLogs > 0 {
		opts = append(opts, ember.WithRaftConfig(func(c *raft.Config) { c.TrailingLogs = cfg.TrailingLogs }))
	}
	if cfg.LogStore != 0 {
		opts = append(opts, ember.WithLogStore(cfg.LogStore))
	}
	s, err := ember.Open(cfg.Dir, opts...)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", cfg.ControlAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: controlAPI(s), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	parentGone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, parent)
		close(parentGone)
	}()
	select {
	case <-parentGone:
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	case err := <-served:
		return err
	}
}

// Wire types of the control API.
type (
	// PutResult answers PUT /kv.
	PutResult struct {
		Revision int64 `json:"revision"`
	}
	// KV is one key in a RangeResult.
	KV struct {
		Key         string `json:"key"`
		Value       string `json:"value"`
		ModRevision int64  `json:"modRevision"`
		Version     int64  `json:"version"`
	}
	// RangeResult answers GET /kv.
	RangeResult struct {
		Revision int64 `json:"revision"`
		KVs      []KV  `json:"kvs"`
	}
	// StatusResult answers GET /status.
	StatusResult struct {
		ID           string `json:"id"`
		Leader       string `json:"leader"`
		IsLeader     bool   `json:"isLeader"`
		RaftTerm     uint64 `json:"raftTerm"`
		RaftIndex    uint64 `json:"raftIndex"`
		AppliedIndex uint64 `json:"appliedIndex"`
		Revision     int64  `json:"revision"`
	}
	// HashResult answers GET /hash.
	HashResult struct {
		Hash            uint32 `json:"hash"`
		HashRevision    int64  `json:"hashRevision"`
		CompactRevision int64  `json:"compactRevision"`
		Revision        int64  `json:"revision"`
	}
	errorResult struct {
		Error string `json:"error"`
	}
)

func controlAPI(s *ember.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /kv", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		q := r.URL.Query()
		resp, err := s.Put(ctx, q.Get("key"), q.Get("value"))
		if err != nil {
			reply(w, err, nil)
			return
		}
		reply(w, nil, PutResult{Revision: resp.Header.Revision})
	})
	mux.HandleFunc("GET /kv", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		q := r.URL.Query()
		var resp *ember.GetResponse
		var err error
		if q.Has("key") {
			resp, err = s.Get(ctx, q.Get("key"))
		} else {
			resp, err = s.Get(ctx, q.Get("prefix"), ember.WithPrefix())
		}
		if err != nil {
			reply(w, err, nil)
			return
		}
		out := RangeResult{Revision: resp.Header.Revision, KVs: make([]KV, 0, len(resp.Kvs))}
		for _, kv := range resp.Kvs {
			out.KVs = append(out.KVs, KV{Key: string(kv.Key), Value: string(kv.Value),
				ModRevision: kv.ModRevision, Version: kv.Version})
		}
		reply(w, nil, out)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Status(r.Context())
		if err != nil {
			reply(w, err, nil)
			return
		}
		reply(w, nil, StatusResult{ID: st.ID, Leader: st.Leader, IsLeader: st.Leader == st.ID,
			RaftTerm: st.RaftTerm, RaftIndex: st.RaftIndex, AppliedIndex: st.AppliedIndex, Revision: st.Revision})
	})
	mux.HandleFunc("GET /hash", func(w http.ResponseWriter, r *http.Request) {
		rev, err := strconv.ParseInt(r.URL.Query().Get("rev"), 10, 64)
		if err != nil {
			reply(w, fmt.Errorf("bad rev: %w", err), nil)
			return
		}
		h, err := s.HashKV(r.Context(), rev)
		if err != nil {
			reply(w, err, nil)
			return
		}
		reply(w, nil, HashResult{Hash: h.Hash, HashRevision: h.HashRevision,
			CompactRevision: h.CompactRevision, Revision: h.Header.Revision})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		reply(w, s.WaitReady(ctx), struct{}{})
	})
	return mux
}

func reply(w http.ResponseWriter, err error, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		v = errorResult{Error: err.Error()}
	}
	json.NewEncoder(w).Encode(v)
}
