;; Fuzz fixture for every host function of ABI v1 and the input buffer
;; (FuzzHostABI). The input is op i32 and args a0..a5 i32, then free bytes; it
;; is at 1024 (outpost_alloc always returns 1024, outpost_input_buffer by
;; default (1024 << 32) | 64512) unless op 15 moved it. op n (1 to 14, in
;; import order below) calls that function with the args it takes, straight
;; from the input; op 15 makes the next outpost_input_buffer call return
;; (a0 << 32) | a1, unchecked; any other op returns at once. The output is the
;; function's result as an i64 at 512 (0 for op 15).
(module
  (import "outpost" "log" (func $log (param i32 i32 i32)))
  (import "outpost" "publish" (func $publish (param i32 i32 i32 i32 i32) (result i32)))
  (import "outpost" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "kv_delete" (func $kv_delete (param i32 i32) (result i32)))
  (import "outpost" "kv_list" (func $kv_list (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "call" (func $call (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "outpost" "result" (func $result (param i32 i32) (result i32)))
  (import "outpost" "meta" (func $meta (param i32 i32 i32) (result i32)))
  (import "outpost" "deadline" (func $deadline (result i64)))
  (import "outpost" "now" (func $now (result i64)))
  (import "outpost" "fail" (func $fail (param i32 i32)))
  (import "outpost" "telemetry_latest" (func $telemetry_latest (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "telemetry_query" (func $telemetry_query (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $in (mut i32) (i32.const 1024))     ;; the input of the current call
  (global $next (mut i64) (i64.const 0))      ;; set by op 15
  (global $hasNext (mut i32) (i32.const 0))
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_input_buffer") (param i32) (result i64)
    (if (global.get $hasNext)
      (then
        (global.set $hasNext (i32.const 0))
        (return (global.get $next))))
    (i64.const 0x000004000000fc00)) ;; (1024 << 32) | 64512
  (func $a (param $i i32) (result i32)
    (i32.load (i32.add (i32.add (global.get $in) (i32.const 4)) (i32.shl (local.get $i) (i32.const 2)))))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $op i32) (local $r i64)
    (global.set $in (local.get $ptr))
    (local.set $op (i32.load (local.get $ptr)))
    (block $done
      (if (i32.eq (local.get $op) (i32.const 1)) (then (call $log (call $a (i32.const 0)) (call $a (i32.const 1)) (call $a (i32.const 2))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 2)) (then (local.set $r (i64.extend_i32_s (call $publish (call $a (i32.const 0)) (call $a (i32.const 1)) (call $a (i32.const 2)) (call $a (i32.const 3)) (call $a (i32.const 4))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 3)) (then (local.set $r (i64.extend_i32_s (call $kv_get (call $a (i32.const 0)) (call $a (i32.const 1)) (call $a (i32.const 2)) (call $a (i32.const 3))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 4)) (then (local.set $r (i64.extend_i32_s (call $kv_put (call $a (i32.const 0)) (call $a (i32.const 1)) (call $a (i32.const 2)) (call $a (i32.const 3))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 5)) (then (local.set $r (i64.extend_i32_s (call $kv_delete (call $a (i32.const 0)) (call $a (i32.const 1))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 6)) (then (local.set $r (i64.extend_i32_s (call $kv_list (call $a (i32.const 0)) (call $a (i32.const 1)) (call $a (i32.const 2)) (call $a (i32.const 3))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 7)) (then (local.set $r (i64.extend_i32_s (call $call (call $a (i32.const 0)) (call $a (i32.const 1)) (call $a (i32.const 2)) (call $a (i32.const 3)) (call $a (i32.const 4)) (call $a (i32.const 5))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 8)) (then (local.set $r (i64.extend_i32_s (call $result (call $a (i32.const 0)) (call $a (i32.const 1))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 9)) (then (local.set $r (i64.extend_i32_s (call $meta (call $a (i32.const 0)) (call $a (i32.const 1)) (call $a (i32.const 2))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 10)) (then (local.set $r (call $deadline )) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 11)) (then (local.set $r (call $now )) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 12)) (then (call $fail (call $a (i32.const 0)) (call $a (i32.const 1))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 13)) (then (local.set $r (i64.extend_i32_s (call $telemetry_latest (call $a (i32.const 0)) (call $a (i32.const 1)) (call $a (i32.const 2)) (call $a (i32.const 3))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 14)) (then (local.set $r (i64.extend_i32_s (call $telemetry_query (call $a (i32.const 0)) (call $a (i32.const 1))))) (br $done)))
      (if (i32.eq (local.get $op) (i32.const 15))
        (then
          (global.set $next (i64.or (i64.shl (i64.extend_i32_u (call $a (i32.const 0))) (i64.const 32))
                                    (i64.extend_i32_u (call $a (i32.const 1)))))
          (global.set $hasNext (i32.const 1)))))
    (i64.store (i32.const 512) (local.get $r))
    (i64.const 0x0000020000000008))) ;; ptr 512, len 8
