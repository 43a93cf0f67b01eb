;; builtin:echo: the reference Outpost reactor, written by hand.
;;
;; Its input buffer starts at offset 1024 and runs to the end of linear
;; memory, which grows when an input does not fit. outpost_input_buffer hands
;; it to the host (which then writes every input that fits without calling
;; in); outpost_alloc, for hosts that predate outpost_input_buffer, returns
;; the same buffer. outpost_handle returns the input unchanged, in place.
;; Rebuild with: wat2wasm echo.wat -o echo.wasm
;; (runtime/builtin_test.go checks the committed echo.wasm matches).
(module
  (memory (export "memory") 1)

  ;; fit(size): grow memory so that [1024, 1024+size) is inside it.
  (func $fit (param $size i32)
    (local $need i64)
    ;; pages needed = ceil((1024 + size) / 65536), computed in i64 (no overflow)
    (local.set $need
      (i64.shr_u
        (i64.add (i64.extend_i32_u (local.get $size)) (i64.const 66559)) ;; 1024 + 65535
        (i64.const 16)))
    (if (i64.gt_u (local.get $need) (i64.extend_i32_u (memory.size)))
      (then
        (if (i32.eq
              (memory.grow (i32.wrap_i64 (i64.sub (local.get $need) (i64.extend_i32_u (memory.size)))))
              (i32.const -1))
          (then unreachable)))))

  ;; outpost_input_buffer(size) -> (1024 << 32) | capacity: the buffer from
  ;; 1024 to the end of memory, grown to hold size bytes.
  (func (export "outpost_input_buffer") (param $size i32) (result i64)
    (call $fit (local.get $size))
    (i64.or
      (i64.const 0x0000040000000000) ;; 1024 << 32
      (i64.sub (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)) (i64.const 1024))))

  ;; outpost_alloc(size) -> ptr: the same buffer.
  (func (export "outpost_alloc") (param $size i32) (result i32)
    (call $fit (local.get $size))
    (i32.const 1024))

  ;; outpost_handle(ptr, len) -> (ptr << 32) | len: the output is the input.
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len))))
)
