;; A reactor whose outpost_handle never returns: stopped by the task timeout.
(module
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
