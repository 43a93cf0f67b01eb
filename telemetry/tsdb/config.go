package tsdb

import (
	"cmp"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
)

// Config sizes the time-series DB under data_dir/telemetry (config key
// telemetry.store). Zero values mean "default" (WithDefaults).
type Config struct {
	// Retention drops points older than this (badger TTL).
	Retention confval.Duration `yaml:"retention"`
	// MaxSize drops the oldest hours once the DB is larger than this.
	MaxSize confval.ByteSize `yaml:"max_size"`
	// FlushInterval is how long updates are batched before they are written.
	FlushInterval confval.Duration `yaml:"flush_interval"`
	// MemtableSize and BlockCacheSize size badger for the time-series pattern.
	MemtableSize   confval.ByteSize `yaml:"memtable_size"`
	BlockCacheSize confval.ByteSize `yaml:"block_cache_size"`
}

// WithDefaults returns s with every zero value replaced by its default.
func (s Config) WithDefaults() Config {
	s.Retention.SetDefault(7 * 24 * time.Hour)
	s.FlushInterval.SetDefault(time.Second)
	s.MaxSize = cmp.Or(s.MaxSize, 1<<30)
	s.MemtableSize = cmp.Or(s.MemtableSize, 4<<20)
	s.BlockCacheSize = cmp.Or(s.BlockCacheSize, 8<<20)
	return s
}

// Validate reports settings out of range; s has its defaults applied.
func (s Config) Validate(c *confval.Checker) {
	if s.Retention.Std() < time.Minute {
		c.Errorf("retention", "must be at least 1m")
	}
	if s.MaxSize < 16<<20 {
		c.Errorf("max_size", "must be at least 16MiB")
	}
	if s.FlushInterval <= 0 || s.FlushInterval.Std() > time.Minute {
		c.Errorf("flush_interval", "must be between 1ns and 1m")
	}
	if s.MemtableSize < 1<<20 {
		c.Errorf("memtable_size", "must be at least 1MiB")
	}
}
