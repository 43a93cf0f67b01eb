;; The equivalent no-op Extism plugin: run returns 0 (success) and sets no
;; output. Build: wat2wasm noop-extism.wat -o noop-extism.wasm
(module
  (func (export "run") (result i32) (i32.const 0)))
