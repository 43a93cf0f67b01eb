;; Test fixture: a call relayed along a list of tasks. Input: a mode byte
;; ('s': outpost.call, 'a': outpost.call_async then outpost.await) and a
;; comma-separated list of task names, for example "sb,a". With no name left
;; the guest answers "leaf"; otherwise it calls the first task with the mode
;; and the rest of the list, and answers the callee's output. A failed call
;; fails the guest with the held error message.
(module
  (import "outpost" "call" (func $call (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "outpost" "call_async" (func $call_async (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "await" (func $await (param i32 i32) (result i32)))
  (import "outpost" "result" (func $result (param i32 i32) (result i32)))
  (import "outpost" "fail" (func $fail (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "leaf")
  ;; the input at 1024 (inputs are short); the callee's input at 256; the
  ;; callee's output or error at 512.
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $end i32) (local $n i32) (local $r i32) (local $src i32) (local $name i32)
    (if (i32.le_u (local.get $len) (i32.const 1))
      (then (return (i64.or (i64.shl (i64.const 8) (i64.const 32)) (i64.const 4)))))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $name (i32.add (local.get $ptr) (i32.const 1)))
    ;; the first name ends at a comma or the end
    (local.set $i (local.get $name))
    (block $found
      (loop $scan
        (br_if $found (i32.ge_u (local.get $i) (local.get $end)))
        (br_if $found (i32.eq (i32.load8_u (local.get $i)) (i32.const 44)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    ;; the callee's input: the mode, then what follows the comma
    (i32.store8 (i32.const 256) (i32.load8_u (local.get $ptr)))
    (local.set $n (i32.const 1))
    (local.set $src (i32.add (local.get $i) (i32.const 1)))
    (block $copied
      (loop $copy
        (br_if $copied (i32.ge_u (local.get $src) (local.get $end)))
        (i32.store8 (i32.add (i32.const 256) (local.get $n)) (i32.load8_u (local.get $src)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (local.set $src (i32.add (local.get $src) (i32.const 1)))
        (br $copy)))
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 97)) ;; 'a'
      (then
        (local.set $r (call $call_async (local.get $name) (i32.sub (local.get $i) (local.get $name)) (i32.const 256) (local.get $n)))
        (if (i32.ge_s (local.get $r) (i32.const 0))
          (then (local.set $r (call $await (local.get $r) (i32.const 0))))))
      (else
        (local.set $r (call $call (local.get $name) (i32.sub (local.get $i) (local.get $name)) (i32.const 256) (local.get $n) (i32.const 512) (i32.const 0)))))
    (local.set $n (call $result (i32.const 512) (i32.const 256)))
    (local.set $n (select (local.get $n) (i32.const 256) (i32.lt_u (local.get $n) (i32.const 256))))
    (if (i32.lt_s (local.get $r) (i32.const 0))
      (then (call $fail (i32.const 512) (local.get $n)) (return (i64.const 0))))
    (i64.or (i64.const 2199023255552) (i64.extend_i32_u (local.get $n))))) ;; 512 << 32
