;; Test fixture: an output of as many MiB as the input has bytes, each byte
;; written ('x'), so the memory behind it is resident.
(module
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32)
    (local.set $n (i32.shl (local.get $len) (i32.const 20)))
    (drop (memory.grow (i32.shl (local.get $len) (i32.const 4))))
    (memory.fill (i32.const 0) (i32.const 120) (local.get $n))
    (i64.extend_i32_u (local.get $n))))
