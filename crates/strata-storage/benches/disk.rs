//! The disk tier's own costs, one run each (not criterion: a run makes hundreds of
//! thousands of files): writing objects, rebuilding the index at open, and purging a tag
//! carried by half of them, hard and soft.
//!
//! `cargo bench -p strata-storage --bench disk [-- OBJECTS [BODY_BYTES]]` (defaults 200000
//! and 4096). Uses a directory under the system's temporary directory, removed at the end.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use strata_http_cache::{CacheKey, KeyRules};
use strata_storage::{DiskStorage, Purge, Scope, Storage};

mod common;

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>9.3} s  {:>10.0} objects/s",
        d.as_secs_f64(),
        n as f64 / d.as_secs_f64()
    )
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let body_len: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4096);
    let dir = std::env::temp_dir().join(format!("strata-disk-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let capacity = (n as u64) * (body_len as u64 + (16 << 10));
    let body = Bytes::from(vec![7u8; body_len]);
    let now = SystemTime::now();
    let rules = KeyRules::default();
    let key = |i: usize| CacheKey::new("http", "example.com", &format!("/p/{i}"), None, &rules);
    println!(
        "disk tier: {n} objects of {body_len} bytes in {}",
        dir.display()
    );

    let disk = DiskStorage::open(&dir, capacity).expect("open");
    let t = Instant::now();
    let mut queued = 0;
    for i in 0..n {
        let tag = if i % 2 == 0 { "product-123" } else { "other" };
        // The writer's queue is bounded: offer again until it takes the object.
        while !disk.insert(
            &key(i),
            common::object(now, &[("surrogate-key", tag)], body.clone()),
            now,
        ) {
            std::thread::sleep(Duration::from_micros(50));
        }
        queued += 1;
    }
    disk.flush();
    println!("write          {}", rate(queued, t.elapsed()));
    drop(disk);

    let t = Instant::now();
    let disk = DiskStorage::open(&dir, capacity).expect("reopen");
    let opened = t.elapsed();
    assert_eq!(disk.stats().keys as usize, n);
    println!("open (index)   {}", rate(n, opened));

    let later = now + Duration::from_secs(1);
    // Soft first: the hard purge then covers the other half.
    measure_purge(&disk, "other", true, later);
    measure_purge(&disk, "product-123", false, later);
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Purges a tag and reports the call, the purger's index work, and the file thread's work.
fn measure_purge(disk: &DiskStorage, tag: &str, soft: bool, at: SystemTime) {
    let purge = Purge {
        scope: Scope::Tags(vec![tag.to_string()]),
        soft,
        issued_at: at,
    };
    let (kind, files) = if soft {
        ("soft", "metadata rewritten")
    } else {
        ("hard", "files unlinked")
    };
    let t = Instant::now();
    let affected = disk.purge(&purge, at) as usize;
    println!(
        "{kind} tag purge {} ({affected} listed; the call: journal + pending list)",
        rate(affected, t.elapsed())
    );
    let t = Instant::now();
    while disk.pending_purges() > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "  in index     {} (the purger; lookups applied it until then)",
        rate(affected, t.elapsed())
    );
    let t = Instant::now();
    disk.flush();
    println!(
        "  files        {} (the file thread: {files})",
        rate(affected, t.elapsed())
    );
}
