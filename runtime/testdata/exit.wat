;; A reactor that calls proc_exit(2) during a call, as a Go panic does: a trap.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64)
    (call $exit (i32.const 2))
    (i64.const 0)))
