//! Shared data: the key/value store filters read and write with `get_shared_data` and
//! `set_shared_data`, and that a node exposes as Edge KV. Each key carries a `cas`
//! number that changes with every write; a write naming a `cas` succeeds only if the key
//! still has it (compare-and-set), which is how a filter keeps a counter or a lock right
//! when many requests, on many nodes, update one key.
//!
//! The trait is what the host needs; [`MemoryShared`] keeps everything in the process (a
//! node without a bus, and the tests' fake). The bus-backed store (NATS JetStream KV,
//! every node's reads from its own replica) lives with the bus.

use std::collections::HashMap;
use std::sync::Mutex;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The key's `cas` is not the one the write named (another write came first), or the
    /// write named one for a key that does not exist.
    #[error("compare-and-set mismatch")]
    CasMismatch,
    /// The store could not be reached or refused the write.
    #[error("shared data unavailable: {0}")]
    Unavailable(String),
}

/// The store filters share. Reads are synchronous (a node's local replica); writes are
/// synchronous too, as the ABI's are: an implementation backed by a remote store blocks
/// the calling thread for the write's round trip (see `strata-bus`).
pub trait SharedData: Send + Sync {
    /// The value and its `cas` (never 0), or `None`.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value`. `cas` 0 writes whatever the key holds; any other value only if the
    /// key's current `cas` is that one.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError>;
    /// Writes `value` only if the key does not exist (`CasMismatch` otherwise).
    fn create(&self, key: &str, value: &[u8]) -> Result<(), SetError>;
}

/// Shared data held in this process.
#[derive(Default)]
pub struct MemoryShared {
    entries: Mutex<HashMap<String, (Vec<u8>, u32)>>,
}

// === impl MemoryShared ===

impl SharedData for MemoryShared {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let current = entries.get(key).map_or(0, |(_, c)| *c);
        if cas != 0 && cas != current {
            return Err(SetError::CasMismatch);
        }
        // Never 0: 0 means "no cas" to the guest.
        let next = current.checked_add(1).unwrap_or(1);
        entries.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<(), SetError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.contains_key(key) {
            return Err(SetError::CasMismatch);
        }
        entries.insert(key.to_owned(), (value.to_vec(), 1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_with_a_stale_cas_is_refused() {
        let kv = MemoryShared::default();
        assert_eq!(kv.get("n"), None);
        assert_eq!(kv.set("n", b"1", 7), Err(SetError::CasMismatch));
        kv.set("n", b"1", 0).unwrap();
        let (v, cas) = kv.get("n").unwrap();
        assert_eq!(v, b"1");
        kv.set("n", b"2", cas).unwrap();
        assert_eq!(kv.set("n", b"3", cas), Err(SetError::CasMismatch));
        assert_eq!(kv.get("n").unwrap().0, b"2");
        assert_eq!(kv.create("n", b"x"), Err(SetError::CasMismatch));
        kv.create("m", b"x").unwrap();
    }
}
