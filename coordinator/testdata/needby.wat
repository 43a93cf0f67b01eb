;; Calls the task named by its input with call_async_by, needed 5 ms from
;; now, and returns the code (i32, little-endian) followed by the held
;; message.
(module
  (import "outpost" "call_async_by" (func $call_async_by (param i32 i32 i32 i32 i64) (result i32)))
  (import "outpost" "now" (func $now (result i64)))
  (import "outpost" "result" (func $result (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32)
    (i32.store (i32.const 0)
      (call $call_async_by (local.get $ptr) (local.get $len) (i32.const 0) (i32.const 0)
        (i64.add (call $now) (i64.const 5000000))))
    (local.set $n (call $result (i32.const 4) (i32.const 512)))
    (i64.extend_i32_u (i32.add (i32.const 4) (select (local.get $n) (i32.const 512) (i32.lt_u (local.get $n) (i32.const 512)))))))
