package ember

import (
	"context"
	"fmt"
	"time"

	"github.com/ember-kv/ember/internal/wire"
)

// AlarmType is what an alarm says, numbered as etcd's.
type AlarmType int32

const (
	// AlarmNoSpace: the store reached its space quota (WithQuotaBackendBytes). While it is
	// raised for any member, requests that add data fail with ErrNoSpace, as etcd's NOSPACE.
	AlarmNoSpace AlarmType = AlarmType(wire.AlarmNoSpace)
	// AlarmCorrupt: a member's state diverged from the others', as etcd's CORRUPT.
	AlarmCorrupt AlarmType = AlarmType(wire.AlarmCorrupt)
)

func (a AlarmType) String() string {
	switch a {
	case AlarmNoSpace:
		return "NOSPACE"
	case AlarmCorrupt:
		return "CORRUPT"
	}
	return fmt.Sprintf("AlarmType(%d)", int32(a))
}

// AlarmMember is a raised alarm: the member it was raised for, and its type.
type AlarmMember struct {
	MemberID string
	Alarm    AlarmType
}

// AlarmResponse answers AlarmList.
type AlarmResponse struct {
	Header ResponseHeader
	Alarms []AlarmMember // by member ID, then type
}

// AlarmList lists the raised alarms, as of a linearizable point. Alarms are replicated: every
// member lists the same.
func (s *Store) AlarmList(ctx context.Context) (*AlarmResponse, error) {
	v, err := s.readView(ctx, false)
	if err != nil {
		return nil, err
	}
	alarms := v.st.Alarms()
	out := &AlarmResponse{Header: s.header(v.st.Rev()), Alarms: make([]AlarmMember, len(alarms))}
	for i, a := range alarms {
		out.Alarms[i] = AlarmMember{MemberID: a.Member, Alarm: AlarmType(a.Type)}
	}
	return out, nil
}

// AlarmDisarm clears the alarm of type alarm raised for memberID, through the log, as etcd's
// AlarmDisarm; clearing an alarm that is not raised does nothing. Once no NOSPACE alarm is
// left, writes that add data are accepted again while the store is under its quota; one refused
// by the quota raises NOSPACE again. Its errors are a write's: ErrTimeout when it may have been
// applied.
func (s *Store) AlarmDisarm(ctx context.Context, memberID string, alarm AlarmType) error {
	if memberID == "" || alarm != AlarmNoSpace && alarm != AlarmCorrupt {
		return fmt.Errorf("ember: AlarmDisarm: member %q, alarm %v: want a member ID and AlarmNoSpace or AlarmCorrupt", memberID, alarm)
	}
	_, err := s.propose(ctx, &wire.Command{Kind: wire.KindAlarm, AlarmAction: wire.AlarmDeactivate,
		AlarmType: uint8(alarm), NodeID: memberID})
	return err
}

// AlarmActivate raises alarm for memberID through the log, as etcd's Maintenance.Alarm with
// ACTIVATE (which clientv3 does not wrap; the etcd gateway serves it): while NOSPACE is raised
// writes that add data fail with ErrNoSpace, while CORRUPT is raised every write fails with
// ErrCorrupt, until AlarmDisarm. Raising a raised alarm changes nothing. Its errors are a
// write's.
func (s *Store) AlarmActivate(ctx context.Context, memberID string, alarm AlarmType) error {
	if memberID == "" || alarm != AlarmNoSpace && alarm != AlarmCorrupt {
		return fmt.Errorf("ember: AlarmActivate: member %q, alarm %v: want a member ID and AlarmNoSpace or AlarmCorrupt", memberID, alarm)
	}
	_, err := s.propose(ctx, &wire.Command{Kind: wire.KindAlarm, AlarmAction: wire.AlarmActivate,
		AlarmType: uint8(alarm), NodeID: memberID})
	return err
}

// raiseNoSpaceTimeout bounds the proposal that raises NOSPACE.
const raiseNoSpaceTimeout = 10 * time.Second

// raiseNoSpace raises NOSPACE for this member through the log, as etcd does when its quota
// refuses a request, so that every member refuses writes until it is disarmed. It does not wait:
// the refused write has its answer already. One raise runs at a time, and none once the alarm
// is raised.
func (s *Store) raiseNoSpace() {
	if s.hasAlarm(s.id, wire.AlarmNoSpace) || !s.raisingNoSpace.CompareAndSwap(false, true) {
		return
	}
	started := s.spawn(func() {
		defer s.raisingNoSpace.Store(false)
		ctx, cancel := context.WithTimeout(s.ctx, raiseNoSpaceTimeout)
		defer cancel()
		_, err := s.propose(ctx, &wire.Command{Kind: wire.KindAlarm, AlarmAction: wire.AlarmActivate,
			AlarmType: wire.AlarmNoSpace, NodeID: s.id})
		if err != nil && s.ctx.Err() == nil {
			s.log.Warn("raising the NOSPACE alarm failed; the next write over the quota retries", "error", err)
		}
	})
	if !started {
		s.raisingNoSpace.Store(false)
	}
}

// hasAlarm reports whether this member's applied state has the alarm typ raised for member.
func (s *Store) hasAlarm(member string, typ uint8) bool {
	for _, a := range s.fsm.view().st.Alarms() {
		if a.Member == member && a.Type == typ {
			return true
		}
	}
	return false
}
