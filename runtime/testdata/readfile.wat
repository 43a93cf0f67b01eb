;; A command reading the mounted file /data/x.txt to stdout. It exits 10 if
;; the file cannot be opened, 11 if it can be opened for writing, 12 if
;; /etc/passwd can be opened.
(module
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "data/x.txt")
  (data (i32.const 120) "etc/passwd")
  (func (export "_start")
    ;; open for reading: rights fd_read (2)
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 10) (i32.const 0)
          (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200))
      (then (call $exit (i32.const 10))))
    ;; iovec at 300: buf 1024, len 512
    (i32.store (i32.const 300) (i32.const 1024))
    (i32.store (i32.const 304) (i32.const 512))
    (drop (call $fd_read (i32.load (i32.const 200)) (i32.const 300) (i32.const 1) (i32.const 308)))
    (i32.store (i32.const 304) (i32.load (i32.const 308)))
    (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 312)))
    ;; open for writing with O_TRUNC (8), rights fd_write (64)
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 10) (i32.const 8)
          (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 204)))
      (then (call $exit (i32.const 11))))
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 120) (i32.const 10) (i32.const 0)
          (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 208)))
      (then (call $exit (i32.const 12))))))
