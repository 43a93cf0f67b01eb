;; Test fixture for cloud runs: a reactor that counts its calls in a global
;; (state an instance keeps between calls) and returns the count as one
;; ASCII digit ("1", "2", ...).
(module
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64)
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (global.get $n)))
    (i64.const 1)))
