;; A reactor whose outpost_input_buffer has the wrong signature.
(module
  (memory (export "memory") 1)
  (func (export "outpost_input_buffer") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64) (i64.const 0)))
