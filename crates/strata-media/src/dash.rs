//! DASH manifests (MPD, ISO/IEC 23009-1): what the edge needs from one. Parsed with
//! roxmltree (no DTDs, so no entity expansion); the model is the part of the MPD that says
//! which segments exist: `SegmentTemplate` (on an adaptation set or a representation) with
//! `$RepresentationID$`, `$Number$`, `$Time$` and `$Bandwidth$`, and its
//! `SegmentTimeline`; `BaseURL`s are not followed (segments are taken relative to the
//! manifest).

use std::time::Duration;

/// Why a body is not a manifest the edge can use.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAManifest;

impl std::fmt::Display for NotAManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a DASH manifest")
    }
}

impl std::error::Error for NotAManifest {}

/// Longest manifest read.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Segments listed per manifest at most (across its representations).
const MAX_SEGMENTS: usize = 20_000;

/// Elements parsed at most (roxmltree's own limit, lowered).
const MAX_NODES: u32 = 200_000;

/// What the edge needs from a manifest.
#[derive(Debug, PartialEq)]
pub struct Manifest {
    /// `type="dynamic"`: a live presentation, updated in place.
    pub live: bool,
    /// `minimumUpdatePeriod`: how often a live manifest may change.
    pub update_period: Option<Duration>,
    /// Per representation, its segment URIs in order, as written after the template.
    pub representations: Vec<Vec<String>>,
}

impl Manifest {
    /// How long an edge may serve a live manifest without asking again: half its update
    /// period (1 s when it names none), at most 2 s. `None` for a static one.
    pub fn max_fresh(&self) -> Option<Duration> {
        self.live.then(|| {
            self.update_period
                .map_or(Duration::from_secs(1), |p| p / 2)
                .clamp(Duration::from_millis(100), Duration::from_secs(2))
        })
    }

    /// For each segment on the same site as the manifest at `base`, the `path?query` of
    /// the up to `k` segments after it in its representation.
    pub fn successors(&self, base: &str, k: usize) -> Vec<(String, Vec<String>)> {
        self.representations
            .iter()
            .flat_map(|segments| crate::successors(base, segments, k))
            .collect()
    }
}

pub fn parse(body: &[u8]) -> Result<Manifest, NotAManifest> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(NotAManifest);
    }
    let text = std::str::from_utf8(body).map_err(|_| NotAManifest)?;
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options).map_err(|_| NotAManifest)?;
    let mpd = doc.root_element();
    if mpd.tag_name().name() != "MPD" {
        return Err(NotAManifest);
    }
    let live = mpd.attribute("type") == Some("dynamic");
    let update_period = mpd.attribute("minimumUpdatePeriod").and_then(duration);
    let total = mpd
        .attribute("mediaPresentationDuration")
        .and_then(duration);
    let mut representations = Vec::new();
    let mut listed = 0usize;
    for period in mpd.children().filter(|n| n.has_tag_name("Period")) {
        let period_length = period.attribute("duration").and_then(duration).or(total);
        for set in period
            .children()
            .filter(|n| n.has_tag_name("AdaptationSet"))
        {
            let set_template = child(set, "SegmentTemplate");
            for rep in set.children().filter(|n| n.has_tag_name("Representation")) {
                let Some(template) = child(rep, "SegmentTemplate").or(set_template) else {
                    continue;
                };
                let budget = MAX_SEGMENTS - listed;
                let segments = expand(template, rep, live, period_length, budget);
                listed += segments.len();
                if !segments.is_empty() {
                    representations.push(segments);
                }
                if listed >= MAX_SEGMENTS {
                    return Ok(Manifest {
                        live,
                        update_period,
                        representations,
                    });
                }
            }
        }
    }
    Ok(Manifest {
        live,
        update_period,
        representations,
    })
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(name))
}

/// The segment URIs a template names for one representation: every entry of its
/// timeline, or (without one) every `@duration` of a static presentation's length. A live
/// presentation without a timeline says nothing of which segments exist yet: none.
fn expand(
    template: roxmltree::Node<'_, '_>,
    rep: roxmltree::Node<'_, '_>,
    live: bool,
    period: Option<Duration>,
    budget: usize,
) -> Vec<String> {
    let Some(media) = template.attribute("media") else {
        return Vec::new();
    };
    let number = |name: &str, default: u64| {
        template
            .attribute(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let start = number("startNumber", 1);
    let timescale = number("timescale", 1).max(1);
    let id = rep.attribute("id").unwrap_or("");
    let bandwidth = rep.attribute("bandwidth").unwrap_or("");
    let uri = |n: u64, time: u64| fill(media, id, bandwidth, n, time);
    let mut out = Vec::new();
    if let Some(timeline) = child(template, "SegmentTimeline") {
        let mut time = 0u64;
        let mut n = start;
        for s in timeline.children().filter(|c| c.has_tag_name("S")) {
            let get = |a: &str| s.attribute(a).and_then(|v| v.parse::<u64>().ok());
            let Some(d) = get("d").filter(|d| *d > 0) else {
                break;
            };
            if let Some(t) = get("t") {
                time = t;
            }
            // A negative repeat ("until the next S or the period's end") counts once.
            let repeat = s
                .attribute("r")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            for _ in 0..=repeat {
                if out.len() >= budget {
                    return out;
                }
                out.push(uri(n, time));
                n = n.saturating_add(1);
                time = time.saturating_add(d);
            }
        }
        return out;
    }
    let d = number("duration", 0);
    let Some(period) = period.filter(|_| !live && d > 0) else {
        return out;
    };
    let ticks = period.as_secs_f64() * timescale as f64;
    let count = (ticks / d as f64).ceil().min(budget as f64) as u64;
    for i in 0..count {
        out.push(uri(start.saturating_add(i), i.saturating_mul(d)));
    }
    out
}

/// `media` with its identifiers replaced (`$Number%05d$` widths included; `$$` is `$`).
fn fill(media: &str, id: &str, bandwidth: &str, number: u64, time: u64) -> String {
    let mut out = String::with_capacity(media.len() + 16);
    let mut rest = media;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let Some(end) = after.find('$') else {
            out.push_str(&rest[at..]);
            return out;
        };
        let (name, format) = after[..end].split_once('%').unwrap_or((&after[..end], ""));
        let width = format
            .strip_prefix('0')
            .and_then(|w| w.strip_suffix('d'))
            .and_then(|w| w.parse::<usize>().ok())
            .unwrap_or(0)
            .min(20);
        match name {
            "" => out.push('$'),
            "RepresentationID" => out.push_str(id),
            "Bandwidth" => out.push_str(bandwidth),
            "Number" => out.push_str(&format!("{number:0width$}")),
            "Time" => out.push_str(&format!("{time:0width$}")),
            _ => out.push_str(&rest[at..at + end + 2]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// An ISO 8601 duration as MPDs write them (`PT1H2M3.5S`, `P1DT2H`); `None` otherwise.
fn duration(v: &str) -> Option<Duration> {
    let rest = v.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut seconds = 0f64;
    let mut read = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            match units.iter().find(|(u, _)| *u == c) {
                Some((_, scale)) => {
                    seconds += number.parse::<f64>().ok()? * scale;
                    number.clear();
                }
                None if c.is_ascii_digit() || c == '.' => number.push(c),
                None => return None,
            }
        }
        number.is_empty().then_some(())
    };
    read(days, &[('D', 86_400.0)])?;
    read(time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)])?;
    (seconds.is_finite() && seconds < 1e9).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT2S">
  <Period id="1">
    <AdaptationSet mimeType="video/mp4">
      <SegmentTemplate media="$RepresentationID$/seg-$Time$.m4s" timescale="1000">
        <SegmentTimeline><S t="10000" d="2000" r="2"/><S d="1000"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="720p" bandwidth="3000000"/>
      <Representation id="360p" bandwidth="800000"/>
    </AdaptationSet>
  </Period>
</MPD>"#;

    const VOD: &str = r#"<MPD type="static" mediaPresentationDuration="PT9.5S">
  <Period>
    <AdaptationSet>
      <Representation id="a" bandwidth="128000">
        <SegmentTemplate media="audio/$Number%03d$.m4s" startNumber="0" duration="2" timescale="1"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

    #[test]
    fn a_live_timeline_lists_every_segment_of_every_representation() {
        let m = parse(LIVE.as_bytes()).unwrap();
        assert!(m.live);
        assert_eq!(m.max_fresh(), Some(Duration::from_secs(1)));
        assert_eq!(
            m.representations[0],
            [
                "720p/seg-10000.m4s",
                "720p/seg-12000.m4s",
                "720p/seg-14000.m4s",
                "720p/seg-16000.m4s"
            ]
        );
        assert_eq!(m.representations[1][3], "360p/seg-16000.m4s");
        let next = m.successors("http://cdn.test/live/manifest.mpd", 2);
        assert!(next.contains(&(
            "/live/720p/seg-12000.m4s".to_string(),
            vec![
                "/live/720p/seg-14000.m4s".to_string(),
                "/live/720p/seg-16000.m4s".to_string()
            ]
        )));
    }

    #[test]
    fn a_static_number_template_covers_the_presentation() {
        let m = parse(VOD.as_bytes()).unwrap();
        assert!(!m.live);
        assert_eq!(m.max_fresh(), None);
        assert_eq!(
            m.representations,
            [vec![
                "audio/000.m4s",
                "audio/001.m4s",
                "audio/002.m4s",
                "audio/003.m4s",
                "audio/004.m4s"
            ]]
        );
    }

    #[test]
    fn a_live_number_template_says_nothing_of_what_exists() {
        let live = VOD.replace("type=\"static\"", "type=\"dynamic\"");
        assert!(parse(live.as_bytes()).unwrap().representations.is_empty());
    }

    #[test]
    fn garbage_entities_and_huge_repeats_are_refused_or_bounded() {
        assert_eq!(parse(b"not xml"), Err(NotAManifest));
        assert_eq!(parse(b"<html/>"), Err(NotAManifest));
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE MPD [<!ENTITY a "aaaa">]><MPD>&a;</MPD>"#;
        assert_eq!(parse(laughs.as_bytes()), Err(NotAManifest));
        let huge = LIVE.replace("r=\"2\"", "r=\"18446744073709551615\"");
        let m = parse(huge.as_bytes()).unwrap();
        let listed: usize = m.representations.iter().map(Vec::len).sum();
        assert_eq!(listed, MAX_SEGMENTS);
    }

    #[test]
    fn iso_8601_durations_as_mpds_write_them() {
        assert_eq!(
            duration("PT1H2M3.5S"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(duration("P1DT1S"), Some(Duration::from_secs(86_401)));
        assert_eq!(duration("PT0.5S"), Some(Duration::from_millis(500)));
        for bad in ["", "1S", "PT1X", "PTS", "PT1e400S", "PT99999999999S"] {
            assert_eq!(duration(bad), None, "{bad}");
        }
        assert_eq!(
            fill("$$x$Number%05d$-$Foo$", "i", "b", 7, 0),
            "$x00007-$Foo$"
        );
    }
}
