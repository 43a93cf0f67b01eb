;; A reactor that reports its input as a failure message with outpost.fail.
(module
  (import "outpost" "fail" (func $fail (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (call $fail (local.get $ptr) (local.get $len))
    (i64.const 0)))
