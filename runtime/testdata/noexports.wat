;; Exports neither outpost_handle nor _start: refused.
(module
  (memory (export "memory") 1))
