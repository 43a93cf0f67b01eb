package store

import (
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
)

// Config sizes the badger state store under data_dir/state (config key
// storage).
type Config struct {
	MemtableSize     confval.ByteSize `yaml:"memtable_size"`
	NumMemtables     int              `yaml:"num_memtables"`
	BlockCacheSize   confval.ByteSize `yaml:"block_cache_size"`
	ValueLogFileSize confval.ByteSize `yaml:"value_log_file_size"`
	NumCompactors    int              `yaml:"num_compactors"`
	GCInterval       confval.Duration `yaml:"gc_interval"`
}

// Defaults returns the store's settings for an edge host.
func Defaults() Config {
	return Config{
		MemtableSize:     4 << 20,
		NumMemtables:     2,
		BlockCacheSize:   8 << 20,
		ValueLogFileSize: 64 << 20,
		NumCompactors:    2,
		GCInterval:       confval.Duration(10 * time.Minute),
	}
}

// Validate reports settings badger refuses or that make no sense.
func (s Config) Validate(c *confval.Checker) {
	if s.MemtableSize < 1<<20 {
		c.Errorf("memtable_size", "must be at least 1MiB")
	}
	if s.NumMemtables < 1 {
		c.Errorf("num_memtables", "must be at least 1")
	}
	if s.ValueLogFileSize < 1<<20 || s.ValueLogFileSize >= 2<<30 {
		c.Errorf("value_log_file_size", "must be between 1MiB and 2GiB")
	}
	if s.NumCompactors < 2 {
		c.Errorf("num_compactors", "must be at least 2 (badger needs two)")
	}
	if s.GCInterval <= 0 {
		c.Errorf("gc_interval", "must be positive")
	}
}
