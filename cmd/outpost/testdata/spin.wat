;; Test fixture for the cloud e2e tests: spins (on the WASI monotonic clock)
;; for 500 ms times the first input byte's digit ("4…" spins 2 s), then
;; echoes its input. A call killed mid-spin is interrupted for sure.
(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $end i64)
    (drop (call $now (i32.const 1) (i64.const 0) (i32.const 0)))
    (local.set $end (i64.add (i64.load (i32.const 0))
      (i64.mul (i64.extend_i32_u (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48))) (i64.const 500000000))))
    (loop $spin
      (drop (call $now (i32.const 1) (i64.const 0) (i32.const 0)))
      (br_if $spin (i64.lt_u (i64.load (i32.const 0)) (local.get $end))))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))
