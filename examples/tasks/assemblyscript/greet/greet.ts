// greet: a reactor (ABI v1) in AssemblyScript, the same task as the Rust
// example (examples/tasks/rust/greet).
//
// The input is a name; the output is "hello, NAME". An empty input fails the
// call with outpost.fail (kind "failed"). Every call logs "greet: NAME" at
// info level through outpost.log.
//
// Build (scripts/build-examples.sh), with the npm package assemblyscript:
//   asc greet.ts -o as-greet.wasm -O --runtime stub --use abort= --exportStart _initialize
// --use abort= matters: by default a module imports env.abort (called on a
// failed assertion or bounds check), which the host refuses; with an empty
// abort such a failure traps instead. asc builds a module without main and
// without WASI; --exportStart _initialize runs the module's top level once
// when the host creates an instance, instead of in a start section. No
// garbage-collected objects are made per call: the buffers are raw memory
// (heap.alloc), so the minimal stub runtime suffices.

// The host API: module "outpost" (docs/abi.md).
@external("outpost", "fail")
declare function fail(ptr: usize, len: u32): void;
@external("outpost", "log")
declare function log(level: i32, ptr: usize, len: u32): void;

const INFO: i32 = 1;
const HELLO = "hello, ";
const GREET = "greet: ";
const EMPTY = "greet: want a name (not empty)";

// One input and one output buffer, reused by every call of the instance.
let input: usize = 0;
let inputCap: usize = 0;
let output: usize = 0;
let outputCap: usize = 0;

// grow returns a buffer of at least size bytes at buf (capacity cap).
function grow(buf: usize, cap: usize, size: usize): usize {
  if (size <= cap && buf != 0) return buf;
  return buf == 0 ? heap.alloc(max(size, 256)) : heap.realloc(buf, max(size, cap * 2));
}

// copyLatin1 writes the characters of an ASCII string s at dst.
function copyLatin1(dst: usize, s: string): usize {
  for (let i = 0; i < s.length; i++) store<u8>(dst + i, <u8>s.charCodeAt(i));
  return dst + s.length;
}

// outpost_alloc(size) -> ptr: a buffer of size bytes for the next input.
export function outpost_alloc(size: u32): usize {
  const need = <usize>size;
  input = grow(input, inputCap, need);
  inputCap = max(inputCap, max(need, 256));
  return input;
}

// outpost_handle(ptr, len) -> (out_ptr << 32) | out_len.
export function outpost_handle(ptr: usize, len: u32): u64 {
  if (len == 0) {
    const msg = grow(0, 0, EMPTY.length);
    copyLatin1(msg, EMPTY);
    fail(msg, EMPTY.length);
    heap.free(msg);
    return 0;
  }
  const n = <usize>GREET.length + <usize>len;
  output = grow(output, outputCap, n);
  outputCap = max(outputCap, max(n, 256));
  // "greet: NAME" to the log, then "hello, NAME" as the output
  memory.copy(copyLatin1(output, GREET), ptr, len);
  log(INFO, output, <u32>n);
  memory.copy(copyLatin1(output, HELLO), ptr, len);
  return (<u64>output << 32) | (<u64>HELLO.length + <u64>len);
}
