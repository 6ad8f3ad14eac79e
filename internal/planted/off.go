//go:build !plantbugs

package planted

// Enabled reports whether bug b is planted in this binary: never without the plantbugs tag.
// It inlines to the constant false, so the branches it guards compile away.
func Enabled(Bug) bool { return false }
