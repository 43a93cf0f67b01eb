;; A reactor returning an output range outside its memory.
(module
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64)
    (i64.const 0x7fff000000000064)))
