;; A reactor that reports whether its memory starts clean: outpost_handle
;; returns the i64 at 4096 and, for a non-empty input, the i64 at 458752
;; (page 7, after growing to 8 pages), then writes non-zero bytes at both.
;; With fresh_instance every call must see zeros, whichever memory it reuses.
(module
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (i64.store (i32.const 512) (i64.load (i32.const 4096)))
    (i64.store (i32.const 520) (i64.const 0))
    (i64.store (i32.const 4096) (i64.const -1))
    (if (local.get $len)
      (then
        (if (i32.lt_u (memory.size) (i32.const 8))
          (then (drop (memory.grow (i32.sub (i32.const 8) (memory.size))))))
        (i64.store (i32.const 520) (i64.load (i32.const 458752)))
        (i64.store (i32.const 458752) (i64.const -1))))
    (i64.const 0x0000020000000010))) ;; ptr 512, len 16
