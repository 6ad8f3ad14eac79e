//go:build !race

package readindex

const raceEnabled = false
