;; Test fixture for the log rate limit: the input is a count n (i32,
;; little-endian); each call logs n lines through outpost.log (info) and
;; writes n lines to stderr.
(module
  (import "outpost" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "flood line\n")
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32)
    (local.set $n (i32.load (local.get $ptr)))
    ;; iovec at 64: [16, 11)
    (i32.store (i32.const 64) (i32.const 16))
    (i32.store (i32.const 68) (i32.const 11))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (call $log (i32.const 1) (i32.const 16) (i32.const 10))
        (drop (call $fd_write (i32.const 2) (i32.const 64) (i32.const 1) (i32.const 80)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i64.const 0)))
