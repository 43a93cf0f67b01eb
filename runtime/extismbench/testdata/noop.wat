;; The no-op Outpost task of BenchmarkNoopThroughput: outpost_input_buffer
;; hands out one fixed 60 KiB buffer at 1024 (the host asks once per
;; instance), outpost_alloc the same buffer for hosts that predate it;
;; outpost_handle returns an empty output. Build: wat2wasm noop.wat -o noop.wasm
(module
  (memory (export "memory") 1 1)
  (func (export "outpost_input_buffer") (param i32) (result i64)
    (i64.const 0x000004000000f000)) ;; (1024 << 32) | 61440
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i64) (i64.const 0)))
