package runtime

import (
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// memPool is the engine's allocator of wasm linear memories
// (experimental.WithMemoryAllocator). On Linux each memory is an anonymous
// mapping reserving the memory's maximum size, off the Go heap: the garbage
// collector never scans or copies it, growing never moves it, and pages cost
// RAM only once touched. A closed instance's mapping goes back to a bounded
// pool and the next instance of the same maximum size reuses it, scrubbed:
// the bytes the previous instance used are zeroed before anyone sees them
// (cleared in place when few, returned to the kernel with MADV_DONTNEED when
// many, at once on free so an idle pool holds little RAM).
//
// Elsewhere (and when a mapping cannot be made, for example a 4 GiB
// reservation on a 32-bit host) memories live on the Go heap as wazero's own
// allocator does.
//
// Lock order: memPool.mu is a leaf.
type memPool struct {
	mu     sync.Mutex
	idle   map[uint64][]*mappedMem // by reserved size
	nidle  int
	closed bool
	leak   bool // closed with guests possibly still running: never unmap
}

const (
	// memPoolMaxIdle bounds the mappings kept for reuse over all sizes.
	memPoolMaxIdle = 64
	// scrubInline is the most bytes cleared with a loop on reuse; more are
	// returned to the kernel on free instead (the next touch maps zero pages).
	scrubInline = 256 << 10
)

func newMemPool() *memPool { return &memPool{idle: make(map[uint64][]*mappedMem)} }

var _ experimental.MemoryAllocator = (*memPool)(nil)

// Allocate implements experimental.MemoryAllocator.
func (p *memPool) Allocate(capacity, maxBytes uint64) experimental.LinearMemory {
	reserve := roundUp(max(maxBytes, capacity), osPageSize)
	if reserve > 0 {
		p.mu.Lock()
		if list := p.idle[reserve]; len(list) > 0 {
			m := list[len(list)-1]
			list[len(list)-1] = nil
			p.idle[reserve] = list[:len(list)-1]
			p.nidle--
			p.mu.Unlock()
			m.scrub()
			return m
		}
		p.mu.Unlock()
		if buf, ok := mapMemory(reserve); ok {
			return &mappedMem{pool: p, buf: buf}
		}
	}
	return &heapMem{max: maxBytes, buf: make([]byte, 0, capacity)}
}

// put takes back a freed mapping for reuse, or unmaps it.
func (p *memPool) put(m *mappedMem) {
	if m.used > scrubInline {
		// Give the pages back now; they read as zeros when touched again.
		releaseMemory(m.buf[:m.used])
		m.used = 0
	}
	p.mu.Lock()
	if p.closed || p.nidle >= memPoolMaxIdle {
		leak := p.leak
		p.mu.Unlock()
		if leak {
			releaseMemory(m.buf)
		} else {
			unmapMemory(m.buf)
		}
		return
	}
	p.idle[uint64(len(m.buf))] = append(p.idle[uint64(len(m.buf))], m)
	p.nidle++
	p.mu.Unlock()
}

// close unmaps the idle mappings; mappings freed later are unmapped as they
// come back. With guestsRunning (calls still in flight after the engine's
// close deadline) later mappings are only released, never unmapped, since a
// guest stopped by wazero may still be on its way out of one.
func (p *memPool) close(guestsRunning bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.nidle, p.closed, p.leak = nil, 0, true, guestsRunning
	p.mu.Unlock()
	for _, list := range idle {
		for _, m := range list {
			unmapMemory(m.buf)
		}
	}
}

// stats returns the number of idle mappings (for tests).
func (p *memPool) stats() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nidle
}

// mappedMem is one linear memory in a reserved mapping.
type mappedMem struct {
	pool *memPool
	buf  []byte // the whole reservation
	used uint64 // high-water mark of the length handed out since the last scrub
}

// Reallocate implements experimental.LinearMemory: the mapping never moves.
func (m *mappedMem) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil
	}
	m.used = max(m.used, size)
	return m.buf[:size:size]
}

// Free implements experimental.LinearMemory.
func (m *mappedMem) Free() { m.pool.put(m) }

// scrub zeroes what the previous user of the mapping touched.
func (m *mappedMem) scrub() {
	clear(m.buf[:m.used])
	m.used = 0
}

// heapMem is a linear memory on the Go heap (the fallback).
type heapMem struct {
	max uint64
	buf []byte
}

func (m *heapMem) Reallocate(size uint64) []byte {
	switch {
	case size > m.max:
		return nil
	case size <= uint64(cap(m.buf)):
		m.buf = m.buf[:size]
	default:
		nb := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.max))
		copy(nb, m.buf)
		m.buf = nb
	}
	return m.buf
}

func (m *heapMem) Free() { m.buf = nil }

func roundUp(n, to uint64) uint64 { return (n + to - 1) / to * to }
