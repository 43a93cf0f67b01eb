;; A WASI command (_start) in WAT: copies stdin to stdout. Input starting with
;; "x" writes "boom: bad input" to stderr and exits 3; "l" loops forever; "z"
;; echoes then calls proc_exit(0).
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "boom: bad input\n")
  ;; iovec at 0 (ptr, len), result count at 8, input at 1024.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (local $total i32) (local $first i32)
    (block $eof
      (loop $read
        (i32.store (i32.const 0) (i32.add (i32.const 1024) (local.get $total)))
        (i32.store (i32.const 4) (i32.sub (i32.const 60000) (local.get $total)))
        (br_if $eof (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $eof (i32.eqz (i32.load (i32.const 8))))
        (local.set $total (i32.add (local.get $total) (i32.load (i32.const 8))))
        (br $read)))
    (if (local.get $total) (then (local.set $first (i32.load8_u (i32.const 1024)))))
    (if (i32.eq (local.get $first) (i32.const 120)) ;; 'x'
      (then
        (call $write (i32.const 2) (i32.const 16) (i32.const 16))
        (call $proc_exit (i32.const 3))))
    (if (i32.eq (local.get $first) (i32.const 108)) ;; 'l'
      (then (loop $forever (br $forever))))
    (call $write (i32.const 1) (i32.const 1024) (local.get $total))
    (if (i32.eq (local.get $first) (i32.const 122)) ;; 'z'
      (then (call $proc_exit (i32.const 0))))))
