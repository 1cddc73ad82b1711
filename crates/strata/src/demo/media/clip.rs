//! The demo's media: an 8 s CMAF clip made by ffmpeg (`scripts/make-demo-clip.sh`), cut
//! into its fragments, and played in a loop as if it were produced live: fragment `p` of
//! the endless stream is fragment `p % n` of the clip with its decode times moved on by
//! `p / n` clip lengths and its sequence number by as many clips. No IO: the bytes are
//! embedded, and callers say which fragment they want.
//!
//! Only the boxes needed for that are read: `moov` (track timescales, the video codec),
//! and in each `moof` its `mfhd` (sequence number) and each `traf`'s `tfhd` (default
//! duration), `tfdt` (decode time, version 1) and `trun` (sample count, durations, the
//! first sample's sync flag).

use bytes::{Bytes, BytesMut};

/// The clip, as ffmpeg wrote it.
const CLIP: &[u8] = include_bytes!("assets/clip.mp4");

/// A box: its type, where its content starts and where it ends.
struct Mp4Box<'a> {
    kind: &'a [u8],
    body: usize,
    end: usize,
}

/// The boxes between `from` and `to` of `data`. Stops at the first malformed one.
fn boxes(data: &[u8], from: usize, to: usize) -> Vec<Mp4Box<'_>> {
    let mut out = Vec::new();
    let mut at = from;
    while at + 8 <= to {
        let size =
            u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let (header, size) = match size {
            1 if at + 16 <= to => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[at + 8..at + 16]);
                (16, u64::from_be_bytes(b) as usize)
            }
            0 => (8, to - at),
            n => (8, n),
        };
        if size < header || at + size > to {
            break;
        }
        out.push(Mp4Box {
            kind: &data[at + 4..at + 8],
            body: at + header,
            end: at + size,
        });
        at += size;
    }
    out
}

fn child<'a>(data: &'a [u8], parent: &Mp4Box<'_>, kind: &[u8]) -> Option<Mp4Box<'a>> {
    boxes(data, parent.body, parent.end)
        .into_iter()
        .find(|b| b.kind == kind)
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A place in a fragment whose value moves with every loop.
#[derive(Debug, Clone, Copy)]
enum Patch {
    /// A `tfdt` version 1 decode time (8 bytes at `at`) of `track`: + `ticks` per loop.
    DecodeTime {
        at: usize,
        value: u64,
        track: u32,
        ticks: u64,
    },
    /// The `mfhd` sequence number (4 bytes at `at`): + `per_loop` per loop.
    Sequence {
        at: usize,
        value: u32,
        per_loop: u32,
    },
}

/// One part of the stream: one or more `moof`+`mdat` pairs of the clip.
#[derive(Debug)]
struct Fragment {
    bytes: Vec<u8>,
    /// Starts with a sync sample of the video: a segment can start here.
    independent: bool,
    patches: Vec<Patch>,
}

/// The clip cut into parts, ready to be looped.
#[derive(Debug)]
pub struct Clip {
    pub init: Bytes,
    parts: Vec<Fragment>,
    /// Parts in a segment (from one sync sample to the next).
    pub parts_per_segment: u64,
    /// The video and audio codecs, as `CODECS` says them.
    pub codecs: String,
}

impl Clip {
    /// The embedded clip.
    pub fn embedded() -> Result<Self, String> {
        Self::parse(CLIP)
    }

    fn parse(data: &[u8]) -> Result<Self, String> {
        let top = boxes(data, 0, data.len());
        let moov = top.iter().find(|b| b.kind == b"moov").ok_or("no moov")?;
        let init_end = moov.end;
        // Track id -> timescale, from each trak's tkhd and mdhd (version 0 or 1).
        let mut timescales = Vec::new();
        for trak in boxes(data, moov.body, moov.end)
            .iter()
            .filter(|b| b.kind == b"trak")
        {
            let tkhd = child(data, trak, b"tkhd").ok_or("no tkhd")?;
            let v1 = data.get(tkhd.body) == Some(&1);
            let id = u32_at(data, tkhd.body + if v1 { 20 } else { 12 }).ok_or("short tkhd")?;
            let mdia = child(data, trak, b"mdia").ok_or("no mdia")?;
            let mdhd = child(data, &mdia, b"mdhd").ok_or("no mdhd")?;
            let v1 = data.get(mdhd.body) == Some(&1);
            let scale = u32_at(data, mdhd.body + if v1 { 20 } else { 12 }).ok_or("short mdhd")?;
            timescales.push((id, scale));
        }
        let codecs = codecs(&data[..init_end]);

        // Each moof with its mdat; a moof without video (the audio's last frames) joins
        // the part before it.
        let mut parts: Vec<Fragment> = Vec::new();
        // Per track: where the clip's samples end, in its timescale.
        let mut track_end: Vec<(u32, u64)> = Vec::new();
        let mut fragments = 0u32;
        let mut i = 0;
        while i < top.len() {
            if top[i].kind != b"moof" {
                i += 1;
                continue;
            }
            let moof = &top[i];
            let end = match top.get(i + 1) {
                Some(mdat) if mdat.kind == b"mdat" => mdat.end,
                _ => return Err("a moof without its mdat".into()),
            };
            let start = moof.body - 8;
            fragments += 1;
            let mut fragment = Fragment {
                bytes: data[start..end].to_vec(),
                independent: false,
                patches: Vec::new(),
            };
            let mut has_video = false;
            let mfhd = child(data, moof, b"mfhd").ok_or("no mfhd")?;
            fragment.patches.push(Patch::Sequence {
                at: mfhd.body + 4 - start,
                value: u32_at(data, mfhd.body + 4).ok_or("short mfhd")?,
                per_loop: 0,
            });
            for traf in boxes(data, moof.body, moof.end)
                .iter()
                .filter(|b| b.kind == b"traf")
            {
                let tfhd = child(data, traf, b"tfhd").ok_or("no tfhd")?;
                let flags = u32_at(data, tfhd.body).ok_or("short tfhd")? & 0xff_ffff;
                let track = u32_at(data, tfhd.body + 4).ok_or("short tfhd")?;
                let mut at = tfhd.body + 8;
                at += if flags & 0x1 != 0 { 8 } else { 0 };
                at += if flags & 0x2 != 0 { 4 } else { 0 };
                let default_duration = match flags & 0x8 {
                    0 => 0,
                    _ => u64::from(u32_at(data, at).ok_or("short tfhd")?),
                };
                let tfdt = child(data, traf, b"tfdt").ok_or("no tfdt")?;
                if data.get(tfdt.body) != Some(&1) {
                    return Err("tfdt version 0 (ffmpeg writes version 1)".into());
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(
                    data.get(tfdt.body + 4..tfdt.body + 12)
                        .ok_or("short tfdt")?,
                );
                let decode_time = u64::from_be_bytes(b);
                fragment.patches.push(Patch::DecodeTime {
                    at: tfdt.body + 4 - start,
                    value: decode_time,
                    track,
                    ticks: 0,
                });
                let trun = child(data, traf, b"trun").ok_or("no trun")?;
                let tflags = u32_at(data, trun.body).ok_or("short trun")? & 0xff_ffff;
                let count = u64::from(u32_at(data, trun.body + 4).ok_or("short trun")?);
                let mut at = trun.body + 8;
                at += if tflags & 0x1 != 0 { 4 } else { 0 };
                let first_flags = match tflags & 0x4 {
                    0 => None,
                    _ => {
                        let f = u32_at(data, at).ok_or("short trun")?;
                        at += 4;
                        Some(f)
                    }
                };
                let per_sample = [0x100, 0x200, 0x400, 0x800]
                    .iter()
                    .filter(|f| tflags & **f != 0)
                    .count()
                    * 4;
                let duration = if tflags & 0x100 != 0 {
                    (0..count as usize)
                        .map(|k| u32_at(data, at + k * per_sample).map(u64::from))
                        .sum::<Option<u64>>()
                        .ok_or("short trun")?
                } else {
                    count * default_duration
                };
                let is_video = timescales.first().is_some_and(|(id, _)| *id == track);
                if is_video {
                    has_video = true;
                    // sample_is_non_sync_sample clear: a sync sample.
                    fragment.independent = first_flags.is_some_and(|f| f & 0x1_0000 == 0);
                }
                match track_end.iter_mut().find(|(id, _)| *id == track) {
                    Some((_, e)) => *e = (*e).max(decode_time + duration),
                    None => track_end.push((track, decode_time + duration)),
                }
            }
            match parts.last_mut() {
                Some(last) if !has_video => {
                    let offset = last.bytes.len();
                    last.bytes.extend_from_slice(&fragment.bytes);
                    last.patches
                        .extend(fragment.patches.into_iter().map(|p| match p {
                            Patch::DecodeTime {
                                at,
                                value,
                                track,
                                ticks,
                            } => Patch::DecodeTime {
                                at: at + offset,
                                value,
                                track,
                                ticks,
                            },
                            Patch::Sequence {
                                at,
                                value,
                                per_loop,
                            } => Patch::Sequence {
                                at: at + offset,
                                value,
                                per_loop,
                            },
                        }));
                }
                _ => parts.push(fragment),
            }
            i += 2;
        }
        // Every loop moves decode times by the clip's length in each track's timescale,
        // and sequence numbers by the clip's fragment count.
        for part in &mut parts {
            for patch in &mut part.patches {
                match patch {
                    Patch::DecodeTime { track, ticks, .. } => {
                        *ticks = track_end
                            .iter()
                            .find(|(id, _)| id == track)
                            .map_or(0, |(_, e)| *e);
                    }
                    Patch::Sequence { per_loop, .. } => *per_loop = fragments,
                }
            }
        }
        let starts: Vec<usize> = (0..parts.len()).filter(|i| parts[*i].independent).collect();
        let parts_per_segment = match starts.as_slice() {
            [0, second, ..] => *second as u64,
            [0] => parts.len() as u64,
            _ => return Err("the clip does not start with a sync sample".into()),
        };
        if parts.is_empty() || !(parts.len() as u64).is_multiple_of(parts_per_segment) {
            return Err("the clip is not a whole number of segments".into());
        }
        Ok(Self {
            init: Bytes::copy_from_slice(&data[..init_end]),
            parts,
            parts_per_segment,
            codecs,
        })
    }

    /// Parts in one loop of the clip.
    pub fn len(&self) -> u64 {
        self.parts.len() as u64
    }

    /// Part `p` of the endless stream, re-timed for its loop.
    pub fn part(&self, p: u64) -> Bytes {
        let (round, i) = (p / self.len(), (p % self.len()) as usize);
        let part = &self.parts[i];
        let mut bytes = BytesMut::from(&part.bytes[..]);
        for patch in &part.patches {
            match *patch {
                Patch::DecodeTime {
                    at, value, ticks, ..
                } => {
                    let moved = value.wrapping_add(round.wrapping_mul(ticks));
                    bytes[at..at + 8].copy_from_slice(&moved.to_be_bytes());
                }
                Patch::Sequence {
                    at,
                    value,
                    per_loop,
                } => {
                    let moved = value.wrapping_add((round as u32).wrapping_mul(per_loop));
                    bytes[at..at + 4].copy_from_slice(&moved.to_be_bytes());
                }
            }
        }
        bytes.freeze()
    }

    /// Whether part `p` starts with a sync sample.
    pub fn independent(&self, p: u64) -> bool {
        self.parts[(p % self.len()) as usize].independent
    }

    /// Segment `n` of the endless stream: its parts, one after the other.
    pub fn segment(&self, n: u64) -> Bytes {
        let mut out = BytesMut::new();
        for p in n * self.parts_per_segment..(n + 1) * self.parts_per_segment {
            out.extend_from_slice(&self.part(p));
        }
        out.freeze()
    }
}

/// `CODECS` for the clip: `avc1.PPCCLL` from its `avcC`, and AAC-LC.
fn codecs(init: &[u8]) -> String {
    let video = init
        .windows(4)
        .position(|w| w == b"avcC")
        .and_then(|at| init.get(at + 5..at + 8))
        .map_or("avc1.4d401e".to_string(), |p| {
            format!("avc1.{:02x}{:02x}{:02x}", p[0], p[1], p[2])
        });
    format!("{video},mp4a.40.2")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tfdts(part: &[u8]) -> Vec<u64> {
        part.windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"tfdt")
            .map(|(at, _)| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&part[at + 8..at + 16]);
                u64::from_be_bytes(b)
            })
            .collect()
    }

    #[test]
    fn the_embedded_clip_is_four_segments_of_six_parts() {
        let clip = Clip::embedded().expect("the clip parses");
        assert_eq!(clip.parts_per_segment, 6);
        assert_eq!(clip.len(), 24);
        assert!(clip.codecs.starts_with("avc1.4d"), "{}", clip.codecs);
        assert!((0..24).all(|p| clip.independent(p) == (p % 6 == 0)));
        assert_eq!(&clip.init[4..8], b"ftyp");
    }

    #[test]
    fn every_loop_moves_decode_times_on_by_one_clip_length_in_each_track() {
        let clip = Clip::embedded().expect("the clip parses");
        // Video at 15,360 ticks/s, audio at 48,000: 8 s each.
        let first = tfdts(&clip.part(0));
        assert_eq!(first, vec![0, 0]);
        let again = tfdts(&clip.part(24));
        assert_eq!(again, vec![8 * 15_360, 8 * 48_000]);
        let later = tfdts(&clip.part(24 * 1000 + 1));
        assert_eq!(
            later,
            vec![1000 * 8 * 15_360 + 5_120, 1000 * 8 * 48_000 + 14_336]
        );
        // The audio of the clip's last part runs to exactly where the next loop starts.
        let last = tfdts(&clip.part(23));
        assert_eq!(last.len(), 3, "video, audio, and the audio's last frame");
        assert_eq!(last[2] + 1024, 8 * 48_000);
    }

    #[test]
    fn a_segment_is_its_parts_and_malformed_clips_are_refused() {
        let clip = Clip::embedded().expect("the clip parses");
        let seg = clip.segment(5);
        let parts: usize = (30..36).map(|p| clip.part(p).len()).sum();
        assert_eq!(seg.len(), parts);
        assert!(Clip::parse(b"").is_err());
        assert!(Clip::parse(&clip.init).is_err(), "no parts at all");
    }
}
