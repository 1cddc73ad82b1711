//! Video-aware caching (`[service.media]`): class defaults for segments, playlists and
//! errors; live playlists kept no longer than their target duration allows (RFC 8216
//! §6.2.2); segments fetched ahead of players from the playlists the node stored.

use std::time::{Duration, SystemTime};

use strata_proxy::clock::Clock;
use strata_proxy::config::MediaConfig;

use crate::support::{metric_value, Edge, EdgeBuilder, Reply, TestOrigin};

/// A live playlist of five 4-second segments, 40 to 44, relative to it.
const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n\
    #EXT-X-MEDIA-SEQUENCE:40\n#EXTINF:4.0,\nseg40.m4s\n#EXTINF:4.0,\nseg41.m4s\n\
    #EXTINF:4.0,\nseg42.m4s\n#EXTINF:4.0,\nseg43.m4s\n#EXTINF:4.0,\nseg44.m4s\n";

/// An origin for `/live/720p/`: the playlist (as `cache-control` says), segments that say
/// nothing about freshness, and a 404 that says to keep it ten minutes.
async fn media_origin(playlist_cc: &'static str, playlist: String) -> TestOrigin {
    TestOrigin::start(move |req, _| {
        let path = req.path();
        if path.ends_with(".m3u8") {
            Reply::ok(playlist.clone())
                .cc(playlist_cc)
                .header("content-type", "application/vnd.apple.mpegurl")
        } else if path.ends_with("seg99.m4s") {
            Reply::status(404).cc("max-age=600")
        } else {
            Reply::ok(format!("media {path}")).header("content-type", "video/iso.segment")
        }
    })
    .await
}

fn media_edge(origin: &TestOrigin, clock: Option<Clock>, media: MediaConfig) -> EdgeBuilder {
    let builder = EdgeBuilder::new(&origin.url()).config(move |c| {
        c.services[0].media = Some(media);
    });
    match clock {
        Some(clock) => builder.clock(clock),
        None => builder,
    }
}

fn count(origin: &TestOrigin, path: &str) -> usize {
    origin.seen().iter().filter(|s| s.path() == path).count()
}

async fn metric(edge: &Edge, name: &str) -> f64 {
    let text = edge.admin("/metrics").await.text();
    metric_value(&text, name).unwrap_or(0.0)
}

#[tokio::test]
async fn segments_whose_origin_is_silent_are_kept_a_day_and_their_errors_a_second() {
    let origin = media_origin("max-age=1", LIVE.to_string()).await;
    let (clock, hand) = Clock::manual(SystemTime::now());
    let edge = media_edge(&origin, Some(clock), MediaConfig::default())
        .start()
        .await;
    // The origin says ten minutes; a segment that is about to exist gets one second.
    assert_eq!(edge.get("/live/720p/seg99.m4s").send().await.status, 404);
    let hit = edge.get("/live/720p/seg99.m4s").send().await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    hand.advance(Duration::from_millis(1500));
    let again = edge.get("/live/720p/seg99.m4s").send().await;
    assert!(!again.is_hit(), "{}", again.cache_status());
    assert_eq!(count(&origin, "/live/720p/seg99.m4s"), 2);

    // (The origin dates its answers by the real clock: the node's moves on from here.)
    assert_eq!(edge.get("/live/720p/seg40.m4s").send().await.status, 200);
    hand.advance(Duration::from_secs(6 * 3600));
    let later = edge.get("/live/720p/seg40.m4s").send().await;
    assert!(later.is_hit(), "{}", later.cache_status());
    assert_eq!(count(&origin, "/live/720p/seg40.m4s"), 1);
}

/// RFC 8216 §6.2.2: a live playlist changes every target duration; kept at most half of
/// one whatever its origin says. One that has ended (`EXT-X-ENDLIST`) keeps the origin's.
#[tokio::test]
async fn rfc8216_6_2_2_a_live_playlist_is_kept_half_a_target_duration_an_ended_one_as_told() {
    for (playlist, kept) in [
        (LIVE.to_string(), false),
        (format!("{LIVE}#EXT-X-ENDLIST\n"), true),
    ] {
        let origin = media_origin("max-age=60", playlist).await;
        let (clock, hand) = Clock::manual(SystemTime::now());
        let edge = media_edge(&origin, Some(clock), MediaConfig::default())
            .start()
            .await;
        let path = "/live/720p/index.m3u8";
        assert_eq!(edge.get(path).send().await.status, 200);
        hand.advance(Duration::from_secs(1));
        assert!(edge.get(path).send().await.is_hit());
        hand.advance(Duration::from_millis(1500));
        let later = edge.get(path).send().await;
        assert_eq!(later.is_hit(), kept, "{}", later.cache_status());
        assert_eq!(count(&origin, path), if kept { 1 } else { 2 });
    }
}

#[tokio::test]
async fn a_segment_request_fetches_the_next_ones_ahead_and_the_player_hits_them() {
    let origin = media_origin("max-age=1", LIVE.to_string()).await;
    let edge = media_edge(&origin, None, MediaConfig::default())
        .start()
        .await;
    assert_eq!(edge.get("/live/720p/index.m3u8").send().await.status, 200);
    let first = edge.get("/live/720p/seg40.m4s").send().await;
    assert_eq!(first.text(), "media /live/720p/seg40.m4s");
    // The next two (the default), in the background, each once.
    edge.eventually("segments 41 and 42 fetched ahead", || {
        count(&origin, "/live/720p/seg41.m4s") == 1 && count(&origin, "/live/720p/seg42.m4s") == 1
    })
    .await;
    assert_eq!(count(&origin, "/live/720p/seg43.m4s"), 0);
    let next = edge.get("/live/720p/seg41.m4s").send().await;
    assert!(next.is_hit(), "{}", next.cache_status());
    assert_eq!(next.text(), "media /live/720p/seg41.m4s");
    // Asking for 41 fetches 43 ahead (42 is there already).
    edge.eventually("segment 43 fetched ahead", || {
        count(&origin, "/live/720p/seg43.m4s") == 1
    })
    .await;
    assert_eq!(count(&origin, "/live/720p/seg41.m4s"), 1);
    assert_eq!(count(&origin, "/live/720p/seg42.m4s"), 1);
    assert_eq!(
        metric(&edge, "strata_prefetches_total{outcome=\"started\"}").await,
        3.0
    );
    assert_eq!(
        metric(&edge, "strata_prefetches_total{outcome=\"hit\"}").await,
        1.0
    );
    assert!(metric(&edge, "strata_prefetched_bytes_total").await > 0.0);
}

#[tokio::test]
async fn prefetches_stay_within_their_budget_and_can_be_turned_off() {
    let origin = media_origin("max-age=1", LIVE.to_string()).await;
    let edge = media_edge(
        &origin,
        None,
        MediaConfig {
            prefetch: 3,
            ..MediaConfig::default()
        },
    )
    .config(|c| c.limits.max_prefetches = 1)
    .start()
    .await;
    edge.get("/live/720p/index.m3u8").send().await;
    edge.get("/live/720p/seg40.m4s").send().await;
    edge.eventually("one segment fetched ahead", || {
        count(&origin, "/live/720p/seg41.m4s") == 1
    })
    .await;
    assert_eq!(count(&origin, "/live/720p/seg42.m4s"), 0);
    assert_eq!(
        metric(&edge, "strata_prefetches_total{outcome=\"budget\"}").await,
        1.0
    );

    let off = media_origin("max-age=1", LIVE.to_string()).await;
    let edge = media_edge(
        &off,
        None,
        MediaConfig {
            prefetch: 0,
            ..MediaConfig::default()
        },
    )
    .start()
    .await;
    edge.get("/live/720p/index.m3u8").send().await;
    edge.get("/live/720p/seg40.m4s").send().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(off.count(), 2, "nothing fetched ahead");
}

/// Bad input: a playlist path that answers garbage is served and cached as the origin
/// said, counted, and used for nothing.
#[tokio::test]
async fn a_playlist_that_does_not_parse_passes_through_and_is_counted() {
    let origin = media_origin("max-age=60", "<html>not a playlist</html>".to_string()).await;
    let edge = media_edge(&origin, None, MediaConfig::default())
        .start()
        .await;
    let got = edge.get("/live/720p/index.m3u8").send().await;
    assert_eq!(got.text(), "<html>not a playlist</html>");
    assert!(edge.get("/live/720p/index.m3u8").send().await.is_hit());
    assert_eq!(
        metric(&edge, "strata_playlists_unreadable_total").await,
        1.0
    );
    edge.get("/live/720p/seg40.m4s").send().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(origin.count(), 2);
}

/// An LL-HLS playlist: 1 s segments in 0.333 s parts, last complete segment 45.
const LL: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n\
    #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n\
    #EXT-X-PART-INF:PART-TARGET=0.333\n#EXT-X-MEDIA-SEQUENCE:44\n\
    #EXTINF:1.0,\nseg44.m4s\n#EXTINF:1.0,\nseg45.m4s\n\
    #EXT-X-PART:DURATION=0.333,URI=\"seg46.0.m4s\",INDEPENDENT=YES\n\
    #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg46.1.m4s\"\n";

/// An LL-HLS origin: blocking reloads (`_HLS_msn`) answered after `hold`, the plain
/// playlist at once.
async fn ll_origin(hold: Duration) -> TestOrigin {
    TestOrigin::start(move |req, _| {
        let reply = Reply::ok(LL)
            .cc("max-age=1")
            .header("content-type", "application/vnd.apple.mpegurl");
        if req.path_and_query.contains("_HLS_msn") {
            reply.delay(hold)
        } else {
            reply
        }
    })
    .await
}

/// RFC 8216bis §6.2.5.2: malformed directives, `_HLS_part` without `_HLS_msn`, and an
/// `_HLS_msn` more than two segments past the playlist's last are 400, and go nowhere.
#[tokio::test]
async fn rfc8216bis_6_2_5_2_bad_delivery_directives_are_400() {
    let origin = ll_origin(Duration::ZERO).await;
    let edge = media_edge(&origin, None, MediaConfig::default())
        .start()
        .await;
    for bad in [
        "_HLS_msn=abc",
        "_HLS_part=1",
        "_HLS_msn=46&_HLS_msn=47",
        "_HLS_skip=maybe",
    ] {
        let got = edge.get(&format!("/ll/index.m3u8?{bad}")).send().await;
        assert_eq!(got.status, 400, "{bad}: {}", got.cache_status());
    }
    assert_eq!(origin.count(), 0);
    assert_eq!(edge.get("/ll/index.m3u8").send().await.status, 200);
    // The last complete segment is 45: 47 may be asked for, 48 may not.
    assert_eq!(
        edge.get("/ll/index.m3u8?_HLS_msn=47").send().await.status,
        200
    );
    let far = edge.get("/ll/index.m3u8?_HLS_msn=48").send().await;
    assert_eq!(far.status, 400, "{}", far.cache_status());
}

/// Every player blocked on the same part shares one upstream request, keyed (and sent) on
/// the directives alone.
#[tokio::test]
async fn players_blocked_on_the_same_part_share_one_upstream_request() {
    let origin = ll_origin(Duration::from_millis(300)).await;
    let edge = std::sync::Arc::new(
        media_edge(&origin, None, MediaConfig::default())
            .start()
            .await,
    );
    let players: Vec<_> = (0..20)
        .map(|i| {
            let edge = std::sync::Arc::clone(&edge);
            tokio::spawn(async move {
                edge.get(&format!(
                    "/ll/index.m3u8?player={i}&_HLS_part=1&_HLS_msn=46"
                ))
                .send()
                .await
            })
        })
        .collect();
    for player in players {
        let got = player.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), LL);
    }
    assert_eq!(origin.count(), 1);
    assert_eq!(
        origin.last().path_and_query,
        "/ll/index.m3u8?_HLS_msn=46&_HLS_part=1"
    );
}

/// A blocking reload the origin holds longer than a player waits (hls.js: max(3 part
/// targets, 0.8 target durations) = 1 s here) is answered 503 before the player gives up;
/// never with the unchanged playlist.
#[tokio::test]
async fn a_blocking_reload_that_outlasts_the_player_is_503() {
    let origin = ll_origin(Duration::from_secs(5)).await;
    let edge = media_edge(&origin, None, MediaConfig::default())
        .start()
        .await;
    assert_eq!(edge.get("/ll/index.m3u8").send().await.status, 200);
    let got = edge
        .get("/ll/index.m3u8?_HLS_msn=46&_HLS_part=1")
        .send()
        .await;
    assert_eq!(got.status, 503, "{}", got.cache_status());
    assert!(
        got.cache_status().contains("playlist-not-ready"),
        "{}",
        got.cache_status()
    );
    assert_eq!(got.header("retry-after"), Some("1"));
}

/// A live playlist long enough to be compressed (over 1 KiB): 60 segments, 100 to 159.
fn long_live() -> String {
    let mut p = String::from(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:100\n",
    );
    for n in 100..160 {
        p.push_str(&format!("#EXTINF:4.0,\nseg{n}.m4s\n"));
    }
    p
}

/// The stored variant of a playlist a player asked for compressed is the compressed one:
/// it is still read (decoded, bounded) for the live cap and for prefetch.
#[tokio::test]
async fn a_playlist_stored_compressed_is_still_read() {
    let origin = media_origin("max-age=60", long_live()).await;
    let (clock, hand) = Clock::manual(SystemTime::now());
    let edge = media_edge(&origin, Some(clock), MediaConfig::default())
        .start()
        .await;
    let path = "/live/720p/index.m3u8";
    let got = edge
        .get(path)
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    edge.get("/live/720p/seg150.m4s").send().await;
    edge.eventually("segment 151 fetched ahead", || {
        count(&origin, "/live/720p/seg151.m4s") == 1
    })
    .await;
    hand.advance(Duration::from_millis(2500));
    let later = edge
        .get(path)
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert!(!later.is_hit(), "capped at 2 s: {}", later.cache_status());
}

/// A 304 that refreshes a live playlist does not lift the cap its body set.
#[tokio::test]
async fn rfc8216_6_2_2_a_revalidated_live_playlist_keeps_its_cap() {
    let origin = TestOrigin::start(|req, _| {
        if req.header("if-none-match") == Some("\"v1\"") {
            Reply::status(304).cc("max-age=60").header("etag", "\"v1\"")
        } else {
            Reply::ok(LIVE)
                .cc("max-age=60")
                .header("etag", "\"v1\"")
                .header("content-type", "application/vnd.apple.mpegurl")
        }
    })
    .await;
    let (clock, hand) = Clock::manual(SystemTime::now());
    let edge = media_edge(&origin, Some(clock), MediaConfig::default())
        .start()
        .await;
    let path = "/live/720p/index.m3u8";
    edge.get(path).send().await;
    hand.advance(Duration::from_millis(2500));
    let revalidated = edge.get(path).send().await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(origin.count(), 2);
    hand.advance(Duration::from_millis(2500));
    let again = edge.get(path).send().await;
    assert!(
        !again.is_hit(),
        "still capped after the 304: {}",
        again.cache_status()
    );
    assert_eq!(origin.count(), 3);
}

/// A playlist can name any path of its site: only media paths are fetched ahead.
#[tokio::test]
async fn only_media_paths_a_playlist_names_are_fetched_ahead() {
    let playlist = LIVE.replace("seg41.m4s", "/account/settings.json");
    let origin = media_origin("max-age=1", playlist).await;
    let edge = media_edge(&origin, None, MediaConfig::default())
        .start()
        .await;
    edge.get("/live/720p/index.m3u8").send().await;
    edge.get("/live/720p/seg40.m4s").send().await;
    edge.eventually("segment 42 fetched ahead", || {
        count(&origin, "/live/720p/seg42.m4s") == 1
    })
    .await;
    assert_eq!(count(&origin, "/account/settings.json"), 0);
}

/// Through the tiers (RFC 8216bis §6.2.5 at every hop): players blocked on one part at two
/// edges share one request to their shield and the shield one to the origin; a segment
/// asked at an edge is fetched ahead by the edge, through the shield.
#[tokio::test]
async fn blocking_reloads_and_prefetch_work_through_edge_and_shield() {
    use crate::support::PopBuilder;
    let ll = ll_origin(Duration::from_millis(300)).await;
    let media = |c: &mut strata_proxy::config::NodeConfig, _: &[String]| {
        c.services[0].media = Some(MediaConfig::default());
    };
    let shield = PopBuilder::new(&ll.url(), &["shield-1"])
        .no_ring()
        .shields()
        .config(media)
        .start()
        .await;
    let edges: Vec<std::sync::Arc<Edge>> = PopBuilder::new(&ll.url(), &["e1", "e2"])
        .no_ring()
        .parents(&[shield[0].url()])
        .config(media)
        .start()
        .await
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    let players: Vec<_> = (0..20)
        .map(|i| {
            let edge = std::sync::Arc::clone(&edges[i % 2]);
            tokio::spawn(async move {
                edge.get(&format!("/ll/index.m3u8?_HLS_msn=46&_HLS_part=1&p={i}"))
                    .send()
                    .await
            })
        })
        .collect();
    for player in players {
        let got = player.await.unwrap();
        assert_eq!(got.status, 200, "{}", got.cache_status());
        assert_eq!(got.text(), LL);
    }
    assert_eq!(ll.count(), 1, "one request reached the origin");

    let vod = media_origin("max-age=1", LIVE.to_string()).await;
    let shield = PopBuilder::new(&vod.url(), &["shield-2"])
        .no_ring()
        .shields()
        .config(media)
        .start()
        .await;
    let edge = PopBuilder::new(&vod.url(), &["e3"])
        .no_ring()
        .parents(&[shield[0].url()])
        .config(media)
        .start()
        .await
        .remove(0);
    edge.get("/live/720p/index.m3u8").send().await;
    edge.get("/live/720p/seg40.m4s").send().await;
    edge.eventually(
        "segments 41 and 42 fetched ahead through the shield",
        || count(&vod, "/live/720p/seg41.m4s") == 1 && count(&vod, "/live/720p/seg42.m4s") == 1,
    )
    .await;
    let next = edge.get("/live/720p/seg41.m4s").send().await;
    assert!(next.is_hit(), "{}", next.cache_status());
    assert_eq!(count(&vod, "/live/720p/seg41.m4s"), 1);
}

/// RFC 8216bis §4.4.5.3 (`EXT-X-PRELOAD-HINT`): players ask for a part before it exists;
/// the origin holds the request and sends the part as it is produced. Every player asking
/// meanwhile shares that one request and gets the part streamed as it comes.
#[tokio::test]
async fn players_asking_for_a_hinted_part_share_one_request_streamed_as_produced() {
    use crate::support::origin::Piece;
    use bytes::Bytes;
    let origin = TestOrigin::start(|_, _| {
        Reply::ok("")
            .cc("max-age=60")
            .header("content-type", "video/iso.segment")
            .pieces(vec![
                Piece {
                    data: Bytes::from_static(b"moof"),
                    delay: Duration::from_millis(300),
                    gate: None,
                },
                Piece {
                    data: Bytes::from_static(b"mdat"),
                    delay: Duration::from_millis(100),
                    gate: None,
                },
            ])
    })
    .await;
    let edge = std::sync::Arc::new(
        media_edge(&origin, None, MediaConfig::default())
            .start()
            .await,
    );
    let players: Vec<_> = (0..20)
        .map(|_| {
            let edge = std::sync::Arc::clone(&edge);
            tokio::spawn(async move { edge.get("/ll/seg46.1.m4s").send().await })
        })
        .collect();
    for player in players {
        let got = player.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "moofmdat");
    }
    assert_eq!(origin.count(), 1);
}

/// DASH (ISO/IEC 23009-1): the segments a manifest's template names are fetched ahead like
/// a playlist's; a live manifest is kept no longer than half its update period.
#[tokio::test]
async fn a_dash_manifests_segments_are_fetched_ahead_and_a_live_one_is_kept_briefly() {
    const VOD_MPD: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT20S">
  <Period><AdaptationSet mimeType="video/mp4">
    <SegmentTemplate media="$RepresentationID$/chunk-$Number%05d$.m4s" startNumber="1" duration="4" timescale="1"/>
    <Representation id="v1" bandwidth="1000000"/>
  </AdaptationSet></Period>
</MPD>"#;
    let origin = TestOrigin::start(|req, _| {
        let path = req.path();
        if path.ends_with(".mpd") {
            let live = path.contains("live");
            let body = match live {
                true => VOD_MPD.replace(
                    "type=\"static\"",
                    "type=\"dynamic\" minimumUpdatePeriod=\"PT2S\"",
                ),
                false => VOD_MPD.to_string(),
            };
            Reply::ok(body)
                .cc("max-age=30")
                .header("content-type", "application/dash+xml")
        } else {
            Reply::ok(format!("media {path}")).header("content-type", "video/iso.segment")
        }
    })
    .await;
    let (clock, hand) = Clock::manual(SystemTime::now());
    let edge = media_edge(&origin, Some(clock), MediaConfig::default())
        .start()
        .await;
    edge.get("/vod/manifest.mpd").send().await;
    edge.get("/vod/v1/chunk-00002.m4s").send().await;
    edge.eventually("chunks 3 and 4 fetched ahead", || {
        count(&origin, "/vod/v1/chunk-00003.m4s") == 1
            && count(&origin, "/vod/v1/chunk-00004.m4s") == 1
    })
    .await;
    assert_eq!(
        count(&origin, "/vod/v1/chunk-00006.m4s"),
        0,
        "past the end: never"
    );
    let next = edge.get("/vod/v1/chunk-00003.m4s").send().await;
    assert!(next.is_hit(), "{}", next.cache_status());

    // The origin says 30 s; a live manifest updated every 2 s is kept 1 s.
    edge.get("/live/manifest.mpd").send().await;
    hand.advance(Duration::from_millis(500));
    assert!(edge.get("/live/manifest.mpd").send().await.is_hit());
    hand.advance(Duration::from_millis(1000));
    assert!(!edge.get("/live/manifest.mpd").send().await.is_hit());
}

/// An origin that never produces a hinted part: players waiting on it (one upstream
/// request per round between them) get a 504 once the first-byte timeouts pass, and the
/// node goes on serving the stream.
#[tokio::test]
async fn players_held_on_a_hinted_part_the_origin_never_produces_get_a_clean_504() {
    let origin = TestOrigin::start(|req, _| {
        if req.path().ends_with("seg46.1.m4s") {
            return Reply::ok("late").delay(Duration::from_secs(30));
        }
        Reply::ok(LL)
            .cc("max-age=1")
            .header("content-type", "application/vnd.apple.mpegurl")
    })
    .await;
    let edge = std::sync::Arc::new(
        media_edge(&origin, None, MediaConfig::default())
            .config(|c| c.limits.upstream_first_byte_timeout.0 = Duration::from_secs(1))
            .start()
            .await,
    );
    edge.get("/ll/index.m3u8").send().await;
    let players: Vec<_> = (0..10)
        .map(|_| {
            let edge = std::sync::Arc::clone(&edge);
            tokio::spawn(async move { edge.get("/ll/seg46.1.m4s").send().await })
        })
        .collect();
    for player in players {
        let got = player.await.unwrap();
        assert_eq!(got.status, 504, "{}", got.cache_status());
        assert!(
            got.cache_status().contains("detail="),
            "{}",
            got.cache_status()
        );
    }
    // Waiters of a failed fill retry together, one request per round, three rounds at most.
    let asked = count(&origin, "/ll/seg46.1.m4s");
    assert!(asked <= 3, "{asked} requests for 10 players");
    assert_eq!(edge.get("/ll/index.m3u8").send().await.status, 200);
}

/// A live playlist whose segment list jumps backwards (a restarted packager starting its
/// media sequence again): the node believes the new playlist, so blocking reloads for the
/// new numbers are held, not refused.
#[tokio::test]
async fn a_playlist_that_jumps_backwards_is_believed() {
    let restarted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = std::sync::Arc::clone(&restarted);
    let origin = TestOrigin::start(move |_, _| {
        let body = match r.load(std::sync::atomic::Ordering::SeqCst) {
            false => LL.to_string(),
            true => LL
                .replace("MEDIA-SEQUENCE:44", "MEDIA-SEQUENCE:3")
                .replace("seg44", "seg3")
                .replace("seg45", "seg4")
                .replace("seg46", "seg5"),
        };
        Reply::ok(body)
            .cc("max-age=1")
            .header("content-type", "application/vnd.apple.mpegurl")
    })
    .await;
    let (clock, hand) = Clock::manual(SystemTime::now());
    let edge = media_edge(&origin, Some(clock), MediaConfig::default())
        .start()
        .await;
    edge.get("/ll/index.m3u8").send().await;
    restarted.store(true, std::sync::atomic::Ordering::SeqCst);
    hand.advance(Duration::from_secs(2));
    let after = edge.get("/ll/index.m3u8").send().await;
    assert!(
        after.text().contains("MEDIA-SEQUENCE:3"),
        "{}",
        after.text()
    );
    // Segment 6 is two past the new last (4): allowed. Segment 7 is not, as the new
    // playlist counts (the old one, at 45, would have allowed it).
    let blocked = edge.get("/ll/index.m3u8?_HLS_msn=6").send().await;
    assert_ne!(blocked.status, 400, "{}", blocked.cache_status());
    let too_far = edge.get("/ll/index.m3u8?_HLS_msn=7").send().await;
    assert_eq!(too_far.status, 400, "{}", too_far.cache_status());
}
