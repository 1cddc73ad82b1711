//! Test helpers: a programmable origin and an in-process edge, both on 127.0.0.1:0.

#![allow(dead_code)]

pub mod binary;
pub mod control;
pub mod edge;
pub mod nats;
pub mod origin;
pub mod pebble;
pub mod pop;
pub mod tls;

pub use edge::{Edge, EdgeBuilder};
pub use origin::{Reply, TestOrigin};
pub use pop::PopBuilder;

/// An origin with a fixed reply, and an edge in front of it.
pub async fn edge_for(reply: impl Fn() -> Reply + Send + Sync + 'static) -> (TestOrigin, Edge) {
    let origin = TestOrigin::fixed(reply).await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    (origin, edge)
}

/// A new, empty directory, unique to this call, removed when the guard is dropped. It lives
/// under Cargo's `target/tmp` rather than the system's temporary directory, so what a killed
/// test leaves behind goes with `cargo clean` and never fills `/tmp`.
pub fn scratch_dir(name: &str) -> Scratch {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "strata-{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// A directory that is removed, with everything in it, when this is dropped.
#[derive(Debug)]
pub struct Scratch(std::path::PathBuf);

// === impl Scratch ===

impl Scratch {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A metric's value in Prometheus text: the first line starting with `prefix` (a name, or
/// a name with its labels).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An example filter (`examples/filters`, built for wasm32-wasip1 by `scripts/test.sh`).
pub fn example_filter(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/filters/target/wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the example filters (scripts/test.sh does: cargo build --release \
         --target wasm32-wasip1 --manifest-path examples/filters/Cargo.toml)",
        path.display()
    );
    path
}

/// A proxy-wasm module written by hand (WebAssembly text) into `dir`: the ABI's required
/// exports, a bump allocator, and `body` as `proxy_on_request_headers` (leaving an action).
pub fn wat_filter(
    dir: &std::path::Path,
    name: &str,
    imports: &str,
    body: &str,
) -> std::path::PathBuf {
    let wasm = wat::parse_str(format!(
        r#"(module
             {imports}
             (memory (export "memory") 1)
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
    .expect("valid WebAssembly text");
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wasm).expect("write module");
    path
}
