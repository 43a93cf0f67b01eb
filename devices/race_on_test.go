//go:build race

package devices

// raceEnabled: the tests run under the race detector.
const raceEnabled = true
