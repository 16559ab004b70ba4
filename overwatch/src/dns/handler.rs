//! The query path: classify the question against the snapshot, route, respond.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, Record, RecordType};
use hickory_proto::serialize::binary::BinDecoder;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use metrics::SharedString;
use tokio::sync::watch;

use super::cookie::{self, CookieKeys, OPTION_COOKIE, Verdict};
use super::fast::CookieTime;
use super::snapshot::{DnsSnapshot, DomainAnswers, NameKind};
use crate::config::AllDownPolicy;
use crate::model::geo::locate;
use crate::model::routing::{Picks, Query, decide_among};
use crate::telemetry;

/// UDP payload we advertise and accept in responses (RFC 9715 / DNS flag day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;

/// hickory's request handler over the current snapshot.
#[derive(Debug)]
pub struct Handler {
    snapshots: watch::Receiver<Arc<DnsSnapshot>>,
    /// Rotation and weighted draws: a counter, so consecutive answers differ.
    counter: AtomicU64,
    /// Where `learned_latency` decisions made for an ECS subnet are reported, as
    /// (resolver, region), so resolvers can be mapped to their clients' region.
    observer: Option<tokio::sync::mpsc::Sender<crate::model::latency::ResolverSeen>>,
    /// DNS cookies (`None`: off, `dns.cookies: false`).
    cookies: Option<CookieKeys>,
    /// A fixed time for cookies, Unix seconds (0: the clock). For differential tests.
    fixed_now: AtomicU64,
    /// The secrets of the current period, derived once per period (two HMACs).
    secrets: std::sync::Mutex<Option<super::cookie::Secrets>>,
}

/// One query in this many with a learned ECS decision is reported to the observer.
pub(crate) const OBSERVE_EVERY: u64 = 8;

impl Handler {
    /// A handler that always answers from the latest snapshot.
    pub fn new(snapshots: watch::Receiver<Arc<DnsSnapshot>>) -> Handler {
        Handler {
            snapshots,
            counter: AtomicU64::new(0),
            observer: None,
            cookies: None,
            fixed_now: AtomicU64::new(0),
            secrets: std::sync::Mutex::new(None),
        }
    }

    /// Answers DNS cookies with server secrets from `keys`.
    pub fn with_cookies(mut self, keys: Option<CookieKeys>) -> Handler {
        self.cookies = keys;
        self
    }

    /// Cookies are made and judged at `now` (Unix seconds) instead of the clock's time.
    /// For differential tests, which give the fast path the same.
    pub fn set_now(&self, now: u32) {
        self.fixed_now.store(u64::from(now), Ordering::Relaxed);
    }

    /// The cookie keys, if cookies are on.
    pub(crate) fn cookie_keys(&self) -> Option<&CookieKeys> {
        self.cookies.as_ref()
    }

    /// This period's secrets and the time, if cookies are on.
    fn cookie_time(&self) -> Option<CookieTime> {
        let keys = self.cookies.as_ref()?;
        let fixed = self.fixed_now.load(Ordering::Relaxed);
        let now = if fixed > 0 {
            u32::try_from(fixed).unwrap_or(u32::MAX)
        } else {
            unix_now()
        };
        let mut cached = self
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(CookieTime {
            secrets: keys.cached(&mut cached, now),
            now,
        })
    }

    /// The entropy the next query gets (rotation start, weighted draws); then one more per
    /// query. For differential tests, which give the fast path the same.
    pub fn set_next_entropy(&self, entropy: u64) {
        self.counter.store(entropy, Ordering::Relaxed);
    }

    /// Also reports learned decisions for ECS subnets (never waiting: a full channel drops).
    pub fn with_observer(
        mut self,
        observer: tokio::sync::mpsc::Sender<crate::model::latency::ResolverSeen>,
    ) -> Handler {
        self.observer = Some(observer);
        self
    }
}

/// The clock's Unix seconds (as DNS cookies count them).
pub(crate) fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// Metrics label for queries that name no configured zone or domain.
pub(crate) static NO_DOMAIN: SharedString = SharedString::const_str("-");

/// What one question resolves to, shared by the hickory path and the UDP fast path so
/// both give the same answer. Holds no heap memory: the fast path builds one per query.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub rcode: ResponseCode,
    pub section: Section,
    /// The ECS scope the answer deserves, when the query carried ECS.
    pub ecs_scope: Option<u8>,
    /// The region a learned ECS decision chose (`settings.regions` index).
    pub learned: Option<usize>,
    /// Metrics label: a configured domain or zone, never the raw query name.
    pub label: Label,
    /// The routing decision, for `opengslb_routing_decisions_total`: domain and outcome.
    pub decision: Option<(usize, Outcome)>,
    /// The query has DO=1 and the zone is signed: the answer carries signatures and
    /// negative answers their NSEC proof.
    pub signed: bool,
}

/// Which configured name a query counts under in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Label {
    /// No configured zone or domain.
    Nothing,
    /// A zone (`snapshot.zones` index).
    Zone(usize),
    /// A domain.
    Domain(usize),
}

impl Label {
    /// The label value.
    pub(crate) fn name(self, snapshot: &DnsSnapshot) -> &SharedString {
        match self {
            Label::Nothing => &NO_DOMAIN,
            Label::Zone(z) => &snapshot.zones[z].label,
            Label::Domain(d) => &snapshot.domains[d].label,
        }
    }
}

/// How a routing decision came out (`opengslb_routing_decisions_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Healthy servers chosen by the algorithm.
    Healthy,
    /// `learned_latency` knew nothing for the client; geolocation chose.
    GeoFallback,
    /// All down, answered by the domain's policy (`servfail` when it gave nothing).
    AllDown(AllDownPolicy),
}

impl Outcome {
    /// Every outcome, by [`Outcome::index`].
    pub(crate) const ALL: [Outcome; 5] = [
        Outcome::Healthy,
        Outcome::GeoFallback,
        Outcome::AllDown(AllDownPolicy::ServFail),
        Outcome::AllDown(AllDownPolicy::ReturnLastHealthy),
        Outcome::AllDown(AllDownPolicy::ReturnAll),
    ];

    /// The label value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Healthy => "healthy",
            Outcome::GeoFallback => "geo_fallback",
            Outcome::AllDown(policy) => policy.name(),
        }
    }

    /// Position in [`Outcome::ALL`].
    pub(crate) fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// The records a response carries.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // on the stack per query; boxing would allocate
pub(crate) enum Section {
    /// None (REFUSED, SERVFAIL).
    Nothing,
    /// The zone's SOA in the authority section (NXDOMAIN, NODATA); `snapshot.zones` index.
    Negative(usize),
    /// The zone's SOA as the answer.
    Soa(usize),
    /// The zone's NS records as the answer.
    Ns(usize),
    /// Records of a domain's family (v6 or not), chosen by routing.
    Records {
        domain: usize,
        v6: bool,
        chosen: Picks,
    },
    /// One of the apex's key RRsets (signed zones only).
    Keys(usize, super::dnssec::KeySet),
    /// The NSEC record at a name (signed zones only): zone and chain index.
    Nsec(usize, usize),
    /// The RRSIGs of a name's fixed RRsets, for a query of type RRSIG (signed zones
    /// only): zone and chain index. The apex's: SOA, NS, DNSKEY, CDS, CDNSKEY and NSEC; a
    /// domain's: its NSEC's (its addresses' RRSIG depends on the answer set and comes
    /// with them).
    Rrsigs(usize, usize),
}

impl Resolved {
    fn empty(rcode: ResponseCode, section: Section, label: Label) -> Self {
        Resolved {
            rcode,
            section,
            ecs_scope: None,
            learned: None,
            label,
            decision: None,
            signed: false,
        }
    }
}

/// Where a query name stands: its zone (`snapshot.zones` index) and what it is there.
/// Each path classifies names its own way (hickory's `LowerName`, the fast path's wire
/// bytes); everything after classification is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// In none of our zones.
    Outside,
    /// In zone `.0`; `.1` is `None` for a name that does not exist.
    In(usize, Option<NameKind>),
}

/// The client for routing: the ECS subnet when present (and enabled), else the source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client {
    pub ip: IpAddr,
    pub ecs: Option<(IpAddr, u8)>,
}

impl Client {
    /// The client as routing sees it: the ECS address when it has a prefix, else `src`.
    pub(crate) fn new(src: IpAddr, ecs: Option<(IpAddr, u8)>) -> Client {
        Client {
            ip: ecs
                .filter(|(_, prefix)| *prefix > 0)
                .map_or(src, |(ip, _)| ip),
            ecs,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let snapshot = Arc::clone(&self.snapshots.borrow());
        let entropy = self.counter.fetch_add(1, Ordering::Relaxed);
        let request_edns = request.edns.as_ref();
        // The client subnet, when the resolver sent one and we use ECS.
        let ecs = request_edns
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => Some((s.addr(), s.source_prefix())),
                _ => None,
            })
            .filter(|_| snapshot.geo.ecs_enabled);

        let mut metadata = Metadata::response_from_request(&request.metadata);
        let queries = request.queries.queries();
        let mut qtype_label = "other";
        // A compression pointer in the question can only point into the header or ahead
        // (RFC 1035 §4.1.4): the question is malformed and must not be echoed, since the
        // pointer would be wrong in the response.
        let pointer_in_question = compressed(request.queries.as_bytes());
        // The first COOKIE option, judged (RFC 7873 §5.2); ignored when cookies are off.
        let cookie_time = self.cookie_time();
        let cookie = cookie_time.and_then(|time| match request_edns?.option(EdnsCode::Cookie)? {
            EdnsOption::Unknown(OPTION_COOKIE, data) => {
                let ip = request.src().ip();
                let verdict = cookie::judge(&time.secrets, data, ip, time.now);
                let fresh = (verdict != Verdict::Malformed)
                    .then(|| cookie::response(&time.secrets, data, ip, time.now));
                Some((verdict, fresh))
            }
            _ => None,
        });
        let answer = if request.metadata.message_type != MessageType::Query {
            Resolved::empty(ResponseCode::FormErr, Section::Nothing, Label::Nothing)
        } else if request.metadata.op_code != OpCode::Query {
            Resolved::empty(ResponseCode::NotImp, Section::Nothing, Label::Nothing)
        } else if queries.len() != 1 || pointer_in_question {
            Resolved::empty(ResponseCode::FormErr, Section::Nothing, Label::Nothing)
        } else if request_edns.is_some_and(|e| e.version() > 0) {
            Resolved::empty(ResponseCode::BADVERS, Section::Nothing, Label::Nothing)
        } else if let Some((Verdict::Malformed, _)) = cookie {
            // RFC 7873 §5.2.2: a COOKIE option of a wrong length.
            Resolved::empty(ResponseCode::FormErr, Section::Nothing, Label::Nothing)
        } else if let Some((Verdict::Invalid, _)) = cookie {
            // RFC 7873 §5.2.3: a server cookie we did not make (or too old): no answer,
            // and a fresh cookie to try again with.
            Resolved::empty(ResponseCode::BADCOOKIE, Section::Nothing, Label::Nothing)
        } else {
            let query = &queries[0];
            qtype_label = type_label(query.query_type());
            resolve(
                &snapshot,
                place(&snapshot, query.name()),
                query.query_type(),
                query.query_class(),
                Client::new(request.src().ip(), ecs),
                entropy,
                request_edns.is_some_and(|e| e.flags().dnssec_ok),
            )
        };

        if let Section::Records { domain, v6, chosen } = &answer.section {
            let d = &snapshot.domains[*domain];
            let records = &d.family(*v6).records;
            super::traffic::TRAFFIC.add(
                1,
                chosen.iter().filter_map(|&i| {
                    Some((d.label.clone(), super::traffic::record_ip(&records[i])?, 1))
                }),
            );
        } else {
            super::traffic::TRAFFIC.add(1, []);
        }
        if let (Some(region), Some(observer)) = (answer.learned, &self.observer)
            && entropy % OBSERVE_EVERY == 0
        {
            let _ = observer.try_send(crate::model::latency::ResolverSeen {
                resolver: request.src().ip(),
                region,
            });
        }
        metadata.response_code = answer.rcode;
        metadata.authoritative =
            matches!(answer.rcode, ResponseCode::NoError | ResponseCode::NXDomain);
        let mut response_edns = None;
        if request_edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD).set_version(0);
            edns.set_rcode_high(answer.rcode.high());
            // RFC 3225 §3: the DO bit of the query is copied into the response.
            edns.set_dnssec_ok(request_edns.is_some_and(|e| e.flags().dnssec_ok));
            // Echo the client subnet with the scope the answer deserves (RFC 7871 §7.2.1).
            if let Some((addr, source)) = ecs {
                let scope = answer.ecs_scope.unwrap_or(0).min(max_prefix(addr));
                edns.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(addr, source, scope)));
            }
            if let Some((_, Some(fresh))) = &cookie {
                edns.options_mut()
                    .insert(EdnsOption::Unknown(OPTION_COOKIE, fresh.to_vec()));
            }
            response_edns = Some(edns);
        }
        let online;
        let (records, authority) = match queries.first() {
            Some(query) if answer.signed => {
                let (records, authority, missing) =
                    signed_sections(&snapshot, &answer, query.name());
                // A set of servers the snapshot did not sign ahead: signed now rather than
                // answered bogus. `answer_sets` covers every decision, so this counts
                // zero in steady state (the benchmark checks).
                online = missing
                    .and_then(|(domain, v6, chosen)| sign_online(&snapshot, domain, v6, &chosen));
                let mut records = records;
                records.extend(online.iter());
                (records, authority)
            }
            _ => unsigned_sections(&snapshot, &answer.section),
        };
        let no_question = Queries::read(&mut BinDecoder::new(&[]), 0).ok();
        let mut builder = match &no_question {
            Some(empty) if pointer_in_question => MessageResponseBuilder::new(empty, None),
            _ => MessageResponseBuilder::from_message_request(request),
        };
        if let Some(edns) = &response_edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            records.iter().copied(),
            authority.iter().copied(),
            std::iter::empty(),
            std::iter::empty(),
        );
        let info = match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(err) => {
                tracing::debug!(error = %err, src = %request.src(), "cannot send DNS response");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_proto::op::Header {
                    metadata: failed,
                    counts: Default::default(),
                })
            }
        };
        if let Some((d, outcome)) = answer.decision {
            let domain = &snapshot.domains[d];
            metrics::counter!(telemetry::ROUTING_DECISIONS, "domain" => domain.label.clone(), "algorithm" => domain.algorithm.name(), "outcome" => outcome.name()).increment(1);
        }
        metrics::counter!(
            telemetry::DNS_QUERIES,
            "domain" => answer.label.name(&snapshot).clone(),
            "type" => qtype_label,
            "status" => rcode_label(answer.rcode),
        )
        .increment(1);
        metrics::histogram!(telemetry::DNS_QUERY_DURATION).record(started.elapsed().as_secs_f64());
        info
    }
}

/// Where `name` stands in the snapshot (the hickory path's classification).
pub(crate) fn place(snapshot: &DnsSnapshot, name: &LowerName) -> Placement {
    match snapshot.zone_of(name) {
        None => Placement::Outside,
        Some(zone) => Placement::In(zone, snapshot.names.get(name).copied()),
    }
}

/// Whether a question section in wire form has a compression pointer in its name.
fn compressed(question: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&len) = question.get(i) {
        match len {
            0 => return false,
            l if l & 0xC0 != 0 => return true,
            l => i += 1 + usize::from(l),
        }
    }
    false
}

/// The answer and authority records of an unsigned response.
fn unsigned_sections<'s>(
    snapshot: &'s DnsSnapshot,
    section: &Section,
) -> (Vec<&'s Record>, Vec<&'s Record>) {
    match section {
        Section::Nothing => (Vec::new(), Vec::new()),
        Section::Negative(z) => (Vec::new(), vec![&snapshot.zones[*z].soa]),
        Section::Soa(z) => (vec![&snapshot.zones[*z].soa], Vec::new()),
        Section::Ns(z) => (snapshot.zones[*z].ns.iter().collect(), Vec::new()),
        Section::Records { domain, v6, chosen } => {
            let family = snapshot.domains[*domain].family(*v6);
            (
                chosen.iter().map(|&i| &family.records[i]).collect(),
                Vec::new(),
            )
        }
        Section::Keys(z, set) => match &snapshot.zones[*z].signed {
            Some(signed) => (signed.key_set(*set).0.iter().collect(), Vec::new()),
            None => (Vec::new(), Vec::new()),
        },
        Section::Nsec(z, i) => match &snapshot.zones[*z].signed {
            Some(signed) => (vec![&signed.chain[*i].nsec], Vec::new()),
            None => (Vec::new(), Vec::new()),
        },
        Section::Rrsigs(z, i) => match &snapshot.zones[*z].signed {
            Some(signed) => {
                let mut sigs: Vec<&Record> = Vec::new();
                if *i == 0 {
                    // The apex: the first name of the chain.
                    sigs.extend([
                        &*signed.soa_sig,
                        &*signed.ns_sig,
                        &*signed.dnskey_sig,
                        &*signed.cds_sig,
                        &*signed.cdnskey_sig,
                    ]);
                }
                sigs.push(&signed.chain[*i].sig);
                (sigs, Vec::new())
            }
            None => (Vec::new(), Vec::new()),
        },
    }
}

/// A signed response's answer and authority records (RRsets followed by their RRSIGs;
/// negative answers prove themselves with NSEC, RFC 4035 §3.1.3). Also the records that
/// had no signature made ahead, if any: domain, family and the chosen servers.
#[allow(clippy::type_complexity)]
fn signed_sections<'s>(
    snapshot: &'s DnsSnapshot,
    answer: &Resolved,
    qname: &LowerName,
) -> (
    Vec<&'s Record>,
    Vec<&'s Record>,
    Option<(usize, bool, Picks)>,
) {
    let (mut records, mut authority) = unsigned_sections(snapshot, &answer.section);
    let zone_signed = |z: usize| snapshot.zones[z].signed.as_ref();
    let mut missing = None;
    match &answer.section {
        Section::Nothing => {}
        Section::Negative(z) => {
            if let Some(signed) = zone_signed(*z) {
                authority.push(&signed.soa_sig);
                let name = hickory_proto::rr::Name::from(qname);
                let kind = snapshot.names.get(qname).copied();
                for i in signed.denial(&snapshot.names, &name, kind) {
                    authority.push(&signed.chain[i].nsec);
                    authority.push(&signed.chain[i].sig);
                }
            }
        }
        Section::Soa(z) => records.extend(zone_signed(*z).map(|s| &*s.soa_sig)),
        Section::Ns(z) => records.extend(zone_signed(*z).map(|s| &*s.ns_sig)),
        Section::Keys(z, set) => records.extend(zone_signed(*z).map(|s| s.key_set(*set).1)),
        Section::Nsec(z, i) => records.extend(zone_signed(*z).map(|s| &*s.chain[*i].sig)),
        // RRSIGs are not signed themselves.
        Section::Rrsigs(..) => {}
        Section::Records { domain, v6, chosen } => {
            match snapshot.domains[*domain].family(*v6).signature(chosen) {
                Some(sig) => records.push(sig),
                None => missing = Some((*domain, *v6, chosen.clone())),
            }
        }
    }
    (records, authority, missing)
}

/// Signs a set of servers on the query path: only for a set `answer_sets` missed. Counted
/// and logged (at most once a second), never silent.
fn sign_online(
    snapshot: &DnsSnapshot,
    domain: usize,
    v6: bool,
    chosen: &[usize],
) -> Option<Record> {
    let family = snapshot.domains[domain].family(v6);
    let records = chosen.iter().map(|&i| &family.records[i]);
    let rrset = super::dnssec::sign::Rrset::of(records)?;
    let z = snapshot.zone_of(&LowerName::from(&rrset.owner))?;
    let signer = hickory_proto::rr::Name::from(&snapshot.zones[z].apex);
    let keyring = snapshot.keyring.as_ref()?;
    let zsk = keyring.active(crate::model::machine::KeyRole::Zsk)?;
    let now = unix_now();
    metrics::counter!(telemetry::DNSSEC_ONLINE_SIGNATURES).increment(1);
    if ONLINE_LOG.sample() {
        tracing::warn!(domain = %snapshot.domains[domain].label, records = chosen.len(), "a set of servers was signed on the query path: it was not signed ahead");
    }
    super::dnssec::sign::sign(
        zsk,
        &rrset,
        &signer,
        now.saturating_sub(super::dnssec::sign::INCEPTION_SKEW),
        now.saturating_add(super::dnssec::sign::VALIDITY),
    )
    .ok()
}

static ONLINE_LOG: Sampler = Sampler::new(1);

/// Answers a well-formed single question whose name is placed. `dnssec_ok`: the query
/// has DO=1.
pub(crate) fn resolve(
    snapshot: &DnsSnapshot,
    place: Placement,
    qtype: RecordType,
    qclass: DNSClass,
    client: Client,
    entropy: u64,
    dnssec_ok: bool,
) -> Resolved {
    let mut resolved = resolve_unsigned(snapshot, place, qtype, qclass, client, entropy, dnssec_ok);
    if let Placement::In(z, _) = place {
        resolved.signed = dnssec_ok && snapshot.synced && snapshot.signed(z);
    }
    resolved
}

#[allow(clippy::too_many_arguments)]
fn resolve_unsigned(
    snapshot: &DnsSnapshot,
    place: Placement,
    qtype: RecordType,
    qclass: DNSClass,
    client: Client,
    entropy: u64,
    dnssec_ok: bool,
) -> Resolved {
    let Placement::In(z, kind) = place else {
        return Resolved::empty(ResponseCode::Refused, Section::Nothing, Label::Nothing);
    };
    // QCLASS * matches our IN data (RFC 1035 §3.2.5), as Knot answers it.
    if qclass != DNSClass::IN && qclass != DNSClass::ANY {
        return Resolved::empty(ResponseCode::Refused, Section::Nothing, Label::Zone(z));
    }
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        // Zones are built from the cluster's state, not transferred: refused, rather
        // than an empty answer a secondary would take for the zone (RFC 5936 §2.2.1).
        return Resolved::empty(ResponseCode::Refused, Section::Nothing, Label::Zone(z));
    }
    if !snapshot.synced {
        // Catching up with the cluster: an answer now could ignore overrides this node
        // has not received yet. SERVFAIL sends resolvers to another nameserver.
        return Resolved::empty(ResponseCode::ServFail, Section::Nothing, Label::Zone(z));
    }
    let in_zone = Label::Zone(z);
    let nodata = |label| Resolved::empty(ResponseCode::NoError, Section::Negative(z), label);
    let zone_signed = snapshot.zones[z].signed.as_ref();
    // The NSEC record, or the RRSIGs, at an existing name, for a query of those types.
    let nsec = |label| match (qtype, zone_signed) {
        (RecordType::NSEC | RecordType::RRSIG, Some(signed)) => {
            let name = match kind {
                Some(NameKind::Apex(_)) => {
                    Some(hickory_proto::rr::Name::from(&snapshot.zones[z].apex))
                }
                Some(NameKind::Domain(d, _)) => snapshot.domains[d]
                    .v4
                    .records
                    .first()
                    .or(snapshot.domains[d].v6.records.first())
                    .map(|r| r.name.clone()),
                _ => None,
            };
            let section = |i| match qtype {
                RecordType::NSEC => Section::Nsec(z, i),
                _ => Section::Rrsigs(z, i),
            };
            match name.and_then(|n| signed.at(&n)) {
                Some(i) => Resolved::empty(ResponseCode::NoError, section(i), label),
                None => nodata(label),
            }
        }
        _ => nodata(label),
    };
    match kind {
        None => Resolved::empty(ResponseCode::NXDomain, Section::Negative(z), in_zone),
        Some(NameKind::EmptyNonTerminal(_)) => nodata(in_zone),
        // ANY gets one RRset (RFC 8482 §4.1): the SOA at the apex, a domain's addresses.
        Some(NameKind::Apex(_)) => match (qtype, zone_signed) {
            (RecordType::SOA | RecordType::ANY, _) => {
                Resolved::empty(ResponseCode::NoError, Section::Soa(z), in_zone)
            }
            (RecordType::NS, _) => Resolved::empty(ResponseCode::NoError, Section::Ns(z), in_zone),
            (RecordType::DNSKEY, Some(_)) => Resolved::empty(
                ResponseCode::NoError,
                Section::Keys(z, super::dnssec::KeySet::Dnskey),
                in_zone,
            ),
            (RecordType::CDS, Some(_)) => Resolved::empty(
                ResponseCode::NoError,
                Section::Keys(z, super::dnssec::KeySet::Cds),
                in_zone,
            ),
            (RecordType::CDNSKEY, Some(_)) => Resolved::empty(
                ResponseCode::NoError,
                Section::Keys(z, super::dnssec::KeySet::Cdnskey),
                in_zone,
            ),
            _ => nsec(in_zone),
        },
        Some(NameKind::Domain(d, _)) => {
            let domain = &snapshot.domains[d];
            let v6 = match qtype {
                RecordType::A => false,
                RecordType::AAAA => true,
                RecordType::ANY => domain.family(false).records.is_empty(),
                _ => return nsec(Label::Domain(d)),
            };
            // Weighted draws for DO=1 come from a known set of draws, signed ahead.
            let entropy = if dnssec_ok
                && zone_signed.is_some()
                && domain.algorithm == crate::config::Algorithm::Weighted
            {
                entropy % super::dnssec::SIGNED_DRAWS
            } else {
                entropy
            };
            if domain.family(v6).records.is_empty() {
                // No server of this family is configured: the name has no such records.
                return nodata(Label::Domain(d));
            }
            route(snapshot, d, v6, client, entropy)
        }
    }
}

/// What routing knows about one query before it decides: the client's located region
/// (when geolocation decides) and its learned region (for `learned_latency`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// The decision's inputs.
    pub query: Query,
    /// Where geolocation placed the client, when it decides.
    pub located: Option<crate::model::geo::Located>,
    /// The learned region (position in the domain's regions) and its prefix.
    pub learned: Option<(usize, u8)>,
}

/// The inputs of the routing decision for `client` asking domain `d`.
pub(crate) fn plan(
    snapshot: &DnsSnapshot,
    d: usize,
    v6: bool,
    client: Client,
    entropy: u64,
) -> Plan {
    let domain = &snapshot.domains[d];
    let family = domain.family(v6);
    let learned = (domain.algorithm == crate::config::Algorithm::LearnedLatency)
        .then(|| learned_region(snapshot, domain, family, client))
        .flatten();
    let geo_decides = domain.algorithm == crate::config::Algorithm::Geolocation
        || (domain.algorithm == crate::config::Algorithm::LearnedLatency && learned.is_none());
    let located = geo_decides.then(|| {
        locate(
            client.ip,
            &snapshot.geo,
            snapshot.geo_db.as_deref(),
            &snapshot.regions,
        )
    });
    let query = Query {
        max_records: domain.max_records,
        entropy,
        client_region: located
            .and_then(|l| l.region)
            .and_then(|r| domain.regions.iter().position(|x| *x == r)),
        client_prefix: located.map_or(0, |l| l.prefix),
        max_latency: domain.max_latency,
        min_samples: domain.min_samples,
        learned_region: learned.map(|(region, _)| region),
        learned_prefix: learned.map_or(0, |(_, prefix)| prefix),
    };
    Plan {
        query,
        located,
        learned,
    }
}

fn route(snapshot: &DnsSnapshot, d: usize, v6: bool, client: Client, entropy: u64) -> Resolved {
    let resolved = route_unlogged(snapshot, d, v6, client, entropy);
    // `level_enabled!` reads the global level hint only. `enabled!` would ask the
    // subscriber, and with per-layer filters an `enabled!` that no event follows leaves
    // the thread's filter state set: the next event on this thread (a refused TCP
    // connection's WARN) was dropped.
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        if let Some((_, outcome)) = resolved
            .decision
            .as_ref()
            .filter(|(_, o)| DECISION_SLOTS.sample(d * Outcome::ALL.len() + o.index()))
            .filter(|_| DECISION_LOG.sample())
        {
            let records = match &resolved.section {
                Section::Records { chosen, .. } => chosen.len(),
                _ => 0,
            };
            tracing::debug!(
                domain = %snapshot.domains[d].label,
                client = %client.ip,
                ecs = client.ecs.is_some(),
                outcome = outcome.name(),
                records,
                scope = resolved.ecs_scope.unwrap_or(0),
                "routing decision"
            );
        }
    }
    resolved
}

/// Routing decisions are logged (at debug) at most once a second per domain and outcome
/// (so a rare `geo_fallback` is not drowned by a busy domain's `healthy`) ...
static DECISION_SLOTS: Slots = Slots::new();
/// ... and at most this many times a second in all, whatever the query rate: enough to
/// see what is decided, never a flood.
static DECISION_LOG: Sampler = Sampler::new(20);

/// Once a second per slot (a key hashed into 64 slots; a collision only skips a line).
pub(crate) struct Slots([std::sync::atomic::AtomicU64; 64]);

impl Slots {
    const fn new() -> Slots {
        Slots([const { std::sync::atomic::AtomicU64::new(0) }; 64])
    }

    fn sample(&self, key: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let second = now_second();
        let slot = &self.0[key % self.0.len()];
        let last = slot.load(Relaxed);
        last != second
            && slot
                .compare_exchange(last, second, Relaxed, Relaxed)
                .is_ok()
    }
}

fn now_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// At most `per_second` yeses a second, lock-free.
pub(crate) struct Sampler {
    per_second: u64,
    /// The current second (high bits) and the yeses given in it (low 16 bits).
    state: std::sync::atomic::AtomicU64,
}

impl Sampler {
    const fn new(per_second: u64) -> Sampler {
        Sampler {
            per_second,
            state: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn sample(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let second = now_second();
        let state = self.state.load(Relaxed);
        let (at, given) = (state >> 16, state & 0xFFFF);
        let next = if at == second {
            if given >= self.per_second {
                return false;
            }
            state + 1
        } else {
            (second << 16) | 1
        };
        // A lost race gives up this sample: the count stays an upper bound.
        self.state
            .compare_exchange(state, next, Relaxed, Relaxed)
            .is_ok()
    }
}

fn route_unlogged(
    snapshot: &DnsSnapshot,
    d: usize,
    v6: bool,
    client: Client,
    entropy: u64,
) -> Resolved {
    let domain = &snapshot.domains[d];
    let plan = plan(snapshot, d, v6, client, entropy);
    let (chosen, outcome, scope) = choose(snapshot, d, v6, &plan);
    if chosen.is_empty() {
        let mut servfail =
            Resolved::empty(ResponseCode::ServFail, Section::Nothing, Label::Domain(d));
        servfail.decision = Some((d, outcome));
        return servfail;
    }
    Resolved {
        rcode: ResponseCode::NoError,
        section: Section::Records {
            domain: d,
            v6,
            chosen,
        },
        ecs_scope: client.ecs.map(|_| scope),
        learned: plan
            .learned
            .filter(|(_, prefix)| *prefix > 0 && client.ecs.is_some())
            .map(|(pos, _)| domain.regions[pos]),
        label: Label::Domain(d),
        decision: Some((d, outcome)),
        signed: false,
    }
}

/// The records of one answer under `plan` (indexes into the family's records), how they
/// were chosen, and the ECS scope: the algorithm's choice among the healthy servers, else
/// the domain's all-down policy (empty for SERVFAIL).
pub(crate) fn choose(
    snapshot: &DnsSnapshot,
    d: usize,
    v6: bool,
    plan: &Plan,
) -> (Picks, Outcome, u8) {
    let domain = &snapshot.domains[d];
    let family = domain.family(v6);
    let decision = decide_among(
        domain.algorithm,
        &family.candidates,
        &family.healthy,
        &plan.query,
    );
    if !decision.chosen.is_empty() {
        let outcome = if domain.algorithm == crate::config::Algorithm::LearnedLatency
            && plan.learned.is_none()
        {
            Outcome::GeoFallback
        } else {
            Outcome::Healthy
        };
        return (decision.chosen, outcome, decision.scope);
    }
    let fallback = all_down(domain, family);
    let outcome = if fallback.is_empty() {
        Outcome::AllDown(AllDownPolicy::ServFail)
    } else {
        Outcome::AllDown(domain.policy)
    };
    (fallback, outcome, decision.scope)
}

/// The servers the domain's all-down policy answers with when none is healthy, in
/// answer order (none for SERVFAIL).
pub(crate) fn all_down(domain: &DomainAnswers, family: &super::snapshot::Family) -> Picks {
    match domain.policy {
        AllDownPolicy::ServFail => Picks::new(),
        AllDownPolicy::ReturnLastHealthy => family
            .last_healthy
            .iter()
            .copied()
            .take(domain.max_records)
            .collect(),
        AllDownPolicy::ReturnAll => (0..family.records.len()).take(domain.max_records).collect(),
    }
}

/// The position (in the domain's regions) of the region with the lowest learned RTT for
/// the client's subnet among those with a healthy server, enough samples and an RTT under
/// the limit; with the learned prefix length. Without ECS and with nothing learned for
/// the resolver's own subnet, a resolver whose ECS clients all went to one region is
/// routed like them (prefix 0: the answer depends on the resolver, not a subnet).
fn learned_region(
    snapshot: &DnsSnapshot,
    domain: &DomainAnswers,
    family: &super::snapshot::Family,
    client: Client,
) -> Option<(usize, u8)> {
    let healthy_pos = |region: usize| {
        let pos = domain.regions.iter().position(|r| *r == region)?;
        family
            .healthy
            .iter()
            .any(|&i| family.candidates[i].region_pos == pos)
            .then_some(pos)
    };
    let Some((cells, prefix)) = snapshot.latency.lookup(client.ip) else {
        return match client.ecs {
            None => snapshot
                .latency
                .resolver_region(client.ip)
                .and_then(healthy_pos)
                .map(|pos| (pos, 0)),
            Some(_) => None,
        };
    };
    cells
        .iter()
        .filter(|c| {
            c.samples >= domain.min_samples && domain.max_latency.is_none_or(|max| c.rtt <= max)
        })
        .filter_map(|c| Some((c.rtt, healthy_pos(c.region)?)))
        .min()
        .map(|(_, pos)| (pos, prefix))
}

pub(crate) fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

pub(crate) fn type_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        RecordType::TXT => "TXT",
        RecordType::CNAME => "CNAME",
        RecordType::MX => "MX",
        _ => "other",
    }
}

pub(crate) fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}
