//! Fastly's HTTP cache (`fastly_http_cache`, the hostcalls a fastly 0.11+ guest drives its
//! readthrough cache with) over viceroy's core cache (`fastly_cache`), which viceroy-lib 0.22
//! does provide. edge-test merges this module into a guest's module before compiling it; each
//! export `shim_<name>` takes the place of the guest's import `fastly_http_cache::<name>`.
//!
//! An HTTP cache handle is the core-cache handle of the same transaction, so the guest's
//! `async_io::is_ready` and `select` wait on it as they would in production. The response's
//! status and headers, and what the core cache does not keep, are the entry's user metadata
//! (`meta`). What the shim remembers about a handle (the request that looked it up, its key,
//! its metadata) lives in this instance's memory, for the one request the instance serves.
//!
//! Stale-if-error: the core entry is kept usable for `stale-while-revalidate +
//! stale-if-error` past its TTL, and the shim tells the guest which of the two windows a
//! stale entry is in.

#![no_std]

extern crate alloc;

mod arena;
mod bridge;
mod host;
mod meta;
mod policy;

use alloc::vec::Vec;

use bridge::{GuestPtr, Pod};
use host::{Status, cache, req, resp};
use meta::Meta;
use policy::Storage;

#[global_allocator]
static HEAP: arena::Heap = arena::Heap::new();

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // An allocation the arena cannot hold, or a bug of the shim's: the guest traps, and the
    // runner names the reason it was told first.
    core::arch::wasm32::unreachable()
}

/// The log endpoint the shim tells edge-test's runner about what it cannot do faithfully.
const LIMITS_ENDPOINT: &[u8] = b"edge-test:http-cache";

// `fastly_cache::CacheLookupState` bits.
const FOUND: u32 = 1 << 0;
const USABLE: u32 = 1 << 1;
const STALE: u32 = 1 << 2;
const MUST_INSERT_OR_UPDATE: u32 = 1 << 3;
const USABLE_IF_ERROR: u32 = 1 << 4;

/// What the shim knows of one HTTP cache handle.
struct Transaction {
    /// The handle the guest holds: a core busy handle for a transaction's lookup.
    handle: u32,
    /// The core handle the busy one became (`None` until the guest first asks about it).
    core: Option<u32>,
    /// The guest's request that looked it up (the SDK keeps it alive meanwhile).
    request: Option<u32>,
    key: Vec<u8>,
    /// The found entry's metadata, read once.
    meta: Option<Option<Meta>>,
    /// The guest chose the stale entry after its backend failed.
    chose_stale: bool,
    /// A lookup's handle (a found response is a hit), not one that reads back a write.
    lookup: bool,
    /// The hit count, once a found response was served.
    hits: Option<u64>,
}

static mut TRANSACTIONS: Vec<Transaction> = Vec::new();

fn transactions() -> &'static mut Vec<Transaction> {
    // SAFETY: a wasm instance runs one thread, and no reference outlives one shim call.
    unsafe { &mut *core::ptr::addr_of_mut!(TRANSACTIONS) }
}

/// The core handle behind the guest's `handle` (a busy handle becomes one here, waiting if
/// its lookup is not ready: the guest asks only once `is_ready` or `select` said it is).
fn core(handle: u32) -> u32 {
    match transaction(handle) {
        Some(t) => match t.core {
            Some(core) => core,
            None => {
                let core = cache::busy_wait(handle).unwrap_or(handle);
                t.core = Some(core);
                core
            }
        },
        None => handle,
    }
}

fn transaction(handle: u32) -> Option<&'static mut Transaction> {
    transactions().iter_mut().find(|t| t.handle == handle)
}

fn track(handle: u32, request: Option<u32>, key: Vec<u8>, lookup: bool, busy: bool) {
    transactions().retain(|t| t.handle != handle);
    transactions().push(Transaction {
        handle,
        core: (!busy).then_some(handle),
        request,
        key,
        meta: None,
        chose_stale: false,
        lookup,
        hits: None,
    });
}

/// Counts one more hit of the stored object `nonce`, kept in a core-cache entry of its own
/// (each request runs in an instance of its own, so the count must outlive it).
fn count_hit(nonce: u64) -> u64 {
    let mut key = meta::HITS_PREFIX.to_vec();
    key.extend(decimal(nonce).as_bytes());
    let before = cache::plain_lookup(&key)
        .ok()
        .and_then(|handle| {
            let found = cache::state(handle).is_ok_and(|s| s & FOUND != 0);
            let count = if found {
                cache::user_metadata(handle).ok()
            } else {
                None
            };
            let _ = cache::close(handle);
            count
        })
        .and_then(|bytes| Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)))
        .unwrap_or(0);
    let hits = before + 1;
    let _ = cache::plain_insert(
        &key,
        &host::CoreWrite {
            max_age_ns: 365 * 24 * 3600 * policy::SECOND,
            initial_age_ns: 0,
            stale_while_revalidate_ns: 0,
            vary_rule: b"",
            surrogate_keys: b"",
            length: Some(0),
            user_metadata: &hits.to_le_bytes(),
            sensitive: false,
        },
    );
    hits
}

/// The found entry's metadata (`None` if nothing usable was found).
fn found_meta(handle: u32) -> Option<Meta> {
    if transaction(handle).is_none() {
        track(handle, None, Vec::new(), false, false);
    }
    let t = transaction(handle)?;
    if t.meta.is_none() {
        let state = cache::state(core(handle)).unwrap_or(0);
        t.meta = Some(if state & FOUND != 0 {
            cache::user_metadata(core(handle))
                .ok()
                .and_then(|bytes| Meta::decode(&bytes))
        } else {
            None
        });
    }
    t.meta.clone().flatten()
}

fn write_out<T: Pod>(at: GuestPtr, value: T) -> Status {
    bridge::write(at, &value);
    host::OK
}

fn status_of(result: Result<(), Status>) -> Status {
    match result {
        Ok(()) => host::OK,
        Err(status) => status,
    }
}

/// Tells the runner (once per instance and limit) about a difference from production.
fn limit(what: &[u8]) {
    static mut TOLD: Vec<Vec<u8>> = Vec::new();
    // SAFETY: as `transactions`.
    let told = unsafe { &mut *core::ptr::addr_of_mut!(TOLD) };
    if told.iter().any(|t| t.as_slice() == what) {
        return;
    }
    told.push(what.to_vec());
    host::log(LIMITS_ENDPOINT, what);
}

/// The guest's shadow stack has grown down to the shim's data: stop before either is
/// corrupted, and say why.
pub(crate) fn stack_overflow() -> ! {
    const WHY: &[u8] = b"stack: the guest's stack grew into the memory edge-test's HTTP cache \
                         keeps below it (the last ~100 KiB of its 1 MiB); the guest was stopped";
    // `log` stages its buffers below the stack pointer: past the shim's data, which is all
    // that is left to protect.
    host::log_unguarded(LIMITS_ENDPOINT, WHY);
    core::arch::wasm32::unreachable()
}

/// The key a request is cached under: its override key, or its URL.
fn key_for(request: u32, options_mask: u32, options: GuestPtr) -> Result<Vec<u8>, Status> {
    const OVERRIDE_KEY: u32 = 1 << 1;
    if options_mask & OVERRIDE_KEY != 0 && options != 0 {
        let o: LookupOptions = bridge::read(options);
        if o.override_key_len > 0 {
            return Ok(bridge::read_bytes(o.override_key_ptr, o.override_key_len));
        }
    }
    let mut key = b"http:".to_vec();
    key.extend(req::uri(request)?);
    if key.len() > 4096 {
        key.truncate(4096);
    }
    Ok(key)
}

/// `fastly_http_cache::HttpCacheLookupOptions` (wasm32).
#[repr(C)]
#[derive(Clone, Copy)]
struct LookupOptions {
    override_key_ptr: u32,
    override_key_len: u32,
    backend_name_ptr: u32,
    backend_name_len: u32,
}
// SAFETY: integers only.
unsafe impl Pod for LookupOptions {}

/// `fastly_http_cache::HttpCacheWriteOptions` (wasm32).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct WriteOptions {
    max_age_ns: u64,
    vary_rule_ptr: u32,
    vary_rule_len: u32,
    initial_age_ns: u64,
    stale_while_revalidate_ns: u64,
    surrogate_keys_ptr: u32,
    surrogate_keys_len: u32,
    length: u64,
    stale_if_error_ns: u64,
}
// SAFETY: integers only.
unsafe impl Pod for WriteOptions {}
const _: () = assert!(core::mem::size_of::<WriteOptions>() == 56);

const W_VARY_RULE: u32 = 1 << 1;
const W_INITIAL_AGE_NS: u32 = 1 << 2;
const W_STALE_WHILE_REVALIDATE_NS: u32 = 1 << 3;
const W_SURROGATE_KEYS: u32 = 1 << 4;
const W_LENGTH: u32 = 1 << 5;
const W_SENSITIVE_DATA: u32 = 1 << 6;
const W_STALE_IF_ERROR_NS: u32 = 1 << 7;

/// The guest's write options, read out of its memory.
struct Write {
    max_age_ns: u64,
    initial_age_ns: u64,
    stale_while_revalidate_ns: u64,
    stale_if_error_ns: u64,
    vary_rule: Vec<u8>,
    surrogate_keys: Vec<u8>,
    length: Option<u64>,
    sensitive: bool,
}

impl Write {
    fn read(mask: u32, at: GuestPtr) -> Self {
        let o: WriteOptions = if at == 0 {
            WriteOptions::default()
        } else {
            bridge::read(at)
        };
        let bit = |b: u32| mask & b != 0;
        Self {
            max_age_ns: o.max_age_ns,
            initial_age_ns: if bit(W_INITIAL_AGE_NS) {
                o.initial_age_ns
            } else {
                0
            },
            stale_while_revalidate_ns: if bit(W_STALE_WHILE_REVALIDATE_NS) {
                o.stale_while_revalidate_ns
            } else {
                0
            },
            stale_if_error_ns: if bit(W_STALE_IF_ERROR_NS) {
                o.stale_if_error_ns
            } else {
                0
            },
            vary_rule: if bit(W_VARY_RULE) {
                bridge::read_bytes(o.vary_rule_ptr, o.vary_rule_len)
            } else {
                Vec::new()
            },
            surrogate_keys: if bit(W_SURROGATE_KEYS) {
                bridge::read_bytes(o.surrogate_keys_ptr, o.surrogate_keys_len)
            } else {
                Vec::new()
            },
            length: bit(W_LENGTH).then_some(o.length),
            sensitive: bit(W_SENSITIVE_DATA),
        }
    }

    /// The entry's metadata for a response with `status` and `headers`.
    fn meta(&self, status: u16, headers: host::Headers) -> Meta {
        Meta {
            hit_for_pass: false,
            status,
            headers,
            max_age_ns: self.max_age_ns,
            stale_while_revalidate_ns: self.stale_while_revalidate_ns,
            stale_if_error_ns: self.stale_if_error_ns,
            sensitive: self.sensitive,
            vary_rule: self.vary_rule.clone(),
            surrogate_keys: self.surrogate_keys.clone(),
            nonce: host::random_u64(),
        }
    }

    /// Writes `meta` with these options through `call`: the core entry stays usable through
    /// both stale windows, and the shim tells them apart (`shim_get_state`).
    fn core<R>(&self, meta: &Meta, call: impl FnOnce(&host::CoreWrite) -> R) -> R {
        let user_metadata = meta.encode();
        call(&host::CoreWrite {
            max_age_ns: self.max_age_ns,
            initial_age_ns: self.initial_age_ns,
            stale_while_revalidate_ns: self
                .stale_while_revalidate_ns
                .saturating_add(self.stale_if_error_ns),
            vary_rule: &self.vary_rule,
            surrogate_keys: &self.surrogate_keys,
            length: self.length,
            user_metadata: &user_metadata,
            sensitive: self.sensitive,
        })
    }
}

/// The response a guest gets for a found entry: its status, its headers and its body.
fn found_response(handle: u32, meta: &Meta, for_client: bool) -> Result<(u32, u32), Status> {
    let response = resp::new()?;
    resp::set_status(response, meta.status)?;
    for (name, value) in &meta.headers {
        if for_client && name.eq_ignore_ascii_case(b"age") {
            continue;
        }
        resp::append_header(response, name, value)?;
    }
    if for_client {
        let age = cache::age_ns(core(handle)).unwrap_or(0) / policy::SECOND;
        resp::append_header(response, b"age", decimal(age).as_bytes())?;
    }
    let body = cache::body(core(handle))?;
    Ok((response, body))
}

/// A new response with `status` and `headers`.
fn copy_response(status: u16, headers: &host::Headers) -> Result<u32, Status> {
    let copy = resp::new()?;
    resp::set_status(copy, status)?;
    for (name, value) in headers {
        resp::append_header(copy, name, value)?;
    }
    Ok(copy)
}

fn decimal(mut n: u64) -> alloc::string::String {
    let mut digits = Vec::new();
    loop {
        digits.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    alloc::string::String::from_utf8(digits).unwrap_or_default()
}

// ---- the hostcalls ----

#[unsafe(no_mangle)]
pub extern "C" fn shim_is_request_cacheable(request: u32, out: GuestPtr) -> Status {
    match req::method(request) {
        Ok(method) => write_out(out, u32::from(method == b"GET" || method == b"HEAD")),
        Err(status) => status,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_transaction_lookup(
    request: u32,
    options_mask: u32,
    options: GuestPtr,
    out: GuestPtr,
) -> Status {
    // Answered at once with a busy handle (`core` waits on it when the guest asks).
    start_lookup(request, options_mask, options, out, true)
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_lookup(
    request: u32,
    options_mask: u32,
    options: GuestPtr,
    out: GuestPtr,
) -> Status {
    start_lookup(request, options_mask, options, out, false)
}

fn start_lookup(
    request: u32,
    options_mask: u32,
    options: GuestPtr,
    out: GuestPtr,
    transactional: bool,
) -> Status {
    let lookup = || {
        let key = key_for(request, options_mask, options)?;
        let handle = if transactional {
            cache::transaction_lookup_async(&key, request)?
        } else {
            cache::lookup(&key, request)?
        };
        track(handle, Some(request), key, true, transactional);
        Ok(handle)
    };
    match lookup() {
        Ok(handle) => write_out(out, handle),
        Err(status) => status,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_state(handle: u32, out: GuestPtr) -> Status {
    let state = match cache::state(core(handle)) {
        Ok(state) => state,
        Err(status) => return status,
    };
    write_out(out, http_state(handle, state))
}

/// The HTTP cache's view of a core entry's state: hit-for-pass markers are "not found, no
/// obligation" (the guest then passes), and an entry past its stale-while-revalidate window
/// is only usable if the backend fails.
fn http_state(handle: u32, state: u32) -> u32 {
    if state & FOUND == 0 {
        return state;
    }
    if transaction(handle).is_some_and(|t| t.chose_stale) {
        return FOUND | USABLE | STALE;
    }
    let Some(meta) = found_meta(handle) else {
        return state;
    };
    if meta.hit_for_pass {
        return 0;
    }
    let age = cache::age_ns(core(handle)).unwrap_or(0);
    let stale_while_revalidate_ends = meta
        .max_age_ns
        .saturating_add(meta.stale_while_revalidate_ns);
    if age >= stale_while_revalidate_ends && meta.stale_if_error_ns > 0 {
        // Only stale-if-error is left: refetch, and keep the entry for a failure.
        if state & MUST_INSERT_OR_UPDATE != 0 {
            return MUST_INSERT_OR_UPDATE | USABLE_IF_ERROR;
        }
        limit(
            b"stale-if-error: a request arriving while another revalidates an entry past its \
                stale-while-revalidate window is served the stale entry instead of waiting",
        );
    }
    state
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_found_response(
    handle: u32,
    transform_for_client: u32,
    resp_out: GuestPtr,
    body_out: GuestPtr,
) -> Status {
    let state = match cache::state(core(handle)) {
        Ok(state) => http_state(handle, state),
        Err(status) => return status,
    };
    if state & USABLE == 0 {
        return host::NONE;
    }
    let Some(meta) = found_meta(handle) else {
        return host::NONE;
    };
    // A hit is a lookup's found response; a write's read-back is the response as stored.
    let hit = transaction(handle).is_some_and(|t| t.lookup);
    match found_response(handle, &meta, transform_for_client != 0 && hit) {
        Ok((response, body)) => {
            if let Some(t) = transaction(handle).filter(|t| t.lookup && t.hits.is_none()) {
                t.hits = Some(count_hit(meta.nonce));
            }
            bridge::write(resp_out, &response);
            bridge::write(body_out, &body);
            host::OK
        }
        Err(status) => status,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_suggested_backend_request(handle: u32, out: GuestPtr) -> Status {
    let Some(original) = transaction(handle).and_then(|t| t.request) else {
        return host::BADF;
    };
    let copy = || {
        let request = req::new()?;
        req::set_method(request, &req::method(original)?)?;
        req::set_uri(request, &req::uri(original)?)?;
        req::set_version(request, req::version(original)?)?;
        let headers = req::headers(original);
        for (name, value) in &headers {
            req::append_header(request, name, value)?;
        }
        // Revalidating a stale entry asks the origin whether it changed, as Fastly does.
        let has = |name: &[u8]| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if let Some(meta) = found_meta(handle).filter(|m| !m.hit_for_pass) {
            for (validator, condition) in [
                (&b"etag"[..], &b"if-none-match"[..]),
                (b"last-modified", b"if-modified-since"),
            ] {
                if has(condition) {
                    continue;
                }
                if let Some(value) = policy::values(&meta.headers, validator).next() {
                    req::append_header(request, condition, value)?;
                }
            }
        }
        Ok(request)
    };
    match copy() {
        Ok(request) => write_out(out, request),
        Err(status) => status,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_prepare_response_for_storage(
    handle: u32,
    response: u32,
    action_out: GuestPtr,
    resp_out: GuestPtr,
) -> Status {
    let status = match resp::status(response) {
        Ok(status) => status,
        Err(status) => return status,
    };
    let headers = resp::headers(response);
    let stale = found_meta(handle).filter(|m| !m.hit_for_pass);
    let (action, out) = match stale {
        // The origin says the stale entry is still good: freshen it with the 304's headers.
        Some(meta) if status == 304 => {
            let mut merged = meta.clone();
            for (name, _) in &headers {
                merged
                    .headers
                    .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            }
            merged.headers.extend(headers.iter().cloned());
            match copy_response(merged.status, &merged.headers) {
                Ok(fresh) => (Storage::Update, fresh),
                Err(status) => return status,
            }
        }
        // A new handle, as production gives: the SDK closes the one it passed.
        _ => match copy_response(status, &headers) {
            Ok(copy) => (policy::storage(status, &headers), copy),
            Err(status) => return status,
        },
    };
    bridge::write(action_out, &(action as u32));
    write_out(resp_out, out)
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_suggested_cache_options(
    _handle: u32,
    response: u32,
    _wanted: u32,
    supplied: GuestPtr,
    mask_out: GuestPtr,
    options_out: GuestPtr,
) -> Status {
    let headers = resp::headers(response);
    let f = policy::freshness(&headers);
    let buffers: WriteOptions = bridge::read(supplied);
    let mut out = WriteOptions {
        max_age_ns: f.max_age_ns,
        initial_age_ns: f.initial_age_ns,
        stale_while_revalidate_ns: f.stale_while_revalidate_ns,
        stale_if_error_ns: f.stale_if_error_ns,
        vary_rule_ptr: buffers.vary_rule_ptr,
        vary_rule_len: f.vary_rule.len() as u32,
        surrogate_keys_ptr: buffers.surrogate_keys_ptr,
        // Surrogate-Key headers are the SDK's to read; Fastly suggests none of its own.
        surrogate_keys_len: 0,
        length: f.length.unwrap_or(0),
    };
    let mut mask = W_VARY_RULE
        | W_INITIAL_AGE_NS
        | W_STALE_WHILE_REVALIDATE_NS
        | W_STALE_IF_ERROR_NS
        | W_SURROGATE_KEYS;
    if f.length.is_some() {
        mask |= W_LENGTH;
    }
    let fits = f.vary_rule.len() as u32 <= buffers.vary_rule_len;
    if fits {
        bridge::write_bytes(buffers.vary_rule_ptr, &f.vary_rule);
    } else {
        out.vary_rule_ptr = 0;
    }
    bridge::write(mask_out, &mask);
    bridge::write(options_out, &out);
    if fits { host::OK } else { host::BUFLEN }
}

/// The response a write stores, read and closed (the hostcall takes it), with its options.
fn insert(response: u32, options_mask: u32, options: GuestPtr) -> Result<(Write, Meta), Status> {
    let status = resp::status(response)?;
    let headers = resp::headers(response);
    resp::close(response);
    let write = Write::read(options_mask, options);
    let meta = write.meta(status, headers);
    Ok((write, meta))
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_transaction_insert(
    handle: u32,
    response: u32,
    options_mask: u32,
    options: GuestPtr,
    body_out: GuestPtr,
) -> Status {
    let result = insert(response, options_mask, options).and_then(|(write, meta)| {
        write.core(&meta, |options| cache::insert(core(handle), options))
    });
    match result {
        Ok(body) => write_out(body_out, body),
        Err(status) => status,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_transaction_insert_and_stream_back(
    handle: u32,
    response: u32,
    options_mask: u32,
    options: GuestPtr,
    body_out: GuestPtr,
    handle_out: GuestPtr,
) -> Status {
    let result = insert(response, options_mask, options).and_then(|(write, meta)| {
        write.core(&meta, |options| {
            cache::insert_and_stream_back(core(handle), options)
        })
    });
    match result {
        Ok((body, back)) => {
            let key = transaction(handle)
                .map(|t| t.key.clone())
                .unwrap_or_default();
            track(back, None, key, false, false);
            bridge::write(body_out, &body);
            write_out(handle_out, back)
        }
        Err(status) => status,
    }
}

/// Freshens a stored object with a revalidation's headers and options, keeping its body.
fn update(handle: u32, response: u32, options_mask: u32, options: GuestPtr) -> Result<(), Status> {
    let (mut write, meta) = insert(response, options_mask, options)?;
    // The length the SDK passes is the 304's body's, 0: given to viceroy, it would empty the
    // object. The object keeps its own.
    write.length = None;
    write.core(&meta, |options| cache::update(core(handle), options))
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_transaction_update(
    handle: u32,
    response: u32,
    options_mask: u32,
    options: GuestPtr,
) -> Status {
    status_of(update(handle, response, options_mask, options))
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_transaction_update_and_return_fresh(
    handle: u32,
    response: u32,
    options_mask: u32,
    options: GuestPtr,
    handle_out: GuestPtr,
) -> Status {
    let fresh = || {
        update(handle, response, options_mask, options)?;
        let (key, request) = transaction(handle)
            .map(|t| (t.key.clone(), t.request))
            .ok_or(host::BADF)?;
        let fresh = cache::lookup(&key, request.unwrap_or(0))?;
        track(fresh, request, key, false, false);
        Ok(fresh)
    };
    match fresh() {
        Ok(fresh) => write_out(handle_out, fresh),
        Err(status) => status,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_transaction_choose_stale(handle: u32) -> Status {
    match transaction(handle) {
        Some(t) => {
            t.chose_stale = true;
            // Give the obligation up: the next request tries the backend again.
            let _ = cache::cancel(core(handle));
            host::OK
        }
        None => host::BADF,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_transaction_record_not_cacheable(
    handle: u32,
    options_mask: u32,
    options: GuestPtr,
) -> Status {
    let write = Write::read(options_mask, options);
    let meta = Meta {
        hit_for_pass: true,
        max_age_ns: write.max_age_ns,
        vary_rule: write.vary_rule.clone(),
        ..Meta::default()
    };
    let marker = Write {
        stale_while_revalidate_ns: 0,
        stale_if_error_ns: 0,
        surrogate_keys: Vec::new(),
        length: Some(0),
        ..write
    };
    match marker.core(&meta, |options| cache::insert(core(handle), options)) {
        Ok(body) => {
            host::close_body(body);
            host::OK
        }
        Err(status) => status,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_transaction_abandon(handle: u32) -> Status {
    status_of(cache::cancel(core(handle)))
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_close(handle: u32) -> Status {
    let still_busy = transaction(handle).is_some_and(|t| t.core.is_none());
    let core = core_if_known(handle);
    transactions().retain(|t| t.handle != handle);
    if still_busy {
        status_of(cache::close_busy(handle))
    } else {
        status_of(cache::close(core))
    }
}

fn core_if_known(handle: u32) -> u32 {
    transaction(handle).and_then(|t| t.core).unwrap_or(handle)
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_length(handle: u32, out: GuestPtr) -> Status {
    match cache::length(core(handle)) {
        Ok(length) => write_out(out, length),
        Err(status) => status,
    }
}

fn meta_value<T: Pod>(handle: u32, out: GuestPtr, get: impl FnOnce(&Meta) -> T) -> Status {
    match found_meta(handle).filter(|m| !m.hit_for_pass) {
        Some(meta) => write_out(out, get(&meta)),
        None => host::NONE,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_max_age_ns(handle: u32, out: GuestPtr) -> Status {
    meta_value(handle, out, |m| m.max_age_ns)
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_stale_while_revalidate_ns(handle: u32, out: GuestPtr) -> Status {
    meta_value(handle, out, |m| m.stale_while_revalidate_ns)
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_stale_if_error_ns(handle: u32, out: GuestPtr) -> Status {
    meta_value(handle, out, |m| m.stale_if_error_ns)
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_sensitive_data(handle: u32, out: GuestPtr) -> Status {
    meta_value(handle, out, |m| u32::from(m.sensitive))
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_age_ns(handle: u32, out: GuestPtr) -> Status {
    if found_meta(handle).is_none() {
        return host::NONE;
    }
    match cache::age_ns(core(handle)) {
        Ok(age) => write_out(out, age),
        Err(status) => status,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_hits(handle: u32, out: GuestPtr) -> Status {
    match transaction(handle).and_then(|t| t.hits) {
        Some(hits) => write_out(out, hits),
        None => host::NONE,
    }
}

fn meta_bytes(
    handle: u32,
    buf: GuestPtr,
    len: u32,
    nwritten: GuestPtr,
    get: impl FnOnce(&Meta) -> &[u8],
) -> Status {
    let Some(meta) = found_meta(handle).filter(|m| !m.hit_for_pass) else {
        return host::NONE;
    };
    let bytes = get(&meta);
    bridge::write(nwritten, &(bytes.len() as u32));
    if bytes.len() as u32 > len {
        return host::BUFLEN;
    }
    bridge::write_bytes(buf, bytes);
    host::OK
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_surrogate_keys(
    handle: u32,
    buf: GuestPtr,
    len: u32,
    nwritten: GuestPtr,
) -> Status {
    meta_bytes(handle, buf, len, nwritten, |m| &m.surrogate_keys)
}

#[unsafe(no_mangle)]
pub extern "C" fn shim_get_vary_rule(
    handle: u32,
    buf: GuestPtr,
    len: u32,
    nwritten: GuestPtr,
) -> Status {
    meta_bytes(handle, buf, len, nwritten, |m| &m.vary_rule)
}

/// What `core` calls to compare bytes: on wasm32-wasip1 it expects the C library's, which
/// the shim does not link (the guest's own would read the guest's memory).
///
/// # Safety
/// `a` and `b` must each be readable for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n`, and the caller promises `n` readable bytes behind both.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}
