;; A reactor exporting outpost_input_buffer (InputBuffer tests). It counts
;; the calls of its exports in globals. outpost_input_buffer(size) returns
;; the buffer at 1024 with capacity max(size, 32), except for the sizes 1000
;; (capacity 999, below the input), 1001 (a buffer past memory), 1002 (a
;; range whose end wraps 32 bits) and 1003 (a trap). The output of
;; outpost_handle is 8 bytes at 512, outpost_input_buffer calls then
;; outpost_alloc calls (i32 each), followed by a copy of the input.
(module
  (memory (export "memory") 1)
  (global $bufCalls (mut i32) (i32.const 0))
  (global $allocCalls (mut i32) (i32.const 0))
  (func (export "outpost_input_buffer") (param $size i32) (result i64)
    (global.set $bufCalls (i32.add (global.get $bufCalls) (i32.const 1)))
    (if (i32.eq (local.get $size) (i32.const 1000)) (then (return (i64.const 0x00000400000003e7))))
    (if (i32.eq (local.get $size) (i32.const 1001)) (then (return (i64.const 0xffff000000001000))))
    (if (i32.eq (local.get $size) (i32.const 1002)) (then (return (i64.const 0xffffffffffffffff))))
    (if (i32.eq (local.get $size) (i32.const 1003)) (then unreachable))
    (i64.or (i64.const 0x0000040000000000) ;; 1024 << 32
            (i64.extend_i32_u
              (select (local.get $size) (i32.const 32) (i32.gt_u (local.get $size) (i32.const 32))))))
  (func (export "outpost_alloc") (param i32) (result i32)
    (global.set $allocCalls (i32.add (global.get $allocCalls) (i32.const 1)))
    (i32.const 1024))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (i32.store (i32.const 512) (global.get $bufCalls))
    (i32.store (i32.const 516) (global.get $allocCalls))
    (memory.copy (i32.const 520) (local.get $ptr) (local.get $len))
    (i64.or (i64.const 0x0000020000000000) ;; 512 << 32
            (i64.extend_i32_u (i32.add (local.get $len) (i32.const 8))))))
