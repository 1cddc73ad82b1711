//! One loaded filter: its compiled module checked and pre-linked ([`Filter::load`]), the
//! warm instances it keeps, and the stream of one request through it ([`Stream`]).
//!
//! Instances: each request gets an instance of its own for as long as it runs (a trap, a
//! loop or a memory blow-up costs only that request), taken from the filter's warm
//! instances or made from the pooling allocator (`InstancePre`: imports resolved once).
//! An instance whose request ended cleanly goes back to the warm list with its root
//! context, as a worker's VM does in Envoy (a filter's root state lives on across the
//! requests that instance serves); one that faulted is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::{Instance, InstancePre, Module, Store, Trap, TypedFunc};

use crate::abi::{self, Pairs};
use crate::host::{Callout, CalloutResponse, Host, LocalResponse, Plugin, Properties};
use crate::runtime::Runtime;
use crate::shared::SharedData;

/// The root context's id; request contexts count up from the next.
const ROOT: i32 = 1;
/// Warm instances a filter keeps, at most.
const MAX_IDLE: usize = 64;

/// Why a module was not loaded. Nothing of it is applied.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly module (it does not begin with \\0asm, version 1)")]
    NotWasm,
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    #[error("the module imports `{module}::{name}`, which this host does not offer")]
    UnknownImport { module: String, name: String },
    #[error("not a proxy-wasm filter: the module exports no proxy_abi_version_0_2_x")]
    NotProxyWasm,
    #[error("the module does not export `{0}`")]
    MissingExport(&'static str),
    #[error("the module's SHA-256 is {actual}, not {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("the filter failed to start: {0}")]
    Start(Fault),
}

/// Why a filter could not finish a phase. The request is answered for it (500, or passed
/// on as if there were no filter when the filter is configured to fail open).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("trap: {0}")]
    Trap(String),
    #[error("ran past its CPU budget")]
    Timeout,
    #[error("stopped by the host: {0}")]
    Violation(String),
    #[error("no instance slot free on this node")]
    Exhausted,
    #[error("paused the request with nothing to wait for")]
    Stalled,
    #[error("closed the stream")]
    Closed,
    #[error("{0} returned false")]
    Refused(&'static str),
}

impl Fault {
    /// A short name, for metrics labels and `Cache-Status` details.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Trap(_) => "trap",
            Fault::Timeout => "timeout",
            Fault::Violation(_) => "violation",
            Fault::Exhausted => "exhausted",
            Fault::Stalled => "stalled",
            Fault::Closed => "closed",
            Fault::Refused(_) => "refused",
        }
    }
}

/// What the host does with a filter's HTTP callouts (the embedder's upstreams).
pub trait Callouts: Send + Sync {
    fn call(
        &self,
        callout: Callout,
    ) -> Pin<Box<dyn Future<Output = Result<CalloutResponse, String>> + Send + '_>>;
}

/// What a phase decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on: with the headers as the filter left them when it changed them, `None` when
    /// it did not (nothing to apply).
    Continue(Option<Pairs>),
    /// Answer with this instead.
    Respond(LocalResponse),
}

/// Counts of what a filter's instances did, for the node's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub instantiated: AtomicU64,
    /// Nanoseconds spent making instances (instantiation, root context start).
    pub instantiate_nanos: AtomicU64,
    pub reused: AtomicU64,
    pub faults: AtomicU64,
}

/// `proxy_on_http_call_response(context, token, headers, body size, trailers)`.
type OnCallResponse = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// The exports the host calls.
struct Calls {
    on_context_create: TypedFunc<(i32, i32), ()>,
    on_request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_http_call_response: Option<OnCallResponse>,
    on_log: Option<TypedFunc<i32, ()>>,
    on_done: Option<TypedFunc<i32, i32>>,
    on_delete: Option<TypedFunc<i32, ()>>,
    on_tick: Option<TypedFunc<i32, ()>>,
}

/// An instance, its root context started and configured.
struct Vm {
    store: Store<Host>,
    calls: Calls,
    next_context: i32,
}

/// A filter ready to run: compiled, linked, started once.
pub struct Filter {
    runtime: Arc<Runtime>,
    pre: InstancePre<Host>,
    plugin: Arc<Plugin>,
    hash: String,
    idle: Mutex<Vec<Vm>>,
    stats: Stats,
}

/// What a filter is made of.
pub struct Spec<'a> {
    pub name: &'a str,
    pub wasm: &'a [u8],
    /// The SHA-256 (hex) the module must have, when the operator or the deploy says.
    pub sha256: Option<&'a str>,
    /// `proxy_on_configure`'s configuration.
    pub config: &'a [u8],
    pub shared: Arc<dyn SharedData>,
}

/// SHA-256 of a module, lower-case hex.
pub fn sha256_hex(wasm: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, wasm);
    data_encoding::HEXLOWER.encode(digest.as_ref())
}

// === impl Filter ===

impl Filter {
    /// Checks, compiles and links a module, and starts one instance (its root context's
    /// `proxy_on_vm_start` and `proxy_on_configure` must succeed): a filter that loads
    /// runs.
    pub fn load(runtime: &Arc<Runtime>, spec: Spec<'_>) -> Result<Filter, LoadError> {
        if spec.wasm.get(..8) != Some(b"\0asm\x01\0\0\0") {
            return Err(LoadError::NotWasm);
        }
        let hash = sha256_hex(spec.wasm);
        if let Some(expected) = spec.sha256 {
            if !expected.eq_ignore_ascii_case(&hash) {
                return Err(LoadError::HashMismatch {
                    expected: expected.to_owned(),
                    actual: hash,
                });
            }
        }
        let module = Module::new(&runtime.engine, spec.wasm)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let plugin = Arc::new(Plugin {
            name: spec.name.to_owned(),
            vm_config: Vec::new(),
            plugin_config: spec.config.to_vec(),
            shared: spec.shared,
            metrics: Mutex::default(),
            tick_ms: Default::default(),
        });
        {
            let mut probe = Store::new(&runtime.engine, Host::new(Arc::clone(&plugin)));
            for import in module.imports() {
                if runtime.linker.get_by_import(&mut probe, &import).is_none() {
                    return Err(LoadError::UnknownImport {
                        module: import.module().to_owned(),
                        name: import.name().to_owned(),
                    });
                }
            }
        }
        let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
        if !exports
            .iter()
            .any(|e| *e == "proxy_abi_version_0_2_1" || *e == "proxy_abi_version_0_2_0")
        {
            return Err(LoadError::NotProxyWasm);
        }
        for required in ["memory", "proxy_on_context_create"] {
            if !exports.contains(&required) {
                return Err(LoadError::MissingExport(required));
            }
        }
        if !exports
            .iter()
            .any(|e| *e == "proxy_on_memory_allocate" || *e == "malloc")
        {
            return Err(LoadError::MissingExport("proxy_on_memory_allocate"));
        }
        let pre = runtime
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let filter = Filter {
            runtime: Arc::clone(runtime),
            pre,
            plugin,
            hash,
            idle: Mutex::default(),
            stats: Stats::default(),
        };
        let vm = filter.instantiate().map_err(LoadError::Start)?;
        filter.put_back(vm);
        Ok(filter)
    }

    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    /// SHA-256 of the module, hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The filter's own metrics (`proxy_define_metric`): name and value.
    pub fn metrics(&self) -> Vec<(String, i64)> {
        let metrics = self
            .plugin
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        metrics
            .iter()
            .map(|m| (m.name.clone(), m.value.load(Relaxed)))
            .collect()
    }

    /// Warm instances kept now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Starts a request through the filter: an instance for it, and a context in it.
    pub fn stream(self: &Arc<Self>, properties: Box<dyn Properties>) -> Result<Stream, Fault> {
        let reused = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut vm = match reused {
            Some(vm) => {
                self.stats.reused.fetch_add(1, Relaxed);
                vm
            }
            None => self.instantiate().inspect_err(|_| {
                self.stats.faults.fetch_add(1, Relaxed);
            })?,
        };
        let context = vm.next_context;
        vm.next_context = vm.next_context.checked_add(1).unwrap_or(ROOT + 1);
        vm.store.data_mut().provider = Some(properties);
        let mut stream = Stream {
            filter: Arc::clone(self),
            vm: Some(vm),
            context,
        };
        stream.run(|store, calls, ctx| calls.on_context_create.call(store, (ctx, ROOT)))?;
        Ok(stream)
    }

    fn instantiate(&self) -> Result<Vm, Fault> {
        let started = Instant::now();
        let mut store = Store::new(&self.runtime.engine, Host::new(Arc::clone(&self.plugin)));
        self.runtime.watch(&mut store);
        self.runtime.arm(&mut store);
        let instance = self.pre.instantiate(&mut store).map_err(|e| {
            let text = format!("{e:#}");
            if text.contains("limit") {
                Fault::Exhausted
            } else {
                Fault::Trap(text)
            }
        })?;
        let calls = Calls::of(&instance, &mut store).map_err(|e| Fault::Trap(format!("{e:#}")))?;
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .ok();
        store.data_mut().memory = memory;
        store.data_mut().alloc = alloc;
        let fault = |e: wasmtime::Error, store: &Store<Host>| classify(e, store.data());
        // A reactor (`_initialize`) or, from older toolchains, a command (`_start`).
        for init in ["_initialize", "_start"] {
            if let Ok(f) = instance.get_typed_func::<(), ()>(&mut store, init) {
                f.call(&mut store, ()).map_err(|e| fault(e, &store))?;
                break;
            }
        }
        calls
            .on_context_create
            .call(&mut store, (ROOT, 0))
            .map_err(|e| fault(e, &store))?;
        for (name, size) in [
            ("proxy_on_vm_start", self.plugin.vm_config.len()),
            ("proxy_on_configure", self.plugin.plugin_config.len()),
        ] {
            if let Ok(f) = instance.get_typed_func::<(i32, i32), i32>(&mut store, name) {
                let ok = f
                    .call(&mut store, (ROOT, size as i32))
                    .map_err(|e| fault(e, &store))?;
                if ok == 0 {
                    return Err(Fault::Refused(name));
                }
            }
        }
        self.stats.instantiated.fetch_add(1, Relaxed);
        self.stats
            .instantiate_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        Ok(Vm {
            store,
            calls,
            next_context: ROOT + 1,
        })
    }

    fn put_back(&self, mut vm: Vm) {
        vm.store.data_mut().reset();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(vm);
        }
    }

    /// Makes `n` more warm instances ahead of traffic (as many as the warm list keeps), so
    /// the first requests after a load or deploy do not pay for instantiation. How many
    /// are warm now.
    pub fn prewarm(&self, n: usize) -> Result<usize, Fault> {
        for _ in 0..n.min(MAX_IDLE) {
            if self.idle() >= MAX_IDLE {
                break;
            }
            let vm = self.instantiate()?;
            self.put_back(vm);
        }
        Ok(self.idle())
    }

    /// Drops the warm instances, giving their slots back (a filter being replaced).
    pub fn drain_idle(&self) {
        let drained = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(drained);
    }

    /// Delivers `proxy_on_tick` to the warm instances' root contexts, when the filter asked
    /// for ticks; the embedder calls this every [`Filter::tick_period`].
    pub fn tick(&self) {
        let vms: Vec<Vm> =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for mut vm in vms {
            let Some(on_tick) = vm.calls.on_tick.clone() else {
                self.put_back(vm);
                continue;
            };
            self.runtime.arm(&mut vm.store);
            match on_tick.call(&mut vm.store, ROOT) {
                Ok(()) => self.put_back(vm),
                Err(e) => {
                    self.stats.faults.fetch_add(1, Relaxed);
                    tracing::warn!(filter = %self.plugin.name, "on tick: {}", classify(e, vm.store.data()));
                }
            }
        }
    }

    /// How often the filter asked to be ticked, if it did.
    pub fn tick_period(&self) -> Option<std::time::Duration> {
        match self.plugin.tick_ms.load(Relaxed) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms.into())),
        }
    }
}

fn classify(e: wasmtime::Error, host: &Host) -> Fault {
    if let Some(why) = &host.violation {
        return Fault::Violation(why.clone());
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Timeout,
        _ => Fault::Trap(format!("{e:#}")),
    }
}

// === impl Calls ===

impl Calls {
    fn of(instance: &Instance, store: &mut Store<Host>) -> wasmtime::Result<Calls> {
        Ok(Calls {
            on_context_create: instance.get_typed_func(&mut *store, "proxy_on_context_create")?,
            on_request_headers: instance
                .get_typed_func(&mut *store, "proxy_on_request_headers")
                .ok(),
            on_response_headers: instance
                .get_typed_func(&mut *store, "proxy_on_response_headers")
                .ok(),
            on_http_call_response: instance
                .get_typed_func(&mut *store, "proxy_on_http_call_response")
                .ok(),
            on_log: instance.get_typed_func(&mut *store, "proxy_on_log").ok(),
            on_done: instance.get_typed_func(&mut *store, "proxy_on_done").ok(),
            on_delete: instance.get_typed_func(&mut *store, "proxy_on_delete").ok(),
            on_tick: instance.get_typed_func(&mut *store, "proxy_on_tick").ok(),
        })
    }
}

/// One request through one filter. Dropping it ends the request's context (`on_log`,
/// `on_done`, `on_delete`) and gives a healthy instance back.
pub struct Stream {
    filter: Arc<Filter>,
    /// `None` once the instance faulted (it is dropped, never reused).
    vm: Option<Vm>,
    context: i32,
}

// === impl Stream ===

impl Stream {
    /// Runs one call into the instance with a fresh CPU deadline. A failure drops the
    /// instance.
    fn run<R>(
        &mut self,
        call: impl FnOnce(&mut Store<Host>, &Calls, i32) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let Some(vm) = self.vm.as_mut() else {
            return Err(Fault::Trap("the instance is gone".into()));
        };
        self.filter.runtime.arm(&mut vm.store);
        match call(&mut vm.store, &vm.calls, self.context) {
            Ok(r) => Ok(r),
            Err(e) => {
                let fault = classify(e, vm.store.data());
                self.vm = None;
                self.filter.stats.faults.fetch_add(1, Relaxed);
                Err(fault)
            }
        }
    }

    fn host(&mut self) -> Result<&mut Host, Fault> {
        match self.vm.as_mut() {
            Some(vm) => Ok(vm.store.data_mut()),
            None => Err(Fault::Trap("the instance is gone".into())),
        }
    }

    /// The request's headers phase (`proxy_on_request_headers`), pseudo-headers
    /// (`:method`, `:scheme`, `:authority`, `:path`) first.
    pub async fn request_headers(
        &mut self,
        headers: Pairs,
        end_of_stream: bool,
        callouts: &dyn Callouts,
    ) -> Result<Verdict, Fault> {
        let count = headers.len() as i32;
        {
            let host = self.host()?;
            host.request = headers;
            host.changed = [false; 2];
        }
        let local = self
            .phase(callouts, |store, calls, ctx| {
                match &calls.on_request_headers {
                    Some(f) => f.call(store, (ctx, count, end_of_stream as i32)),
                    None => Ok(abi::ACTION_CONTINUE),
                }
            })
            .await?;
        // The request's map stays: the response phase reads it.
        let host = self.host()?;
        Ok(match local {
            Some(local) => Verdict::Respond(local),
            None => Verdict::Continue(host.changed[0].then(|| host.request.clone())),
        })
    }

    /// The response's headers phase (`proxy_on_response_headers`), `:status` first. The
    /// request's headers, as the request phase left them, are readable.
    pub async fn response_headers(
        &mut self,
        response: Pairs,
        end_of_stream: bool,
        callouts: &dyn Callouts,
    ) -> Result<Verdict, Fault> {
        let count = response.len() as i32;
        {
            let host = self.host()?;
            host.response = Some(response);
            host.changed = [false; 2];
        }
        let local = self
            .phase(callouts, |store, calls, ctx| {
                match &calls.on_response_headers {
                    Some(f) => f.call(store, (ctx, count, end_of_stream as i32)),
                    None => Ok(abi::ACTION_CONTINUE),
                }
            })
            .await?;
        let host = self.host()?;
        let response = host.response.take().unwrap_or_default();
        Ok(match local {
            Some(local) => Verdict::Respond(local),
            None => Verdict::Continue(host.changed[1].then_some(response)),
        })
    }

    /// A property the filter set (`proxy_set_property`), or the host gave.
    pub fn property(&self, key: &str) -> Option<&[u8]> {
        let vm = self.vm.as_ref()?;
        vm.store.data().properties.get(key).map(Vec::as_slice)
    }

    /// Gives the filter a property (for the response phase: the status, Cache-Status).
    pub fn set_property(&mut self, key: &str, value: Vec<u8>) {
        if let Ok(host) = self.host() {
            host.properties.insert(key.to_owned(), value);
        }
    }

    /// Calls a phase's callback, then serves its callouts while it waits for them.
    async fn phase(
        &mut self,
        callouts: &dyn Callouts,
        call: impl FnOnce(&mut Store<Host>, &Calls, i32) -> wasmtime::Result<i32>,
    ) -> Result<Option<LocalResponse>, Fault> {
        {
            let host = self.host()?;
            host.continued = false;
            host.callouts.clear();
        }
        let mut action = self.run(call)?;
        loop {
            let host = self.host()?;
            if let Some(local) = host.local.take() {
                return Ok(Some(local));
            }
            if host.closed {
                return Err(Fault::Closed);
            }
            if action == abi::ACTION_CONTINUE || host.continued {
                host.callouts.clear();
                return Ok(None);
            }
            if host.callouts.is_empty() {
                return Err(Fault::Stalled);
            }
            let callout = host.callouts.remove(0);
            let token = callout.token as i32;
            let limit = self.filter.runtime.limits.callout_timeout;
            let timeout = if callout.timeout.is_zero() {
                limit
            } else {
                callout.timeout.min(limit)
            };
            let answer = tokio::time::timeout(timeout, callouts.call(callout))
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            let answer = answer.unwrap_or_else(|why| {
                tracing::debug!(filter = %self.filter.plugin.name, "callout failed: {why}");
                CalloutResponse::default()
            });
            let (headers, body) = (answer.headers.len() as i32, answer.body.len() as i32);
            self.host()?.call_response = Some(answer);
            self.run(|store, calls, ctx| match &calls.on_http_call_response {
                Some(f) => f.call(store, (ctx, token, headers, body, 0)),
                None => Ok(()),
            })?;
            self.host()?.call_response = None;
            // Only a resume (or a local response) moves the stream on from here.
            action = abi::ACTION_PAUSE;
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let ended = self.run(|store, calls, ctx| {
            if let Some(f) = &calls.on_log {
                f.call(&mut *store, ctx)?;
            }
            if let Some(f) = &calls.on_done {
                f.call(&mut *store, ctx)?;
            }
            if let Some(f) = &calls.on_delete {
                f.call(&mut *store, ctx)?;
            }
            Ok(())
        });
        if let Err(fault) = ended {
            tracing::debug!(filter = %self.filter.plugin.name, "ending a request: {fault}");
        }
        if let Some(vm) = self.vm.take() {
            self.filter.put_back(vm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryShared;
    use crate::Limits;
    use std::collections::HashMap;
    use std::time::Duration;

    struct NoCallouts;

    impl Callouts for NoCallouts {
        fn call(
            &self,
            _: Callout,
        ) -> Pin<Box<dyn Future<Output = Result<CalloutResponse, String>> + Send + '_>> {
            Box::pin(async { Err("no upstreams here".to_string()) })
        }
    }

    fn runtime(instances: u32) -> Arc<Runtime> {
        Arc::new(
            Runtime::new(Limits {
                memory: 1 << 20,
                cpu: Duration::from_millis(20),
                instances,
                callout_timeout: Duration::from_millis(100),
            })
            .unwrap(),
        )
    }

    /// A proxy-wasm module by hand: a bump allocator, the ABI's required exports, and
    /// `body` as its request-headers callback (which must leave an action on the stack).
    fn module(imports: &str, body: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module
                 {imports}
                 (memory (export "memory") 1)
                 (data (i32.const 16) "x-a")
                 (global $bump (mut i32) (i32.const 1024))
                 (func (export "proxy_abi_version_0_2_1"))
                 (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
                   (local $at i32)
                   (local.set $at (global.get $bump))
                   (global.set $bump (i32.add (global.get $bump) (local.get $n)))
                   (local.get $at))
                 (func (export "proxy_on_context_create") (param i32 i32))
                 (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                   {body}))"#
        ))
        .unwrap()
    }

    fn load(rt: &Arc<Runtime>, wasm: &[u8]) -> Result<Arc<Filter>, LoadError> {
        Filter::load(
            rt,
            Spec {
                name: "test",
                wasm,
                sha256: None,
                config: b"",
                shared: Arc::new(MemoryShared::default()),
            },
        )
        .map(Arc::new)
    }

    async fn request(filter: &Arc<Filter>) -> Result<Verdict, Fault> {
        let mut stream = filter.stream(Box::new(HashMap::new()))?;
        let headers = vec![(":path".to_string(), b"/".to_vec())];
        stream.request_headers(headers, true, &NoCallouts).await
    }

    #[tokio::test]
    async fn a_filter_that_traps_fails_its_request_and_the_next_gets_a_fresh_instance() {
        let rt = runtime(8);
        let filter = load(&rt, &module("", "unreachable")).unwrap();
        let fault = request(&filter).await.unwrap_err();
        assert!(matches!(fault, Fault::Trap(_)), "{fault:?}");
        assert!(matches!(request(&filter).await, Err(Fault::Trap(_))));
        assert_eq!(filter.stats().faults.load(Relaxed), 2);
        // The instance that trapped was not put back.
        assert_eq!(filter.idle(), 0);
    }

    #[tokio::test]
    async fn a_filter_that_loops_is_stopped_by_its_cpu_deadline() {
        let rt = runtime(8);
        let filter = load(&rt, &module("", "(loop $l (br $l)) i32.const 0")).unwrap();
        assert!(matches!(request(&filter).await, Err(Fault::Timeout)));
    }

    #[tokio::test]
    async fn a_filter_cannot_grow_its_memory_past_the_cap() {
        let rt = runtime(8);
        // Grows a page at a time until refused, then traps: reaching the trap means
        // `memory.grow` failed below anything unbounded.
        let body = "(block $full (loop $more
                       (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
                       (br $more)))
                     (if (i32.gt_u (memory.size) (i32.const 16)) (then unreachable))
                     i32.const 0";
        let filter = load(&rt, &module("", body)).unwrap();
        // 1 MiB cap = 16 pages: the loop stops there and the request goes on.
        assert!(matches!(request(&filter).await, Ok(Verdict::Continue(_))));
    }

    #[tokio::test]
    async fn a_local_response_with_an_impossible_status_stops_the_filter() {
        let rt = runtime(8);
        let import = r#"(import "env" "proxy_send_local_response"
                           (func $send (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#;
        // An empty header map (count 0) at address 32.
        let send = |status: u32| {
            format!(
                "(i32.store (i32.const 32) (i32.const 0))
             (drop (call $send (i32.const {status}) (i32.const 0) (i32.const 0) (i32.const 0)
                               (i32.const 0) (i32.const 32) (i32.const 4) (i32.const -1)))
             i32.const 1"
            )
        };
        let filter = load(&rt, &module(import, &send(99))).unwrap();
        assert!(matches!(request(&filter).await, Err(Fault::Violation(_))));
        let filter = load(&rt, &module(import, &send(403))).unwrap();
        match request(&filter).await {
            Ok(Verdict::Respond(local)) => assert_eq!(local.status, 403),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_filter_adding_headers_without_end_is_stopped() {
        let rt = runtime(8);
        let import = r#"(import "env" "proxy_add_header_map_value"
                           (func $add (param i32 i32 i32 i32 i32) (result i32)))"#;
        let body = "(loop $more
                      (drop (call $add (i32.const 0) (i32.const 16) (i32.const 3) (i32.const 16) (i32.const 3)))
                      (br $more))
                    i32.const 0";
        let filter = load(&rt, &module(import, body)).unwrap();
        match request(&filter).await {
            Err(Fault::Violation(why)) => assert!(why.contains("headers"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_pause_with_nothing_to_wait_for_is_a_fault_not_a_hang() {
        let rt = runtime(8);
        let filter = load(&rt, &module("", "i32.const 1")).unwrap();
        assert!(matches!(request(&filter).await, Err(Fault::Stalled)));
    }

    #[tokio::test]
    async fn requests_past_the_instance_slots_are_refused_not_queued() {
        let rt = runtime(2);
        let filter = load(&rt, &module("", "i32.const 0")).unwrap();
        let a = filter.stream(Box::new(HashMap::new())).unwrap();
        let b = filter.stream(Box::new(HashMap::new())).unwrap();
        assert!(matches!(
            filter.stream(Box::new(HashMap::new())),
            Err(Fault::Exhausted)
        ));
        drop((a, b));
        // Given back: warm, and reused.
        assert_eq!(filter.idle(), 2);
        assert!(filter.stream(Box::new(HashMap::new())).is_ok());
    }

    #[test]
    fn modules_that_cannot_be_filters_are_refused_with_the_reason() {
        let rt = runtime(8);
        assert!(matches!(
            load(&rt, b"#!/bin/sh\necho hi\n"),
            Err(LoadError::NotWasm)
        ));
        let mut truncated = module("", "i32.const 0");
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(load(&rt, &truncated), Err(LoadError::Invalid(_))));
        let unknown = module(
            r#"(import "env" "proxy_read_private_keys" (func))"#,
            "i32.const 0",
        );
        match load(&rt, &unknown) {
            Err(LoadError::UnknownImport { module, name }) => {
                assert_eq!(
                    (module.as_str(), name.as_str()),
                    ("env", "proxy_read_private_keys")
                )
            }
            other => panic!("{:?}", other.err()),
        }
        let plain = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
        assert!(matches!(load(&rt, &plain), Err(LoadError::NotProxyWasm)));
        let wasm = module("", "i32.const 0");
        let wrong = Filter::load(
            &rt,
            Spec {
                name: "test",
                wasm: &wasm,
                sha256: Some(&"0".repeat(64)),
                config: b"",
                shared: Arc::new(MemoryShared::default()),
            },
        );
        assert!(matches!(wrong, Err(LoadError::HashMismatch { .. })));
        let right = Filter::load(
            &rt,
            Spec {
                name: "test",
                wasm: &wasm,
                sha256: Some(&sha256_hex(&wasm)),
                config: b"",
                shared: Arc::new(MemoryShared::default()),
            },
        );
        assert!(right.is_ok());
    }

    #[test]
    fn a_filter_that_asks_for_ticks_gets_them_on_its_warm_instances_and_counts_in_its_metric() {
        let rt = runtime(8);
        let wasm = wat::parse_str(
            r#"(module
                 (import "env" "proxy_set_tick_period_milliseconds" (func $period (param i32) (result i32)))
                 (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
                 (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
                 (memory (export "memory") 1)
                 (data (i32.const 16) "ticks")
                 (func (export "proxy_abi_version_0_2_1"))
                 (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
                 (func (export "proxy_on_context_create") (param i32 i32))
                 (func (export "proxy_on_configure") (param i32 i32) (result i32)
                   (drop (call $period (i32.const 250)))
                   (drop (call $define (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 32)))
                   i32.const 1)
                 (func (export "proxy_on_tick") (param i32)
                   (drop (call $inc (i32.load (i32.const 32)) (i64.const 1)))))"#,
        )
        .unwrap();
        let filter = load(&rt, &wasm).unwrap();
        assert_eq!(filter.tick_period(), Some(Duration::from_millis(250)));
        // The one the load started, and three more.
        assert_eq!(filter.prewarm(3).unwrap(), 4);
        filter.tick();
        filter.tick();
        // Four warm instances, ticked twice each, one metric shared by them.
        assert_eq!(filter.metrics(), vec![("ticks".to_string(), 8)]);
        assert_eq!(filter.idle(), 4);
    }

    #[test]
    fn a_filter_whose_start_traps_is_not_loaded() {
        let rt = runtime(8);
        let wasm = wat::parse_str(
            r#"(module
                 (memory (export "memory") 1)
                 (func (export "proxy_abi_version_0_2_1"))
                 (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0)
                 (func (export "proxy_on_context_create") (param i32 i32))
                 (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 0))"#,
        )
        .unwrap();
        assert!(matches!(
            load(&rt, &wasm),
            Err(LoadError::Start(Fault::Refused("proxy_on_configure")))
        ));
    }
}
