;; Test fixture for every host function of ABI v1. outpost_alloc always returns 1024;
;; the input is: op i32 @1024, args a0..a5 i32 @1028..1048, extra i32 @1052, data from 1056
;; (the test computes absolute pointers into it). op n (1-based, in import order below) calls
;; that function with as many args as it takes; the output is the result as an i64 at 512
;; followed by the `extra` bytes after it (a buffer the test points the host at: 520).
;; op+100 does op, then outpost.result(520, extra): the held value replaces the buffer.
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
  (memory (export "memory") 1)
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func $a (param $i i32) (result i32) (i32.load (i32.add (i32.const 1028) (i32.shl (local.get $i) (i32.const 2)))))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $op i32) (local $r i64) (local $held i32)
    (local.set $op (i32.load (i32.const 1024)))
    (if (i32.ge_u (local.get $op) (i32.const 100))
      (then (local.set $op (i32.sub (local.get $op) (i32.const 100))) (local.set $held (i32.const 1))))
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
      unreachable)
    (if (local.get $held) (then (drop (call $result (i32.const 520) (call $a (i32.const 6))))))
    (i64.store (i32.const 512) (local.get $r))
    (i64.or (i64.shl (i64.const 512) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.const 8) (call $a (i32.const 6)))))))
