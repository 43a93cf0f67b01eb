;; counter: a reactor (ABI v1) written by hand that uses the host API.
;;
;; The input is a key (1 to 1024 bytes). Every call adds one to the count kept
;; for that key in the task's kv namespace (the value is the count in ASCII
;; decimal), publishes the new count to the topic "counter/KEY" (QoS 0), logs
;; "counter: KEY = N" at info level and returns N in ASCII decimal.
;;
;;   "door" -> "1", "door" -> "2", "window" -> "1", ...
;;
;; Failures (outpost.fail, so the call fails with kind "failed"): an empty or
;; too long key, a kv_get or kv_put refused by the host (for example "denied"
;; when the task has no kv_quota: the host's message is included), a stored
;; value that is not a number. A refused publish (no permission, a key that is
;; not a valid topic level, the broker down) is logged as a warning and the
;; count is still returned.
;;
;; Permissions (examples/tasks/wat/counter.manifest.yaml):
;;   permissions: {publish: ["counter/#"], kv_quota: 64KiB}
;;
;; Build: wat2wasm counter.wat -o counter.wasm (scripts/build-examples.sh).
;;
;; Memory layout (page 0, then the input buffer):
;;     16  constant strings (below)
;;    256  [256, 288): the count in decimal, written backwards from 288
;;    512  [512, 532): kv_get buffer for the stored count (20 digits at most)
;;   1024  [1024, 2056): the topic "counter/" + key
;;   4096  [4096, 8192): log and fail messages
;;   8192  the input buffer, growing memory as needed
(module
  (import "outpost" "fail" (func $fail (param i32 i32)))
  (import "outpost" "log" (func $log (param i32 i32 i32)))
  (import "outpost" "publish" (func $publish (param i32 i32 i32 i32 i32) (result i32)))
  (import "outpost" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "result" (func $result (param i32 i32) (result i32)))

  (memory (export "memory") 1)

  (data (i32.const 16) "counter/")                                   ;; 8
  (data (i32.const 32) "counter: empty input, want a key")           ;; 32
  (data (i32.const 64) "counter: key longer than 1024 bytes")        ;; 35
  (data (i32.const 112) "counter: the stored count is not a number") ;; 41
  (data (i32.const 160) "counter: kv_get: ")                         ;; 17
  (data (i32.const 180) "counter: kv_put: ")                         ;; 17
  (data (i32.const 200) "counter: publish ")                         ;; 17
  (data (i32.const 220) ": ")                                        ;; 2
  (data (i32.const 224) " = ")                                       ;; 3
  (data (i32.const 228) "counter: ")                                 ;; 9

  (global $msg i32 (i32.const 4096))
  (global $msgEnd i32 (i32.const 8192))
  (global $in i32 (i32.const 8192))

  ;; outpost_alloc(size) -> ptr: ensure [8192, 8192+size) is in memory; one
  ;; buffer reused by every call.
  (func (export "outpost_alloc") (param $size i32) (result i32)
    (local $need i64)
    ;; pages needed = ceil((8192 + size) / 65536), in i64 (no overflow)
    (local.set $need
      (i64.shr_u
        (i64.add (i64.extend_i32_u (local.get $size)) (i64.const 73727)) ;; 8192 + 65535
        (i64.const 16)))
    (if (i64.gt_u (local.get $need) (i64.extend_i32_u (memory.size)))
      (then
        (if (i32.eq
              (memory.grow (i32.wrap_i64 (i64.sub (local.get $need) (i64.extend_i32_u (memory.size)))))
              (i32.const -1))
          (then unreachable))))
    (global.get $in))

  ;; copy(dst, src, n) -> dst + n
  (func $copy (param $dst i32) (param $src i32) (param $n i32) (result i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (i32.store8 (local.get $dst) (i32.load8_u (local.get $src)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 1)))
        (local.set $src (i32.add (local.get $src) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $dst))

  ;; utoa(v, end) -> start: writes v in decimal just before end.
  (func $utoa (param $v i64) (param $end i32) (result i32)
    (loop $next
      (local.set $end (i32.sub (local.get $end) (i32.const 1)))
      (i64.store8 (local.get $end) (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $next (i64.ne (local.get $v) (i64.const 0))))
    (local.get $end))

  ;; held(p) -> end: appends the held value (the host's error message) at p,
  ;; cut at the end of the message buffer.
  (func $held (param $p i32) (result i32)
    (local $n i32) (local $room i32)
    (local.set $room (i32.sub (global.get $msgEnd) (local.get $p)))
    (local.set $n (call $result (local.get $p) (local.get $room)))
    (if (i32.gt_u (local.get $n) (local.get $room)) (then (local.set $n (local.get $room))))
    (i32.add (local.get $p) (local.get $n)))

  ;; failHeld(prefix, len): fails the call with prefix + the held message.
  (func $failHeld (param $prefix i32) (param $len i32)
    (local $p i32)
    (local.set $p (call $held (call $copy (global.get $msg) (local.get $prefix) (local.get $len))))
    (call $fail (global.get $msg) (i32.sub (local.get $p) (global.get $msg))))

  ;; outpost_handle(ptr, len) -> (out_ptr << 32) | out_len
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $c i32) (local $count i64)
    (local $digits i32) (local $dlen i32) (local $topicLen i32) (local $p i32)

    (if (i32.eqz (local.get $len))
      (then (call $fail (i32.const 32) (i32.const 32)) (return (i64.const 0))))
    (if (i32.gt_u (local.get $len) (i32.const 1024))
      (then (call $fail (i32.const 64) (i32.const 35)) (return (i64.const 0))))

    ;; the stored count: not_found (-2) is 0, another negative code fails
    (local.set $n (call $kv_get (local.get $ptr) (local.get $len) (i32.const 512) (i32.const 20)))
    (if (i32.ne (local.get $n) (i32.const -2))
      (then
        (if (i32.lt_s (local.get $n) (i32.const 0))
          (then (call $failHeld (i32.const 160) (i32.const 17)) (return (i64.const 0))))
        ;; 1 to 19 digits: a longer value could overflow
        (if (i32.or (i32.eqz (local.get $n)) (i32.gt_u (local.get $n) (i32.const 19)))
          (then (call $fail (i32.const 112) (i32.const 41)) (return (i64.const 0))))
        (block $parsed
          (loop $digit
            (br_if $parsed (i32.eq (local.get $i) (local.get $n)))
            (local.set $c (i32.sub (i32.load8_u (i32.add (i32.const 512) (local.get $i))) (i32.const 48)))
            (if (i32.gt_u (local.get $c) (i32.const 9)) ;; unsigned: below '0' wraps too
              (then (call $fail (i32.const 112) (i32.const 41)) (return (i64.const 0))))
            (local.set $count
              (i64.add (i64.mul (local.get $count) (i64.const 10)) (i64.extend_i32_u (local.get $c))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $digit)))))
    (local.set $count (i64.add (local.get $count) (i64.const 1)))

    ;; the new count, in decimal at [digits, 288), stored under the key
    (local.set $digits (call $utoa (local.get $count) (i32.const 288)))
    (local.set $dlen (i32.sub (i32.const 288) (local.get $digits)))
    (if (i32.lt_s (call $kv_put (local.get $ptr) (local.get $len) (local.get $digits) (local.get $dlen)) (i32.const 0))
      (then (call $failHeld (i32.const 180) (i32.const 17)) (return (i64.const 0))))

    ;; publish it to counter/KEY; a refusal is a warning
    (local.set $topicLen
      (i32.sub (call $copy (call $copy (i32.const 1024) (i32.const 16) (i32.const 8)) (local.get $ptr) (local.get $len))
               (i32.const 1024)))
    (if (i32.lt_s (call $publish (i32.const 1024) (local.get $topicLen) (local.get $digits) (local.get $dlen) (i32.const 0))
                  (i32.const 0))
      (then
        ;; "counter: publish counter/KEY: <held message>"
        (local.set $p (call $copy (global.get $msg) (i32.const 200) (i32.const 17)))
        (local.set $p (call $copy (local.get $p) (i32.const 1024) (local.get $topicLen)))
        (local.set $p (call $held (call $copy (local.get $p) (i32.const 220) (i32.const 2))))
        (call $log (i32.const 2) (global.get $msg) (i32.sub (local.get $p) (global.get $msg)))))

    ;; "counter: KEY = N" at info level
    (local.set $p (call $copy (global.get $msg) (i32.const 228) (i32.const 9)))
    (local.set $p (call $copy (local.get $p) (local.get $ptr) (local.get $len)))
    (local.set $p (call $copy (local.get $p) (i32.const 224) (i32.const 3)))
    (local.set $p (call $copy (local.get $p) (local.get $digits) (local.get $dlen)))
    (call $log (i32.const 1) (global.get $msg) (i32.sub (local.get $p) (global.get $msg)))

    (i64.or (i64.shl (i64.extend_i32_u (local.get $digits)) (i64.const 32))
            (i64.extend_i32_u (local.get $dlen))))
)
