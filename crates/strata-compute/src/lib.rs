//! Edge compute: filters written against the proxy-wasm ABI 0.2.1 (the ABI Envoy's Wasm
//! filters use; built with the proxy-wasm Rust SDK, or any other) run on wasmtime, each
//! request in an instance of its own with a memory cap and a CPU deadline.
//!
//! - [`runtime`]: the engine (pooling allocator, epoch interruption) and its [`Limits`];
//! - [`filter`]: loading a module (checked, hashed, pre-linked, started once), warm
//!   instances, and the [`Stream`] of one request through a filter's phases;
//! - [`host`]: the ABI's host functions over one request's state; [`wasi`]: the little
//!   of WASI a filter built for `wasm32-wasip1` imports;
//! - [`abi`]: the ABI's numbers and byte layouts, with no wasmtime;
//! - [`shared`]: shared data (`get_shared_data`/`set_shared_data`, compare-and-set).
//!
//! Where the phases sit in Strata's request path is the proxy's business
//! (docs/compute.md).

pub mod abi;
pub mod filter;
pub mod host;
pub mod runtime;
pub mod shared;
mod wasi;

pub use filter::{Callouts, Fault, Filter, LoadError, Spec, Stream, Verdict};
pub use host::{Callout, CalloutResponse, LocalResponse, Properties};
pub use runtime::{Limits, Runtime};
pub use shared::{MemoryShared, SetError, SharedData};
