//! The part of WASI preview 1 a proxy-wasm filter built for `wasm32-wasip1` imports, as
//! Envoy offers it: no files, no environment, no arguments; standard output and error go
//! to the node's log; randomness and clocks are real. A filter has no business with the
//! node's file system, so `wasmtime-wasi` (and its dependency tree) is not needed.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use crate::host::{read, write, Host};

/// WASI preview 1, and its older name (AssemblyScript's proxy-wasm runtime imports
/// `wasi_unstable`): the functions used here have the same signatures in both.
const MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];
const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const INVAL: i32 = 28;
const NOTSUP: i32 = 58;

/// What `fd_write` to stdout/stderr keeps of one call.
const MAX_WRITE: usize = 4096;

pub(crate) fn define(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    for module in MODULES {
        define_in(linker, module)?;
    }
    Ok(())
}

fn define_in(linker: &mut Linker<Host>, module: &str) -> wasmtime::Result<()> {
    linker.func_wrap(
        module,
        "fd_write",
        |mut caller: Caller<'_, Host>, fd: i32, iovs: i32, count: i32, ret: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return BADF;
            }
            let mut text = Vec::new();
            let mut total: u32 = 0;
            for i in 0..count.clamp(0, 64) {
                let Ok(iov) = read(&caller, iovs.wrapping_add(i * 8), 8) else {
                    return INVAL;
                };
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Ok(bytes) = read(&caller, ptr, len) else {
                    return INVAL;
                };
                total = total.wrapping_add(bytes.len() as u32);
                if text.len() < MAX_WRITE {
                    text.extend_from_slice(&bytes[..bytes.len().min(MAX_WRITE - text.len())]);
                }
            }
            let line = String::from_utf8_lossy(&text);
            let line = line.trim_end();
            if !line.is_empty() {
                let filter = &caller.data().plugin.name;
                tracing::info!(target: "strata::filter", filter = %filter, fd, "{line}");
            }
            if write(&mut caller, ret, &total.to_le_bytes()).is_err() {
                return INVAL;
            }
            SUCCESS
        },
    )?;
    linker.func_wrap(
        module,
        "random_get",
        |mut caller: Caller<'_, Host>, ptr: i32, len: i32| -> i32 {
            let len = (len as u32 as usize).min(1 << 16);
            let mut buf = vec![0u8; len];
            // The kernel's generator (getrandom(2)): no user-space DRBG to start up inside
            // a filter's CPU budget.
            let mut filled = 0;
            while filled < len {
                // SAFETY: writes at most `len - filled` bytes into `buf` from `filled` on.
                let n =
                    unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), len - filled, 0) };
                if n <= 0 {
                    return NOTSUP;
                }
                filled += n as usize;
            }
            if write(&mut caller, ptr, &buf).is_err() {
                return INVAL;
            }
            SUCCESS
        },
    )?;
    linker.func_wrap(
        module,
        "clock_time_get",
        |mut caller: Caller<'_, Host>, _id: i32, _precision: i64, ret: i32| -> i32 {
            // Realtime and monotonic alike: nanoseconds since the epoch (monotonic enough
            // for a filter's timing; the guest cannot tell a node's boot time).
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            if write(&mut caller, ret, &now.to_le_bytes()).is_err() {
                return INVAL;
            }
            SUCCESS
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            module,
            name,
            |mut caller: Caller<'_, Host>, count: i32, size: i32| -> i32 {
                let zero = 0u32.to_le_bytes();
                if write(&mut caller, count, &zero).is_err()
                    || write(&mut caller, size, &zero).is_err()
                {
                    return INVAL;
                }
                SUCCESS
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(
            module,
            name,
            |_: Caller<'_, Host>, _a: i32, _b: i32| -> i32 { SUCCESS },
        )?;
    }
    linker.func_wrap(
        module,
        "proc_exit",
        |_: Caller<'_, Host>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!("the filter exited ({code})")))
        },
    )?;
    linker.func_wrap(module, "sched_yield", |_: Caller<'_, Host>| -> i32 {
        SUCCESS
    })?;
    // No files: every descriptor is a bad one.
    linker.func_wrap(module, "fd_close", |_: Caller<'_, Host>, _fd: i32| -> i32 {
        BADF
    })?;
    linker.func_wrap(
        module,
        "fd_fdstat_get",
        |_: Caller<'_, Host>, _fd: i32, _ret: i32| -> i32 { BADF },
    )?;
    linker.func_wrap(
        module,
        "fd_prestat_get",
        |_: Caller<'_, Host>, _fd: i32, _ret: i32| -> i32 { BADF },
    )?;
    linker.func_wrap(
        module,
        "fd_prestat_dir_name",
        |_: Caller<'_, Host>, _fd: i32, _ptr: i32, _len: i32| -> i32 { BADF },
    )?;
    linker.func_wrap(
        module,
        "fd_seek",
        |_: Caller<'_, Host>, _fd: i32, _off: i64, _whence: i32, _ret: i32| -> i32 { BADF },
    )?;
    linker.func_wrap(
        module,
        "fd_read",
        |_: Caller<'_, Host>, _fd: i32, _iovs: i32, _count: i32, _ret: i32| -> i32 { BADF },
    )?;
    linker.func_wrap(
        module,
        "poll_oneoff",
        |_: Caller<'_, Host>, _in: i32, _out: i32, _n: i32, _ret: i32| -> i32 { NOTSUP },
    )?;
    Ok(())
}
