//! Links the DRF with 4 MiB of initial memory, which its bump allocator uses first (see
//! `src/bump.rs`): a cycle of 10,000 agents × 1,000 frameworks needs about 3 MiB, so it
//! does not grow its memory. Growing costs the host two `mprotect` calls per call (the new
//! pages opened, then closed again when the pooled instance is reset): a cycle of 1,000
//! agents × 100 frameworks took 73 µs with them, 64 µs without. More initial memory costs
//! a little on every call, as the host scans it for the pages to reset (those present).
fn main() {
    println!("cargo::rustc-cdylib-link-arg=--initial-memory={}", 4 << 20);
}
