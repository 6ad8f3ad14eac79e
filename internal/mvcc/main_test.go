package mvcc

import (
	"testing"

	"go.uber.org/goleak"
)

// The state runs no goroutines; its tests must leave none behind either.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
