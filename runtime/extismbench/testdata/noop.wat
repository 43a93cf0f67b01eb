;; The no-op Outpost task of BenchmarkNoopThroughput: outpost_alloc hands out
;; a fixed buffer, outpost_handle returns an empty output. Build:
;; wat2wasm noop.wat -o noop.wasm
(module
  (memory (export "memory") 1 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64) (i64.const 0)))
