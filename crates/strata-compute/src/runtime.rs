//! The engine every filter on a node runs in: wasmtime with the pooling allocator (instance
//! slots reserved once, reused with their pages reset), a memory cap per instance, and a
//! CPU deadline per call by epoch interruption (a thread moves the epoch every
//! millisecond; once a call's deadline passes, the thread's CPU time decides: a guest that
//! keeps using CPU is stopped, one that was only waiting for a core goes on). Wall time
//! alone would kill filters on a busy node for time the kernel gave to others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

use crate::host::{self, Host};

/// How often the epoch moves: the grain of the CPU deadline.
const TICK: Duration = Duration::from_millis(1);

/// What one filter instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per instance, in bytes: a `memory.grow` past it fails (the guest's
    /// allocator then aborts: a trap).
    pub memory: u64,
    /// CPU time one call into a filter may use (a callback, its allocations included).
    pub cpu: Duration,
    /// Instance slots on the node, for every filter together: in-flight filtered requests
    /// plus warm instances kept for reuse.
    pub instances: u32,
    /// How long an HTTP callout may take before the filter is told it failed.
    pub callout_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 16 << 20,
            cpu: Duration::from_millis(10),
            instances: 256,
            callout_timeout: Duration::from_secs(2),
        }
    }
}

/// The engine, the host functions, and the epoch thread.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<Host>,
    pub(crate) limits: Limits,
    ticking: Arc<AtomicBool>,
}

// === impl Runtime ===

impl Runtime {
    pub fn new(limits: Limits) -> Result<Runtime, String> {
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_core_instances(limits.instances)
            .total_memories(limits.instances)
            .total_tables(limits.instances)
            .max_memories_per_module(1)
            .max_memory_size(usize::try_from(limits.memory).map_err(|e| e.to_string())?)
            // Instances given back keep no more than this resident: what a warm slot costs.
            .linear_memory_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
            .epoch_interruption(true)
            .max_wasm_stack(512 << 10);
        let engine = Engine::new(&config).map_err(|e| format!("wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        host::define(&mut linker).map_err(|e| format!("host functions: {e}"))?;
        let ticking = Arc::new(AtomicBool::new(true));
        let (flag, ticker) = (Arc::clone(&ticking), engine.clone());
        std::thread::Builder::new()
            .name("strata-wasm-epoch".into())
            .spawn(move || {
                while flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| format!("epoch thread: {e}"))?;
        Ok(Runtime {
            engine,
            linker,
            limits,
            ticking,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Arms a store for one call: its deadline, a budget of wall time from now. Nothing
    /// is read from the kernel here: most calls end long before their deadline.
    pub(crate) fn arm(&self, store: &mut wasmtime::Store<Host>) {
        store.set_epoch_deadline(self.budget_ticks());
        store.data_mut().cpu_mark = None;
    }

    fn budget_ticks(&self) -> u64 {
        (self.limits.cpu.as_millis() / TICK.as_millis()).max(1) as u64
    }

    /// What a store does when its deadline passes. The first time, it notes the thread's
    /// CPU time and looks again a tick later; from then on, a call that has used a whole
    /// budget of CPU since that note is stopped. A call is stopped after using between
    /// one and two budgets of CPU, and never for time the kernel gave other threads.
    pub(crate) fn watch(&self, store: &mut wasmtime::Store<Host>) {
        let budget = self.limits.cpu;
        store.epoch_deadline_callback(move |mut ctx| {
            let now = thread_cpu();
            let host = ctx.data_mut();
            Ok(match host.cpu_mark {
                None => {
                    host.cpu_mark = Some(now);
                    wasmtime::UpdateDeadline::Continue(1)
                }
                Some(mark) if now.saturating_sub(mark) >= budget => {
                    wasmtime::UpdateDeadline::Interrupt
                }
                Some(_) => wasmtime::UpdateDeadline::Continue(1),
            })
        });
    }
}

/// CPU time the calling thread has used.
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is; the clock id is a constant
    // every Linux has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}
