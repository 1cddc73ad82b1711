//! A per-origin circuit breaker. Pure logic: time is passed in.
//!
//! ```text
//! closed ──transport failures in a row, or a server-error rate──▶ open
//!   ▲                                                              │ cool-down
//!   └──────── `successes` successes ─── half-open (one at a time) ◀┘
//!                                           │ transport failure: open again
//! ```
//!
//! The breaker orders and skips origins; it never fails a request closed by itself. When
//! every origin of a pool is open, requests still go to the least-bad one (Envoy's panic
//! threshold behaviour, see `OriginSet::panic_pick`), so a false positive costs a detour,
//! never an outage. What opens it is chosen so that one client, or one URL, cannot:
//!
//! - **Transport failures in a row** (`failures`, with no success between): a connection
//!   refused, reset or timed out, or a request sent with nothing unusual that got no
//!   response head in time or a broken one. Failures to *connect* say nothing about any
//!   URL and count as they come; failures of a *sent request* count only when the run
//!   spans at least `distinct_urls` different URLs, so one URL that hangs cannot open it.
//! - **A server-error rate**: over the last `window`, at least `min_responses` answers, a
//!   share of 5xx answers (500, 502, 503, 504 and others; not 501 or 505, which are about
//!   the request) at or above `error_rate`, from at least `distinct_urls` URLs.
//!
//! Failures the client causes (its body invalid or too slow, its reset or disconnect)
//! are never recorded: the request path ends those attempts as [`Verdict::Neutral`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Buckets the server-error window is divided into.
const BUCKETS: usize = 10;

/// Server-error URLs remembered for the distinct-URL rule.
const ERROR_URLS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Transport failures in a row that open the breaker.
    pub failures: u32,
    /// Successes in half-open that close it.
    pub successes: u32,
    /// Time open before trying again.
    pub cooldown: Duration,
    /// Share of 5xx answers in the window that opens it; above 1 turns the rule off.
    pub error_rate: f64,
    /// The window the rate is measured over.
    pub window: Duration,
    /// Answers in the window before the rate is judged.
    pub min_responses: u32,
    /// Different URLs a run of request failures, or the window's 5xx answers, must span.
    pub distinct_urls: u32,
}

impl BreakerConfig {
    /// A breaker driven by connection failures only (ring peers, parent shields: a peer
    /// that answers is up, whatever it answers).
    pub fn transport_only(failures: u32, successes: u32, cooldown: Duration) -> Self {
        Self {
            failures,
            successes,
            cooldown,
            error_rate: f64::INFINITY,
            window: Duration::from_secs(10),
            min_responses: u32::MAX,
            distinct_urls: 1,
        }
    }
}

/// What one exchange with the origin says about its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An answer that is not a server error.
    Success,
    /// A 5xx answer for the URL with this hash.
    ServerError { url: u64 },
    /// No connection: refused, timed out, TLS failed (or an active probe failed).
    ConnectFailure,
    /// A request sent with nothing unusual got no response head in time, or a broken one.
    RequestFailure { url: u64 },
    /// Says nothing about the origin (the client's fault, or ours).
    Neutral,
}

impl Verdict {
    /// The verdict on an answer with `status` for the URL hashed as `url`.
    pub fn for_status(status: u16, url: u64) -> Self {
        match status {
            501 | 505 => Verdict::Success,
            500..=599 => Verdict::ServerError { url },
            _ => Verdict::Success,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { since: Instant },
    HalfOpen { successes: u32, probing: bool },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    start: Option<Instant>,
    responses: u32,
    errors: u32,
}

/// The current run of transport failures.
#[derive(Debug, Clone, Default)]
struct Run {
    failures: u32,
    /// Failures to connect in the run (they need no URL diversity).
    connect_failures: u32,
    urls: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    run: Run,
    buckets: [Bucket; BUCKETS],
    /// Bucket slots count from the first answer recorded.
    epoch: Option<Instant>,
    error_urls: VecDeque<(Instant, u64)>,
}

// === impl Breaker ===

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            run: Run::default(),
            buckets: [Bucket::default(); BUCKETS],
            epoch: None,
            error_urls: VecDeque::new(),
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// A short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self.state {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        }
    }

    /// When it opened, while it is open: the least-bad origin is the one open longest.
    pub fn opened_at(&self) -> Option<Instant> {
        match self.state {
            BreakerState::Open { since } => Some(since),
            _ => None,
        }
    }

    /// Whether a request may go to this origin now. In half-open, one at a time.
    pub fn allows(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { since } if now.duration_since(since) >= self.config.cooldown => {
                self.state = BreakerState::HalfOpen {
                    successes: 0,
                    probing: true,
                };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probing: true, .. } => false,
            BreakerState::HalfOpen {
                successes,
                probing: false,
            } => {
                self.state = BreakerState::HalfOpen {
                    successes,
                    probing: true,
                };
                true
            }
        }
    }

    /// Whether requests are refused now, without starting a half-open test.
    pub fn refuses(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => false,
            BreakerState::Open { since } => now.duration_since(since) < self.config.cooldown,
            BreakerState::HalfOpen { probing, .. } => probing,
        }
    }

    /// A half-open test request ended without a verdict (cancelled, never sent, the
    /// client's fault): let the next one through instead of waiting forever.
    pub fn abandon(&mut self) {
        if let BreakerState::HalfOpen {
            successes,
            probing: true,
        } = self.state
        {
            self.state = BreakerState::HalfOpen {
                successes,
                probing: false,
            };
        }
    }

    /// Records the verdict on one exchange. Returns true when this opened the breaker.
    pub fn record(&mut self, verdict: Verdict, now: Instant) -> bool {
        let was_open = matches!(self.state, BreakerState::Open { .. });
        match verdict {
            Verdict::Neutral => self.abandon(),
            Verdict::Success => {
                self.count_response(now, false);
                self.run = Run::default();
                self.success(now);
            }
            Verdict::ServerError { url } => {
                self.count_response(now, true);
                self.error_urls.push_back((now, url));
                if self.error_urls.len() > ERROR_URLS {
                    self.error_urls.pop_front();
                }
                // The origin answered: the transport is fine.
                self.run = Run::default();
                if self.error_rate_exceeded(now) {
                    self.open(now);
                } else {
                    self.abandon();
                }
            }
            Verdict::ConnectFailure | Verdict::RequestFailure { .. } => {
                self.run.failures = self.run.failures.saturating_add(1);
                match verdict {
                    Verdict::RequestFailure { url } => {
                        if !self.run.urls.contains(&url)
                            && self.run.urls.len() < self.config.distinct_urls as usize
                        {
                            self.run.urls.push(url);
                        }
                    }
                    _ => self.run.connect_failures = self.run.connect_failures.saturating_add(1),
                }
                // Enough failures to connect (they say nothing about URLs), or enough
                // failures in all that span enough URLs.
                let open = self.run.connect_failures >= self.config.failures
                    || (self.run.failures >= self.config.failures
                        && self.run.urls.len() >= self.config.distinct_urls as usize);
                match self.state {
                    // A test request failed, or an open origin still fails: (re)open.
                    BreakerState::HalfOpen { .. } | BreakerState::Open { .. } => self.open(now),
                    BreakerState::Closed if open => self.open(now),
                    BreakerState::Closed => {}
                }
            }
        }
        !was_open && matches!(self.state, BreakerState::Open { .. })
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open { since: now };
    }

    fn success(&mut self, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed => BreakerState::Closed,
            BreakerState::HalfOpen { successes, .. } if successes + 1 >= self.config.successes => {
                self.forget_errors();
                BreakerState::Closed
            }
            BreakerState::HalfOpen { successes, .. } => BreakerState::HalfOpen {
                successes: successes + 1,
                probing: false,
            },
            // A success after the cool-down (an active probe, or a request sent while
            // every origin was open) starts the half-open test.
            BreakerState::Open { since } if now.duration_since(since) >= self.config.cooldown => {
                if self.config.successes <= 1 {
                    self.forget_errors();
                    BreakerState::Closed
                } else {
                    BreakerState::HalfOpen {
                        successes: 1,
                        probing: false,
                    }
                }
            }
            open @ BreakerState::Open { .. } => open,
        };
    }

    /// A closed breaker starts from a clean window: the errors that opened it are past.
    fn forget_errors(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
        self.error_urls.clear();
    }

    fn bucket_width(&self) -> Duration {
        (self.config.window / BUCKETS as u32).max(Duration::from_millis(1))
    }

    fn count_response(&mut self, now: Instant, error: bool) {
        let width = self.bucket_width();
        let epoch = *self.epoch.get_or_insert(now);
        // Buckets are reused round-robin: an instant maps to its width-sized slice of
        // time, modulo the bucket count; a bucket older than its width starts over.
        let ticks = now.saturating_duration_since(epoch).as_nanos() / width.as_nanos().max(1);
        let bucket = &mut self.buckets[(ticks % BUCKETS as u128) as usize];
        if bucket
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= width)
        {
            *bucket = Bucket {
                start: Some(now),
                ..Bucket::default()
            };
        }
        bucket.responses += 1;
        bucket.errors += u32::from(error);
    }

    fn error_rate_exceeded(&self, now: Instant) -> bool {
        if self.config.error_rate > 1.0 {
            return false;
        }
        let window = self.config.window;
        let (mut responses, mut errors) = (0u64, 0u64);
        for b in &self.buckets {
            if b.start
                .is_some_and(|s| now.saturating_duration_since(s) < window)
            {
                responses += u64::from(b.responses);
                errors += u64::from(b.errors);
            }
        }
        if responses < u64::from(self.config.min_responses) || responses == 0 {
            return false;
        }
        if (errors as f64) < self.config.error_rate * responses as f64 {
            return false;
        }
        let mut urls: Vec<u64> = self
            .error_urls
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) < window)
            .map(|(_, u)| *u)
            .collect();
        urls.sort_unstable();
        urls.dedup();
        urls.len() >= self.config.distinct_urls as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failures: 3,
            successes: 2,
            cooldown: Duration::from_secs(10),
            error_rate: 0.5,
            window: Duration::from_secs(10),
            min_responses: 10,
            distinct_urls: 3,
        }
    }

    fn breaker() -> Breaker {
        Breaker::new(config())
    }

    fn open_by_connect_failures(b: &mut Breaker, t: Instant) {
        for _ in 0..3 {
            b.record(Verdict::ConnectFailure, t);
        }
        assert_eq!(b.name(), "open");
    }

    #[test]
    fn connect_failures_in_a_row_open_it_and_a_success_resets_the_run() {
        let t = Instant::now();
        let mut b = breaker();
        b.record(Verdict::ConnectFailure, t);
        b.record(Verdict::ConnectFailure, t);
        b.record(Verdict::Success, t);
        b.record(Verdict::ConnectFailure, t);
        b.record(Verdict::ConnectFailure, t);
        assert!(b.allows(t), "a success reset the run");
        assert!(
            b.record(Verdict::ConnectFailure, t),
            "reports that it opened"
        );
        assert_eq!(b.name(), "open");
        assert!(!b.allows(t + Duration::from_secs(5)), "skipped while open");
    }

    #[test]
    fn a_request_failure_in_the_run_does_not_stop_connect_failures_from_opening_it() {
        // The origin crashes: the request in flight is reset, every later one refused.
        let t = Instant::now();
        let mut b = breaker();
        b.record(Verdict::RequestFailure { url: 1 }, t);
        b.record(Verdict::ConnectFailure, t);
        b.record(Verdict::ConnectFailure, t);
        assert_eq!(b.name(), "closed");
        b.record(Verdict::ConnectFailure, t);
        assert_eq!(b.name(), "open");
    }

    #[test]
    fn one_url_that_hangs_cannot_open_it() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..50 {
            b.record(Verdict::RequestFailure { url: 7 }, t);
        }
        assert_eq!(b.name(), "closed");
        b.record(Verdict::RequestFailure { url: 8 }, t);
        assert_eq!(b.name(), "closed");
        b.record(Verdict::RequestFailure { url: 9 }, t);
        assert_eq!(b.name(), "open", "three URLs failing in a row");
    }

    #[test]
    fn server_errors_from_one_url_never_open_it() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..100 {
            b.record(Verdict::ServerError { url: 1 }, t);
        }
        assert_eq!(b.name(), "closed");
    }

    #[test]
    fn a_few_server_errors_below_the_minimum_volume_never_open_it() {
        let t = Instant::now();
        let mut b = breaker();
        for url in 0..9 {
            b.record(Verdict::ServerError { url }, t);
        }
        assert_eq!(b.name(), "closed", "9 answers < min_responses");
        b.record(Verdict::ServerError { url: 9 }, t);
        assert_eq!(b.name(), "open");
    }

    #[test]
    fn server_error_rate_below_the_threshold_keeps_it_closed() {
        let t = Instant::now();
        let mut b = breaker();
        for i in 0..100u64 {
            let v = if i % 3 == 0 {
                Verdict::ServerError { url: i }
            } else {
                Verdict::Success
            };
            b.record(v, t);
        }
        assert_eq!(b.name(), "closed", "a third of answers are 5xx");
    }

    #[test]
    fn server_errors_age_out_of_the_window() {
        let t = Instant::now();
        let mut b = breaker();
        for url in 0..9 {
            b.record(Verdict::ServerError { url }, t);
        }
        let later = t + Duration::from_secs(11);
        b.record(Verdict::ServerError { url: 9 }, later);
        assert_eq!(b.name(), "closed", "the first nine are out of the window");
    }

    #[test]
    fn status_501_and_505_are_about_the_request() {
        assert_eq!(Verdict::for_status(501, 1), Verdict::Success);
        assert_eq!(Verdict::for_status(505, 1), Verdict::Success);
        assert_eq!(Verdict::for_status(503, 1), Verdict::ServerError { url: 1 });
        assert_eq!(Verdict::for_status(404, 1), Verdict::Success);
    }

    #[test]
    fn neutral_verdicts_change_nothing() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..100 {
            b.record(Verdict::Neutral, t);
        }
        assert_eq!(b.name(), "closed");
    }

    #[test]
    fn half_open_after_cooldown_lets_one_request_through() {
        let t = Instant::now();
        let mut b = breaker();
        open_by_connect_failures(&mut b, t);
        let later = t + Duration::from_secs(10);
        assert!(b.allows(later));
        assert_eq!(b.name(), "half-open");
        assert!(!b.allows(later), "one test at a time");
        b.record(Verdict::Success, later);
        assert!(b.allows(later));
        b.record(Verdict::Success, later);
        assert_eq!(b.name(), "closed");
    }

    #[test]
    fn abandoned_half_open_test_lets_the_next_one_through() {
        let t = Instant::now();
        let mut b = breaker();
        open_by_connect_failures(&mut b, t);
        let later = t + Duration::from_secs(10);
        assert!(b.allows(later));
        assert!(b.refuses(later));
        b.record(Verdict::Neutral, later);
        assert!(!b.refuses(later));
        assert!(b.allows(later));
    }

    #[test]
    fn failure_in_half_open_reopens() {
        let t = Instant::now();
        let mut b = breaker();
        open_by_connect_failures(&mut b, t);
        let later = t + Duration::from_secs(11);
        assert!(b.allows(later));
        b.record(Verdict::RequestFailure { url: 1 }, later);
        assert_eq!(b.state(), BreakerState::Open { since: later });
        assert!(!b.allows(later + Duration::from_secs(9)));
        assert!(b.allows(later + Duration::from_secs(10)));
    }

    #[test]
    fn probe_success_after_cooldown_starts_recovery() {
        let t = Instant::now();
        let mut b = breaker();
        open_by_connect_failures(&mut b, t);
        b.record(Verdict::Success, t + Duration::from_secs(1));
        assert_eq!(b.name(), "open", "too early");
        b.record(Verdict::Success, t + Duration::from_secs(12));
        assert_eq!(b.name(), "half-open");
        b.record(Verdict::Success, t + Duration::from_secs(13));
        assert_eq!(b.name(), "closed");
    }

    #[test]
    fn transport_only_breakers_ignore_server_errors() {
        let t = Instant::now();
        let mut b = Breaker::new(BreakerConfig::transport_only(1, 1, Duration::from_secs(1)));
        for url in 0..1000 {
            b.record(Verdict::ServerError { url }, t);
        }
        assert_eq!(b.name(), "closed");
        b.record(Verdict::ConnectFailure, t);
        assert_eq!(b.name(), "open");
    }
}
