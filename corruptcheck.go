package ember

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ember-kv/ember/internal/wire"
)

// corruptCheckTimeout bounds one periodic hash check: the hashes, the linearizable barrier and
// the proposal that raises the alarm.
const corruptCheckTimeout = 30 * time.Second

// runCorruptCheck runs the periodic hash check (WithCorruptCheckInterval) while this member
// leads, as etcd's monitorKVHash: followers only wait for their turn.
func (s *Store) runCorruptCheck() {
	s.every(s.cfg.corruptCheckInterval, func() bool {
		if !s.IsLeader() {
			return true
		}
		ctx, cancel := context.WithTimeout(s.ctx, corruptCheckTimeout)
		err := s.corruptCheck(ctx)
		cancel()
		if err != nil && s.ctx.Err() == nil {
			s.log.Warn("periodic hash check failed; the next one retries", "error", err)
		}
		return true
	})
}

// peerHash is one member's answer to the leader's hash request; err is set if it gave none.
type peerHash struct {
	id   string
	resp *HashKVResponse
	err  error
}

// corruptCheck compares every other member's hash with this member's, as etcd v3.6's
// PeriodicCheck, and raises CORRUPT for the first member found to diverge.
//
// This member hashes its history at its applied revision rev, and the others hash theirs at
// rev too. A member that has not applied rev yet, or whose history at rev was compacted, answers
// an error and is skipped this time. Then a linearizable barrier brings this member past every
// revision the others had applied when they answered (they only apply what was committed before
// the barrier), so a member whose revision, or compact revision, is above this member's after
// the barrier applied something the log does not hold. Hashes are compared only when the compact
// revisions match: one compacted further has dropped versions the other still hashes.
func (s *Store) corruptCheck(ctx context.Context) error {
	mine, err := s.localHashKV(0)
	if err != nil {
		return err
	}
	conf, err := s.configuration()
	if err != nil {
		return err
	}
	peers := s.peerHashes(ctx, conf, mine.HashRevision)
	after, err := s.linearizableView(ctx)
	if err != nil {
		return fmt.Errorf("linearizable barrier: %w", err)
	}
	suspect, why := divergent(mine, after.st.Rev(), after.st.CompactRev(), peers)
	if suspect == "" {
		s.log.Debug("hash check: no divergence", "revision", mine.HashRevision)
		return nil
	}
	if s.hasAlarm(suspect, wire.AlarmCorrupt) {
		return nil // raised by an earlier check, and not disarmed since
	}
	s.log.Error("hash check: member's state diverged from the leader's; raising CORRUPT", "member", suspect, "reason", why)
	return s.AlarmActivate(ctx, suspect, AlarmCorrupt)
}

// divergent returns the first of peers (by ID) whose answer shows a state that diverged from
// the leader's, and why: the leader's hash was mine, and its revision and compact revision after
// the barrier rev2 and compact2. A member that did not answer is not judged.
func divergent(mine *HashKVResponse, rev2, compact2 int64, peers []peerHash) (id, why string) {
	for _, p := range peers {
		if p.err != nil {
			continue
		}
		switch r := p.resp; {
		case r.Header.Revision > rev2:
			return p.id, fmt.Sprintf("its revision %d is ahead of the leader's %d", r.Header.Revision, rev2)
		case r.CompactRevision > compact2:
			return p.id, fmt.Sprintf("its compact revision %d is ahead of the leader's %d", r.CompactRevision, compact2)
		case r.CompactRevision == mine.CompactRevision && r.Hash != mine.Hash:
			return p.id, fmt.Sprintf("its hash %#x at revision %d differs from the leader's %#x (compact revision %d)",
				r.Hash, mine.HashRevision, mine.Hash, mine.CompactRevision)
		}
	}
	return "", ""
}

// peerHashes asks every member of conf but this one for its hash at rev, all at once, and returns
// their answers by member ID.
func (s *Store) peerHashes(ctx context.Context, conf raft.Configuration, rev int64) []peerHash {
	req := encodeRev(rev)
	ctx, cancel := context.WithTimeout(ctx, s.probeTimeout())
	defer cancel()
	var (
		mu  sync.Mutex
		out []peerHash
		wg  sync.WaitGroup
	)
	for _, srv := range conf.Servers {
		if string(srv.ID) == s.id {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := peerHash{id: string(srv.ID)}
			b, err := s.call(ctx, string(srv.Address), mHashKV, req)
			if err == nil {
				p.resp, err = decodeHashKV(b)
			}
			p.err = err
			mu.Lock()
			out = append(out, p)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b peerHash) int { return cmp.Compare(a.id, b.id) })
	return out
}

// handleHashKV answers mHashKV: a varint revision (0 = current) → this member's revision,
// compact revision, hashed revision (varints) and hash (uvarint).
func (s *Store) handleHashKV(d *wire.Decoder) ([]byte, error) {
	rev := d.Varint()
	if err := d.Finish(); err != nil {
		return nil, err
	}
	if rev < 0 {
		return nil, fmt.Errorf("%w: negative revision %d", wire.ErrMalformed, rev)
	}
	h, err := s.localHashKV(rev)
	if err != nil {
		return nil, err
	}
	e := wire.Encoder{}
	e.Varint(h.Header.Revision)
	e.Varint(h.CompactRevision)
	e.Varint(h.HashRevision)
	e.Uvarint(uint64(h.Hash))
	return e.B, nil
}

func encodeRev(rev int64) []byte {
	e := wire.Encoder{}
	e.Varint(rev)
	return e.B
}

func decodeHashKV(b []byte) (*HashKVResponse, error) {
	d := wire.NewDecoder(b)
	h := &HashKVResponse{}
	h.Header.Revision, h.CompactRevision, h.HashRevision = d.Varint(), d.Varint(), d.Varint()
	hash := d.Uvarint()
	if err := d.Finish(); err != nil {
		return nil, err
	}
	if hash > 1<<32-1 {
		return nil, errors.New("ember: hash check: hash out of range")
	}
	h.Hash = uint32(hash)
	return h, nil
}
