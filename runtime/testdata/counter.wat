;; A stateful reactor: _initialize sets the counter to 100, each call adds one
;; and returns the counter as a little-endian u32.
(module
  (global $n (mut i32) (i32.const 0))
  (memory (export "memory") 1)
  (func (export "_initialize") (global.set $n (i32.const 100)))
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64)
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.store (i32.const 2048) (global.get $n))
    (i64.const 0x0000080000000004))) ;; ptr 2048, len 4
