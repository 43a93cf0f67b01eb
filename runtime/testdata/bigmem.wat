;; A reactor declaring 32 pages (2 MiB) of initial memory.
(module
  (memory (export "memory") 32)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64) (i64.const 0)))
