//! The webhook listener: `POST /webhooks/{system}` for every system configured with a
//! `webhook` table, plus `POST /webhooks/{system}/{secret}` for Salesforce endpoints that
//! carry their secret in the path.
//!
//! Each request is verified on its raw bytes (method, full URL, headers and body exactly as
//! received), parsed, turned into [`Notice`]s and handed to the [`NoticeSink`]; the 2xx goes
//! out only after the notices are committed. Processing (fetching current state, reconciling,
//! pushing) happens later, in the engine.
//!
//! Answers: 401 bad, missing or stale credentials; 400 malformed body (short static reason);
//! 413 body over the limit; 404 unknown system; 503 when the ledger cannot commit (the sender
//! retries). Never 410, which senders read as "stop sending". Every refusal is counted by
//! reason, in [`WebhookStats`] and in the Prometheus counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::hubspot::{self, HubspotEvent, HubspotRequest, HubspotVerifyConfig};
use super::salesforce::{self, OutboundNotification, SalesforceOutboundConfig};
use super::{WebhookError, ct_eq};
use crate::domain::{Change, Notice, NoticeKind, RemoteId, SystemName};
use crate::ingest::sink::{NoticeSink, SinkError};

/// Turns a Salesforce notification into the change it carries, when it carries every field
/// the connector reads (the connector knows which); `None` means "fetch it".
pub type SnapshotFn =
    Arc<dyn Fn(&OutboundNotification, DateTime<Utc>) -> Option<Change> + Send + Sync>;

/// How one system's requests are checked.
pub enum ReceiverKind {
    Hubspot(HubspotVerifyConfig),
    Salesforce {
        config: SalesforceOutboundConfig,
        /// The last path segment or the basic-auth password must equal it.
        secret: SecretString,
        snapshot: SnapshotFn,
    },
}

/// One configured system that accepts webhooks.
pub struct Receiver {
    pub name: SystemName,
    pub kind: ReceiverKind,
}

/// Why a request was refused, as a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadSignature,
    StaleTimestamp,
    WrongOrganization,
    Malformed,
    TooLarge,
    UnknownSystem,
    LedgerUnavailable,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::BadSignature,
        Reason::StaleTimestamp,
        Reason::WrongOrganization,
        Reason::Malformed,
        Reason::TooLarge,
        Reason::UnknownSystem,
        Reason::LedgerUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        use crate::metrics as m;
        match self {
            Reason::BadSignature => m::REASON_BAD_SIGNATURE,
            Reason::StaleTimestamp => m::REASON_STALE_TIMESTAMP,
            Reason::WrongOrganization => m::REASON_WRONG_ORGANIZATION,
            Reason::Malformed => m::REASON_MALFORMED,
            Reason::TooLarge => m::REASON_TOO_LARGE,
            Reason::UnknownSystem => m::REASON_UNKNOWN_SYSTEM,
            Reason::LedgerUnavailable => m::REASON_LEDGER_UNAVAILABLE,
        }
    }

    fn of(e: &WebhookError) -> Reason {
        match e {
            WebhookError::BadSignature => Reason::BadSignature,
            WebhookError::Stale => Reason::StaleTimestamp,
            WebhookError::WrongOrganization => Reason::WrongOrganization,
            WebhookError::Malformed { .. } => Reason::Malformed,
            WebhookError::TooLarge => Reason::TooLarge,
        }
    }
}

/// What the listener has done since start, for tests, the demo and benchmarks.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Requests acknowledged with a 2xx.
    pub accepted_requests: AtomicU64,
    /// Events in acknowledged requests (including redeliveries).
    pub events: AtomicU64,
    /// Events stored for the first time.
    pub new_events: AtomicU64,
    rejected: [AtomicU64; 7],
}

impl WebhookStats {
    /// Requests refused for `reason`.
    pub fn rejected(&self, reason: Reason) -> u64 {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejected[i].load(Ordering::Relaxed)
    }

    /// Requests refused for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn reject(&self, system: &str, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
        crate::metrics::event_rejected(system, reason.as_str());
    }
}

/// The listener's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The base URL vendors call (HubSpot signs the full URL); `None`: `http://` + `Host`.
    pub public_url: Option<url::Url>,
    /// Bodies above this are refused with 413.
    pub max_body_bytes: usize,
}

struct Inner {
    receivers: HashMap<String, Receiver>,
    sink: NoticeSink,
    config: ServerConfig,
    stats: Arc<WebhookStats>,
}

/// Shared state of the webhook router.
#[derive(Clone)]
pub struct WebhookState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState")
            .field("systems", &self.inner.receivers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WebhookState {
    pub fn new(receivers: Vec<Receiver>, sink: NoticeSink, config: ServerConfig) -> WebhookState {
        WebhookState {
            inner: Arc::new(Inner {
                receivers: receivers.into_iter().map(|r| (r.name.to_string(), r)).collect(),
                sink,
                config,
                stats: Arc::new(WebhookStats::default()),
            }),
        }
    }

    pub fn stats(&self) -> Arc<WebhookStats> {
        Arc::clone(&self.inner.stats)
    }
}

/// The router: one route per configured system, decided at request time from the path.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhooks/{system}", post(receive))
        .route("/webhooks/{system}/{secret}", post(receive_with_secret))
        .with_state(state)
}

/// Serve `router(state)` on `listener` until `shutdown` fires, then finish the requests in
/// flight (each waits for its commit) and return.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebhookState,
    mut shutdown: crate::shutdown::Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

async fn receive(
    State(st): State<WebhookState>,
    Path(system): Path<String>,
    req: Request,
) -> Response {
    handle(&st, &system, None, req).await
}

async fn receive_with_secret(
    State(st): State<WebhookState>,
    Path((system, secret)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle(&st, &system, Some(secret), req).await
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn refuse(st: &Inner, system: &str, e: &WebhookError) -> Response {
    st.stats.reject(system, Reason::of(e));
    let body = match e {
        WebhookError::BadSignature => "signature missing or invalid",
        WebhookError::Stale => "timestamp outside the accepted window",
        WebhookError::WrongOrganization => "unexpected organization",
        WebhookError::Malformed { reason } => reason,
        WebhookError::TooLarge => "body too large",
    };
    let mut r = text(e.status(), body);
    if matches!(e, WebhookError::BadSignature) {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"leadsync\""));
    }
    r
}

async fn handle(
    st: &WebhookState,
    system: &str,
    path_secret: Option<String>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let st = &*st.inner;
    let Some(receiver) = st.receivers.get(system) else {
        // The label is bounded: an unknown name is never used as a label value.
        st.stats.reject("unknown", Reason::UnknownSystem);
        return text(StatusCode::NOT_FOUND, "no such webhook endpoint");
    };
    // A secret in the path is a Salesforce convention; HubSpot's target URL has none.
    if path_secret.is_some() && matches!(receiver.kind, ReceiverKind::Hubspot(_)) {
        st.stats.reject("unknown", Reason::UnknownSystem);
        return text(StatusCode::NOT_FOUND, "no such webhook endpoint");
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(body, &parts.headers, st.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return refuse(st, system, &e),
    };
    let now = Utc::now();
    let notices = match &receiver.kind {
        ReceiverKind::Hubspot(cfg) => {
            let uri = signed_uri(st.config.public_url.as_ref(), &parts.headers, &parts.uri);
            let method = parts.method.as_str();
            let hreq = HubspotRequest::from_headers(method, &uri, &parts.headers, &body);
            match hubspot::verify_and_parse(cfg, &hreq, now.timestamp_millis()) {
                Ok(events) => hubspot_notices(&events),
                Err(e) => return refuse(st, system, &e),
            }
        }
        ReceiverKind::Salesforce { config, secret, snapshot } => {
            if !salesforce_authorized(secret, path_secret.as_deref(), &parts.headers) {
                return refuse(st, system, &WebhookError::BadSignature);
            }
            match salesforce::parse_outbound_message(config, &body) {
                Ok(msg) => msg
                    .notifications
                    .iter()
                    .map(|n| salesforce_notice(n, snapshot(n, now), now))
                    .collect(),
                Err(e) => return refuse(st, system, &e),
            }
        }
    };
    let events = notices.len() as u64;
    let stored = if notices.is_empty() {
        Ok(0)
    } else {
        st.sink.store(receiver.name.clone(), notices).await
    };
    match stored {
        Ok(new) => {
            st.stats.accepted_requests.fetch_add(1, Ordering::Relaxed);
            st.stats.events.fetch_add(events, Ordering::Relaxed);
            st.stats.new_events.fetch_add(new as u64, Ordering::Relaxed);
            crate::metrics::events_received(system, new as u64);
            crate::metrics::webhook_ack_duration(system, started.elapsed());
            tracing::debug!(events, new, "webhook stored");
            match receiver.kind {
                ReceiverKind::Hubspot(_) => StatusCode::OK.into_response(),
                ReceiverKind::Salesforce { .. } => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, salesforce::ACK_CONTENT_TYPE)],
                    salesforce::ack_response(),
                )
                    .into_response(),
            }
        }
        Err(e) => {
            st.stats.reject(system, Reason::LedgerUnavailable);
            tracing::warn!(error = %e, "webhook refused: cannot store it");
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "cannot store the event now; retry");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            if matches!(e, SinkError::Closed) {
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        }
    }
}

/// Reads the body, stopping at `max` bytes.
async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Vec<u8>, WebhookError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(WebhookError::TooLarge);
    }
    match axum::body::to_bytes(body, max).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(WebhookError::TooLarge)
            } else {
                Err(WebhookError::malformed("the body could not be read"))
            }
        }
    }
}

/// The full URL the sender called, as HubSpot signs it: the configured public base URL (or
/// `http://` + `Host`) followed by the path and query exactly as received.
fn signed_uri(public: Option<&url::Url>, headers: &HeaderMap, uri: &Uri) -> String {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    match public {
        Some(base) => {
            let base = base.as_str().trim_end_matches('/');
            format!("{base}{path_and_query}")
        }
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| uri.authority().map(|a| a.as_str()))
                .unwrap_or("localhost");
            format!("http://{host}{path_and_query}")
        }
    }
}

/// Salesforce does not sign: the endpoint proves itself by a secret only the configured URL
/// holds, as its last path segment or as the basic-auth password. Compared in constant time.
fn salesforce_authorized(
    secret: &SecretString,
    path_secret: Option<&str>,
    headers: &HeaderMap,
) -> bool {
    let want = secret.expose_secret().as_bytes();
    let from_path = path_secret.is_some_and(|p| ct_eq(p.as_bytes(), want));
    let from_basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|raw| {
            let pos = raw.iter().position(|b| *b == b':')?;
            Some(ct_eq(&raw[pos + 1..], want))
        })
        .unwrap_or(false);
    from_path | from_basic
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_else(Utc::now)
}

/// HubSpot events about contacts as notices. Events about other objects are acknowledged and
/// dropped: leadsync syncs contacts only.
///
/// A `contact.privacyDeletion` (GDPR delete) carries its own state, a `Deleted` fate: the
/// contact is erased, so a fetch finds nothing (not even in the archive), and a notice left to
/// a fetch would end "not found" with the link still open. This is HubSpot's own word that the
/// record is gone, not a delete inferred from absence.
pub fn hubspot_notices(events: &[HubspotEvent]) -> Vec<Notice> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let Some((object, action)) = e.subscription_type.split_once('.') else { continue };
        if object != "contact" {
            continue;
        }
        let kind = match action {
            "creation" => NoticeKind::Created,
            "propertyChange" => NoticeKind::Changed,
            "deletion" | "privacyDeletion" => NoticeKind::Deleted,
            "merge" => NoticeKind::Merged,
            "restore" => NoticeKind::Restored,
            _ => NoticeKind::Other,
        };
        // A merge names the surviving record (newObjectId when HubSpot made a new one).
        let (id, related) = if kind == NoticeKind::Merged {
            let winner = e.new_object_id.or(e.primary_object_id).unwrap_or(e.object_id);
            let mut losers: Vec<String> = e
                .merged_object_ids
                .iter()
                .chain(e.primary_object_id.iter())
                .filter(|id| **id != winner)
                .map(u64::to_string)
                .collect();
            losers.dedup();
            (winner, losers)
        } else {
            (e.object_id, Vec::new())
        };
        let remote = RemoteId { object_type: "contact".into(), id: id.to_string() };
        let occurred_at = ms_to_time(e.occurred_at);
        let snapshot = (action == "privacyDeletion").then(|| Change {
            remote: remote.clone(),
            fields: crate::domain::Fields::new(),
            ledger_key: None,
            modified_at: occurred_at,
            fetched_at: occurred_at,
            fate: crate::domain::RecordFate::Deleted,
            custom: Default::default(),
            last_activity: None,
        });
        out.push(Notice {
            dedupe_key: e.dedupe_key(),
            remote,
            kind,
            occurred_at,
            related,
            snapshot,
        });
    }
    out
}

fn salesforce_notice(
    n: &OutboundNotification,
    snapshot: Option<Change>,
    received: DateTime<Utc>,
) -> Notice {
    Notice {
        dedupe_key: n.dedupe_key(),
        remote: RemoteId { object_type: n.object_type.clone(), id: n.record_id.clone() },
        // Outbound messages do not say whether a record was created or edited.
        kind: NoticeKind::Changed,
        occurred_at: snapshot.as_ref().map_or(received, |c| c.modified_at),
        related: Vec::new(),
        snapshot,
    }
}

#[cfg(test)]
mod tests;
