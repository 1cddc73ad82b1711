//! The host side of the proxy-wasm ABI: the functions a filter imports from `env`, over
//! the state of the one request its instance serves ([`Host`]).
//!
//! Guest pointers are checked against its memory (a bad one is `BadArgument`, never a read
//! outside it); values handed to the guest are copied into memory it allocates with its
//! own `proxy_on_memory_allocate`. What a filter may produce is bounded (header count and
//! bytes, local response body, callouts): going past a bound traps the filter, and its
//! request is answered as any other fault (see `stream.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker, Memory, TypedFunc};

use crate::abi::{self, Pairs, Status};
use crate::shared::{SetError, SharedData};
use crate::wasi;

/// Headers a filter may leave in one map, and their bytes (names and values).
pub const MAX_HEADERS: usize = 256;
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// A local response's body.
const MAX_LOCAL_BODY: usize = 1 << 20;
/// Callouts one request may start, and the bytes of one.
const MAX_CALLOUTS: usize = 8;
const MAX_CALLOUT_BYTES: usize = 1 << 20;
/// What one log line keeps.
const MAX_LOG_LINE: usize = 4096;

/// A response the filter asked to send instead of going on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Pairs,
    pub body: Vec<u8>,
    /// The filter's `status_code_details`, for the log.
    pub details: String,
}

/// An HTTP callout a filter started, waiting for the host to make it.
#[derive(Debug, Clone)]
pub struct Callout {
    pub token: u32,
    /// The filter's "cluster": which upstream to ask (the host decides what names mean).
    pub upstream: String,
    /// Pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// A callout's answer, as the filter reads it in `proxy_on_http_call_response`.
#[derive(Debug, Clone, Default)]
pub struct CalloutResponse {
    /// `:status` included.
    pub headers: Pairs,
    pub body: Vec<u8>,
}

/// A request's properties (`request.path`, `source.address`…), made when a filter asks
/// for one: most filters read few or none. Paths are joined with `.`.
pub trait Properties: Send + Sync {
    fn get(&self, path: &str) -> Option<Vec<u8>>;
}

impl Properties for HashMap<String, Vec<u8>> {
    fn get(&self, path: &str) -> Option<Vec<u8>> {
        HashMap::get(self, path).cloned()
    }
}

/// A filter's metric: defined by name, kept per filter across its instances.
#[derive(Debug)]
pub struct Metric {
    pub name: String,
    pub kind: i32,
    pub value: std::sync::atomic::AtomicI64,
}

/// What every instance of one filter shares: its configuration, metrics and shared data.
pub struct Plugin {
    pub name: String,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub shared: Arc<dyn SharedData>,
    pub metrics: std::sync::Mutex<Vec<Arc<Metric>>>,
    /// Milliseconds between `proxy_on_tick` calls the filter asked for (0: none).
    pub tick_ms: std::sync::atomic::AtomicU32,
}

/// The state of one instance, and of the request it serves now.
pub struct Host {
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<i32, i32>>,
    /// Request headers, pseudo-headers first.
    pub(crate) request: Pairs,
    /// Response headers (`:status` first), once the response phase has begun.
    pub(crate) response: Option<Pairs>,
    /// What the filter set (`proxy_set_property`), or the host gave during the request.
    pub(crate) properties: HashMap<String, Vec<u8>>,
    /// The request's own properties, asked for only when the filter reads one.
    pub(crate) provider: Option<Box<dyn Properties>>,
    /// Whether the filter changed the request's or the response's headers this phase.
    pub(crate) changed: [bool; 2],
    pub(crate) local: Option<LocalResponse>,
    pub(crate) continued: bool,
    pub(crate) closed: bool,
    pub(crate) callouts: Vec<Callout>,
    pub(crate) callouts_started: usize,
    pub(crate) next_token: u32,
    /// The answer of the callout being delivered.
    pub(crate) call_response: Option<CalloutResponse>,
    /// Why the host stopped the filter, when it did (a bound passed).
    pub(crate) violation: Option<String>,
    /// The thread's CPU time when the current call's deadline first passed (see
    /// `Runtime::watch`); `None` before it has.
    pub(crate) cpu_mark: Option<std::time::Duration>,
    /// Shared data keys this request read as absent: a write of one with cas 0 creates
    /// it only if it is still absent (see `proxy_set_shared_data`).
    pub(crate) read_absent: std::collections::HashSet<String>,
}

impl Host {
    pub(crate) fn new(plugin: Arc<Plugin>) -> Host {
        Host {
            plugin,
            memory: None,
            alloc: None,
            request: Vec::new(),
            response: None,
            properties: HashMap::new(),
            provider: None,
            changed: [false; 2],
            local: None,
            continued: false,
            closed: false,
            callouts: Vec::new(),
            callouts_started: 0,
            next_token: 1,
            call_response: None,
            violation: None,
            cpu_mark: None,
            read_absent: Default::default(),
        }
    }

    /// Clears what one request left, before the next.
    pub(crate) fn reset(&mut self) {
        self.request.clear();
        self.response = None;
        self.properties.clear();
        self.provider = None;
        self.changed = [false; 2];
        self.local = None;
        self.continued = false;
        self.closed = false;
        self.callouts.clear();
        self.callouts_started = 0;
        self.call_response = None;
        self.read_absent.clear();
    }

    fn map(&self, kind: i32) -> Option<&Pairs> {
        match kind {
            abi::map::REQUEST_HEADERS => Some(&self.request),
            abi::map::RESPONSE_HEADERS => self.response.as_ref(),
            abi::map::HTTP_CALL_RESPONSE_HEADERS => self.call_response.as_ref().map(|r| &r.headers),
            _ => None,
        }
    }

    /// A map the filter is about to change (marked changed).
    fn map_mut(&mut self, kind: i32) -> Option<&mut Pairs> {
        match kind {
            abi::map::REQUEST_HEADERS => {
                self.changed[0] = true;
                Some(&mut self.request)
            }
            abi::map::RESPONSE_HEADERS => {
                self.changed[1] = true;
                self.response.as_mut()
            }
            _ => None,
        }
    }

    fn buffer(&self, kind: i32) -> Option<&[u8]> {
        match kind {
            abi::buffer::VM_CONFIGURATION => Some(&self.plugin.vm_config),
            abi::buffer::PLUGIN_CONFIGURATION => Some(&self.plugin.plugin_config),
            abi::buffer::HTTP_CALL_RESPONSE_BODY => {
                self.call_response.as_ref().map(|r| &r.body[..])
            }
            _ => None,
        }
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key = path.join(".");
        if let Some(v) = self.properties.get(&key) {
            return Some(v.clone());
        }
        if let Some(v) = self.provider.as_ref().and_then(|p| p.get(&key)) {
            return Some(v);
        }
        match key.as_str() {
            "plugin_name" | "plugin_root_id" => Some(self.plugin.name.as_bytes().to_vec()),
            "plugin_vm_id" => Some(Vec::new()),
            "request.headers" => Some(abi::encode_pairs(&self.request)),
            "response.headers" => self.response.as_ref().map(|r| abi::encode_pairs(r)),
            _ => None,
        }
    }
}

/// The host stops the filter: its request is answered as a fault.
fn violate(caller: &mut Caller<'_, Host>, why: String) -> wasmtime::Error {
    caller.data_mut().violation = Some(why.clone());
    wasmtime::Error::msg(why)
}

// === guest memory ===

fn memory(caller: &Caller<'_, Host>) -> Result<Memory, Status> {
    caller.data().memory.ok_or(Status::InternalFailure)
}

pub(crate) fn read(caller: &Caller<'_, Host>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let mem = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = mem.data(caller);
    let end = ptr.checked_add(len).ok_or(Status::BadArgument)?;
    data.get(ptr..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status::BadArgument)
}

pub(crate) fn write(caller: &mut Caller<'_, Host>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let mem = memory(caller)?;
    mem.write(caller, ptr as u32 as usize, bytes)
        .map_err(|_| Status::BadArgument)
}

fn write_u32(caller: &mut Caller<'_, Host>, ptr: i32, v: u32) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Copies `bytes` into memory the guest allocates and writes where and how long it is.
/// A trap in the guest's allocator is the guest's: it ends the call.
fn give(
    caller: &mut Caller<'_, Host>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<Status> {
    let Some(alloc) = caller.data().alloc.clone() else {
        return Ok(Status::InternalFailure);
    };
    let len = i32::try_from(bytes.len()).map_err(wasmtime::Error::msg)?;
    // Allocated even when empty: AssemblyScript's runtime reads an object header before
    // the pointer it is given, and a null one faults it (Rust's allocator answers a
    // dangling, never-null pointer for 0 bytes).
    let at = alloc.call(&mut *caller, len)?;
    if !bytes.is_empty() && at == 0 {
        return Ok(Status::InternalFailure);
    }
    let wrote = (|| {
        write(caller, at, bytes)?;
        write_u32(caller, ret_ptr, at as u32)?;
        write_u32(caller, ret_len, len as u32)
    })();
    Ok(wrote.err().unwrap_or(Status::Ok))
}

/// Runs a host function body that answers a status.
fn status(r: Result<(), Status>) -> i32 {
    r.err().unwrap_or(Status::Ok).code()
}

fn string(bytes: Vec<u8>) -> Result<String, Status> {
    String::from_utf8(bytes).map_err(|_| Status::BadArgument)
}

/// Checks a map a filter left against the bounds and HTTP's rules for field names and
/// values (pseudo-headers aside).
fn check_map(pairs: &Pairs) -> Result<(), String> {
    if pairs.len() > MAX_HEADERS {
        return Err(format!(
            "the filter left {} headers (at most {MAX_HEADERS})",
            pairs.len()
        ));
    }
    let bytes: usize = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(format!(
            "the filter left {bytes} bytes of headers (at most {MAX_HEADER_BYTES})"
        ));
    }
    for (name, value) in pairs {
        let valid_name =
            name.starts_with(':') || http::HeaderName::from_bytes(name.as_bytes()).is_ok();
        if !valid_name || http::HeaderValue::from_bytes(value).is_err() {
            return Err(format!("the filter set an invalid header field {name:?}"));
        }
    }
    Ok(())
}

/// After a change to a map: within the bounds, or the filter is stopped.
fn checked(caller: &mut Caller<'_, Host>, kind: i32) -> wasmtime::Result<i32> {
    let verdict = caller.data().map(kind).map(check_map);
    match verdict {
        Some(Err(why)) => Err(violate(caller, why)),
        _ => Ok(Status::Ok.code()),
    }
}

// === the functions ===

pub(crate) fn define(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wasi::define(linker)?;
    let env = "env";

    linker.func_wrap(
        env,
        "proxy_log",
        |mut caller: Caller<'_, Host>, level: i32, ptr: i32, len: i32| -> i32 {
            let Ok(mut msg) = read(&caller, ptr, len) else {
                return Status::BadArgument.code();
            };
            msg.truncate(MAX_LOG_LINE);
            let msg = String::from_utf8_lossy(&msg);
            let filter = &caller.data_mut().plugin.name;
            match level {
                abi::log::TRACE => {
                    tracing::trace!(target: "strata::filter", filter = %filter, "{msg}")
                }
                abi::log::DEBUG => {
                    tracing::debug!(target: "strata::filter", filter = %filter, "{msg}")
                }
                abi::log::INFO => {
                    tracing::info!(target: "strata::filter", filter = %filter, "{msg}")
                }
                abi::log::WARN => {
                    tracing::warn!(target: "strata::filter", filter = %filter, "{msg}")
                }
                _ => tracing::error!(target: "strata::filter", filter = %filter, "{msg}"),
            }
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_log_level",
        |mut caller: Caller<'_, Host>, ret: i32| -> i32 {
            let level = if tracing::enabled!(target: "strata::filter", tracing::Level::DEBUG) {
                abi::log::DEBUG
            } else {
                abi::log::INFO
            };
            status(write_u32(&mut caller, ret, level as u32))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, Host>, ret: i32| -> i32 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            status(write(&mut caller, ret, &now.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_tick_period_milliseconds",
        |caller: Caller<'_, Host>, ms: i32| -> i32 {
            caller
                .data()
                .plugin
                .tick_ms
                .store(ms as u32, std::sync::atomic::Ordering::Relaxed);
            Status::Ok.code()
        },
    )?;

    // --- buffers ---
    linker.func_wrap(
        env,
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, Host>,
         kind: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Some(buf) = caller.data().buffer(kind) else {
                return Ok(Status::NotFound.code());
            };
            let start = (start as u32 as usize).min(buf.len());
            let end = start.saturating_add(max as u32 as usize).min(buf.len());
            let bytes = buf[start..end].to_vec();
            Ok(give(&mut caller, &bytes, ret_ptr, ret_len)?.code())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_buffer_bytes",
        |_: Caller<'_, Host>, _kind: i32, _start: i32, _size: i32, _ptr: i32, _len: i32| -> i32 {
            // Bodies are not handed to filters (docs/compute.md): nothing to change.
            Status::NotFound.code()
        },
    )?;

    // --- header maps ---
    linker.func_wrap(
        env,
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, Host>,
         kind: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let bytes = abi::encode_pairs(caller.data().map(kind).map_or(&[][..], |m| &m[..]));
            Ok(give(&mut caller, &bytes, ret_ptr, ret_len)?.code())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, Host>, kind: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let Some(pairs) = read(&caller, ptr, len)
                .ok()
                .and_then(|b| abi::decode_pairs(&b))
            else {
                return Ok(Status::BadArgument.code());
            };
            let Some(map) = caller.data_mut().map_mut(kind) else {
                return Ok(Status::Ok.code());
            };
            *map = pairs;
            checked(&mut caller, kind)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, Host>,
         kind: i32,
         key_ptr: i32,
         key_len: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Ok(key) = read(&caller, key_ptr, key_len) else {
                return Ok(Status::BadArgument.code());
            };
            let value = caller.data().map(kind).and_then(|m| {
                m.iter()
                    .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(&key))
                    .map(|(_, v)| v.clone())
            });
            match value {
                Some(v) => Ok(give(&mut caller, &v, ret_ptr, ret_len)?.code()),
                None => Ok(Status::NotFound.code()),
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, Host>, kind: i32, key_ptr: i32, key_len: i32| -> i32 {
            let Ok(key) = read(&caller, key_ptr, key_len) else {
                return Status::BadArgument.code();
            };
            if let Some(map) = caller.data_mut().map_mut(kind) {
                map.retain(|(n, _)| !n.as_bytes().eq_ignore_ascii_case(&key));
            }
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, Host>,
         kind: i32,
         key_ptr: i32,
         key_len: i32,
         val_ptr: i32,
         val_len: i32|
         -> wasmtime::Result<i32> {
            let (Ok(key), Ok(value)) = (
                read(&caller, key_ptr, key_len).and_then(string),
                read(&caller, val_ptr, val_len),
            ) else {
                return Ok(Status::BadArgument.code());
            };
            if let Some(map) = caller.data_mut().map_mut(kind) {
                let mut first = true;
                map.retain_mut(|(n, v)| {
                    if !n.eq_ignore_ascii_case(&key) {
                        return true;
                    }
                    if first {
                        first = false;
                        *v = value.clone();
                        return true;
                    }
                    false
                });
                if first {
                    map.push((key.to_ascii_lowercase(), value));
                }
            }
            checked(&mut caller, kind)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, Host>,
         kind: i32,
         key_ptr: i32,
         key_len: i32,
         val_ptr: i32,
         val_len: i32|
         -> wasmtime::Result<i32> {
            let (Ok(key), Ok(value)) = (
                read(&caller, key_ptr, key_len).and_then(string),
                read(&caller, val_ptr, val_len),
            ) else {
                return Ok(Status::BadArgument.code());
            };
            if let Some(map) = caller.data_mut().map_mut(kind) {
                map.push((key.to_ascii_lowercase(), value));
            }
            checked(&mut caller, kind)
        },
    )?;

    // --- properties ---
    linker.func_wrap(
        env,
        "proxy_get_property",
        |mut caller: Caller<'_, Host>,
         path_ptr: i32,
         path_len: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Ok(path) = read(&caller, path_ptr, path_len) else {
                return Ok(Status::BadArgument.code());
            };
            let Some(segments) = abi::decode_path(&path) else {
                return Ok(Status::NotFound.code());
            };
            match caller.data().property(&segments) {
                Some(v) => Ok(give(&mut caller, &v, ret_ptr, ret_len)?.code()),
                None => Ok(Status::NotFound.code()),
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_property",
        |mut caller: Caller<'_, Host>,
         path_ptr: i32,
         path_len: i32,
         val_ptr: i32,
         val_len: i32|
         -> wasmtime::Result<i32> {
            let (Ok(path), Ok(value)) = (
                read(&caller, path_ptr, path_len),
                read(&caller, val_ptr, val_len),
            ) else {
                return Ok(Status::BadArgument.code());
            };
            let Some(key) = abi::decode_path(&path).map(|s| s.join(".")) else {
                return Ok(Status::BadArgument.code());
            };
            let host = caller.data_mut();
            if host.properties.len() >= MAX_HEADERS && !host.properties.contains_key(&key) {
                return Err(violate(
                    &mut caller,
                    "the filter set too many properties".into(),
                ));
            }
            if value.len() > MAX_HEADER_BYTES {
                return Err(violate(
                    &mut caller,
                    "the filter set a property over 64 KiB".into(),
                ));
            }
            host.properties.insert(key, value);
            Ok(Status::Ok.code())
        },
    )?;

    // --- shared data ---
    linker.func_wrap(
        env,
        "proxy_get_shared_data",
        |mut caller: Caller<'_, Host>,
         key_ptr: i32,
         key_len: i32,
         ret_ptr: i32,
         ret_len: i32,
         ret_cas: i32|
         -> wasmtime::Result<i32> {
            let Ok(key) = read(&caller, key_ptr, key_len).and_then(string) else {
                return Ok(Status::BadArgument.code());
            };
            let Some((value, cas)) = caller.data().plugin.shared.get(&key) else {
                let host = caller.data_mut();
                if host.read_absent.len() < MAX_HEADERS {
                    host.read_absent.insert(key);
                }
                return Ok(Status::NotFound.code());
            };
            let given = give(&mut caller, &value, ret_ptr, ret_len)?;
            if given != Status::Ok {
                return Ok(given.code());
            }
            Ok(status(write_u32(&mut caller, ret_cas, cas)))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_shared_data",
        |mut caller: Caller<'_, Host>,
         key_ptr: i32,
         key_len: i32,
         val_ptr: i32,
         val_len: i32,
         cas: i32|
         -> wasmtime::Result<i32> {
            let (Ok(key), Ok(value)) = (
                read(&caller, key_ptr, key_len).and_then(string),
                read(&caller, val_ptr, val_len),
            ) else {
                return Ok(Status::BadArgument.code());
            };
            let shared = Arc::clone(&caller.data().plugin.shared);
            // A filter that read the key as absent and writes it with no cas means "as I
            // saw it": created only if still absent, so two requests creating one key
            // cannot both win (the SDK's counters start this way).
            let written = if cas == 0 && caller.data_mut().read_absent.remove(&key) {
                shared.create(&key, &value)
            } else {
                shared.set(&key, &value, cas as u32)
            };
            match written {
                Ok(()) => Ok(Status::Ok.code()),
                Err(SetError::CasMismatch) => Ok(Status::CasMismatch.code()),
                // The SDK has no answer for this but a panic: say why before it traps.
                Err(SetError::Unavailable(why)) => {
                    Err(violate(&mut caller, format!("shared data: {why}")))
                }
            }
        },
    )?;

    // --- the stream ---
    for (name, kind) in [
        ("proxy_continue_stream", None),
        ("proxy_continue_request", Some(abi::stream::HTTP_REQUEST)),
        ("proxy_continue_response", Some(abi::stream::HTTP_RESPONSE)),
    ] {
        match kind {
            None => linker.func_wrap(
                env,
                name,
                |mut caller: Caller<'_, Host>, _kind: i32| -> i32 {
                    caller.data_mut().continued = true;
                    Status::Ok.code()
                },
            )?,
            Some(_) => linker.func_wrap(env, name, |mut caller: Caller<'_, Host>| -> i32 {
                caller.data_mut().continued = true;
                Status::Ok.code()
            })?,
        };
    }
    linker.func_wrap(
        env,
        "proxy_close_stream",
        |mut caller: Caller<'_, Host>, _kind: i32| -> i32 {
            caller.data_mut().closed = true;
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_send_local_response",
        |mut caller: Caller<'_, Host>,
         code: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc: i32|
         -> wasmtime::Result<i32> {
            if !(200..=599).contains(&code) {
                return Err(violate(
                    &mut caller,
                    format!("the filter answered with status {code}"),
                ));
            }
            if body_len as u32 as usize > MAX_LOCAL_BODY {
                return Err(violate(
                    &mut caller,
                    "the filter's local response is over 1 MiB".into(),
                ));
            }
            let (Ok(details), Ok(body), Some(headers)) = (
                read(&caller, details_ptr, details_len),
                read(&caller, body_ptr, body_len),
                read(&caller, headers_ptr, headers_len)
                    .ok()
                    .and_then(|b| abi::decode_pairs(&b)),
            ) else {
                return Ok(Status::BadArgument.code());
            };
            if let Err(why) = check_map(&headers) {
                return Err(violate(&mut caller, why));
            }
            caller.data_mut().local = Some(LocalResponse {
                status: code as u16,
                headers,
                body,
                details: String::from_utf8_lossy(&details).into_owned(),
            });
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_http_call",
        |mut caller: Caller<'_, Host>,
         up_ptr: i32,
         up_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         body_ptr: i32,
         body_len: i32,
         _trailers_ptr: i32,
         _trailers_len: i32,
         timeout_ms: i32,
         ret_token: i32|
         -> wasmtime::Result<i32> {
            if caller.data().callouts_started >= MAX_CALLOUTS {
                return Err(violate(
                    &mut caller,
                    format!("the filter started over {MAX_CALLOUTS} callouts"),
                ));
            }
            if body_len as u32 as usize > MAX_CALLOUT_BYTES {
                return Err(violate(
                    &mut caller,
                    "a callout's body is over 1 MiB".into(),
                ));
            }
            let (Ok(upstream), Some(headers), Ok(body)) = (
                read(&caller, up_ptr, up_len).and_then(string),
                read(&caller, headers_ptr, headers_len)
                    .ok()
                    .and_then(|b| abi::decode_pairs(&b)),
                read(&caller, body_ptr, body_len),
            ) else {
                return Ok(Status::BadArgument.code());
            };
            let has = |n: &str| headers.iter().any(|(k, _)| k == n);
            if !(has(":method") && has(":path") && has(":authority"))
                || check_map(&headers).is_err()
            {
                return Ok(Status::BadArgument.code());
            }
            let host = caller.data_mut();
            let token = host.next_token;
            host.next_token = host.next_token.wrapping_add(1).max(1);
            host.callouts_started += 1;
            host.callouts.push(Callout {
                token,
                upstream,
                headers,
                body,
                timeout: Duration::from_millis(timeout_ms as u32 as u64),
            });
            Ok(status(write_u32(&mut caller, ret_token, token)))
        },
    )?;

    // --- metrics ---
    linker.func_wrap(
        env,
        "proxy_define_metric",
        |mut caller: Caller<'_, Host>,
         kind: i32,
         name_ptr: i32,
         name_len: i32,
         ret_id: i32|
         -> i32 {
            let Ok(name) = read(&caller, name_ptr, name_len).and_then(string) else {
                return Status::BadArgument.code();
            };
            if !(abi::metric::COUNTER..=abi::metric::HISTOGRAM).contains(&kind) {
                return Status::BadArgument.code();
            }
            let id = {
                let plugin = Arc::clone(&caller.data().plugin);
                let mut metrics = plugin.metrics.lock().unwrap_or_else(|e| e.into_inner());
                match metrics.iter().position(|m| m.name == name) {
                    Some(i) => i,
                    // A filter defining metrics without end would grow the node's memory
                    // and its metrics page: 64 names is plenty for a filter.
                    None if metrics.len() >= 64 => return Status::BadArgument.code(),
                    None => {
                        metrics.push(Arc::new(Metric {
                            name,
                            kind,
                            value: Default::default(),
                        }));
                        metrics.len() - 1
                    }
                }
            };
            status(write_u32(&mut caller, ret_id, id as u32))
        },
    )?;
    fn metric(caller: &Caller<'_, Host>, id: i32) -> Option<Arc<Metric>> {
        let metrics = caller
            .data()
            .plugin
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        metrics.get(id as u32 as usize).cloned()
    }
    use std::sync::atomic::Ordering::Relaxed;
    linker.func_wrap(
        env,
        "proxy_increment_metric",
        |caller: Caller<'_, Host>, id: i32, offset: i64| -> i32 {
            match metric(&caller, id) {
                Some(m) if m.kind != abi::metric::HISTOGRAM => {
                    m.value.fetch_add(offset, Relaxed);
                    Status::Ok.code()
                }
                Some(_) => Status::BadArgument.code(),
                None => Status::NotFound.code(),
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_record_metric",
        |caller: Caller<'_, Host>, id: i32, value: i64| -> i32 {
            match metric(&caller, id) {
                Some(m) => {
                    m.value.store(value, Relaxed);
                    Status::Ok.code()
                }
                None => Status::NotFound.code(),
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_metric",
        |mut caller: Caller<'_, Host>, id: i32, ret: i32| -> i32 {
            match metric(&caller, id) {
                Some(m) => status(write(
                    &mut caller,
                    ret,
                    &m.value.load(Relaxed).to_le_bytes(),
                )),
                None => Status::NotFound.code(),
            }
        },
    )?;

    // --- the rest of the ABI: present so filters that import them load ---
    linker.func_wrap(
        env,
        "proxy_set_effective_context",
        |_: Caller<'_, Host>, _id: i32| -> i32 {
            // One request per instance: every context the filter names is this one's.
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(env, "proxy_done", |_: Caller<'_, Host>| -> i32 {
        Status::Ok.code()
    })?;
    linker.func_wrap(
        env,
        "proxy_call_foreign_function",
        |_: Caller<'_, Host>, _a: i32, _b: i32, _c: i32, _d: i32, _e: i32, _f: i32| -> i32 {
            Status::NotFound.code()
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_status",
        |mut caller: Caller<'_, Host>, ret_code: i32, ret_ptr: i32, ret_len: i32| -> i32 {
            status((|| {
                write_u32(&mut caller, ret_code, 0)?;
                write_u32(&mut caller, ret_ptr, 0)?;
                write_u32(&mut caller, ret_len, 0)
            })())
        },
    )?;
    // Shared queues and gRPC are not offered (docs/compute.md): the SDK turns these
    // answers into errors the filter sees, or into a trap.
    linker.func_wrap(
        env,
        "proxy_register_shared_queue",
        |_: Caller<'_, Host>, _a: i32, _b: i32, _c: i32| -> i32 { Status::Unimplemented.code() },
    )?;
    linker.func_wrap(
        env,
        "proxy_resolve_shared_queue",
        |_: Caller<'_, Host>, _a: i32, _b: i32, _c: i32, _d: i32, _e: i32| -> i32 {
            Status::NotFound.code()
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_enqueue_shared_queue",
        |_: Caller<'_, Host>, _a: i32, _b: i32, _c: i32| -> i32 { Status::NotFound.code() },
    )?;
    linker.func_wrap(
        env,
        "proxy_dequeue_shared_queue",
        |_: Caller<'_, Host>, _a: i32, _b: i32, _c: i32| -> i32 { Status::NotFound.code() },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_call",
        |_: Caller<'_, Host>,
         _a: i32,
         _b: i32,
         _c: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _k: i32,
         _l: i32|
         -> i32 { Status::InternalFailure.code() },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_stream",
        |_: Caller<'_, Host>,
         _a: i32,
         _b: i32,
         _c: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32|
         -> i32 { Status::InternalFailure.code() },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_send",
        |_: Caller<'_, Host>, _a: i32, _b: i32, _c: i32, _d: i32| -> i32 {
            Status::NotFound.code()
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_cancel",
        |_: Caller<'_, Host>, _a: i32| -> i32 { Status::NotFound.code() },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_close",
        |_: Caller<'_, Host>, _a: i32| -> i32 { Status::NotFound.code() },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: usize, size: usize) -> Pairs {
        (0..n)
            .map(|i| (format!("x-{i}"), vec![b'a'; size]))
            .collect()
    }

    #[test]
    fn maps_past_the_bounds_or_invalid_are_refused() {
        assert!(check_map(&pairs(10, 10)).is_ok());
        assert!(check_map(&pairs(MAX_HEADERS + 1, 1)).is_err());
        assert!(check_map(&pairs(2, MAX_HEADER_BYTES)).is_err());
        assert!(check_map(&vec![("bad name".into(), b"v".to_vec())]).is_err());
        assert!(check_map(&vec![("x".into(), b"a\r\nb".to_vec())]).is_err());
        assert!(check_map(&vec![(":path".into(), b"/".to_vec())]).is_ok());
    }
}
