;; A reactor using a library and a data file: its output is the content of
;; the mounted file /data/greeting.txt followed by '0' + math.add(2, 3).
;; It outputs "!" if the file cannot be opened.
(module
  (import "math" "add" (func $add (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8000) "data/greeting.txt")
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "outpost_handle") (param i32 i32) (result i64)
    (local $n i32)
    ;; open for reading (rights fd_read = 2) from the preopen fd 3
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 8000) (i32.const 17) (i32.const 0)
          (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 8100))
      (then
        (i32.store8 (i32.const 0) (i32.const 33))
        (return (i64.const 1))))
    ;; iovec at 8200: buf 0, len 1024
    (i32.store (i32.const 8200) (i32.const 0))
    (i32.store (i32.const 8204) (i32.const 1024))
    (drop (call $fd_read (i32.load (i32.const 8100)) (i32.const 8200) (i32.const 1) (i32.const 8208)))
    (drop (call $fd_close (i32.load (i32.const 8100))))
    (local.set $n (i32.load (i32.const 8208)))
    (i32.store8 (local.get $n) (i32.add (i32.const 48) (call $add (i32.const 2) (i32.const 3))))
    (i64.extend_i32_u (i32.add (local.get $n) (i32.const 1)))))
