//go:build !plantbugs

package planted

import "testing"

// Without the tag no bug can be planted, whatever the environment says.
func TestEnabled_WithoutTag(t *testing.T) {
	t.Setenv("EMBER_PLANTED_BUG", "local-reads")
	for _, b := range []Bug{LocalReads, AckBeforeCommit, SkipWatchEvent, SplitRevoke} {
		if Enabled(b) {
			t.Errorf("bug %d enabled without the plantbugs tag", b)
		}
	}
}
