package runtime

import (
	"math"
	"os"
	"syscall"
)

var osPageSize = uint64(os.Getpagesize())

// mapMemory reserves size bytes of zeroed, private anonymous memory; pages
// are backed by RAM only once touched.
func mapMemory(size uint64) ([]byte, bool) {
	if size > math.MaxInt {
		return nil, false
	}
	b, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return nil, false
	}
	return b, true
}

// releaseMemory gives b's pages back to the kernel: they read as zeros when
// touched again (MADV_DONTNEED on a private anonymous mapping).
func releaseMemory(b []byte) {
	if len(b) == 0 {
		return
	}
	if err := syscall.Madvise(b, syscall.MADV_DONTNEED); err != nil {
		clear(b) // keep the zero guarantee
	}
}

func unmapMemory(b []byte) { _ = syscall.Munmap(b) }
