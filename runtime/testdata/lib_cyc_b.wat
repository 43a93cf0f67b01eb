(module
  (import "a" "f" (func $f (result i32)))
  (func (export "f") (result i32) (call $f)))
