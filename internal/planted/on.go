//go:build plantbugs

package planted

import "os"

// EnvVar names the environment variable that selects the planted bug by its String name. It is
// read at every check, so a test can plant a bug with t.Setenv before it opens a store.
const EnvVar = "EMBER_PLANTED_BUG"

// Enabled reports whether bug b is the one selected by EnvVar.
func Enabled(b Bug) bool { return os.Getenv(EnvVar) == b.String() }

// String returns the name EnvVar selects b by.
func (b Bug) String() string {
	switch b {
	case LocalReads:
		return "local-reads"
	case AckBeforeCommit:
		return "ack-before-commit"
	case SkipWatchEvent:
		return "skip-watch-event"
	case SplitRevoke:
		return "split-revoke"
	}
	return "unknown"
}
