//! The query path: classify the question against the snapshot, route, respond.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use metrics::SharedString;
use tokio::sync::watch;

use super::snapshot::{DnsSnapshot, DomainAnswers, NameKind};
use crate::config::AllDownPolicy;
use crate::geo::locate;
use crate::routing::{Query, decide_among};

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
    observer: Option<tokio::sync::mpsc::Sender<ResolverSeen>>,
}

/// A resolver asked, with a learned ECS subnet, and the answer went to `region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverSeen {
    /// The resolver's address (the query's source).
    pub resolver: IpAddr,
    /// Index into `settings.regions`.
    pub region: usize,
}

/// One query in this many with a learned ECS decision is reported to the observer.
const OBSERVE_EVERY: u64 = 8;

impl Handler {
    /// A handler that always answers from the latest snapshot.
    pub fn new(snapshots: watch::Receiver<Arc<DnsSnapshot>>) -> Handler {
        Handler {
            snapshots,
            counter: AtomicU64::new(0),
            observer: None,
        }
    }

    /// Also reports learned decisions for ECS subnets (never waiting: a full channel drops).
    pub fn with_observer(mut self, observer: tokio::sync::mpsc::Sender<ResolverSeen>) -> Handler {
        self.observer = Some(observer);
        self
    }
}

/// Metrics label for queries that name no configured zone or domain.
static NO_DOMAIN: SharedString = SharedString::const_str("-");

/// What one query resolves to.
struct Answer<'s> {
    /// The region a learned ECS decision chose (`settings.regions` index).
    learned: Option<usize>,
    rcode: ResponseCode,
    answers: Vec<&'s Record>,
    soa: Option<&'s Record>,
    ecs_scope: Option<u8>,
    /// Metrics label: a configured domain or zone, never the raw query name.
    label: &'s SharedString,
}

impl<'s> Answer<'s> {
    fn empty(rcode: ResponseCode, soa: Option<&'s Record>, label: &'s SharedString) -> Self {
        Answer {
            learned: None,
            rcode,
            answers: Vec::new(),
            soa,
            ecs_scope: None,
            label,
        }
    }
}

/// The client for routing: the ECS subnet when present (and enabled), else the source.
#[derive(Debug, Clone, Copy)]
struct Client {
    ip: IpAddr,
    ecs: Option<(IpAddr, u8)>,
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
        let answer = if request.metadata.message_type != MessageType::Query {
            Answer::empty(ResponseCode::FormErr, None, &NO_DOMAIN)
        } else if request.metadata.op_code != OpCode::Query {
            Answer::empty(ResponseCode::NotImp, None, &NO_DOMAIN)
        } else if queries.len() != 1 {
            Answer::empty(ResponseCode::FormErr, None, &NO_DOMAIN)
        } else if request_edns.is_some_and(|e| e.version() > 0) {
            Answer::empty(ResponseCode::BADVERS, None, &NO_DOMAIN)
        } else {
            let query = &queries[0];
            qtype_label = type_label(query.query_type());
            let client = Client {
                ip: ecs
                    .filter(|(_, prefix)| *prefix > 0)
                    .map_or(request.src().ip(), |(ip, _)| ip),
                ecs,
            };
            resolve(
                &snapshot,
                query.name(),
                query.query_type(),
                query.query_class(),
                client,
                entropy,
            )
        };

        if let (Some(region), Some(observer)) = (answer.learned, &self.observer)
            && entropy % OBSERVE_EVERY == 0
        {
            let _ = observer.try_send(ResolverSeen {
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
            edns.set_dnssec_ok(false);
            // Echo the client subnet with the scope the answer deserves (RFC 7871 §7.2.1).
            if let Some((addr, source)) = ecs {
                let scope = answer.ecs_scope.unwrap_or(0).min(max_prefix(addr));
                edns.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(addr, source, scope)));
            }
            response_edns = Some(edns);
        }
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &response_edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            answer.answers.iter().copied(),
            std::iter::empty(),
            answer.soa,
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
        metrics::counter!(
            "opengslb_dns_queries_total",
            "domain" => answer.label.clone(),
            "type" => qtype_label,
            "rcode" => rcode_label(answer.rcode),
        )
        .increment(1);
        metrics::histogram!("opengslb_dns_query_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        info
    }
}

/// Answers a well-formed single question.
fn resolve<'s>(
    snapshot: &'s DnsSnapshot,
    name: &LowerName,
    qtype: RecordType,
    qclass: DNSClass,
    client: Client,
    entropy: u64,
) -> Answer<'s> {
    let Some(zone) = snapshot.zone_of(name) else {
        return Answer::empty(ResponseCode::Refused, None, &NO_DOMAIN);
    };
    if qclass != DNSClass::IN {
        return Answer::empty(ResponseCode::Refused, None, &zone.label);
    }
    let soa = Some(&zone.soa);
    match snapshot.names.get(name) {
        None => Answer::empty(ResponseCode::NXDomain, soa, &zone.label),
        Some(NameKind::EmptyNonTerminal(_)) => {
            Answer::empty(ResponseCode::NoError, soa, &zone.label)
        }
        Some(NameKind::Apex(_)) => match qtype {
            RecordType::SOA => Answer {
                learned: None,
                rcode: ResponseCode::NoError,
                answers: vec![&zone.soa],
                soa: None,
                ecs_scope: None,
                label: &zone.label,
            },
            RecordType::NS => Answer {
                learned: None,
                rcode: ResponseCode::NoError,
                answers: zone.ns.iter().collect(),
                soa: None,
                ecs_scope: None,
                label: &zone.label,
            },
            _ => Answer::empty(ResponseCode::NoError, soa, &zone.label),
        },
        Some(NameKind::Domain(d, _)) => {
            let domain = &snapshot.domains[*d];
            let family = match qtype {
                RecordType::A => &domain.v4,
                RecordType::AAAA => &domain.v6,
                _ => return Answer::empty(ResponseCode::NoError, soa, &domain.label),
            };
            if family.records.is_empty() {
                // No server of this family is configured: the name has no such records.
                return Answer::empty(ResponseCode::NoError, soa, &domain.label);
            }
            route(snapshot, domain, family, client, entropy)
        }
    }
}

fn route<'s>(
    snapshot: &'s DnsSnapshot,
    domain: &'s DomainAnswers,
    family: &'s super::snapshot::Family,
    client: Client,
    entropy: u64,
) -> Answer<'s> {
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
    let decision = decide_among(
        domain.algorithm,
        &family.candidates,
        &family.healthy,
        &query,
    );
    let chosen: Vec<usize> = if !decision.chosen.is_empty() {
        let outcome =
            if domain.algorithm == crate::config::Algorithm::LearnedLatency && learned.is_none() {
                "geo_fallback"
            } else {
                "healthy"
            };
        metrics::counter!("opengslb_routing_decisions_total", "domain" => domain.label.clone(), "algorithm" => domain.algorithm.name(), "outcome" => outcome).increment(1);
        decision.chosen
    } else {
        let fallback: Vec<usize> = match domain.policy {
            AllDownPolicy::ServFail => Vec::new(),
            AllDownPolicy::ReturnLastHealthy => family
                .last_healthy
                .iter()
                .copied()
                .take(domain.max_records)
                .collect(),
            AllDownPolicy::ReturnAll => {
                (0..family.records.len()).take(domain.max_records).collect()
            }
        };
        let outcome = if fallback.is_empty() {
            "servfail"
        } else {
            domain.policy.name()
        };
        metrics::counter!("opengslb_routing_decisions_total", "domain" => domain.label.clone(), "algorithm" => domain.algorithm.name(), "outcome" => outcome).increment(1);
        if fallback.is_empty() {
            return Answer::empty(ResponseCode::ServFail, None, &domain.label);
        }
        fallback
    };
    Answer {
        learned: learned
            .filter(|(_, prefix)| *prefix > 0 && client.ecs.is_some())
            .map(|(pos, _)| domain.regions[pos]),
        rcode: ResponseCode::NoError,
        answers: chosen.into_iter().map(|i| &family.records[i]).collect(),
        soa: None,
        ecs_scope: client.ecs.map(|_| decision.scope),
        label: &domain.label,
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

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn type_label(t: RecordType) -> &'static str {
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

fn rcode_label(r: ResponseCode) -> &'static str {
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
