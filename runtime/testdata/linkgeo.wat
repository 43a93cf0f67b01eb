;; A reactor importing geo (which imports math): output '0' + geo.sum3(1, 2, 3).
(module
  (import "geo" "sum3" (func $sum3 (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64)
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (call $sum3 (i32.const 1) (i32.const 2) (i32.const 3))))
    (i64.const 1)))
