package ember

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: Close ends raft, the peer port, watches,
// keepalives and the lessor.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
