;; Exercises outpost.call_async and outpost.await. Input: one scenario byte,
;; then the name of the task to call (with input "ping"). The output is four
;; i32 results r0..r3 (little-endian) and 200 bytes of a held value:
;;   'w' r0 = call_async, r1 = await(r0, 0), r2 = await(r0, 0) again,
;;       r3 = result after r1 (its bytes follow); when r0 is a code,
;;       r3 = result after r0 and no await
;;   'n' 65 call_async without await: r0 = the first, r1 = the 64th,
;;       r2 = the 65th, r3 = result after r2
;;   't' r0 = call_async, r1 = await(r0, 5 ms), r2 = await(r0, 0),
;;       r3 = result after r1
;;   'u' r0 = await(77, 0), r3 = result after it
;;   'p' call_async with the task name outside memory (traps)
(module
  (import "outpost" "call_async" (func $call_async (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "await" (func $await (param i32 i32) (result i32)))
  (import "outpost" "result" (func $result (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "ping")
  (global $name (mut i32) (i32.const 0))
  (global $nlen (mut i32) (i32.const 0))
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func $spawn (result i32)
    (call $call_async (global.get $name) (global.get $nlen) (i32.const 100) (i32.const 4)))
  (func $held (i32.store (i32.const 524) (call $result (i32.const 528) (i32.const 200))))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $op i32) (local $i i32) (local $h i32)
    (memory.fill (i32.const 512) (i32.const 0) (i32.const 16))
    (local.set $op (i32.load8_u (local.get $ptr)))
    (global.set $name (i32.add (local.get $ptr) (i32.const 1)))
    (global.set $nlen (i32.sub (local.get $len) (i32.const 1)))
    (if (i32.eq (local.get $op) (i32.const 119)) ;; 'w'
      (then
        (local.set $h (call $spawn))
        (i32.store (i32.const 512) (local.get $h))
        (if (i32.lt_s (local.get $h) (i32.const 0))
          (then (call $held))
          (else
            (i32.store (i32.const 516) (call $await (local.get $h) (i32.const 0)))
            (call $held)
            (i32.store (i32.const 520) (call $await (local.get $h) (i32.const 0)))))))
    (if (i32.eq (local.get $op) (i32.const 110)) ;; 'n'
      (then
        (loop $more
          (local.set $h (call $spawn))
          (if (i32.eqz (local.get $i)) (then (i32.store (i32.const 512) (local.get $h))))
          (if (i32.eq (local.get $i) (i32.const 63)) (then (i32.store (i32.const 516) (local.get $h))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $more (i32.lt_u (local.get $i) (i32.const 65))))
        (i32.store (i32.const 520) (local.get $h))
        (call $held)))
    (if (i32.eq (local.get $op) (i32.const 116)) ;; 't'
      (then
        (local.set $h (call $spawn))
        (i32.store (i32.const 512) (local.get $h))
        (i32.store (i32.const 516) (call $await (local.get $h) (i32.const 5)))
        (call $held)
        (i32.store (i32.const 520) (call $await (local.get $h) (i32.const 0)))))
    (if (i32.eq (local.get $op) (i32.const 117)) ;; 'u'
      (then
        (i32.store (i32.const 512) (call $await (i32.const 77) (i32.const 0)))
        (call $held)))
    (if (i32.eq (local.get $op) (i32.const 112)) ;; 'p'
      (then (drop (call $call_async (i32.const 0xFFFFFFF0) (i32.const 4) (i32.const 100) (i32.const 4)))))
    (i64.or (i64.const 2199023255552) (i64.const 216)))) ;; (512 << 32) | 216
