package ember

import (
	"context"
	"errors"
	"time"
)

// revisionModeInterval is how often revision-mode auto-compaction runs, as etcd.
const revisionModeInterval = 5 * time.Minute

// runAutoCompaction compacts history on the leader, as etcd's compactor (WithAutoCompaction):
//
//   - periodic: every retention/10 (at most every hour/10) it samples the revision; each time, it
//     compacts to the newest sample at least retention old, so history always covers the last
//     retention of time. The first compaction comes one retention after this member leads.
//   - revision: every five minutes it compacts to the current revision minus retention.
//
// Followers only sample nothing: a member that loses leadership starts over when it regains it.
func (s *Store) runAutoCompaction() {
	interval := s.cfg.autoCompactInterval
	if interval == 0 {
		switch s.cfg.autoCompactMode {
		case "periodic":
			interval = min(s.cfg.autoCompactRetention, time.Hour) / 10
		default:
			interval = revisionModeInterval
		}
	}
	if interval <= 0 || (s.cfg.autoCompactMode == "periodic" && s.cfg.autoCompactRetention == 0) ||
		(s.cfg.autoCompactMode == "revision" && s.cfg.autoCompactRevisions == 0) {
		return // retention 0 disables auto-compaction, as etcd
	}
	type sample struct {
		at  time.Time
		rev int64
	}
	var samples []sample
	s.every(interval, func() bool {
		if !s.IsLeader() {
			samples = nil
			return true
		}
		now, rev := time.Now(), s.watch.appliedRev()
		var target int64
		switch s.cfg.autoCompactMode {
		case "periodic":
			samples = append(samples, sample{now, rev})
			i := -1
			for j, sm := range samples {
				if now.Sub(sm.at) >= s.cfg.autoCompactRetention {
					i = j
				}
			}
			if i < 0 {
				return true
			}
			target = samples[i].rev
			samples = samples[i+1:]
		case "revision":
			target = rev - s.cfg.autoCompactRevisions
		}
		if target <= 1 {
			return true
		}
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		_, err := s.Compact(ctx, target)
		cancel()
		switch {
		case err == nil:
			s.log.Info("auto-compacted", "revision", target, "mode", s.cfg.autoCompactMode)
		case errors.Is(err, ErrCompacted), errors.Is(err, ErrStopped):
		default:
			s.log.Warn("auto-compaction failed", "revision", target, "error", err)
		}
		return true
	})
}
