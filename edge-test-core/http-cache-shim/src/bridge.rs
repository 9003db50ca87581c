//! The way between the shim's values and the guest's memory. The shim shares the guest's one
//! memory (viceroy gives a core module no other), and keeps to its own data there: what the
//! guest passes is read with [`read`] / [`read_bytes`] and written with [`write`], and every
//! buffer a hostcall needs is one of [`Scratch`]'s. The imports are written by edge-test when
//! it merges the shim (`memory.copy`, and the guest's `__stack_pointer`).

use alloc::vec;
use alloc::vec::Vec;

#[link(wasm_import_module = "edge_test_bridge")]
unsafe extern "C" {
    fn stack_get() -> u32;
    fn copy_in(dst: *mut u8, guest_src: u32, len: u32);
    fn copy_out(guest_dst: u32, src: *const u8, len: u32);
}

/// A guest address.
pub type GuestPtr = u32;

/// Plain data that may be copied byte for byte (`#[repr(C)]` structs of integers, and
/// integers).
///
/// # Safety
/// Every bit pattern must be a valid value of the type.
pub unsafe trait Pod: Copy {}
// SAFETY (all five): integers, valid for every bit pattern.
unsafe impl Pod for u8 {}
unsafe impl Pod for u16 {}
unsafe impl Pod for u32 {}
unsafe impl Pod for u64 {}
unsafe impl Pod for i64 {}

/// Reads a `T` the guest holds at `at`.
pub fn read<T: Pod>(at: GuestPtr) -> T {
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `copy_in` fills the `size_of::<T>()` bytes of `value`, and any bytes are a
    // valid `T` (`Pod`).
    unsafe {
        copy_in(
            value.as_mut_ptr().cast(),
            at,
            core::mem::size_of::<T>() as u32,
        );
        value.assume_init()
    }
}

/// Writes `value` where the guest's `at` points.
pub fn write<T: Pod>(at: GuestPtr, value: &T) {
    // SAFETY: reads `size_of::<T>()` bytes of `value`, which is that long.
    unsafe {
        copy_out(
            at,
            (value as *const T).cast(),
            core::mem::size_of::<T>() as u32,
        )
    }
}

/// The `len` bytes the guest holds at `at`.
pub fn read_bytes(at: GuestPtr, len: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; len as usize];
    // SAFETY: `bytes` is `len` long.
    unsafe { copy_in(bytes.as_mut_ptr(), at, len) };
    bytes
}

/// Writes `bytes` at the guest's `at`.
pub fn write_bytes(at: GuestPtr, bytes: &[u8]) {
    // SAFETY: reads `bytes.len()` bytes of `bytes`.
    unsafe { copy_out(at, bytes.as_ptr(), bytes.len() as u32) }
}

unsafe extern "C" {
    /// The end of the shim's data (its heap included), placed by the linker.
    static __heap_base: u8;
}

/// How far above the shim's data the guest's stack must stay.
const STACK_MARGIN: u32 = 16 * 1024;

/// Buffers for the hostcalls one shim call makes, freed when it is dropped. They come from
/// the shim's heap, in the guest's memory, so a hostcall reads and writes them as it would
/// the guest's own. (Not the guest's shadow stack: a compiled function's epilogue resets the
/// stack pointer, taking back whatever a callee moved it by.)
pub struct Scratch {
    buffers: Vec<Vec<u64>>,
}

impl Scratch {
    /// A scratch, once the guest's stack is seen clear of the shim's data.
    pub fn new() -> Self {
        // SAFETY: reads the guest's stack pointer global.
        let sp = unsafe { stack_get() };
        // Only the symbol's address is taken.
        let shim_end = core::ptr::addr_of!(__heap_base) as u32;
        if sp < shim_end + STACK_MARGIN {
            crate::stack_overflow();
        }
        Self::unguarded()
    }

    /// A scratch that does not check the stack (for saying that it overflowed).
    pub fn unguarded() -> Self {
        Self {
            buffers: Vec::new(),
        }
    }

    /// `len` zeroed bytes, 8-aligned, that live as long as the scratch.
    pub fn alloc(&mut self, len: u32) -> GuestPtr {
        let words = (len as usize).div_ceil(8).max(1);
        self.buffers.push(vec![0u64; words]);
        self.buffers.last().map_or(0, |b| b.as_ptr() as u32)
    }

    /// `bytes`, copied into a buffer.
    pub fn put(&mut self, bytes: &[u8]) -> GuestPtr {
        let at = self.alloc(bytes.len() as u32);
        write_bytes(at, bytes);
        at
    }

    /// `value`, copied into a buffer.
    pub fn put_value<T: Pod>(&mut self, value: &T) -> GuestPtr {
        let at = self.alloc(core::mem::size_of::<T>() as u32);
        write(at, value);
        at
    }
}
