//! What a peer that has not authenticated may cost the gateway: connections per source and
//! their opening rate, the global connection cap (shedding the oldest unauthenticated
//! connection when it is reached), request-body bytes buffered before a signature check, and
//! the audit records its refusals produce. Sources are IPv4 addresses or IPv6 /64 prefixes
//! (one host usually holds a whole /64).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::config::Limits;
use super::lock;

/// Descriptors kept for everything but connections (audit log, recordings, listener, logs).
const FD_RESERVE: u64 = 64;
/// Sources tracked at once; past this, idle ones are forgotten first.
const MAX_SOURCES: usize = 65_536;

/// A connection's origin for per-source limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Source(IpAddr);

impl Source {
    pub(super) fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Source(IpAddr::V6(prefix.into()))
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The connections the gateway serves at once: [`Limits::max_connections`], but never more
/// than two thirds of the descriptors left after [`FD_RESERVE`] (a session also holds a
/// recording file), so that running out of descriptors is the exception.
pub(super) fn connection_cap(limits: &Limits) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let by_fds = soft.map_or(usize::MAX, |soft| {
        usize::try_from(soft.saturating_sub(FD_RESERVE) / 3 * 2).unwrap_or(usize::MAX)
    });
    let cap = limits.max_connections.min(by_fds).max(1);
    if cap < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            cap,
            fd_limit = soft,
            "max_connections lowered to fit the file-descriptor limit; raise `ulimit -n` to serve more"
        );
    }
    cap
}

#[derive(Default)]
struct SourceState {
    /// Open connections that have not authenticated.
    unauthenticated: usize,
    /// Body bytes reserved by its requests not yet authenticated.
    body_bytes: usize,
    /// Token bucket of new connections.
    tokens: f64,
    refilled: Option<Instant>,
}

#[derive(Default)]
struct State {
    sources: HashMap<Source, SourceState>,
    /// Unauthenticated connections by age, to shed the oldest.
    waiting: BTreeMap<u64, CancellationToken>,
    next_id: u64,
}

/// Per-source connection accounting and the global cap's shedding.
pub(super) struct Admission {
    limits: Limits,
    state: Mutex<State>,
    body_bytes: Arc<Semaphore>,
}

/// Why a new connection is closed on accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The source opens connections faster than [`Limits::connection_rate_per_source`].
    Rate,
    /// The source holds [`Limits::max_unauthenticated_per_source`] unauthenticated ones.
    Unauthenticated,
}

impl Admission {
    pub(super) fn new(limits: Limits) -> Admission {
        let bytes = limits
            .max_unauthenticated_body_bytes
            .min(Semaphore::MAX_PERMITS);
        Admission {
            limits,
            state: Mutex::default(),
            body_bytes: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// Admits a new connection from `source`, counted as unauthenticated until
    /// [`Ticket::authenticated`].
    pub(super) fn admit(self: &Arc<Self>, source: Source) -> Result<Ticket, Refusal> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        if state.sources.len() >= MAX_SOURCES && !state.sources.contains_key(&source) {
            state
                .sources
                .retain(|_, entry| entry.unauthenticated > 0 || entry.body_bytes > 0);
        }
        let entry = state.sources.entry(source).or_default();
        let burst = f64::from(self.limits.connection_burst_per_source.max(1));
        let rate = f64::from(self.limits.connection_rate_per_source.max(1));
        entry.tokens = match entry.refilled {
            None => burst,
            Some(then) => (entry.tokens + now.duration_since(then).as_secs_f64() * rate).min(burst),
        };
        entry.refilled = Some(now);
        if entry.tokens < 1.0 {
            return Err(Refusal::Rate);
        }
        entry.tokens -= 1.0;
        if entry.unauthenticated >= self.limits.max_unauthenticated_per_source.max(1) {
            return Err(Refusal::Unauthenticated);
        }
        entry.unauthenticated += 1;
        let id = state.next_id;
        state.next_id += 1;
        let shed = CancellationToken::new();
        state.waiting.insert(id, shed.clone());
        Ok(Ticket {
            admission: self.clone(),
            source,
            id,
            shed,
            pending: true,
        })
    }

    /// Closes the oldest unauthenticated connection but `keep` (its task sees
    /// [`Ticket::shed`]), to make room under the global cap or when descriptors run out.
    /// Whether there was one.
    pub(super) fn shed_oldest(&self, keep: Option<&Ticket>) -> bool {
        let mut state = lock(&self.state);
        let oldest = state
            .waiting
            .keys()
            .find(|&&id| keep.is_none_or(|keep| keep.id != id))
            .copied();
        match oldest.and_then(|id| state.waiting.remove(&id)) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Reserves `bytes` of the global budget, and of `source`'s share of it
    /// ([`Limits::unauthenticated_body_bytes_per_source`]), for a body read before
    /// authentication; `None` when either is spent (answer 503 rather than wait: the holders
    /// may be slow on purpose).
    pub(super) fn reserve_body(
        self: &Arc<Self>,
        source: Source,
        bytes: usize,
    ) -> Option<BodyReservation> {
        let share = self.limits.unauthenticated_body_bytes_per_source();
        let mut state = lock(&self.state);
        let held = state
            .sources
            .get(&source)
            .map_or(0, |entry| entry.body_bytes);
        if held.saturating_add(bytes) > share {
            return None;
        }
        let permit = self
            .body_bytes
            .clone()
            .try_acquire_many_owned(u32::try_from(bytes).ok()?)
            .ok()?;
        state.sources.entry(source).or_default().body_bytes += bytes;
        Some(BodyReservation {
            admission: self.clone(),
            source,
            bytes,
            _permit: permit,
        })
    }

    /// Ends a connection's unauthenticated count; one that authenticated also gets its
    /// token back, so that the rate limits only connections that never prove who they are
    /// (a busy client or agent host opens many that do).
    fn release(&self, source: Source, id: u64, refund: bool) {
        let burst = f64::from(self.limits.connection_burst_per_source.max(1));
        let mut state = lock(&self.state);
        state.waiting.remove(&id);
        if let Some(entry) = state.sources.get_mut(&source) {
            entry.unauthenticated = entry.unauthenticated.saturating_sub(1);
            if refund {
                entry.tokens = (entry.tokens + 1.0).min(burst);
            }
        }
    }
}

/// Body bytes reserved until the request's signature is checked.
pub(super) struct BodyReservation {
    admission: Arc<Admission>,
    source: Source,
    bytes: usize,
    _permit: OwnedSemaphorePermit,
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        let mut state = lock(&self.admission.state);
        if let Some(entry) = state.sources.get_mut(&self.source) {
            entry.body_bytes = entry.body_bytes.saturating_sub(self.bytes);
        }
    }
}

/// One admitted connection's place in the per-source accounting.
pub(super) struct Ticket {
    admission: Arc<Admission>,
    source: Source,
    id: u64,
    shed: CancellationToken,
    /// Still counted as unauthenticated.
    pending: bool,
}

impl Ticket {
    /// The connection proved who it is (or was handed to the relay, which closes unopened
    /// data channels on its own): it no longer counts against its source, nor may be shed.
    pub(super) fn authenticated(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.admission.release(self.source, self.id, true);
        }
    }

    /// Cancelled when the connection is shed.
    pub(super) fn shed(&self) -> CancellationToken {
        self.shed.clone()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.admission.release(self.source, self.id, false);
        }
    }
}

/// Rate-limited audit of refusals of unauthenticated requests: per source, the first
/// [`Limits::refusal_records_per_source`] of each interval are recorded one by one, the rest
/// counted and written as one summary when the interval ends; over all sources, at most
/// [`Limits::refusal_records_total`] are recorded per interval, the rest counted in one
/// summary for all. Junk can neither fill the disk with audit records nor hide in it.
pub(super) struct RefusalAudit {
    per_interval: u32,
    total_per_interval: u32,
    interval: Duration,
    windows: Mutex<Windows>,
    /// Summaries of windows ended while making room, for the next sweep.
    pending: Mutex<Vec<Suppressed>>,
}

struct Windows {
    by_source: HashMap<Source, Window>,
    /// Over all sources: refusals recorded in the current interval…
    all: Window,
    /// …and those not counted per source (over the total, or the table was full), summarised
    /// for all sources together.
    overflow: u64,
}

struct Window {
    started: Instant,
    recorded: u32,
    suppressed: u64,
}

/// Refusals from `source` (`None`: from any) not recorded one by one during the `secs`
/// seconds before now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Suppressed {
    pub(super) source: Option<Source>,
    pub(super) count: u64,
    pub(super) secs: u64,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            recorded: 0,
            suppressed: 0,
        }
    }
}

impl RefusalAudit {
    pub(super) fn new(limits: &Limits) -> RefusalAudit {
        let now = Instant::now();
        RefusalAudit {
            per_interval: limits.refusal_records_per_source,
            total_per_interval: limits.refusal_records_total,
            interval: Duration::from_secs(limits.refusal_audit_interval_secs.max(1)),
            windows: Mutex::new(Windows {
                by_source: HashMap::new(),
                all: Window::new(now),
                overflow: 0,
            }),
            pending: Mutex::default(),
        }
    }

    pub(super) fn interval(&self) -> Duration {
        self.interval
    }

    /// Counts one refusal from `source`: whether to record it, and the summary of the
    /// source's previous interval if that just ended with refusals left unrecorded.
    pub(super) fn refusal(&self, source: Source) -> (bool, Option<Suppressed>) {
        let now = Instant::now();
        let mut windows = lock(&self.windows);
        let windows = &mut *windows;
        if now.duration_since(windows.all.started) >= self.interval {
            windows.all = Window::new(now);
        }
        if windows.by_source.len() >= MAX_SOURCES && !windows.by_source.contains_key(&source) {
            let expired = Self::take_expired(self.interval, &mut windows.by_source, now);
            lock(&self.pending).extend(expired);
        }
        let known = windows.by_source.contains_key(&source);
        let full = windows.by_source.len() >= MAX_SOURCES;
        if !known && (full || windows.all.recorded >= self.total_per_interval) {
            // A source not seen this interval, over the total: counted with all the others.
            windows.overflow += 1;
            return (false, None);
        }
        let window = windows
            .by_source
            .entry(source)
            .or_insert_with(|| Window::new(now));
        let mut summary = None;
        if now.duration_since(window.started) >= self.interval {
            if window.suppressed > 0 {
                summary = Some(Suppressed {
                    source: Some(source),
                    count: window.suppressed,
                    secs: now.duration_since(window.started).as_secs(),
                });
            }
            *window = Window::new(now);
        }
        let record =
            window.recorded < self.per_interval && windows.all.recorded < self.total_per_interval;
        match record {
            true => {
                window.recorded += 1;
                windows.all.recorded += 1;
            }
            false => window.suppressed += 1,
        }
        (record, summary)
    }

    /// Summaries of every interval that has ended (called each interval, and at shutdown
    /// with `all`), forgetting the sources that went quiet.
    pub(super) fn sweep(&self, all: bool) -> Vec<Suppressed> {
        let now = Instant::now();
        let mut summaries = std::mem::take(&mut *lock(&self.pending));
        let mut windows = lock(&self.windows);
        let overflow = std::mem::take(&mut windows.overflow);
        if overflow > 0 {
            summaries.push(Suppressed {
                source: None,
                count: overflow,
                secs: now.duration_since(windows.all.started).as_secs(),
            });
        }
        if all {
            summaries.extend(
                windows
                    .by_source
                    .drain()
                    .filter(|(_, window)| window.suppressed > 0)
                    .map(|(source, window)| Suppressed {
                        source: Some(source),
                        count: window.suppressed,
                        secs: now.duration_since(window.started).as_secs(),
                    }),
            );
        } else {
            summaries.extend(Self::take_expired(
                self.interval,
                &mut windows.by_source,
                now,
            ));
        }
        summaries
    }

    fn take_expired(
        interval: Duration,
        windows: &mut HashMap<Source, Window>,
        now: Instant,
    ) -> Vec<Suppressed> {
        let mut summaries = Vec::new();
        windows.retain(|source, window| {
            let elapsed = now.duration_since(window.started);
            if elapsed < interval {
                return true;
            }
            if window.suppressed > 0 {
                summaries.push(Suppressed {
                    source: Some(*source),
                    count: window.suppressed,
                    secs: elapsed.as_secs(),
                });
            }
            false
        });
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_their_64_prefix_and_mapped_ipv4_is_ipv4() {
        let a = Source::of("2001:db8::1".parse().unwrap());
        let b = Source::of("2001:db8::ffff:1".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8::/64");
        let mapped = Source::of("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped, Source::of("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn per_source_cap_counts_only_unauthenticated_connections() {
        let limits = Limits {
            max_unauthenticated_per_source: 2,
            ..Limits::default()
        };
        let admission = Arc::new(Admission::new(limits));
        let source = Source::of("192.0.2.1".parse().unwrap());
        let mut first = admission.admit(source).unwrap();
        let _second = admission.admit(source).unwrap();
        assert_eq!(
            admission.admit(source).err(),
            Some(Refusal::Unauthenticated)
        );
        first.authenticated();
        let _third = admission.admit(source).unwrap();
        let other = Source::of("192.0.2.2".parse().unwrap());
        assert!(admission.admit(other).is_ok());
    }

    #[test]
    fn connections_that_authenticate_do_not_use_up_the_rate() {
        let limits = Limits {
            connection_burst_per_source: 3,
            connection_rate_per_source: 1,
            ..Limits::default()
        };
        let admission = Arc::new(Admission::new(limits));
        let source = Source::of("192.0.2.1".parse().unwrap());
        for _ in 0..20 {
            admission.admit(source).unwrap().authenticated();
        }
        for _ in 0..3 {
            drop(admission.admit(source).unwrap());
        }
        assert_eq!(admission.admit(source).err(), Some(Refusal::Rate));
    }

    #[test]
    fn shedding_closes_the_oldest_unauthenticated_connection() {
        let admission = Arc::new(Admission::new(Limits::default()));
        let source = Source::of("192.0.2.1".parse().unwrap());
        let old = admission.admit(source).unwrap();
        let mut authenticated = admission.admit(source).unwrap();
        authenticated.authenticated();
        let young = admission.admit(source).unwrap();
        assert!(admission.shed_oldest(None));
        assert!(old.shed().is_cancelled());
        assert!(!young.shed().is_cancelled());
        // The connection that needs the room is not the one closed to make it.
        assert!(!admission.shed_oldest(Some(&young)));
        assert!(admission.shed_oldest(None));
        assert!(young.shed().is_cancelled());
        assert!(!authenticated.shed().is_cancelled());
        assert!(!admission.shed_oldest(None));
    }

    #[test]
    fn refusals_beyond_the_quota_are_summarised_once_the_interval_ends() {
        let limits = Limits {
            refusal_records_per_source: 3,
            refusal_audit_interval_secs: 1,
            ..Limits::default()
        };
        let audit = RefusalAudit::new(&limits);
        let source = Source::of("192.0.2.1".parse().unwrap());
        let recorded = (0..10).filter(|_| audit.refusal(source).0).count();
        assert_eq!(recorded, 3);
        assert!(audit.sweep(false).is_empty());
        let all = audit.sweep(true);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].count, 7);
    }

    #[test]
    fn many_sources_together_are_recorded_up_to_the_total_then_summarised_as_one() {
        let limits = Limits {
            refusal_records_per_source: 3,
            refusal_records_total: 10,
            ..Limits::default()
        };
        let audit = RefusalAudit::new(&limits);
        let recorded = (0..1000u32)
            .filter(|i| {
                let source = Source::of(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
                audit.refusal(source).0
            })
            .count();
        assert_eq!(recorded, 10);
        let summaries = audit.sweep(true);
        assert_eq!(
            summaries,
            vec![Suppressed {
                source: None,
                count: 990,
                secs: 0
            }]
        );
    }

    #[test]
    fn one_source_holds_at_most_its_share_of_the_unauthenticated_body_budget() {
        let limits = Limits {
            max_unauthenticated_body_bytes: 800_000,
            ..Limits::default()
        };
        let share = limits.unauthenticated_body_bytes_per_source();
        assert_eq!(share, 100_000);
        let admission = Arc::new(Admission::new(limits));
        let greedy = Source::of("192.0.2.1".parse().unwrap());
        let held: Vec<_> = (0..2)
            .map(|_| admission.reserve_body(greedy, 50_000).unwrap())
            .collect();
        assert!(admission.reserve_body(greedy, 1).is_none());
        let other = Source::of("192.0.2.2".parse().unwrap());
        let other_held = admission.reserve_body(other, 100_000).unwrap();
        drop(held);
        assert!(admission.reserve_body(greedy, 100_000).is_some());
        drop(other_held);
    }
}
