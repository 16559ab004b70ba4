//! The UDP server: one socket per worker thread, all bound to the DNS address with
//! `SO_REUSEPORT` so the kernel spreads queries over them. A worker receives a batch with
//! `recvmmsg`, answers each query on the fast path (or, when it declines, on the hickory
//! path, inline), and sends the fast answers with one `sendmmsg`. Workers share nothing
//! but the snapshot channel; per query they take no lock and allocate nothing.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use metrics::{Counter, Histogram};
use tokio::sync::{mpsc, watch};

use super::cookie::Verdict;
use super::fast::{self, Answered, MAX_RESPONSE};
use super::handler::{self, Label, OBSERVE_EVERY, Outcome};
use super::rrl::{self, Action, RateLimiter};
use super::{DnsSnapshot, Handler};
use crate::model::latency::ResolverSeen;
use crate::telemetry;

/// Datagrams per `recvmmsg`/`sendmmsg`.
pub(super) const BATCH: usize = 32;
/// Receive buffer per datagram: hickory's UDP receive size. Longer queries are dropped.
const RECV_BUF: usize = 4096;
/// Receive buffer asked for per socket (the kernel doubles it, up to `net.core.rmem_max`
/// twice over): a worker that loses its core for a few milliseconds at full load must
/// find the queries queued, not dropped.
const RECV_BUFFER: usize = 2 << 20;
/// How often a blocked worker looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Binds `count` UDP sockets to `addr` in one `SO_REUSEPORT` group; with port 0, a port
/// no other socket holds.
pub(super) fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(count);
    let mut addr = addr;
    if addr.port() == 0 {
        // The kernel gives a reuseport socket bound to port 0 a port that another
        // process's reuseport group of the same user may already hold (seen: 147 of
        // 3,000 such binds shared a port), and the two would split each other's
        // queries. A plain socket's port is free of everyone; the group takes it over.
        // If another socket takes it in between, binding fails and the caller retries.
        addr = UdpSocket::bind(addr)?.local_addr()?;
    }
    for _ in 0..count.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_reuse_port(true)?;
        socket.set_recv_buffer_size(RECV_BUFFER)?;
        socket.bind(&addr.into())?;
        socket.set_read_timeout(Some(STOP_POLL))?;
        let socket: UdpSocket = socket.into();
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The running workers.
#[derive(Debug)]
pub(super) struct UdpWorkers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpWorkers {
    /// Starts one worker per socket. Must be called inside the Tokio runtime: declined
    /// queries run the hickory handler on it.
    pub(super) fn start(
        sockets: Vec<UdpSocket>,
        snapshots: &watch::Receiver<Arc<DnsSnapshot>>,
        handler: Arc<Handler>,
        observer: Option<mpsc::Sender<ResolverSeen>>,
        limiter: Option<Arc<RateLimiter>>,
    ) -> io::Result<UdpWorkers> {
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Handle::current();
        let mut threads = Vec::with_capacity(sockets.len());
        for (n, socket) in sockets.into_iter().enumerate() {
            let mut worker = Worker {
                socket,
                snapshots: snapshots.clone(),
                answerer: Answerer::new(
                    Arc::clone(&snapshots.borrow()),
                    observer.clone(),
                    (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    handler.cookie_keys().cloned(),
                    limiter.clone(),
                ),
                handler: Arc::clone(&handler),
                runtime: runtime.clone(),
            };
            let stop = Arc::clone(&stop);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dns-udp-{n}"))
                    .spawn(move || worker.run(&stop))?,
            );
        }
        Ok(UdpWorkers { stop, threads })
    }

    /// Stops the workers and waits for them (each notices within [`STOP_POLL`]).
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

struct Worker {
    socket: UdpSocket,
    snapshots: watch::Receiver<Arc<DnsSnapshot>>,
    answerer: Answerer,
    handler: Arc<Handler>,
    runtime: tokio::runtime::Handle,
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        let mut batch = sys::Batch::new();
        while !stop.load(Ordering::Relaxed) {
            let received = match batch.recv(&self.socket) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dns udp receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            // The snapshot changes only when health or config does: a version check, no lock.
            if self.snapshots.has_changed().unwrap_or(false) {
                self.answerer
                    .swap(Arc::clone(&self.snapshots.borrow_and_update()));
            }
            let started = Instant::now();
            self.answerer.tick();
            let mut answered = 0;
            for i in 0..received {
                let Some((query, src, out)) = batch.received(i, answered) else {
                    continue;
                };
                let reply = match self.answerer.answer(query, src, out) {
                    Some((len, proven)) => match self.answerer.limit(src, proven) {
                        Action::Answer | Action::WouldLimit => Some(len),
                        Action::Slip => rrl::slip_reply(query, out),
                        Action::Drop => None,
                    },
                    None => {
                        // Counted before the answer leaves, like the fast path's counts.
                        self.answerer.tally.declined();
                        let proven = self.answerer.proven(query, src);
                        match self.answerer.limit(src, proven) {
                            Action::Answer | Action::WouldLimit => self.slow(query, src),
                            Action::Slip => {
                                if let Some(len) = rrl::slip_reply(query, out) {
                                    let _ = self.socket.send_to(&out[..len], src);
                                }
                            }
                            Action::Drop => {}
                        }
                        None
                    }
                };
                if let Some(len) = reply {
                    batch.reply(answered, i, len);
                    answered += 1;
                }
            }
            self.answerer.tally.flush_limits();
            if answered > 0 {
                self.answerer.end_batch(started.elapsed(), answered);
                batch.send(&self.socket, answered);
            }
        }
        self.answerer.tally.flush(&self.answerer.snapshot);
    }

    /// The hickory path, for what the fast path declines.
    fn slow(&self, query: &[u8], src: SocketAddr) {
        let response = self
            .runtime
            .block_on(super::answer_udp(&self.handler, query, src));
        if let Some(response) = response
            && let Err(e) = self.socket.send_to(&response, src)
        {
            tracing::debug!(error = %e, %src, "cannot send DNS response");
        }
    }
}

/// A worker's per-query work, without sockets: the fast path, metrics, the observer.
struct Answerer {
    snapshot: Arc<DnsSnapshot>,
    observer: Option<mpsc::Sender<ResolverSeen>>,
    entropy: u64,
    tally: Tally,
    /// DNS cookies (`None`: off), and the secrets and time of this batch.
    cookies: Option<super::cookie::CookieKeys>,
    cookie_time: Option<fast::CookieTime>,
    /// Response rate limiting (`None`: off), and this batch's second.
    limiter: Option<Arc<RateLimiter>>,
    now: u32,
}

impl Answerer {
    fn new(
        snapshot: Arc<DnsSnapshot>,
        observer: Option<mpsc::Sender<ResolverSeen>>,
        entropy: u64,
        cookies: Option<super::cookie::CookieKeys>,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Answerer {
        let mut tally = Tally::default();
        tally.reset(&snapshot);
        Answerer {
            snapshot,
            observer,
            entropy,
            tally,
            cookies,
            cookie_time: None,
            limiter,
            now: 0,
        }
    }

    /// What rate limiting does with a response to `src` (`proven`: it carried a valid
    /// server cookie, so its address is real and it is not limited).
    fn limit(&mut self, src: SocketAddr, proven: bool) -> Action {
        let Some(limiter) = &self.limiter else {
            return Action::Answer;
        };
        if proven {
            return Action::Answer;
        }
        let action = limiter.check(src.ip(), self.now);
        self.tally.limited(action);
        action
    }

    /// Whether a query the fast path declined carries a valid server cookie.
    fn proven(&self, query: &[u8], src: SocketAddr) -> bool {
        match (&self.cookie_time, &self.limiter) {
            (Some(t), Some(_)) => super::wire::query_cookie(query).is_some_and(|c| {
                super::cookie::judge(&t.secrets, c, src.ip(), t.now) == Verdict::Valid
            }),
            _ => false,
        }
    }

    /// Before a batch: the time and, when the period turned, the cookie secrets.
    fn tick(&mut self) {
        let now = super::handler::unix_now();
        self.now = now;
        let Some(keys) = &self.cookies else { return };
        let mut cached = self.cookie_time.map(|t| t.secrets);
        self.cookie_time = Some(fast::CookieTime {
            secrets: keys.cached(&mut cached, now),
            now,
        });
    }

    /// Answers on the fast path into `out`: the length and whether the query carried a
    /// valid server cookie, or `None` when it declines.
    fn answer(&mut self, query: &[u8], src: SocketAddr, out: &mut [u8]) -> Option<(usize, bool)> {
        self.entropy = self.entropy.wrapping_add(1);
        let a = fast::answer(
            &self.snapshot,
            query,
            src,
            self.entropy,
            self.cookie_time.as_ref(),
            out,
        )?;
        self.tally.count(&self.snapshot, &a);
        if let (Some(region), Some(observer)) = (a.learned, &self.observer)
            && self.entropy % OBSERVE_EVERY == 0
        {
            let _ = observer.try_send(ResolverSeen {
                resolver: src.ip(),
                region,
            });
        }
        Some((a.len, a.cookie_valid))
    }

    /// After a batch: its time, and the counts added to the shared counters.
    fn end_batch(&mut self, took: Duration, answered: usize) {
        self.tally.elapsed(took, answered);
        self.tally.flush(&self.snapshot);
    }

    /// Answers from a new snapshot from now on.
    fn swap(&mut self, snapshot: Arc<DnsSnapshot>) {
        self.tally.flush(&self.snapshot);
        self.snapshot = snapshot;
        self.tally.reset(&self.snapshot);
    }
}

/// Query types the fast path answers, for counting.
const TYPES: [RecordType; 4] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SOA,
    RecordType::NS,
];
/// Response codes the fast path gives.
const RCODES: [ResponseCode; 3] = [
    ResponseCode::NoError,
    ResponseCode::NXDomain,
    ResponseCode::ServFail,
];

/// A worker's metrics: counted locally per query, added to the shared counters once per
/// batch, so queries never contend on a counter and never allocate.
#[derive(Default)]
struct Tally {
    /// By (label, type, rcode): `label * 12 + type * 3 + rcode`; labels are the domains,
    /// then the zones.
    queries: Vec<(u64, Option<Counter>)>,
    /// By (domain, outcome): `domain * 5 + outcome`.
    decisions: Vec<(u64, Option<Counter>)>,
    /// Indexes touched since the last flush.
    dirty_queries: smallvec::SmallVec<[u32; BATCH]>,
    dirty_decisions: smallvec::SmallVec<[u32; BATCH]>,
    /// Times each server was in an answer, flat over (domain, family, server) from
    /// `answer_base`; and the queries answered, since the last flush (`traffic`).
    answers: Vec<u64>,
    answer_base: Vec<usize>,
    dirty_answers: Vec<u32>,
    answered: u64,
    /// Queries the fast path declined (answered on the hickory path).
    declined: Option<Counter>,
    /// Rate-limited responses since the last flush: slipped, dropped, would have been
    /// limited (dry run); and their counters.
    limits: [(u64, Option<Counter>); 3],
    /// Time answering, and answers, since the duration was last observed.
    busy: (Duration, usize),
    observed: Option<Instant>,
    duration: Option<Histogram>,
}

/// How often a worker adds an observation to `opengslb_dns_query_duration_seconds`.
const OBSERVE_DURATION: Duration = Duration::from_millis(100);

impl Tally {
    fn reset(&mut self, snapshot: &DnsSnapshot) {
        let labels = snapshot.domains.len() + snapshot.zones.len();
        self.queries = (0..labels * TYPES.len() * RCODES.len())
            .map(|_| (0, None))
            .collect();
        self.decisions = (0..snapshot.domains.len() * Outcome::ALL.len())
            .map(|_| (0, None))
            .collect();
        self.dirty_queries.clear();
        self.dirty_decisions.clear();
        self.answer_base.clear();
        let mut total = 0;
        for domain in &snapshot.domains {
            for v6 in [false, true] {
                self.answer_base.push(total);
                total += domain.family(v6).records.len();
            }
        }
        self.answers = vec![0; total];
        self.dirty_answers = Vec::with_capacity(total);
        self.answered = 0;
    }

    fn count(&mut self, snapshot: &DnsSnapshot, a: &Answered) {
        let label = match a.label {
            Label::Domain(d) => d,
            Label::Zone(z) => snapshot.domains.len() + z,
            Label::Nothing => return, // the fast path answers only names in our zones
        };
        let (Some(t), Some(r)) = (
            TYPES.iter().position(|t| *t == a.qtype),
            RCODES.iter().position(|r| *r == a.rcode),
        ) else {
            return;
        };
        let slot = (label * TYPES.len() + t) * RCODES.len() + r;
        bump(&mut self.queries, &mut self.dirty_queries, slot);
        if let Some((d, outcome)) = a.decision {
            let slot = d * Outcome::ALL.len() + outcome.index();
            bump(&mut self.decisions, &mut self.dirty_decisions, slot);
        }
        self.answered += 1;
        if let Some((d, v6, chosen)) = &a.records {
            let base = self.answer_base[d * 2 + usize::from(*v6)];
            for &i in chosen {
                let slot = base + i;
                if self.answers[slot] == 0 {
                    // At most one entry per server: the list never outgrows its capacity.
                    self.dirty_answers.push(slot as u32);
                }
                self.answers[slot] += 1;
            }
        }
    }

    fn limited(&mut self, action: Action) {
        let slot = match action {
            Action::Answer => return,
            Action::Slip => 0,
            Action::Drop => 1,
            Action::WouldLimit => 2,
        };
        self.limits[slot].0 += 1;
    }

    /// Adds the rate-limiting counts to the shared counters.
    fn flush_limits(&mut self) {
        for (slot, (count, counter)) in self.limits.iter_mut().enumerate() {
            if *count > 0 {
                counter
                    .get_or_insert_with(|| {
                        let action = ["slipped", "dropped", "dry_run"][slot];
                        metrics::counter!(telemetry::DNS_RATE_LIMITED, "action" => action)
                    })
                    .increment(std::mem::take(count));
            }
        }
    }

    fn declined(&mut self) {
        self.declined
            .get_or_insert_with(|| metrics::counter!(telemetry::DNS_FAST_PATH_DECLINED))
            .increment(1);
    }

    fn elapsed(&mut self, took: Duration, answers: usize) {
        self.busy.0 += took;
        self.busy.1 += answers;
    }

    /// Adds the answer counts to the node's traffic table (one lock per batch).
    fn flush_traffic(&mut self, snapshot: &DnsSnapshot) {
        if self.answered == 0 && self.dirty_answers.is_empty() {
            return;
        }
        let base = &self.answer_base;
        let answers = &mut self.answers;
        let rows = self.dirty_answers.drain(..).filter_map(|slot| {
            let slot = slot as usize;
            // The (domain, family) whose range holds the slot.
            let pair = base.partition_point(|&b| b <= slot) - 1;
            let domain = &snapshot.domains[pair / 2];
            let record = domain
                .family(pair % 2 == 1)
                .records
                .get(slot - base[pair])?;
            let ip = super::traffic::record_ip(record)?;
            Some((domain.label.clone(), ip, std::mem::take(&mut answers[slot])))
        });
        super::traffic::TRAFFIC.add(std::mem::take(&mut self.answered), rows);
    }

    /// Adds the local counts to the shared counters (registering each series once).
    fn flush(&mut self, snapshot: &DnsSnapshot) {
        self.flush_traffic(snapshot);
        let labels = snapshot.domains.len();
        for slot in self.dirty_queries.drain(..) {
            let slot = slot as usize;
            let (count, counter) = &mut self.queries[slot];
            let counter = counter.get_or_insert_with(|| {
                let (label, r) = (slot / RCODES.len(), slot % RCODES.len());
                let (label, t) = (label / TYPES.len(), label % TYPES.len());
                let name = if label < labels {
                    Label::Domain(label)
                } else {
                    Label::Zone(label - labels)
                };
                metrics::counter!(
                    telemetry::DNS_QUERIES,
                    "domain" => name.name(snapshot).clone(),
                    "type" => handler::type_label(TYPES[t]),
                    "status" => handler::rcode_label(RCODES[r]),
                )
            });
            counter.increment(std::mem::take(count));
        }
        for slot in self.dirty_decisions.drain(..) {
            let slot = slot as usize;
            let (count, counter) = &mut self.decisions[slot];
            let counter = counter.get_or_insert_with(|| {
                let domain = &snapshot.domains[slot / Outcome::ALL.len()];
                let outcome = Outcome::ALL[slot % Outcome::ALL.len()];
                metrics::counter!(telemetry::ROUTING_DECISIONS, "domain" => domain.label.clone(), "algorithm" => domain.algorithm.name(), "outcome" => outcome.name())
            });
            counter.increment(std::mem::take(count));
        }
        // Fast answers take uniform time: one observation per interval, the mean time per
        // answer, keeps the exporter's sample buffer small at any query rate.
        let now = Instant::now();
        if self.busy.1 > 0
            && self
                .observed
                .is_none_or(|at| now.duration_since(at) >= OBSERVE_DURATION)
        {
            let (busy, n) = std::mem::take(&mut self.busy);
            self.observed = Some(now);
            self.duration
                .get_or_insert_with(|| metrics::histogram!(telemetry::DNS_QUERY_DURATION))
                .record(busy.as_secs_f64() / n as f64);
        }
    }
}

fn bump(
    slots: &mut [(u64, Option<Counter>)],
    dirty: &mut smallvec::SmallVec<[u32; BATCH]>,
    slot: usize,
) {
    let Some((count, _)) = slots.get_mut(slot) else {
        return;
    };
    if *count == 0 && !dirty.contains(&(slot as u32)) {
        if dirty.len() == BATCH {
            return; // cannot happen: at most BATCH answers per flush
        }
        dirty.push(slot as u32);
    }
    *count += 1;
}

/// `recvmmsg`/`sendmmsg`: the only unsafe code in overwatch, kept to the two calls.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::{BATCH, MAX_RESPONSE, RECV_BUF};

    /// Buffers and message headers for one batch, allocated once per worker.
    pub(super) struct Batch {
        recv: Box<[[u8; RECV_BUF]; BATCH]>,
        send: Box<[[u8; MAX_RESPONSE]; BATCH]>,
        addrs: Box<[libc::sockaddr_storage; BATCH]>,
        recv_iov: Box<[libc::iovec; BATCH]>,
        recv_hdr: Box<[libc::mmsghdr; BATCH]>,
        send_iov: Box<[libc::iovec; BATCH]>,
        send_hdr: Box<[libc::mmsghdr; BATCH]>,
    }

    impl Batch {
        pub(super) fn new() -> Batch {
            // SAFETY: all-zero bytes are valid values of these plain C structs.
            let zero_hdr: libc::mmsghdr = unsafe { zeroed() };
            let zero_addr: libc::sockaddr_storage = unsafe { zeroed() };
            let zero_iov = libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            Batch {
                recv: vec![[0; RECV_BUF]; BATCH]
                    .into_boxed_slice()
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("BATCH elements")),
                send: vec![[0; MAX_RESPONSE]; BATCH]
                    .into_boxed_slice()
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("BATCH elements")),
                addrs: Box::new([zero_addr; BATCH]),
                recv_iov: Box::new([zero_iov; BATCH]),
                recv_hdr: Box::new([zero_hdr; BATCH]),
                send_iov: Box::new([zero_iov; BATCH]),
                send_hdr: Box::new([zero_hdr; BATCH]),
            }
        }

        /// Receives up to [`BATCH`] datagrams: blocks for the first (up to the socket's
        /// read timeout), then takes what is queued.
        pub(super) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
            for i in 0..BATCH {
                self.recv_iov[i] = libc::iovec {
                    iov_base: self.recv[i].as_mut_ptr().cast(),
                    iov_len: RECV_BUF,
                };
                let hdr = &mut self.recv_hdr[i];
                hdr.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
                hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdr.msg_hdr.msg_iov = &raw mut self.recv_iov[i];
                hdr.msg_hdr.msg_iovlen = 1;
                hdr.msg_hdr.msg_control = std::ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
                hdr.msg_hdr.msg_flags = 0;
                hdr.msg_len = 0;
            }
            // SAFETY: every header points at buffers and addresses owned by `self`, which
            // outlive the call; the kernel writes at most the lengths given.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.recv_hdr.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }

        /// Datagram `i` of the last receive, its source, and the buffer for reply `n`;
        /// `None` if the datagram was cut short (longer than the buffer) or came from an
        /// unknown address family.
        pub(super) fn received(
            &mut self,
            i: usize,
            n: usize,
        ) -> Option<(&[u8], SocketAddr, &mut [u8])> {
            let hdr = &self.recv_hdr[i];
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return None;
            }
            let len = (hdr.msg_len as usize).min(RECV_BUF);
            let src = socket_addr(&self.addrs[i])?;
            Some((&self.recv[i][..len], src, &mut self.send[n][..]))
        }

        /// Reply `n` is `len` bytes, to the source of received datagram `i`.
        pub(super) fn reply(&mut self, n: usize, i: usize, len: usize) {
            self.send_iov[n] = libc::iovec {
                iov_base: self.send[n].as_mut_ptr().cast(),
                iov_len: len,
            };
            let hdr = &mut self.send_hdr[n];
            hdr.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_hdr.msg_namelen = self.recv_hdr[i].msg_hdr.msg_namelen;
            hdr.msg_hdr.msg_iov = &raw mut self.send_iov[n];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
        }

        /// Sends replies `0..count`. A reply the kernel refuses is skipped, not retried.
        pub(super) fn send(&mut self, socket: &UdpSocket, count: usize) {
            let mut sent = 0;
            while sent < count {
                // SAFETY: headers `sent..count` were set by `reply` in this batch and
                // point at buffers and addresses owned by `self`.
                let n = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        self.send_hdr[sent..].as_mut_ptr(),
                        (count - sent) as libc::c_uint,
                        0,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    tracing::debug!(error = %e, "cannot send DNS response");
                    sent += 1;
                } else {
                    sent += n as usize;
                }
            }
        }
    }

    fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in, which fits in sockaddr_storage.
                let sin = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6, which fits in sockaddr_storage.
                let sin6 = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The per-query work allocates nothing: a counting allocator watches this thread
    //! while a worker's answerer takes every kind of fast-path query, with a Prometheus
    //! recorder installed so metric handles are real.

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Action, Answerer, BATCH, rrl};
    use crate::dns::fast::MAX_RESPONSE;
    use crate::dns::test_support;

    use crate::alloc_count::allocations;

    const CONFIG: &str = r#"
overwatch:
  validation: {enabled: false}
  geolocation:
    default_region: a
    custom_mappings: [{cidr: 10.0.0.0/8, region: b}]
dns:
  zones: [alloc.test]
regions:
  - name: a
    servers: [{address: 192.0.2.1}, {address: 192.0.2.2}, {address: "2001:db8::1"}]
  - name: b
    servers: [{address: 198.51.100.1}, {address: 198.51.100.2, weight: 3}]
domains:
  - {name: rr.alloc.test, routing_algorithm: round-robin, regions: [a, b]}
  - {name: geo.alloc.test, routing_algorithm: geolocation, regions: [a, b]}
  - {name: w.alloc.test, routing_algorithm: weighted, regions: [a, b]}
  - {name: f.alloc.test, routing_algorithm: failover, regions: [b, a]}
  - {name: l.alloc.test, routing_algorithm: latency, regions: [a, b]}
  - {name: ll.alloc.test, routing_algorithm: learned_latency, regions: [a, b]}
"#;

    /// A query with RD set, optionally with ECS for `a.b.c.0/24`.
    fn query(name: &str, qtype: u16, ecs: Option<[u8; 3]>) -> Vec<u8> {
        let subnet = ecs.map(|a| test_support::ecs(1, 24, &a, 0));
        test_support::query(0xabcd, 0x0100, name, qtype, 1, subnet.as_deref())
    }

    #[test]
    fn answering_allocates_nothing_per_query() {
        let start = allocations();
        drop(std::hint::black_box(Box::new(1u64)));
        assert_eq!(allocations(), start + 1, "the counting allocator is in use");
        let snapshot = test_support::snapshot("alloc.yaml", CONFIG);
        let mut queries = Vec::new();
        for name in ["rr", "geo", "w", "f", "l", "ll"] {
            let name = format!("{name}.alloc.test");
            for qtype in [1, 28, 6, 2] {
                queries.push(query(&name, qtype, None));
                queries.push(query(&name, qtype, Some([10, 1, 2])));
            }
        }
        queries.push(query("nx.alloc.test", 1, None));
        queries.push(query("alloc.test", 6, Some([192, 0, 2])));
        queries.push(query("alloc.test", 2, None));
        let sources: [SocketAddr; 2] = [
            "127.0.0.1:5300".parse().unwrap(),
            "10.0.0.1:53".parse().unwrap(),
        ];
        // DNS cookies: a client cookie alone, and a valid server cookie from the source
        // the query is sent from (query n goes from sources[n % 2]).
        let keys = crate::dns::cookie::CookieKeys::derived_from("alloc-test-secret-0123");
        let now = crate::dns::handler::unix_now();
        for name in ["rr.alloc.test", "alloc.test"] {
            let client = [0u8, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
            queries.push(test_support::query(1, 0x0100, name, 1, 1, Some(&client)));
            let src = sources[queries.len() % 2];
            let full = crate::dns::cookie::response(&keys.at(now), &client[4..], src.ip(), now);
            let option = [&[0u8, 10, 0, 24][..], &full].concat();
            queries.push(test_support::query(1, 0x0100, name, 1, 1, Some(&option)));
        }

        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let (tx, _rx) = tokio::sync::mpsc::channel(1 << 20);
            // Rate limiting on, at a rate these rounds exceed: slips, drops and counts too.
            let limiter = Arc::new(super::RateLimiter::new(
                crate::dns::rrl::RateLimitSettings {
                    responses_per_second: 50,
                    slip: 2,
                    ipv4_prefix: 24,
                    ipv6_prefix: 56,
                    dry_run: false,
                },
            ));
            let mut answerer = Answerer::new(
                Arc::clone(&snapshot),
                Some(tx),
                0,
                Some(keys),
                Some(limiter),
            );
            answerer.tick();
            let mut out = vec![0u8; MAX_RESPONSE];
            let mut round = |answerer: &mut Answerer| {
                let mut answered = 0;
                for (n, q) in queries.iter().enumerate() {
                    let answer = answerer.answer(q, sources[n % 2], &mut out);
                    let (_, proven) =
                        answer.unwrap_or_else(|| panic!("the fast path answers {q:02x?}"));
                    if answerer.limit(sources[n % 2], proven) == Action::Slip {
                        assert!(rrl::slip_reply(q, &mut out).is_some());
                    }
                    answered += 1;
                    if answered == BATCH {
                        answerer.tally.flush_limits();
                        answerer.end_batch(Duration::from_micros(3), answered);
                        answered = 0;
                    }
                }
                answerer.tally.flush_limits();
                answerer.end_batch(Duration::from_micros(3), answered);
            };
            // Warm up: each metric series is registered once, by its first flush.
            round(&mut answerer);
            let before = allocations();
            for _ in 0..200 {
                round(&mut answerer);
            }
            let after = allocations();
            assert_eq!(
                after - before,
                0,
                "allocations while answering {} queries",
                200 * queries.len()
            );
        });
        // And the counts arrived.
        let text = handle.render();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("opengslb_dns_queries_total{")
                    && l.contains("domain=\"rr.alloc.test\"")
                    && l.contains("type=\"A\"")
            })
            .unwrap_or_else(|| panic!("no rr.alloc.test A series in:\n{text}"));
        // 201 rounds of four rr A queries: plain, ECS, client cookie, server cookie.
        assert!(line.ends_with(" 804"), "{line}");
    }
}
