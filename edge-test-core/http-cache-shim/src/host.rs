//! The hostcalls the shim makes (viceroy's own, through the guest's memory), behind calls
//! that take and return the shim's values.

use alloc::vec::Vec;

use crate::bridge::{self, GuestPtr, Pod, Scratch};

pub const OK: u32 = 0;
pub const BADF: u32 = 3;
pub const BUFLEN: u32 = 4;
pub const NONE: u32 = 10;

pub type Status = u32;

mod sys {
    #[link(wasm_import_module = "fastly_cache")]
    unsafe extern "C" {
        pub fn lookup(key: u32, key_len: u32, mask: u32, options: u32, out: u32) -> u32;
        pub fn insert(key: u32, key_len: u32, mask: u32, options: u32, body_out: u32) -> u32;
        pub fn transaction_lookup_async(
            key: u32,
            key_len: u32,
            mask: u32,
            options: u32,
            out: u32,
        ) -> u32;
        pub fn cache_busy_handle_wait(busy: u32, out: u32) -> u32;
        pub fn close_busy(busy: u32) -> u32;
        pub fn transaction_insert(handle: u32, mask: u32, options: u32, body_out: u32) -> u32;
        pub fn transaction_insert_and_stream_back(
            handle: u32,
            mask: u32,
            options: u32,
            body_out: u32,
            handle_out: u32,
        ) -> u32;
        pub fn transaction_update(handle: u32, mask: u32, options: u32) -> u32;
        pub fn transaction_cancel(handle: u32) -> u32;
        pub fn close(handle: u32) -> u32;
        pub fn get_state(handle: u32, out: u32) -> u32;
        pub fn get_user_metadata(handle: u32, buf: u32, len: u32, nwritten: u32) -> u32;
        pub fn get_body(handle: u32, mask: u32, options: u32, out: u32) -> u32;
        pub fn get_length(handle: u32, out: u32) -> u32;
        pub fn get_age_ns(handle: u32, out: u32) -> u32;
    }

    #[link(wasm_import_module = "fastly_http_req")]
    unsafe extern "C" {
        #[link_name = "new"]
        pub fn req_new(out: u32) -> u32;
        #[link_name = "method_get"]
        pub fn req_method_get(req: u32, buf: u32, len: u32, nwritten: u32) -> u32;
        #[link_name = "method_set"]
        pub fn req_method_set(req: u32, buf: u32, len: u32) -> u32;
        #[link_name = "uri_get"]
        pub fn req_uri_get(req: u32, buf: u32, len: u32, nwritten: u32) -> u32;
        #[link_name = "uri_set"]
        pub fn req_uri_set(req: u32, buf: u32, len: u32) -> u32;
        #[link_name = "version_get"]
        pub fn req_version_get(req: u32, out: u32) -> u32;
        #[link_name = "version_set"]
        pub fn req_version_set(req: u32, version: u32) -> u32;
        #[link_name = "header_names_get"]
        pub fn req_header_names_get(
            req: u32,
            buf: u32,
            len: u32,
            cursor: u32,
            ending: u32,
            nwritten: u32,
        ) -> u32;
        #[link_name = "header_values_get"]
        pub fn req_header_values_get(
            req: u32,
            name: u32,
            name_len: u32,
            buf: u32,
            len: u32,
            cursor: u32,
            ending: u32,
            nwritten: u32,
        ) -> u32;
        #[link_name = "header_append"]
        pub fn req_header_append(req: u32, name: u32, name_len: u32, value: u32, len: u32) -> u32;
    }

    #[link(wasm_import_module = "fastly_http_resp")]
    unsafe extern "C" {
        #[link_name = "new"]
        pub fn resp_new(out: u32) -> u32;
        #[link_name = "status_get"]
        pub fn resp_status_get(resp: u32, out: u32) -> u32;
        #[link_name = "status_set"]
        pub fn resp_status_set(resp: u32, status: u32) -> u32;
        #[link_name = "header_names_get"]
        pub fn resp_header_names_get(
            resp: u32,
            buf: u32,
            len: u32,
            cursor: u32,
            ending: u32,
            nwritten: u32,
        ) -> u32;
        #[link_name = "header_values_get"]
        pub fn resp_header_values_get(
            resp: u32,
            name: u32,
            name_len: u32,
            buf: u32,
            len: u32,
            cursor: u32,
            ending: u32,
            nwritten: u32,
        ) -> u32;
        #[link_name = "header_append"]
        pub fn resp_header_append(resp: u32, name: u32, name_len: u32, value: u32, len: u32)
        -> u32;
        #[link_name = "close"]
        pub fn resp_close(resp: u32) -> u32;
    }

    #[link(wasm_import_module = "fastly_http_body")]
    unsafe extern "C" {
        #[link_name = "close"]
        pub fn body_close(body: u32) -> u32;
    }

    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        pub fn random_get(buf: u32, len: u32) -> u32;
    }

    #[link(wasm_import_module = "fastly_log")]
    unsafe extern "C" {
        pub fn endpoint_get(name: u32, name_len: u32, out: u32) -> u32;
        pub fn write(endpoint: u32, msg: u32, len: u32, nwritten: u32) -> u32;
    }
}

/// Turns a status into a `Result`.
pub fn check(status: Status) -> Result<(), Status> {
    if status == OK { Ok(()) } else { Err(status) }
}

/// A call whose one result is a value it writes through its last pointer.
fn out<T: Pod + Default>(call: impl FnOnce(GuestPtr) -> Status) -> Result<T, Status> {
    let mut scratch = Scratch::new();
    let at = scratch.put_value(&T::default());
    check(call(at))?;
    Ok(bridge::read(at))
}

/// A call that writes a byte string into a buffer (`buf`, `len`, `nwritten`), asked again
/// with a buffer of the length it said it needed.
fn bytes(call: impl Fn(GuestPtr, u32, GuestPtr) -> Status) -> Result<Vec<u8>, Status> {
    let mut cap = 1024u32;
    loop {
        let mut scratch = Scratch::new();
        let buf = scratch.alloc(cap);
        let nwritten = scratch.put_value(&0u32);
        match call(buf, cap, nwritten) {
            OK => {
                let n = bridge::read::<u32>(nwritten);
                return Ok(bridge::read_bytes(buf, n));
            }
            BUFLEN => {
                let needed = bridge::read::<u32>(nwritten);
                if needed <= cap || cap >= 1 << 24 {
                    return Err(BUFLEN);
                }
                cap = needed;
            }
            status => return Err(status),
        }
    }
}

/// A multi-value call (header names or values): every item, from cursor 0 to the end.
fn items(call: impl Fn(GuestPtr, u32, u32, GuestPtr, GuestPtr) -> Status) -> Vec<Vec<u8>> {
    let mut cap: u32 = 8 * 1024;
    let mut found = Vec::new();
    let mut cursor = 0u32;
    loop {
        let mut scratch = Scratch::new();
        let buf = scratch.alloc(cap);
        let ending = scratch.put_value(&0i64);
        let nwritten = scratch.put_value(&0u32);
        match call(buf, cap, cursor, ending, nwritten) {
            OK => {}
            // One item longer than the buffer: ask again with room for it.
            BUFLEN if cap < 1 << 20 => {
                cap = (cap * 4).max(bridge::read::<u32>(nwritten));
                continue;
            }
            _ => return found,
        }
        let n = bridge::read::<u32>(nwritten);
        let written = bridge::read_bytes(buf, n);
        found.extend(
            written
                .split(|b| *b == 0)
                .filter(|item| !item.is_empty())
                .map(<[u8]>::to_vec),
        );
        let next = bridge::read::<i64>(ending);
        if next < 0 || n == 0 {
            return found;
        }
        cursor = next as u32;
    }
}

/// A request's or a response's headers, in order, each value apart.
pub type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// Every header of a request or a response, through its `header_names_get` and
/// `header_values_get` (given the guest addresses of the buffers, as `items` passes them).
fn headers_of(
    names_get: impl Fn(GuestPtr, u32, u32, GuestPtr, GuestPtr) -> Status,
    values_get: impl Fn(GuestPtr, u32, GuestPtr, u32, u32, GuestPtr, GuestPtr) -> Status,
) -> Headers {
    let mut headers = Vec::new();
    for name in items(names_get) {
        let mut scratch = Scratch::new();
        let at = scratch.put(&name);
        let len = name.len() as u32;
        for value in
            items(|buf, cap, cursor, ending, n| values_get(at, len, buf, cap, cursor, ending, n))
        {
            headers.push((name.clone(), value));
        }
    }
    headers
}

/// Appends a header through a request's or a response's `header_append`.
fn append_with(
    append: impl FnOnce(GuestPtr, u32, GuestPtr, u32) -> Status,
    name: &[u8],
    value: &[u8],
) -> Result<(), Status> {
    let mut scratch = Scratch::new();
    let (n, v) = (scratch.put(name), scratch.put(value));
    check(append(n, name.len() as u32, v, value.len() as u32))
}

pub mod req {
    use super::*;

    pub fn new() -> Result<u32, Status> {
        // SAFETY (for every hostcall here): viceroy reads and writes only the guest memory
        // the arguments name, which `Scratch` holds for the call.
        out(|at| unsafe { sys::req_new(at) })
    }
    pub fn method(req: u32) -> Result<Vec<u8>, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        bytes(|buf, len, n| unsafe { sys::req_method_get(req, buf, len, n) })
    }
    pub fn set_method(req: u32, method: &[u8]) -> Result<(), Status> {
        let mut scratch = Scratch::new();
        let at = scratch.put(method);
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        check(unsafe { sys::req_method_set(req, at, method.len() as u32) })
    }
    pub fn uri(req: u32) -> Result<Vec<u8>, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        bytes(|buf, len, n| unsafe { sys::req_uri_get(req, buf, len, n) })
    }
    pub fn set_uri(req: u32, uri: &[u8]) -> Result<(), Status> {
        let mut scratch = Scratch::new();
        let at = scratch.put(uri);
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        check(unsafe { sys::req_uri_set(req, at, uri.len() as u32) })
    }
    pub fn version(req: u32) -> Result<u32, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::req_version_get(req, at) })
    }
    pub fn set_version(req: u32, version: u32) -> Result<(), Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        check(unsafe { sys::req_version_set(req, version) })
    }
    pub fn headers(req: u32) -> Headers {
        headers_of(
            // SAFETY: viceroy reads and writes only the buffers the arguments name, which
            // the scratch of `items` holds for the call.
            |buf, len, cursor, ending, n| unsafe {
                sys::req_header_names_get(req, buf, len, cursor, ending, n)
            },
            // SAFETY: as above.
            |name, name_len, buf, len, cursor, ending, n| unsafe {
                sys::req_header_values_get(req, name, name_len, buf, len, cursor, ending, n)
            },
        )
    }
    pub fn append_header(req: u32, name: &[u8], value: &[u8]) -> Result<(), Status> {
        // SAFETY: viceroy reads only the two buffers, which `append_with` holds.
        append_with(
            |n, nl, v, vl| unsafe { sys::req_header_append(req, n, nl, v, vl) },
            name,
            value,
        )
    }
}

pub mod resp {
    use super::*;

    pub fn new() -> Result<u32, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::resp_new(at) })
    }
    pub fn status(resp: u32) -> Result<u16, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::resp_status_get(resp, at) })
    }
    pub fn set_status(resp: u32, status: u16) -> Result<(), Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        check(unsafe { sys::resp_status_set(resp, u32::from(status)) })
    }
    pub fn headers(resp: u32) -> Headers {
        headers_of(
            // SAFETY: viceroy reads and writes only the buffers the arguments name, which
            // the scratch of `items` holds for the call.
            |buf, len, cursor, ending, n| unsafe {
                sys::resp_header_names_get(resp, buf, len, cursor, ending, n)
            },
            // SAFETY: as above.
            |name, name_len, buf, len, cursor, ending, n| unsafe {
                sys::resp_header_values_get(resp, name, name_len, buf, len, cursor, ending, n)
            },
        )
    }
    pub fn append_header(resp: u32, name: &[u8], value: &[u8]) -> Result<(), Status> {
        // SAFETY: viceroy reads only the two buffers, which `append_with` holds.
        append_with(
            |n, nl, v, vl| unsafe { sys::resp_header_append(resp, n, nl, v, vl) },
            name,
            value,
        )
    }
    pub fn close(resp: u32) {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        let _ = unsafe { sys::resp_close(resp) };
    }
}

pub fn close_body(body: u32) {
    // SAFETY: takes no pointers.
    let _ = unsafe { sys::body_close(body) };
}

/// `fastly_cache::CacheLookupOptions` (wasm32).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct LookupOptions {
    pub request_headers: u32,
    pub service: u32,
    pub service_len: u32,
}
// SAFETY: `#[repr(C)]` integers only, valid for every bit pattern.
unsafe impl Pod for LookupOptions {}
pub const LOOKUP_REQUEST_HEADERS: u32 = 1 << 1;

/// `fastly_cache::CacheWriteOptions` (wasm32): pointers are guest addresses.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct WriteOptions {
    pub max_age_ns: u64,
    pub request_headers: u32,
    pub vary_rule_ptr: u32,
    pub vary_rule_len: u32,
    pub _pad: u32,
    pub initial_age_ns: u64,
    pub stale_while_revalidate_ns: u64,
    pub surrogate_keys_ptr: u32,
    pub surrogate_keys_len: u32,
    pub length: u64,
    pub user_metadata_ptr: u32,
    pub user_metadata_len: u32,
    pub edge_max_age_ns: u64,
    pub service: u32,
    pub service_len: u32,
}
// SAFETY: `#[repr(C)]` integers only (its padding named), valid for every bit pattern.
unsafe impl Pod for WriteOptions {}
const _: () = assert!(core::mem::size_of::<WriteOptions>() == 80);

pub const WRITE_VARY_RULE: u32 = 1 << 2;
pub const WRITE_INITIAL_AGE_NS: u32 = 1 << 3;
pub const WRITE_STALE_WHILE_REVALIDATE_NS: u32 = 1 << 4;
pub const WRITE_SURROGATE_KEYS: u32 = 1 << 5;
pub const WRITE_LENGTH: u32 = 1 << 6;
pub const WRITE_USER_METADATA: u32 = 1 << 7;
pub const WRITE_SENSITIVE_DATA: u32 = 1 << 8;

/// A core-cache write: the options with their strings, put in the guest's memory.
pub struct CoreWrite<'a> {
    pub max_age_ns: u64,
    pub initial_age_ns: u64,
    pub stale_while_revalidate_ns: u64,
    pub vary_rule: &'a [u8],
    pub surrogate_keys: &'a [u8],
    pub length: Option<u64>,
    pub user_metadata: &'a [u8],
    pub sensitive: bool,
}

impl CoreWrite<'_> {
    fn stage(&self, scratch: &mut Scratch) -> (u32, GuestPtr) {
        // viceroy parses an empty vary rule or key list as one empty name, and refuses it.
        let mut mask = WRITE_INITIAL_AGE_NS | WRITE_STALE_WHILE_REVALIDATE_NS | WRITE_USER_METADATA;
        if !self.vary_rule.is_empty() {
            mask |= WRITE_VARY_RULE;
        }
        if !self.surrogate_keys.is_empty() {
            mask |= WRITE_SURROGATE_KEYS;
        }
        let mut options = WriteOptions {
            max_age_ns: self.max_age_ns,
            initial_age_ns: self.initial_age_ns,
            stale_while_revalidate_ns: self.stale_while_revalidate_ns,
            vary_rule_ptr: scratch.put(self.vary_rule),
            vary_rule_len: self.vary_rule.len() as u32,
            surrogate_keys_ptr: scratch.put(self.surrogate_keys),
            surrogate_keys_len: self.surrogate_keys.len() as u32,
            user_metadata_ptr: scratch.put(self.user_metadata),
            user_metadata_len: self.user_metadata.len() as u32,
            ..WriteOptions::default()
        };
        if let Some(length) = self.length {
            mask |= WRITE_LENGTH;
            options.length = length;
        }
        if self.sensitive {
            mask |= WRITE_SENSITIVE_DATA;
        }
        (mask, scratch.put_value(&options))
    }
}

pub mod cache {
    use super::*;

    /// A lookup of `key` whose variants are chosen by `request`'s headers, answered at once
    /// with a busy handle: the answer may wait for another request's fetch, which the guest
    /// drives (`select` on the handle), so the call itself must not wait.
    pub fn transaction_lookup_async(key: &[u8], request: u32) -> Result<u32, Status> {
        let mut scratch = Scratch::new();
        let k = scratch.put(key);
        let options = scratch.put_value(&LookupOptions {
            request_headers: request,
            ..LookupOptions::default()
        });
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe {
            sys::transaction_lookup_async(k, key.len() as u32, LOOKUP_REQUEST_HEADERS, options, at)
        })
    }
    /// The lookup's handle, once its busy handle is ready (waits until it is).
    pub fn busy_wait(busy: u32) -> Result<u32, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::cache_busy_handle_wait(busy, at) })
    }
    pub fn close_busy(busy: u32) -> Result<(), Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        check(unsafe { sys::close_busy(busy) })
    }
    /// A lookup of `key` alone (edge-test's own entries).
    pub fn plain_lookup(key: &[u8]) -> Result<u32, Status> {
        let mut scratch = Scratch::new();
        let k = scratch.put(key);
        let options = scratch.put_value(&LookupOptions::default());
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::lookup(k, key.len() as u32, 0, options, at) })
    }
    /// Stores `write` under `key` alone, with an empty body.
    pub fn plain_insert(key: &[u8], write: &CoreWrite) -> Result<(), Status> {
        let mut scratch = Scratch::new();
        let k = scratch.put(key);
        let (mask, options) = write.stage(&mut scratch);
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        let body: u32 = out(|at| unsafe { sys::insert(k, key.len() as u32, mask, options, at) })?;
        close_body(body);
        Ok(())
    }
    pub fn lookup(key: &[u8], request: u32) -> Result<u32, Status> {
        let mut scratch = Scratch::new();
        let k = scratch.put(key);
        let options = scratch.put_value(&LookupOptions {
            request_headers: request,
            ..LookupOptions::default()
        });
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::lookup(k, key.len() as u32, LOOKUP_REQUEST_HEADERS, options, at) })
    }
    /// Inserts; the body handle to write, and the handle that reads the entry back.
    pub fn insert_and_stream_back(handle: u32, write: &CoreWrite) -> Result<(u32, u32), Status> {
        let mut scratch = Scratch::new();
        let (mask, options) = write.stage(&mut scratch);
        let body = scratch.put_value(&0u32);
        let back = scratch.put_value(&0u32);
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        check(unsafe {
            sys::transaction_insert_and_stream_back(handle, mask, options, body, back)
        })?;
        Ok((bridge::read(body), bridge::read(back)))
    }
    pub fn insert(handle: u32, write: &CoreWrite) -> Result<u32, Status> {
        let mut scratch = Scratch::new();
        let (mask, options) = write.stage(&mut scratch);
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|body| unsafe { sys::transaction_insert(handle, mask, options, body) })
    }
    pub fn update(handle: u32, write: &CoreWrite) -> Result<(), Status> {
        let mut scratch = Scratch::new();
        let (mask, options) = write.stage(&mut scratch);
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        check(unsafe { sys::transaction_update(handle, mask, options) })
    }
    pub fn cancel(handle: u32) -> Result<(), Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        check(unsafe { sys::transaction_cancel(handle) })
    }
    pub fn close(handle: u32) -> Result<(), Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        check(unsafe { sys::close(handle) })
    }
    pub fn state(handle: u32) -> Result<u32, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::get_state(handle, at) })
    }
    pub fn user_metadata(handle: u32) -> Result<Vec<u8>, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        bytes(|buf, len, n| unsafe { sys::get_user_metadata(handle, buf, len, n) })
    }
    pub fn body(handle: u32) -> Result<u32, Status> {
        let mut scratch = Scratch::new();
        let options = scratch.put_value(&[0u64; 2]);
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::get_body(handle, 0, options, at) })
    }
    pub fn length(handle: u32) -> Result<u64, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::get_length(handle, at) })
    }
    pub fn age_ns(handle: u32) -> Result<u64, Status> {
        // SAFETY: viceroy reads and writes only the buffers the arguments name, which
        // the scratch holds for the call.
        out(|at| unsafe { sys::get_age_ns(handle, at) })
    }
}

// SAFETY: integers, valid for every bit pattern.
unsafe impl Pod for [u64; 2] {}

/// Eight random bytes from WASI.
pub fn random_u64() -> u64 {
    let mut scratch = Scratch::new();
    let at = scratch.put_value(&0u64);
    // SAFETY: viceroy reads and writes only the buffers the arguments name, which
    // the scratch holds for the call.
    let _ = unsafe { sys::random_get(at, 8) };
    bridge::read(at)
}

/// Writes `message` to the log endpoint `endpoint` (edge-test's runner reads it).
pub fn log(endpoint: &[u8], message: &[u8]) {
    let mut scratch = Scratch::new();
    let name = scratch.put(endpoint);
    // SAFETY: viceroy reads and writes only the buffers the arguments name, which
    // the scratch holds for the call.
    let Ok(handle) = out::<u32>(|at| unsafe { sys::endpoint_get(name, endpoint.len() as u32, at) })
    else {
        return;
    };
    let msg = scratch.put(message);
    let n = scratch.put_value(&0u32);
    // SAFETY: viceroy reads and writes only the buffers the arguments name, which
    // the scratch holds for the call.
    let _ = unsafe { sys::write(handle, msg, message.len() as u32, n) };
}

/// [`log`] without the stack check (`stack_overflow` calls it).
pub fn log_unguarded(endpoint: &[u8], message: &[u8]) {
    let mut scratch = Scratch::unguarded();
    let name = scratch.put(endpoint);
    let handle = scratch.put_value(&0u32);
    // SAFETY: viceroy reads and writes only the scratch the arguments name.
    if unsafe { sys::endpoint_get(name, endpoint.len() as u32, handle) } != OK {
        return;
    }
    let msg = scratch.put(message);
    let n = scratch.put_value(&0u32);
    // SAFETY: as above.
    let _ = unsafe { sys::write(bridge::read(handle), msg, message.len() as u32, n) };
}
