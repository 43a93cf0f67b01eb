;; A chain of calls of the task "chain". Input: [n, mode]. n = 0 answers
;; "leaf"; otherwise the guest calls "chain" with [n-1, mode] and answers the
;; callee's output: mode 's' through outpost.call, mode 'a' through
;; outpost.call_async and outpost.await. A failed call fails the guest with
;; the held error (outpost.result).
(module
  (import "outpost" "call" (func $call (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "outpost" "call_async" (func $call_async (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "await" (func $await (param i32 i32) (result i32)))
  (import "outpost" "result" (func $result (param i32 i32) (result i32)))
  (import "outpost" "fail" (func $fail (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "chain")
  (data (i32.const 8) "leaf")
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $r i32)
    (local.set $n (i32.load8_u (local.get $ptr)))
    (if (i32.eqz (local.get $n))
      (then (return (i64.or (i64.shl (i64.const 8) (i64.const 32)) (i64.const 4)))))
    ;; the callee's input at 16: [n-1, mode]
    (i32.store8 (i32.const 16) (i32.sub (local.get $n) (i32.const 1)))
    (i32.store8 (i32.const 17) (i32.load8_u offset=1 (local.get $ptr)))
    (if (i32.eq (i32.load8_u offset=1 (local.get $ptr)) (i32.const 97)) ;; 'a'
      (then
        (local.set $r (call $call_async (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 2)))
        (if (i32.ge_s (local.get $r) (i32.const 0))
          (then (local.set $r (call $await (local.get $r) (i32.const 0))))))
      (else
        (local.set $r (call $call (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 2) (i32.const 512) (i32.const 0)))))
    (local.set $n (call $result (i32.const 512) (i32.const 256)))
    (if (i32.lt_s (local.get $r) (i32.const 0))
      (then (call $fail (i32.const 512) (select (local.get $n) (i32.const 256) (i32.lt_u (local.get $n) (i32.const 256)))) (return (i64.const 0))))
    (i64.or (i64.const 2199023255552) (i64.extend_i32_u (local.get $n))))) ;; 512 << 32
