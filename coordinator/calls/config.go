package calls

import (
	"cmp"
	goruntime "runtime"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
)

// SchedulerConfig bounds how calls run (config key scheduler).
type SchedulerConfig struct {
	// Workers is the global cap on calls running at once; 0 resolves to
	// max(4, 2 × CPUs).
	Workers int `yaml:"workers"`
	// QueueSize bounds calls waiting to run; a full queue refuses new calls (counted).
	QueueSize int `yaml:"queue_size"`
	// DrainTimeout is how long shutdown waits for queued and running calls.
	DrainTimeout confval.Duration `yaml:"drain_timeout"`
	// MemoryBudget bounds the wasm linear memory of all task instances
	// together, each counted at its memory limit; 0: no budget.
	MemoryBudget confval.ByteSize `yaml:"memory_budget"`
	// MaxParked bounds the calls that wait for a call they made with their
	// worker slot given back (each still holds its instance); 0 resolves to
	// max(16 × Workers, 64).
	MaxParked int `yaml:"max_parked"`
}

// SchedulerDefaults returns the scheduler settings a file leaves out;
// Workers and MaxParked stay 0 until Resolve.
func SchedulerDefaults() SchedulerConfig {
	return SchedulerConfig{QueueSize: 4096, DrainTimeout: confval.Duration(15 * time.Second)}
}

// Resolve fills the values derived from the host: workers from the CPUs,
// max_parked from the workers.
func (s *SchedulerConfig) Resolve() {
	s.Workers = cmp.Or(s.Workers, max(4, 2*goruntime.NumCPU()))
	s.MaxParked = cmp.Or(s.MaxParked, max(16*s.Workers, 64))
}

// Validate reports settings out of range.
func (s SchedulerConfig) Validate(c *confval.Checker) {
	if s.Workers < 1 {
		c.Errorf("workers", "must be at least 1")
	}
	if s.QueueSize < 1 {
		c.Errorf("queue_size", "must be at least 1")
	}
	if s.DrainTimeout < 0 {
		c.Errorf("drain_timeout", "must not be negative")
	}
	if s.MaxParked < 0 {
		c.Errorf("max_parked", "must not be negative (0: max(16 × workers, 64))")
	}
}
