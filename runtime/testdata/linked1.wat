;; A reactor that calls libraries: output is the byte '0' + math.add(2, 3)
;; followed by '0' + math.count() (the library's per-instance state).
(module
  (import "math" "add" (func $add (param i32 i32) (result i32)))
  (import "math" "count" (func $count (result i32)))
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64)
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (call $add (i32.const 2) (i32.const 3))))
    (i32.store8 (i32.const 1) (i32.add (i32.const 48) (call $count)))
    (i64.const 2))
  (func $variant (result i32) (i32.const 1)))
