;; Imports from a module other than wasi_snapshot_preview1 and outpost: refused.
(module
  (import "env" "now" (func $now (result i64)))
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64) (i64.const 0)))
