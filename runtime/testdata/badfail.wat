;; A reactor that passes an out-of-range message to outpost.fail: the guest
;; traps, the host survives.
(module
  (import "outpost" "fail" (func $fail (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64)
    (call $fail (i32.const 0xfffffff0) (i32.const 100))
    (i64.const 0)))
