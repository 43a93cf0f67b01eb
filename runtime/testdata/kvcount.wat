;; Counts its executions in the task's kv namespace (needs permissions.kv_quota).
;; Input "D KEY": adds one to the counter KEY (a little-endian u32) as soon as
;; the call starts, then spins (WASI monotonic clock) for D × 500 ms, D a digit,
;; and echoes its input. Input "?KEY": answers the counter of KEY in decimal
;; without counting. Used by the kill -9 e2e tests: the count is a real side
;; effect of each execution, not the journal's own bookkeeping.
(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
  (import "outpost" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "outpost" "fail" (func $fail (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 32) "kv_put failed")
  (func (export "outpost_alloc") (param i32) (result i32) (i32.const 1024))
  ;; the counter of the key at [k, k+kl), 0 if there is none
  (func $get (param $k i32) (param $kl i32) (result i32)
    (i32.store (i32.const 16) (i32.const 0))
    (if (result i32) (i32.eq (call $kv_get (local.get $k) (local.get $kl) (i32.const 16) (i32.const 4)) (i32.const 4))
      (then (i32.load (i32.const 16)))
      (else (i32.const 0))))
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $p i32) (local $end i64)
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 63)) ;; '?': read
      (then
        (local.set $n (call $get (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))))
        (local.set $p (i32.const 96)) ;; decimal digits, written backwards ending at 96
        (loop $digit
          (local.set $p (i32.sub (local.get $p) (i32.const 1)))
          (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
          (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
          (br_if $digit (local.get $n)))
        (return (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
                        (i64.extend_i32_u (i32.sub (i32.const 96) (local.get $p)))))))
    ;; count this execution before doing anything else
    (local.set $n (i32.add (call $get (i32.add (local.get $ptr) (i32.const 2)) (i32.sub (local.get $len) (i32.const 2))) (i32.const 1)))
    (i32.store (i32.const 16) (local.get $n))
    (if (call $kv_put (i32.add (local.get $ptr) (i32.const 2)) (i32.sub (local.get $len) (i32.const 2)) (i32.const 16) (i32.const 4))
      (then (call $fail (i32.const 32) (i32.const 13)) (return (i64.const 0))))
    ;; spin
    (drop (call $now (i32.const 1) (i64.const 0) (i32.const 0)))
    (local.set $end (i64.add (i64.load (i32.const 0))
      (i64.mul (i64.extend_i32_u (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48))) (i64.const 500000000))))
    (loop $spin
      (drop (call $now (i32.const 1) (i64.const 0) (i32.const 0)))
      (br_if $spin (i64.lt_u (i64.load (i32.const 0)) (local.get $end))))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))
