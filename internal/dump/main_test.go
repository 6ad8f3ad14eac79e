package dump

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: the fixture's members are closed, and a dump
// closes the log it opened.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
