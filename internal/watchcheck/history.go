package watchcheck

// AppendEvents adds events, in the order a watch delivered them, to the history h: an event
// starts a new Revision when its ModRevision differs from the last one's. It is how a test turns
// an unfiltered watch of the whole keyspace into the ground truth that Check compares against.
func AppendEvents(h []Revision, events []Event) []Revision {
	for _, e := range events {
		if len(h) == 0 || h[len(h)-1].Rev != e.Kv.ModRevision {
			h = append(h, Revision{Rev: e.Kv.ModRevision})
		}
		h[len(h)-1].Events = append(h[len(h)-1].Events, e)
	}
	return h
}
