//! The shim's heap: a fixed region of its own static data (in the guest's memory, below the
//! guest's stack), managed by dlmalloc. It never grows the memory: the pages past the guest's
//! data belong to the guest's allocator.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// Enough for the headers and metadata of the requests one instance serves.
const ARENA_BYTES: usize = 96 * 1024;

#[repr(C, align(16))]
struct Region(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: a wasm instance runs one thread.
unsafe impl Sync for Region {}

static REGION: Region = Region(UnsafeCell::new([0; ARENA_BYTES]));

/// Hands dlmalloc the region, once.
struct Arena(UnsafeCell<bool>);

// SAFETY: dlmalloc calls these from the one thread of the instance.
unsafe impl dlmalloc::Allocator for Arena {
    fn alloc(&self, _size: usize) -> (*mut u8, usize, u32) {
        // SAFETY: one thread; `given` is only read and written here.
        let given = unsafe { &mut *self.0.get() };
        if *given {
            return (core::ptr::null_mut(), 0, 0);
        }
        *given = true;
        (REGION.0.get().cast(), ARENA_BYTES, 0)
    }
    fn remap(&self, _: *mut u8, _: usize, _: usize, _: bool) -> *mut u8 {
        core::ptr::null_mut()
    }
    fn free_part(&self, _: *mut u8, _: usize, _: usize) -> bool {
        false
    }
    fn free(&self, _: *mut u8, _: usize) -> bool {
        false
    }
    fn can_release_part(&self, _: u32) -> bool {
        false
    }
    fn allocates_zeros(&self) -> bool {
        true
    }
    fn page_size(&self) -> usize {
        4096
    }
}

pub struct Heap(UnsafeCell<dlmalloc::Dlmalloc<Arena>>);

// SAFETY: a wasm instance runs one thread.
unsafe impl Sync for Heap {}

impl Heap {
    pub const fn new() -> Self {
        Self(UnsafeCell::new(dlmalloc::Dlmalloc::new_with_allocator(
            Arena(UnsafeCell::new(false)),
        )))
    }
}

// SAFETY: forwards to dlmalloc, which upholds `GlobalAlloc`'s contract; one thread.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread, so this is the only reference.
        unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with `layout` (the caller's promise).
        unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`.
        unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
