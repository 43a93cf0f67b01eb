//! greet: a reactor (ABI v1) in Rust, std only, no crates and no SDK.
//!
//! The input is a name (UTF-8); the output is "hello, NAME". An empty or
//! non-UTF-8 input fails the call with outpost.fail (kind "failed"). Every
//! call logs "greet: NAME" at info level through outpost.log.
//!
//! Build (scripts/build-examples.sh), with Debian's rustc and the wasm32
//! standard library (packages rustc libstd-rust-dev-wasm32):
//!   rustc --edition 2021 --crate-type cdylib --target wasm32-unknown-unknown \
//!       -C opt-level=s -C strip=symbols -o rust-greet.wasm lib.rs
//! wasm32-unknown-unknown needs no WASI at all; --target wasm32-wasi (or
//! wasm32-wasip1) works as well and adds WASI imports that the host provides.

use std::ptr::addr_of_mut;

// The host API: module "outpost" (docs/abi.md). A function whose name is a
// Rust keyword is imported under another name with link_name, e.g.
//   #[link_name = "await"] fn await_call(handle: i32, timeout_ms: i32) -> i32;
#[link(wasm_import_module = "outpost")]
extern "C" {
    fn fail(ptr: *const u8, len: u32);
    fn log(level: i32, ptr: *const u8, len: u32);
}

const INFO: i32 = 1;

// One input buffer and one output buffer, reused by every call of the
// instance (an instance serves one call at a time).
static mut INPUT: Vec<u8> = Vec::new();
static mut OUTPUT: Vec<u8> = Vec::new();

/// outpost_alloc(size) -> ptr: a buffer of size bytes for the next input,
/// valid until the next outpost_alloc.
#[no_mangle]
pub extern "C" fn outpost_alloc(size: u32) -> u32 {
    // SAFETY: the host calls the instance from one thread, one call at a time.
    let input = unsafe { &mut *addr_of_mut!(INPUT) };
    input.clear();
    input.resize(size as usize, 0);
    input.as_mut_ptr() as u32
}

/// outpost_handle(ptr, len) -> (out_ptr << 32) | out_len.
#[no_mangle]
pub extern "C" fn outpost_handle(ptr: u32, len: u32) -> u64 {
    // SAFETY: [ptr, ptr+len) is the buffer outpost_alloc returned, written by the host.
    let input = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
    let name = match std::str::from_utf8(input) {
        Ok(s) if !s.trim().is_empty() => s.trim(),
        _ => {
            let msg = "greet: want a name (UTF-8, not empty)";
            unsafe { fail(msg.as_ptr(), msg.len() as u32) };
            return 0;
        }
    };
    let line = format!("greet: {}", name);
    unsafe { log(INFO, line.as_ptr(), line.len() as u32) };

    let out = unsafe { &mut *addr_of_mut!(OUTPUT) };
    out.clear();
    out.extend_from_slice(b"hello, ");
    out.extend_from_slice(name.as_bytes());
    ((out.as_ptr() as u64) << 32) | out.len() as u64
}
