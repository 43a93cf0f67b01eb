;; outpost_handle with the wrong signature: refused.
(module
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param i32 i32) (result i32) (i32.const 0)))
