;; upper: an Outpost reactor (docs/abi.md) that upper-cases the ASCII
;; letters of its input and leaves every other byte alone ("hello, wörld" ->
;; "HELLO, WöRLD"). Build: wat2wasm upper.wat -o upper.wasm
(module
  (memory (export "memory") 1)

  ;; fit(size): grow memory so that [1024, 1024+size) is inside it; traps
  ;; (unreachable) when memory cannot grow.
  (func $fit (param $size i32)
    (local $need i64)
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

  ;; outpost_input_buffer(size) -> (1024 << 32) | capacity: one reusable
  ;; buffer from 1024 to the end of memory, grown to hold size bytes. The
  ;; host calls it again only when an input does not fit.
  (func (export "outpost_input_buffer") (param $size i32) (result i64)
    (call $fit (local.get $size))
    (i64.or
      (i64.const 0x0000040000000000) ;; 1024 << 32
      (i64.sub (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)) (i64.const 1024))))

  ;; outpost_alloc(size) -> ptr: the same buffer, for hosts that predate
  ;; outpost_input_buffer.
  (func (export "outpost_alloc") (param $size i32) (result i32)
    (call $fit (local.get $size))
    (i32.const 1024))

  ;; outpost_handle(ptr, len): upper-case in place, return the same range.
  (func (export "outpost_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $c i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        ;; 'a' (97) <= c <= 'z' (122)  <=>  (c - 97) <u 26
        (if (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))
          (then
            (i32.store8 (i32.add (local.get $ptr) (local.get $i))
                        (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len))))
)
