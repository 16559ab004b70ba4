//! DNSSEC endpoints: the keys' status and the DS records for the parent (reads), and
//! rollovers (writes, with a token). Private keys never leave the replicated state.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};

use super::writes::{authorize, body, commit};
use super::{ApiError, ApiState, render, types};
use crate::dns::dnssec::keys::{ZoneKey, algorithm_name};
use crate::dns::dnssec::lifecycle::{self, MARGIN_MS, RolloverError};
use crate::model::machine::{KeyRole, KeyState};
use crate::model::view::wall_ms;

/// `GET /api/v1/dnssec/status` (and OpenGSLB's `/api/v1/dnssec/ds`).
pub(super) async fn status(State(state): State<ApiState>) -> Json<types::DnssecStatus> {
    let view = state.view.borrow().clone();
    let snapshot = state.dns.borrow().clone();
    let settings = &view.settings;
    let (keyring, _) = crate::dns::dnssec::keys::Keyring::read(&view.replicated.dnssec_keys);
    let wait_ms = MARGIN_MS + u64::from(crate::app::max_ttl(settings)) * 1000;
    let at = |ms: u64| render::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    let keys = keyring
        .keys
        .iter()
        .map(|k| types::DnssecKeyStatus {
            id: k.id,
            role: k.role.name().to_owned(),
            state: format!("{:?}", k.state).to_lowercase(),
            tag: k.tag,
            algorithm: k.algorithm,
            since: at(k.since_ms),
            next: next_step(k, wait_ms, &at),
        })
        .collect();
    let signed_zones: Vec<String> = snapshot
        .zones
        .iter()
        .filter(|z| z.signed.is_some())
        .map(|z| z.apex.to_string())
        .collect();
    let zones = settings
        .dns
        .zones
        .iter()
        .map(|z| {
            let apex = hickory_proto::rr::Name::from_ascii(format!("{}.", z.apex))
                .unwrap_or_else(|_| hickory_proto::rr::Name::root());
            let records = crate::dns::dnssec::ds_records(&keyring, &apex);
            types::DnssecZone {
                zone: z.apex.clone(),
                ds: records.iter().map(|(_, ds, _)| ds.clone()).collect(),
                dnskey: records.iter().map(|(_, _, key)| key.clone()).collect(),
            }
        })
        .collect();
    let rrsigs = snapshot
        .zones
        .iter()
        .filter_map(|z| z.signed.as_ref())
        .map(|s| 5 + s.chain.len())
        .sum::<usize>()
        + snapshot
            .domains
            .iter()
            .map(|d| d.v4.signatures.rrsigs.len() + d.v6.signatures.rrsigs.len())
            .sum::<usize>();
    Json(types::DnssecStatus {
        enabled: settings.dnssec.enabled,
        algorithm: algorithm_name(settings.dnssec.algorithm).to_owned(),
        signing: !signed_zones.is_empty(),
        rrsigs,
        keys,
        zones,
    })
}

fn next_step(k: &ZoneKey, wait_ms: u64, at: &dyn Fn(u64) -> String) -> String {
    match (k.role, k.state) {
        (KeyRole::Ksk, KeyState::Pending) => "give the parent its DS (opengslb-cli dnssec ds); once published, run opengslb-cli dnssec rollover ksk --complete".to_owned(),
        (KeyRole::Zsk, KeyState::Published) => format!("signs from {}", at(k.since_ms + wait_ms)),
        (_, KeyState::Retired) => format!("removed at {}", at(k.since_ms + wait_ms)),
        (KeyRole::Ksk, KeyState::Active) => "signs the DNSKEY, CDS and CDNSKEY RRsets".to_owned(),
        (KeyRole::Zsk, KeyState::Active) => "signs every other RRset".to_owned(),
        _ => String::new(),
    }
}

/// `POST /api/v1/dnssec/rollover` `{"key": "zsk"|"ksk", "complete": false}`.
pub(super) async fn rollover(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Result<Json<types::RolloverRequest>, JsonRejection>,
) -> Result<Json<types::DnssecStatus>, ApiError> {
    let author = authorize(&state, &headers)?;
    let request = body(request)?;
    let (settings, keys) = {
        let view = state.view.borrow();
        (view.settings.clone(), view.replicated.dnssec_keys.clone())
    };
    if !settings.dnssec.enabled {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "DNSSEC is off on this node (overwatch.dnssec.enabled: false)".into(),
        ));
    }
    let now = wall_ms(SystemTime::now());
    let algorithm = settings.dnssec.algorithm;
    let write = match (request.key.to_ascii_lowercase().as_str(), request.complete) {
        ("zsk", false) => lifecycle::start_zsk(&keys, algorithm, now),
        ("ksk", false) => lifecycle::start_ksk(&keys, algorithm, now),
        ("ksk", true) => lifecycle::complete_ksk(&keys, now),
        ("zsk", true) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "a ZSK rollover finishes on its own: \"complete\" is for the KSK".into(),
            ));
        }
        (other, _) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("\"key\": {other:?} is not a key kind: use \"zsk\" or \"ksk\""),
            ));
        }
    }
    .map_err(|e| match e {
        RolloverError::InProgress(why) | RolloverError::NotReady(why) => {
            ApiError(StatusCode::CONFLICT, why)
        }
        RolloverError::Keygen(why) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, why),
    })?;
    commit(&state, write).await?;
    tracing::info!(key = %request.key, complete = request.complete, %author, "DNSSEC rollover step written");
    // The view follows the applied state within a moment; the status read now shows it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut view = state.view.clone();
    while view.borrow().replicated.dnssec_keys == keys && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, view.changed()).await;
    }
    Ok(status(State(state)).await)
}
