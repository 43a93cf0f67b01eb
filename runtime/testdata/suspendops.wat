;; Exercises outpost.suspend and outpost_resume. Input: one scenario byte,
;; then the name of the task to call (with input "ping"). The output is
;; r0..r3 (i32, little-endian) and 200 bytes of a held value, as in
;; asyncops.wat:
;;   's' r0 = call_async, r1 = suspend("kept", [r0]), r3 = result after r1
;;   'z' r1 = suspend("kept", []), r3 = result after it
;;   'x' r0 = call_async, r1 = suspend("kept", [99]), r3 = result after it
;;   'f' r0 = call_async, r1 = suspend("kept", [r0]), then outpost.fail
;; outpost_resume returns its input (the resume document).
(module
  (import "outpost" "call_async" (func $call_async (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "suspend" (func $suspend (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "result" (func $result (param i32 i32) (result i32)))
  (import "outpost" "fail" (func $fail (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "ping")
  (data (i32.const 200) "kept")
  (data (i32.const 304) "\63\00\00\00") ;; handle 99
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  (func $held (i32.store (i32.const 524) (call $result (i32.const 528) (i32.const 200))))
  (func (export "outpost_resume") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $op i32) (local $h i32)
    (memory.fill (i32.const 512) (i32.const 0) (i32.const 16))
    (local.set $op (i32.load8_u (local.get $ptr)))
    (if (i32.ne (local.get $op) (i32.const 122)) ;; not 'z': make a call
      (then
        (local.set $h (call $call_async (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))
          (i32.const 100) (i32.const 4)))
        (i32.store (i32.const 512) (local.get $h))
        (i32.store (i32.const 300) (local.get $h))))
    (if (i32.eq (local.get $op) (i32.const 122)) ;; 'z'
      (then (i32.store (i32.const 516) (call $suspend (i32.const 200) (i32.const 4) (i32.const 300) (i32.const 0)))))
    (if (i32.eq (local.get $op) (i32.const 120)) ;; 'x'
      (then (i32.store (i32.const 516) (call $suspend (i32.const 200) (i32.const 4) (i32.const 304) (i32.const 1)))))
    (if (i32.or (i32.eq (local.get $op) (i32.const 115)) (i32.eq (local.get $op) (i32.const 102))) ;; 's', 'f'
      (then (i32.store (i32.const 516) (call $suspend (i32.const 200) (i32.const 4) (i32.const 300) (i32.const 1)))))
    (call $held)
    (if (i32.eq (local.get $op) (i32.const 102)) ;; 'f'
      (then (call $fail (i32.const 200) (i32.const 4))))
    (i64.or (i64.const 2199023255552) (i64.const 216)))) ;; (512 << 32) | 216
