//go:build plantbugs

package planted

import "testing"

// With the tag exactly the bug named by EnvVar is planted, and none when it is unset.
func TestEnabled_WithTag(t *testing.T) {
	all := []Bug{LocalReads, AckBeforeCommit, SkipWatchEvent, SplitRevoke}
	for _, sel := range append([]Bug{0}, all...) {
		name := sel.String()
		if sel == 0 {
			name = ""
		}
		t.Run("selected="+name, func(t *testing.T) {
			t.Setenv(EnvVar, name)
			for _, b := range all {
				if got := Enabled(b); got != (b == sel) {
					t.Errorf("%s=%q: Enabled(%s) = %v", EnvVar, name, b, got)
				}
			}
		})
	}
}
