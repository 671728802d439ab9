//! App webhooks (api-facts §1.7): turning committed contact changes into HubSpot events,
//! signing and sending them through the shared engine ([`crate::sim::webhooks`]), and the
//! `/webhooks/v3/{appId}/settings|subscriptions` management API.
//!
//! Changes are recorded by the store as they are committed and handed over here when the store
//! lock is released (`StoreGuard`), tagged with who made them: `API` for HTTP calls, `CRM_UI`
//! for the handle's methods. An event's body is fixed when the change happens; only
//! `attemptNumber` and the signature headers change between tries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::Inner;
use super::store::{BUILTIN_PROPERTIES, ContactChange, iso_ms, now_ms};
use crate::sim::webhooks::{
    DeliveryOptions, DeliveryStats, Endpoint, LazyEngine, Prepared, RetrySchedule,
};

/// Event types a contact subscription may name (api-facts §1.7).
pub const CONTACT_EVENT_TYPES: &[&str] = &[
    "contact.creation",
    "contact.deletion",
    "contact.propertyChange",
    "contact.merge",
    "contact.restore",
    "contact.privacyDeletion",
    "contact.associationChange",
];

/// HubSpot's floor for `maxConcurrentRequests`.
pub const MIN_CONCURRENT_REQUESTS: usize = 5;

/// Who made a change, as `changeSource` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeSource {
    /// An HTTP API call (any app, ours included: HubSpot does not filter an app's own writes).
    Api,
    /// A person in HubSpot (the handle's `insert`, `ui_*` methods).
    CrmUi,
}

impl ChangeSource {
    fn wire(self) -> &'static str {
        match self {
            ChangeSource::Api => "API",
            ChangeSource::CrmUi => "CRM_UI",
        }
    }
}

/// The older signature sent in `X-HubSpot-Signature` besides v3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacySignature {
    /// `hex(SHA-256(secret + body))`.
    V1,
    /// `hex(SHA-256(secret + method + uri + body))`.
    V2,
}

/// One webhook subscription of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSubscription {
    pub id: u64,
    /// e.g. `contact.creation`, `contact.propertyChange`.
    pub event_type: String,
    /// Required for `contact.propertyChange`, absent otherwise.
    pub property_name: Option<String>,
    pub active: bool,
}

impl WebhookSubscription {
    /// HubSpot's default-looking set: creation, deletion, merge, restore, privacyDeletion and
    /// one `contact.propertyChange` per named property, ids from 1.
    pub fn defaults<S: AsRef<str>>(properties: &[S]) -> Vec<WebhookSubscription> {
        let plain = [
            "contact.creation",
            "contact.deletion",
            "contact.merge",
            "contact.restore",
            "contact.privacyDeletion",
        ];
        let mut out: Vec<WebhookSubscription> = plain
            .iter()
            .map(|t| WebhookSubscription {
                id: 0,
                event_type: (*t).to_owned(),
                property_name: None,
                active: true,
            })
            .collect();
        out.extend(properties.iter().map(|p| WebhookSubscription {
            id: 0,
            event_type: "contact.propertyChange".into(),
            property_name: Some(p.as_ref().to_owned()),
            active: true,
        }));
        for (i, s) in out.iter_mut().enumerate() {
            s.id = i as u64 + 1;
        }
        out
    }

    fn to_json(&self, created_ms: i64) -> Value {
        let mut v = json!({
            "id": self.id.to_string(),
            "eventType": self.event_type,
            "active": self.active,
            "createdAt": iso_ms(created_ms),
            "updatedAt": iso_ms(created_ms),
        });
        if let (Some(p), Some(obj)) = (&self.property_name, v.as_object_mut()) {
            obj.insert("propertyName".into(), Value::String(p.clone()));
        }
        v
    }
}

/// The app's webhook settings on the simulated portal.
#[derive(Debug, Clone, PartialEq)]
pub struct HubspotWebhookOptions {
    /// Where events are POSTed; `None` switches webhooks off (changes are not queued).
    pub target_url: Option<String>,
    /// The app's client secret: the signing key.
    pub client_secret: String,
    pub app_id: u64,
    pub portal_id: u64,
    /// `None`: [`WebhookSubscription::defaults`] over every property the portal defines
    /// (built-in and `extra_properties`).
    pub subscriptions: Option<Vec<WebhookSubscription>>,
    /// Requests in flight at once; raised to [`MIN_CONCURRENT_REQUESTS`] if lower.
    pub max_concurrent_requests: usize,
    /// Also send a v1 or v2 signature (v3 is always sent).
    pub legacy_signature: Option<LegacySignature>,
    /// How long events gather before a batch of up to 100 is sent. This is the latency floor of
    /// the real-time path, so keep it small.
    pub batch_window: Duration,
    /// A receiver slower than this fails the attempt (HubSpot: 5 s).
    pub timeout: Duration,
    /// Multiplies retry delays (1.0 = HubSpot's real ~24 h schedule).
    pub time_scale: f64,
}

impl Default for HubspotWebhookOptions {
    fn default() -> Self {
        HubspotWebhookOptions {
            target_url: None,
            client_secret: "sim-app-client-secret".into(),
            app_id: 1_000_001,
            portal_id: 62_515,
            subscriptions: None,
            max_concurrent_requests: 10,
            legacy_signature: None,
            batch_window: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
            time_scale: 1.0,
        }
    }
}

/// HubSpot's retry schedule as we model it: retry `n` (1-based) waits 2^n minutes for the first
/// nine retries (2, 4, ... 512 min, as HubSpot's older webhook guide stated: "first retry in 2
/// minutes, the second in 4, the third in 8"), and the tenth comes at 24 h after the first try
/// (the current guide: "up to 10 times ... spread out over the next 24 hours"). ±20 % jitter is
/// applied on top (the guide: "some randomization applied").
pub fn hubspot_retry_schedule() -> RetrySchedule {
    let mut delays: Vec<Duration> = (1..=9).map(|n| Duration::from_secs(60 << n)).collect();
    let so_far: Duration = delays.iter().sum();
    delays.push(Duration::from_secs(24 * 3600).saturating_sub(so_far));
    RetrySchedule::Fixed(delays)
}

/// Live webhook settings (the management API changes them at run time).
#[derive(Debug)]
pub(crate) struct HookConfig {
    opts: HubspotWebhookOptions,
    subscriptions: Vec<WebhookSubscription>,
    next_subscription_id: u64,
    created_ms: i64,
}

/// One event, its body fixed when the change happened.
pub(crate) struct Event {
    body: Map<String, Value>,
}

pub(crate) struct HubspotEndpoint {
    config: Arc<Mutex<HookConfig>>,
}

fn lock(config: &Mutex<HookConfig>) -> MutexGuard<'_, HookConfig> {
    config.lock().unwrap_or_else(|p| p.into_inner())
}

type HmacSha256 = Hmac<Sha256>;

/// The three HubSpot signatures over one request; `uri` is the URL as called.
pub(crate) fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], ts: &str) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(ts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(crate) fn sign_legacy(
    version: LegacySignature,
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    if version == LegacySignature::V2 {
        h.update(method.as_bytes());
        h.update(uri.as_bytes());
    }
    h.update(body);
    hex::encode(h.finalize())
}

impl Endpoint for HubspotEndpoint {
    type Item = Event;

    fn prepare(&self, client: &reqwest::Client, items: &[Event], attempt: u32) -> Prepared {
        let (target, secret, legacy) = {
            let c = lock(&self.config);
            (c.opts.target_url.clone(), c.opts.client_secret.clone(), c.opts.legacy_signature)
        };
        // Target removed since the events were queued: HubSpot has nowhere to send them.
        let Some(target) = target else { return Prepared::Done };
        let Ok(url) = url::Url::parse(&target) else { return Prepared::Done };
        let events: Vec<Value> = items
            .iter()
            .map(|e| {
                let mut body = e.body.clone();
                body.insert("attemptNumber".into(), Value::from(attempt));
                Value::Object(body)
            })
            .collect();
        let body = serde_json::to_vec(&events).unwrap_or_default();
        // HubSpot signs the URL it calls; the parsed form is what goes on the wire (a bare
        // host gains its `/`).
        let uri = url.as_str().to_owned();
        let ts = now_ms().to_string();
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-hubspot-request-timestamp", &ts)
            .header("x-hubspot-signature-v3", sign_v3(&secret, "POST", &uri, &body, &ts));
        if let Some(version) = legacy {
            let tag = match version {
                LegacySignature::V1 => "v1",
                LegacySignature::V2 => "v2",
            };
            request = request
                .header("x-hubspot-signature", sign_legacy(version, &secret, "POST", &uri, &body))
                .header("x-hubspot-signature-version", tag);
        }
        Prepared::Send(Box::new(request.body(body)))
    }

    fn accepted(&self, status: reqwest::StatusCode, _body: &[u8]) -> bool {
        status.is_success()
    }
}

/// The portal's webhook side: settings, event ids, and the delivery engine.
pub(crate) struct Hooks {
    config: Arc<Mutex<HookConfig>>,
    engine: LazyEngine<HubspotEndpoint>,
    next_event_id: AtomicU64,
}

impl Hooks {
    pub fn new(opts: HubspotWebhookOptions, extra_properties: &[String]) -> Hooks {
        let subscriptions = opts.subscriptions.clone().unwrap_or_else(|| {
            let names: Vec<String> = BUILTIN_PROPERTIES
                .iter()
                .map(|d| d.name.to_owned())
                .filter(|n| !COMPUTED.contains(&n.as_str()))
                .chain(extra_properties.iter().cloned())
                .collect();
            WebhookSubscription::defaults(&names)
        });
        let next_subscription_id = subscriptions.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        Hooks {
            config: Arc::new(Mutex::new(HookConfig {
                opts,
                subscriptions,
                next_subscription_id,
                created_ms: now_ms(),
            })),
            engine: LazyEngine::default(),
            // Event ids look like HubSpot's (large numbers) and differ between portals.
            next_event_id: AtomicU64::new(rand::random_range(1_000_000_000..2_000_000_000)),
        }
    }

    pub fn set_target(&self, url: Option<String>) {
        lock(&self.config).opts.target_url = url;
    }

    pub fn stats(&self) -> DeliveryStats {
        self.engine.stats()
    }

    pub fn stop(&self) {
        self.engine.stop();
    }

    /// Turns committed changes into events and queues them (nothing when webhooks are off).
    pub fn emit(&self, changes: Vec<ContactChange>, source: ChangeSource) {
        let events = {
            let c = lock(&self.config);
            if c.opts.target_url.is_none() {
                return;
            }
            let mut events = Vec::new();
            for change in changes {
                self.events_for(&c, change, source, &mut events);
            }
            events
        };
        if events.is_empty() {
            return;
        }
        let config = Arc::clone(&self.config);
        self.engine.with(
            || {
                let c = lock(&config);
                let opts = DeliveryOptions {
                    batch_window: c.opts.batch_window,
                    max_batch: 100,
                    max_concurrent: c.opts.max_concurrent_requests.max(MIN_CONCURRENT_REQUESTS),
                    timeout: c.opts.timeout,
                    retry: hubspot_retry_schedule(),
                    jitter: 0.2,
                    time_scale: c.opts.time_scale,
                };
                drop(c);
                (HubspotEndpoint { config: Arc::clone(&config) }, opts)
            },
            |engine| {
                for e in events {
                    engine.push(e);
                }
            },
        );
    }

    fn events_for(
        &self,
        c: &HookConfig,
        change: ContactChange,
        source: ChangeSource,
        out: &mut Vec<Event>,
    ) {
        let sub = |event_type: &str, property: Option<&str>| {
            c.subscriptions.iter().find(|s| {
                s.active && s.event_type == event_type && s.property_name.as_deref() == property
            })
        };
        let base = |sub: &WebhookSubscription, object_id: u64, at: i64| {
            let mut m = Map::new();
            m.insert(
                "eventId".into(),
                Value::from(self.next_event_id.fetch_add(1, Ordering::Relaxed)),
            );
            m.insert("subscriptionId".into(), Value::from(sub.id));
            m.insert("portalId".into(), Value::from(c.opts.portal_id));
            m.insert("appId".into(), Value::from(c.opts.app_id));
            m.insert("occurredAt".into(), Value::from(at));
            m.insert("subscriptionType".into(), Value::String(sub.event_type.clone()));
            m.insert("attemptNumber".into(), Value::from(0));
            m.insert("objectId".into(), Value::from(object_id));
            m.insert("changeSource".into(), Value::String(source.wire().into()));
            let source_id = match source {
                ChangeSource::Api => c.opts.app_id.to_string(),
                ChangeSource::CrmUi => "userId:1".to_owned(),
            };
            m.insert("sourceId".into(), Value::String(source_id));
            m
        };
        let property_changes =
            |id: u64, at: i64, props: &[(String, String)], out: &mut Vec<Event>| {
                for (name, value) in props {
                    if let Some(s) = sub("contact.propertyChange", Some(name)) {
                        let mut m = base(s, id, at);
                        m.insert("propertyName".into(), Value::String(name.clone()));
                        m.insert("propertyValue".into(), Value::String(value.clone()));
                        out.push(Event { body: m });
                    }
                }
            };
        match change {
            ContactChange::Created { id, at, props } => {
                if let Some(s) = sub("contact.creation", None) {
                    let mut m = base(s, id, at);
                    m.insert("changeFlag".into(), Value::String("CREATED".into()));
                    out.push(Event { body: m });
                }
                property_changes(id, at, &props, out);
            }
            ContactChange::Changed { id, at, props } => property_changes(id, at, &props, out),
            ContactChange::Deleted { id, at } => {
                if let Some(s) = sub("contact.deletion", None) {
                    out.push(Event { body: base(s, id, at) });
                }
            }
            ContactChange::Merged { primary, loser, at, moved } => {
                if let Some(s) = sub("contact.merge", None) {
                    let mut m = base(s, primary, at);
                    m.insert("primaryObjectId".into(), Value::from(primary));
                    m.insert("mergedObjectIds".into(), json!([loser]));
                    m.insert("newObjectId".into(), Value::from(primary));
                    m.insert("numberOfPropertiesMoved".into(), Value::from(moved));
                    out.push(Event { body: m });
                }
            }
            ContactChange::Restored { id, at } => {
                if let Some(s) = sub("contact.restore", None) {
                    out.push(Event { body: base(s, id, at) });
                }
            }
            ContactChange::PrivacyDeleted { id, at } => {
                if let Some(s) = sub("contact.privacyDeletion", None) {
                    out.push(Event { body: base(s, id, at) });
                }
            }
        }
    }
}

/// Properties derived from the record rather than stored: no change event of their own.
const COMPUTED: &[&str] =
    &["hs_object_id", "createdate", "lastmodifieddate", "hs_merged_object_ids"];

// ---------------------------------------------------------------------------------------------
// Management API: /webhooks/v3/{appId}/settings and /subscriptions

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "status": "error",
        "message": message,
        "correlationId": uuid::Uuid::new_v4().to_string(),
        "category": if status == StatusCode::NOT_FOUND { "OBJECT_NOT_FOUND" } else { "VALIDATION_ERROR" },
    });
    (status, Json(body)).into_response()
}

fn app_matches(inner: &Inner, app_id: &str) -> bool {
    app_id.trim().parse::<u64>().ok() == Some(lock(&inner.hooks.config).opts.app_id)
}

fn settings_json(c: &HookConfig) -> Option<Value> {
    let target = c.opts.target_url.as_ref()?;
    Some(json!({
        "targetUrl": target,
        "throttling": {
            "maxConcurrentRequests": c.opts.max_concurrent_requests.max(MIN_CONCURRENT_REQUESTS),
            "period": "SECONDLY",
        },
        "createdAt": iso_ms(c.created_ms),
    }))
}

pub(crate) async fn settings_get(
    State(inner): State<Arc<Inner>>,
    Path(app): Path<String>,
) -> Response {
    if !app_matches(&inner, &app) {
        return error(StatusCode::NOT_FOUND, "app not found");
    }
    match settings_json(&lock(&inner.hooks.config)) {
        Some(v) => (StatusCode::OK, Json(v)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no webhook settings for this app"),
    }
}

pub(crate) async fn settings_put(
    State(inner): State<Arc<Inner>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Response {
    if !app_matches(&inner, &app) {
        return error(StatusCode::NOT_FOUND, "app not found");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid input JSON");
    };
    let target = body.get("targetUrl").and_then(Value::as_str).map(str::trim);
    let max =
        body.get("throttling").and_then(|t| t.get("maxConcurrentRequests")).and_then(Value::as_u64);
    let (Some(target), Some(max)) = (target, max) else {
        return error(
            StatusCode::BAD_REQUEST,
            "targetUrl and throttling.maxConcurrentRequests are required",
        );
    };
    if url::Url::parse(target).is_err() {
        return error(StatusCode::BAD_REQUEST, "targetUrl is not a valid URL");
    }
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if max < MIN_CONCURRENT_REQUESTS {
        return error(StatusCode::BAD_REQUEST, "maxConcurrentRequests must be at least 5");
    }
    let v = {
        let mut c = lock(&inner.hooks.config);
        c.opts.target_url = Some(target.to_owned());
        c.opts.max_concurrent_requests = max;
        settings_json(&c)
    };
    inner.hooks.engine.if_started(|e| e.set_max_concurrent(max));
    (StatusCode::OK, Json(v.unwrap_or(Value::Null))).into_response()
}

pub(crate) async fn settings_delete(
    State(inner): State<Arc<Inner>>,
    Path(app): Path<String>,
) -> Response {
    if !app_matches(&inner, &app) {
        return error(StatusCode::NOT_FOUND, "app not found");
    }
    inner.hooks.set_target(None);
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) async fn subscriptions_get(
    State(inner): State<Arc<Inner>>,
    Path(app): Path<String>,
) -> Response {
    if !app_matches(&inner, &app) {
        return error(StatusCode::NOT_FOUND, "app not found");
    }
    let c = lock(&inner.hooks.config);
    let results: Vec<Value> = c.subscriptions.iter().map(|s| s.to_json(c.created_ms)).collect();
    (StatusCode::OK, Json(json!({ "results": results }))).into_response()
}

pub(crate) async fn subscriptions_post(
    State(inner): State<Arc<Inner>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Response {
    if !app_matches(&inner, &app) {
        return error(StatusCode::NOT_FOUND, "app not found");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid input JSON");
    };
    let Some(event_type) = body.get("eventType").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "eventType is required");
    };
    if !CONTACT_EVENT_TYPES.contains(&event_type) {
        return error(StatusCode::BAD_REQUEST, "eventType is not a known subscription type");
    }
    let property = body.get("propertyName").and_then(Value::as_str).map(str::to_owned);
    if (event_type == "contact.propertyChange") != property.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "propertyName is required for contact.propertyChange and only allowed there",
        );
    }
    let active = body.get("active").and_then(Value::as_bool).unwrap_or(false);
    let mut c = lock(&inner.hooks.config);
    let sub = WebhookSubscription {
        id: c.next_subscription_id,
        event_type: event_type.to_owned(),
        property_name: property,
        active,
    };
    c.next_subscription_id += 1;
    let v = sub.to_json(now_ms());
    c.subscriptions.push(sub);
    (StatusCode::CREATED, Json(v)).into_response()
}
