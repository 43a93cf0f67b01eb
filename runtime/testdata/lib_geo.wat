;; A library that imports another library: geo.sum2 = math.add twice.
(module
  (import "math" "add" (func $add (param i32 i32) (result i32)))
  (func (export "sum3") (param i32 i32 i32) (result i32)
    (call $add (call $add (local.get 0) (local.get 1)) (local.get 2))))
