//! A bump allocator for a policy that keeps nothing from one call to the next.
//!
//! An allocation moves a pointer; freeing gives back only the latest allocation, and
//! growing the latest allocation (a `Vec` being pushed to) happens in place. The allocator
//! counts the allocations that are live, and when none is left it starts again from the
//! beginning of the heap: that is at the end of every call, once the host has taken the
//! answer (the canonical ABI's post-return frees it, and the view went when `allocate`
//! returned), so an instance the host keeps for the next call (see
//! `runtime/policy/src/slot.rs`) uses the same memory again, and a fresh one starts as
//! before. A policy that kept an allocation would make the heap grow at every call,
//! until the host's memory cap ends the instance (and the host makes a fresh one).
//!
//! The heap starts where the linker put the end of the stack and static data
//! (`__heap_base`), so the memory the component starts with is used first. The DRF is
//! linked with 4 MiB of it (see `build.rs`), enough for a cycle of 10,000 agents, so such a
//! cycle never grows its memory; growing costs the host an `mprotect` to open the new
//! pages and another to close them when the pooled instance is reset. Past the initial
//! memory, it comes from the host (`memory.grow`) a megabyte at a time. It is smaller and
//! faster than the standard allocator (dlmalloc), which leaves the initial memory unused
//! and whose code also cost compile time at every swap.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::Cell;

const PAGE: usize = 65536;
/// The least memory taken from the host at once, in pages.
const GROW_PAGES: usize = 16;

extern "C" {
    /// The first byte after the stack and static data (defined by the linker).
    static __heap_base: u8;
}

pub struct Bump {
    /// The first free byte, and the end of memory (0 before the first allocation).
    next: Cell<usize>,
    end: Cell<usize>,
    /// Where the heap begins (`__heap_base`), and the allocations not yet freed.
    base: Cell<usize>,
    live: Cell<usize>,
}

// A wasm32-unknown-unknown policy has one thread.
unsafe impl Sync for Bump {}

impl Bump {
    pub const fn new() -> Self {
        Bump {
            next: Cell::new(0),
            end: Cell::new(0),
            base: Cell::new(0),
            live: Cell::new(0),
        }
    }

    /// Makes `[.., end)` memory; false when the host refuses.
    fn reserve(&self, end: usize) -> bool {
        if self.end.get() == 0 {
            // Only the address of the linker's symbol is taken (safe for an extern static).
            let base = core::ptr::addr_of!(__heap_base) as usize;
            self.base.set(base);
            self.next.set(base);
            self.end.set(wasm32::memory_size(0) * PAGE);
        }
        if end <= self.end.get() {
            return true;
        }
        let needed = (end - self.end.get()).div_ceil(PAGE);
        // A megabyte at a time, or just what is needed when that is refused (near the
        // host's memory cap).
        for pages in [needed.max(GROW_PAGES), needed] {
            if wasm32::memory_grow(0, pages) != usize::MAX {
                self.end.set(self.end.get() + pages * PAGE);
                return true;
            }
        }
        false
    }
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.reserve(0) {
            return core::ptr::null_mut();
        }
        let start = self.next.get().next_multiple_of(layout.align());
        match start.checked_add(layout.size()) {
            Some(end) if self.reserve(end) => {
                self.next.set(end);
                self.live.set(self.live.get() + 1);
                start as *mut u8
            }
            _ => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let live = self.live.get().saturating_sub(1);
        self.live.set(live);
        if live == 0 {
            self.next.set(self.base.get());
        } else if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        if start + layout.size() == self.next.get() {
            match start.checked_add(new_size) {
                Some(end) if self.reserve(end) => {
                    self.next.set(end);
                    return ptr;
                }
                _ => return core::ptr::null_mut(),
            }
        }
        // SAFETY: as `GlobalAlloc::realloc` requires of its caller.
        let new =
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; the copy fits both. The old block
            // is then freed (it is not the latest, so only its count goes).
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
