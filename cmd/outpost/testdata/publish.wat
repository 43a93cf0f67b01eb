;; Test fixture for the publish-size e2e tests: publishes its input as the
;; payload of one QoS 1 message to "out/big" and returns outpost.publish's
;; return code (i32, little-endian) followed by the held value (the host's
;; message when the code is negative).
(module
  (import "outpost" "publish" (func $publish (param i32 i32 i32 i32 i32) (result i32)))
  (import "outpost" "result" (func $result (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "out/big")
  ;; the input buffer at 65536, growing memory to fit
  (func (export "outpost_alloc") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need (i32.add (i32.shr_u (i32.add (local.get $size) (i32.const 65535)) (i32.const 16)) (i32.const 1)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1)) (then unreachable))))
    (i32.const 65536))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32)
    (i32.store (i32.const 1024) (call $publish (i32.const 16) (i32.const 7) (local.get $ptr) (local.get $len) (i32.const 1)))
    (local.set $n (call $result (i32.const 1028) (i32.const 4096)))
    (i64.or (i64.const 4398046511104) ;; 1024 << 32
            (i64.extend_i32_u (i32.add (i32.const 4) (select (local.get $n) (i32.const 4096) (i32.lt_u (local.get $n) (i32.const 4096))))))))
