//! The disk tier's purge journal: every purge, one JSON line, appended before the purge
//! changes anything.
//!
//! Files are slow to change in bulk (a tag purge may cover 100,000 objects: as many
//! unlinks or rewrites), so a purge changes the in-memory index at once and leaves the files
//! to a background thread; the journal makes that safe. At open, the journal's purges are
//! applied again to what the files hold (a purge covers what was stored before it was
//! issued, so applying it twice is harmless), which restores any effect the background
//! thread had not written yet. A segment is deleted only once the background thread has
//! written the effects of every purge in it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use strata_http_cache::CacheKey;

use crate::purge::{PathPattern, Purge, Scope};

/// A segment is closed (and becomes deletable) past this size.
const SEGMENT_BYTES: u64 = 256 << 10;

/// The open journal: the segment being appended to.
pub struct Journal {
    dir: PathBuf,
    segment: u64,
    file: fs::File,
    len: u64,
}

impl Journal {
    /// Opens the journal in `dir`: the purges of every existing segment, oldest first (for
    /// replay), the last existing segment (deletable once the replay's effects are
    /// written), and a new segment to append to. Lines that do not decode (a torn last
    /// write) are skipped.
    pub fn open(dir: &Path) -> io::Result<(Self, Vec<Purge>, Option<u64>)> {
        let mut segments = segments(dir)?;
        segments.sort_unstable();
        let mut purges = Vec::new();
        for n in &segments {
            let text = fs::read(segment_path(dir, *n))?;
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match decode(line) {
                    Some(p) => purges.push(p),
                    None => {
                        tracing::warn!(segment = n, "skipping an unreadable purge journal line")
                    }
                }
            }
        }
        let last = segments.last().copied();
        let journal = Self::create(dir, last.map_or(0, |n| n + 1))?;
        Ok((journal, purges, last))
    }

    fn create(dir: &Path, segment: u64) -> io::Result<Self> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, segment))?;
        let len = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            segment,
            file,
            len,
        })
    }

    /// Appends a purge. Returns the segment it closed, if this append filled it: deletable
    /// once the effects of the purges in it are written.
    pub fn append(&mut self, purge: &Purge) -> io::Result<Option<u64>> {
        let mut line = encode(purge);
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            // A partial line would glue the next one to it, and both would be lost at replay.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += line.len() as u64;
        if self.len < SEGMENT_BYTES {
            return Ok(None);
        }
        let closed = self.segment;
        *self = Self::create(&self.dir, closed + 1)?;
        Ok(Some(closed))
    }

    /// Forgets every purge (the tier was wiped).
    pub fn reset(&mut self) -> io::Result<()> {
        remove_through(&self.dir, self.segment);
        *self = Self::create(&self.dir, self.segment + 1)?;
        Ok(())
    }
}

/// Deletes segments up to and including `segment`.
pub fn remove_through(dir: &Path, segment: u64) {
    for n in segments(dir).unwrap_or_default() {
        if n <= segment {
            let _ = fs::remove_file(segment_path(dir, n));
        }
    }
}

fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    Ok(fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_prefix("purges-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect())
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("purges-{n:020}.log"))
}

// === line format ===

#[derive(Serialize, Deserialize)]
struct Line {
    soft: bool,
    issued_at_ns: u64,
    scope: ScopeRecord,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ScopeRecord {
    Keys(Vec<String>),
    Tags(Vec<String>),
    Prefixes(Vec<String>),
    Patterns(Vec<(Option<String>, String)>),
    All,
}

pub fn encode(purge: &Purge) -> Vec<u8> {
    let scope = match &purge.scope {
        Scope::Keys(keys) => {
            ScopeRecord::Keys(keys.iter().map(|k| k.as_str().to_string()).collect())
        }
        Scope::Tags(tags) => ScopeRecord::Tags(tags.clone()),
        Scope::Prefixes(p) => ScopeRecord::Prefixes(p.clone()),
        Scope::Patterns(p) => {
            ScopeRecord::Patterns(p.iter().map(|p| (p.host.clone(), p.glob.clone())).collect())
        }
        Scope::All => ScopeRecord::All,
    };
    let line = Line {
        soft: purge.soft,
        issued_at_ns: purge
            .issued_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64),
        scope,
    };
    // Strings, numbers and vectors always serialise.
    serde_json::to_vec(&line).unwrap_or_default()
}

pub fn decode(line: &[u8]) -> Option<Purge> {
    let line: Line = serde_json::from_slice(line).ok()?;
    let scope = match line.scope {
        ScopeRecord::Keys(keys) => Scope::Keys(keys.into_iter().map(CacheKey::from_text).collect()),
        ScopeRecord::Tags(tags) => Scope::Tags(tags),
        ScopeRecord::Prefixes(p) => Scope::Prefixes(p),
        ScopeRecord::Patterns(p) => Scope::Patterns(
            p.iter()
                .map(|(host, glob)| PathPattern::new(host.as_deref(), glob))
                .collect(),
        ),
        ScopeRecord::All => Scope::All,
    };
    Some(Purge {
        scope,
        soft: line.soft,
        issued_at: UNIX_EPOCH + Duration::from_nanos(line.issued_at_ns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{key, TempDir};

    fn purges() -> Vec<Purge> {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        [
            Scope::Keys(vec![key(1), key(2)]),
            Scope::Tags(vec!["a".into(), "b c".into()]),
            Scope::Prefixes(vec!["http://h/x/".into()]),
            Scope::Patterns(vec![
                PathPattern::new(Some("h"), "/img/*.jpg"),
                PathPattern::new(None, "/?"),
            ]),
            Scope::All,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, scope)| Purge {
            scope,
            soft: i % 2 == 1,
            issued_at: at,
        })
        .collect()
    }

    #[test]
    fn every_scope_reads_back_as_written() {
        for p in purges() {
            assert_eq!(decode(&encode(&p)), Some(p));
        }
        assert_eq!(decode(b"{\"soft\":true"), None);
    }

    #[test]
    fn purges_come_back_at_open_in_order_and_a_torn_line_is_skipped() {
        let dir = TempDir::new("journal");
        let (mut j, replay, last) = Journal::open(&dir.0).unwrap();
        assert!(replay.is_empty() && last.is_none());
        for p in purges() {
            assert_eq!(j.append(&p).unwrap(), None);
        }
        drop(j);
        let torn = segment_path(&dir.0, 0);
        let mut text = fs::read(&torn).unwrap();
        text.extend_from_slice(b"{\"soft\":fa");
        fs::write(&torn, text).unwrap();
        let (_j, replay, last) = Journal::open(&dir.0).unwrap();
        assert_eq!(replay, purges());
        assert_eq!(last, Some(0));
    }

    #[test]
    fn a_full_segment_is_closed_and_removable() {
        let dir = TempDir::new("segments");
        let (mut j, _, _) = Journal::open(&dir.0).unwrap();
        let p = &purges()[1];
        let mut closed = None;
        for _ in 0..100_000 {
            closed = j.append(p).unwrap();
            if closed.is_some() {
                break;
            }
        }
        assert_eq!(closed, Some(0));
        j.append(p).unwrap();
        remove_through(&dir.0, 0);
        let (_j, replay, last) = Journal::open(&dir.0).unwrap();
        assert_eq!((replay.len(), last), (1, Some(1)));
    }
}
