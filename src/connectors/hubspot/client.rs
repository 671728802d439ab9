//! HTTP to HubSpot: bearer auth, pacing under the rate limits, retries, error classification.
//!
//! Every request goes through [`crate::retry::retry`] and is counted on [`ApiCounters`] once per
//! attempt, with its outcome and the `X-HubSpot-RateLimit-Remaining` budget it reported.
//! Pacing has two parts: search calls are spaced `search_min_interval` apart (search
//! responses carry no rate headers), and when `X-HubSpot-RateLimit-Remaining` runs low every
//! call waits for the window to roll over instead of running into a 429.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::de::{DeserializeOwned, IgnoredAny};
use tokio::time::Instant;
use url::Url;

use super::config::HubspotConfig;
use super::wire;
use crate::connectors::{ApiCounters, ApiOutcome, ConnectorError, http};
use crate::retry::{self, RetryPolicy};

const H_REMAINING: &str = "x-hubspot-ratelimit-remaining";
const H_INTERVAL_MS: &str = "x-hubspot-ratelimit-interval-milliseconds";
const H_MAX: &str = "x-hubspot-ratelimit-max";
/// The rolling window HubSpot documents for private apps, used when the header is missing.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// When this few calls remain in the window, wait for the window instead of spending them:
/// the poller and the pusher share one token and may each have a call in flight.
const LOW_WATER: u64 = 3;
/// Rate-limit waits longer than this are not slept through inside one call: the error goes
/// back to the caller (the engine parks the system) and the pacer refuses calls until then.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(60);
/// Largest error body we read, so a misbehaving proxy cannot make us buffer megabytes.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Whether a call reads or writes, for [`ApiCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Read,
    Write,
}

/// Search has its own, stricter limit and no rate headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Standard,
    Search,
}

pub(super) struct Client {
    http: reqwest::Client,
    base: Url,
    version: String,
    auth: HeaderValue,
    retry: RetryPolicy,
    pacer: Pacer,
    counters: Arc<ApiCounters>,
}

impl Client {
    pub(super) fn new(
        cfg: &HubspotConfig,
        counters: Arc<ApiCounters>,
    ) -> Result<Client, ConnectorError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", cfg.token.expose_secret()))
            .map_err(|_| {
                ConnectorError::Config("token contains characters not allowed in a header".into())
            })?;
        auth.set_sensitive(true);
        if cfg.base_url.cannot_be_a_base() {
            return Err(ConnectorError::Config("base_url cannot carry a path".into()));
        }
        Ok(Client {
            http: http::client(cfg.request_timeout)?,
            base: cfg.base_url.clone(),
            version: cfg.api_version.clone(),
            auth,
            retry: cfg.retry,
            pacer: Pacer::new(cfg.search_min_interval),
            counters,
        })
    }

    pub(super) fn counters(&self) -> Arc<ApiCounters> {
        Arc::clone(&self.counters)
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `Client::new` refused cannot-be-a-base URLs, so this branch always runs.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn contacts_url(&self, tail: &[&str]) -> Url {
        let mut segs = vec!["crm", self.version.as_str(), "objects", "contacts"];
        segs.extend_from_slice(tail);
        self.url(&segs)
    }

    /// `POST /crm/{v}/objects/contacts/search`.
    pub(super) async fn search(
        &self,
        req: &wire::SearchRequest,
    ) -> Result<wire::ListResponse, ConnectorError> {
        let url = self.contacts_url(&["search"]);
        let (_, body) = self
            .call(Method::POST, url, Some(to_body(req)?), Call::Read, Lane::Search, "search")
            .await?;
        Ok(body)
    }

    /// `POST /crm/{v}/objects/contacts/batch/read` (200 or 207), by id or keyed by a property
    /// (email; `req` says which); with `archived`, of archived contacts only
    /// (`?archived=true`).
    pub(super) async fn batch_read<B: serde::Serialize>(
        &self,
        req: &B,
        archived: bool,
    ) -> Result<wire::BatchResponse, ConnectorError> {
        let mut url = self.contacts_url(&["batch", "read"]);
        if archived {
            url.query_pairs_mut().append_pair("archived", "true");
        }
        let (_, body) = self
            .call(Method::POST, url, Some(to_body(req)?), Call::Read, Lane::Standard, "batch_read")
            .await?;
        Ok(body)
    }

    /// `POST /crm/{v}/objects/contacts/gdpr-delete` (204).
    pub(super) async fn gdpr_delete(
        &self,
        req: &wire::GdprDeleteRequest,
    ) -> Result<(), ConnectorError> {
        let url = self.contacts_url(&["gdpr-delete"]);
        let _: (StatusCode, IgnoredAny) = self
            .call(
                Method::POST,
                url,
                Some(to_body(req)?),
                Call::Write,
                Lane::Standard,
                "gdpr_delete",
            )
            .await?;
        Ok(())
    }

    /// `POST /crm/{v}/objects/contacts/batch/update`; returns the status (200 or 207) too.
    pub(super) async fn batch_update(
        &self,
        req: &wire::BatchUpdateRequest,
    ) -> Result<(StatusCode, wire::BatchResponse), ConnectorError> {
        let url = self.contacts_url(&["batch", "update"]);
        self.call(
            Method::POST,
            url,
            Some(to_body(req)?),
            Call::Write,
            Lane::Standard,
            "batch_update",
        )
        .await
    }

    /// `POST /crm/{v}/objects/contacts/batch/upsert`; returns the status (200 or 207) too.
    pub(super) async fn batch_upsert(
        &self,
        req: &wire::BatchUpsertRequest,
    ) -> Result<(StatusCode, wire::BatchResponse), ConnectorError> {
        let url = self.contacts_url(&["batch", "upsert"]);
        self.call(
            Method::POST,
            url,
            Some(to_body(req)?),
            Call::Write,
            Lane::Standard,
            "batch_upsert",
        )
        .await
    }

    /// `POST /communication-preferences/v4/statuses/batch/unsubscribe-all?channel=EMAIL` with
    /// `{"inputs": [emails]}`; returns the status (200 or 207) too. Subscription state lives per
    /// email address, not per contact (api-facts §1.3). The addresses travel in the body, so
    /// none lands in a URL (and so in a proxy's access log).
    pub(super) async fn batch_unsubscribe_all(
        &self,
        req: &wire::BatchEmailsRequest,
    ) -> Result<(StatusCode, wire::UnsubscribeBatchResponse), ConnectorError> {
        let mut url =
            self.url(&["communication-preferences", "v4", "statuses", "batch", "unsubscribe-all"]);
        url.query_pairs_mut().append_pair("channel", "EMAIL");
        self.call(
            Method::POST,
            url,
            Some(to_body(req)?),
            Call::Write,
            Lane::Standard,
            "batch_unsubscribe_all",
        )
        .await
    }

    /// `GET /crm/{v}/objects/contacts?archived=true&limit=…&after=…`: one page of archived
    /// contacts, in id order, with `properties` (who each was, its dates, the ids merged into
    /// it: a contact merged into one archived before leadsync read the survivor is gone too).
    pub(super) async fn list_archived(
        &self,
        limit: u32,
        after: Option<&str>,
        properties: &[&str],
    ) -> Result<wire::ListResponse, ConnectorError> {
        let mut url = self.contacts_url(&[]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("archived", "true");
            q.append_pair("limit", &limit.to_string());
            q.append_pair("properties", &properties.join(","));
            q.append_pair("propertiesWithHistory", wire::MERGED_IDS);
            if let Some(after) = after {
                q.append_pair("after", after);
            }
        }
        let (_, body) =
            self.call(Method::GET, url, None, Call::Read, Lane::Standard, "list_archived").await?;
        Ok(body)
    }

    /// A read-only `POST` under the API root (closed-loop reads: deals search, contacts search
    /// for conversions, associations batch read). `search` puts it in the search lane.
    pub(super) async fn post_read<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
        search: bool,
        op: &'static str,
    ) -> Result<T, ConnectorError> {
        let url = self.url(segments);
        let lane = if search { Lane::Search } else { Lane::Standard };
        let (_, out) =
            self.call(Method::POST, url, Some(to_body(body)?), Call::Read, lane, op).await?;
        Ok(out)
    }

    /// The configured CRM version segment (`v3`).
    pub(super) fn version(&self) -> &str {
        &self.version
    }

    /// `POST /crm/{v}/objects/contacts/merge`: the surviving contact (200).
    pub(super) async fn merge(
        &self,
        req: &wire::MergeRequest,
    ) -> Result<wire::Contact, ConnectorError> {
        let url = self.contacts_url(&["merge"]);
        let (_, body) = self
            .call(Method::POST, url, Some(to_body(req)?), Call::Write, Lane::Standard, "merge")
            .await?;
        Ok(body)
    }

    /// `GET /crm/{v}/objects/contacts?limit=1`: authenticates and reads one record.
    pub(super) async fn healthcheck(&self) -> Result<(), ConnectorError> {
        let mut url = self.contacts_url(&[]);
        url.query_pairs_mut().append_pair("limit", "1");
        let _: (StatusCode, IgnoredAny) =
            self.call(Method::GET, url, None, Call::Read, Lane::Standard, "healthcheck").await?;
        Ok(())
    }

    /// One logical call, retried through [`retry::retry`]. Rate-limit waits longer than
    /// [`MAX_INLINE_WAIT`] (the daily limit) leave the retry loop at once, so a caller is never
    /// parked for hours inside one call.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        call: Call,
        lane: Lane,
        op: &'static str,
    ) -> Result<(StatusCode, T), ConnectorError> {
        let (method, url, body) = (&method, &url, &body);
        // The outer `?` ends the call on retry-loop errors; the inner result is the escape
        // hatch for long rate-limit waits.
        retry::retry(self.retry, || async move {
            match self.attempt(method.clone(), url.clone(), body.clone(), call, lane, op).await {
                Err(e @ ConnectorError::RateLimited { retry_after: Some(d) })
                    if d > MAX_INLINE_WAIT =>
                {
                    Ok(Err(e))
                }
                other => other.map(Ok),
            }
        })
        .await?
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        call: Call,
        lane: Lane,
        op: &'static str,
    ) -> Result<(StatusCode, T), ConnectorError> {
        self.pacer.before(lane).await?;
        match call {
            Call::Read => self.counters.read(),
            Call::Write => self.counters.write(),
        }
        // Only the operation is logged, never the URL or body: both may carry personal data.
        tracing::debug!(op, "hubspot request");
        let mut req = self.http.request(method, url).header(AUTHORIZATION, self.auth.clone());
        req = match body {
            Some(b) => req.header(CONTENT_TYPE, "application/json").body(b),
            None => req,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.counters.outcome(ApiOutcome::Error);
                return Err(http::transport(&e.without_url()));
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        self.pacer.observe(&headers);
        note_budget(&self.counters, &headers);
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                self.counters.outcome(ApiOutcome::Error);
                return Err(http::transport(&e.without_url()));
            }
        };
        if status.is_success() {
            let slice: &[u8] =
                if bytes.iter().all(u8::is_ascii_whitespace) { b"null" } else { &bytes };
            let decoded = serde_json::from_slice(slice).map(|v| (status, v)).map_err(|e| {
                ConnectorError::Transient(format!("{op}: cannot decode response: {e}"))
            });
            let outcome = if decoded.is_ok() { ApiOutcome::Ok } else { ApiOutcome::Error };
            self.counters.outcome(outcome);
            return decoded;
        }
        let err_body = wire::parse_error_body(&bytes[..bytes.len().min(MAX_ERROR_BODY)]);
        let err = classify(status, &headers, &err_body, Utc::now());
        self.counters.outcome(ApiOutcome::of_error(&err));
        if let ConnectorError::RateLimited { retry_after: Some(d) } = &err {
            self.pacer.hold(*d);
        }
        tracing::debug!(op, status = status.as_u16(), error = %err, "hubspot call failed");
        Err(err)
    }
}

fn to_body<B: serde::Serialize>(b: &B) -> Result<Vec<u8>, ConnectorError> {
    serde_json::to_vec(b).map_err(|e| ConnectorError::Config(format!("cannot encode request: {e}")))
}

/// Map a failed response to what the caller does next (api-facts §1.5, §1.6).
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &wire::ErrorBody,
    now: DateTime<Utc>,
) -> ConnectorError {
    let category = body.category.as_deref();
    match status.as_u16() {
        401 => ConnectorError::Auth(format!(
            "http 401 {}: a private app token cannot be refreshed; replace the token",
            category.unwrap_or("INVALID_AUTHENTICATION")
        )),
        // MISSING_SCOPES: the token works but lacks a scope. Dead-lettering every record would
        // be wrong; an operator must grant the scope, which is what Auth means.
        403 => ConnectorError::Auth(format!(
            "http 403 {}: the private app lacks a required scope",
            category.unwrap_or("FORBIDDEN")
        )),
        429 => ConnectorError::RateLimited { retry_after: rate_limit_wait(headers, body, now) },
        // 423 Locked: the record is busy in another write; by nature temporary.
        408 | 423 => ConnectorError::Transient(format!("http {}", status.as_u16())),
        s if status.is_server_error() => ConnectorError::Transient(format!("http {s}")),
        s => ConnectorError::Rejected {
            code: category
                .or(body.sub_category.as_deref())
                .map_or_else(|| format!("http_{s}"), str::to_string),
            message: format!(
                "http {s}: {}{}",
                wire::safe_description(
                    category,
                    body.sub_category.as_deref(),
                    body.message.as_deref(),
                    &body.errors
                ),
                // HubSpot support asks for this id; it identifies the call, not the person.
                body.correlation_id
                    .as_deref()
                    .map(|c| format!(" (correlation id {c})"))
                    .unwrap_or_default()
            ),
        },
    }
}

/// How long a 429 asks us to wait. A `Retry-After` header wins; otherwise the policy decides:
/// the ten-second rolling window waits for its interval, the secondly (search) limit one
/// second, and the daily limit until the next quarter hour (see [`until_daily_probe`]).
fn rate_limit_wait(
    headers: &HeaderMap,
    body: &wire::ErrorBody,
    now: DateTime<Utc>,
) -> Option<Duration> {
    if let Some(ra) = http::retry_after(headers) {
        return Some(ra);
    }
    let message = body.message.as_deref().unwrap_or("").to_ascii_lowercase();
    match body.policy_name.as_deref() {
        Some("TEN_SECONDLY_ROLLING") => Some(window(headers)),
        Some("SECONDLY") => Some(Duration::from_secs(1)),
        Some("DAILY") => Some(until_daily_probe(now)),
        _ if message.contains("secondly limit") => Some(Duration::from_secs(1)),
        _ if message.contains("daily limit") => Some(until_daily_probe(now)),
        _ => header_ms(headers, H_INTERVAL_MS).map(Duration::from_millis),
    }
}

/// The daily limit resets at midnight in the account's time zone, which the API does not tell
/// us. Every time-zone offset in use is a multiple of 15 minutes, so local midnight always falls
/// on a UTC quarter hour: probing once per quarter hour (a few seconds after it) finds the
/// reset within 15 minutes, at a cost of at most 96 refused calls a day. The wait is never
/// shorter than [`MAX_INLINE_WAIT`] plus a little, so a daily limit always goes back to the
/// caller instead of being slept through inside a call.
pub(super) fn until_daily_probe(now: DateTime<Utc>) -> Duration {
    let secs_into_quarter = u64::from(now.minute() % 15) * 60 + u64::from(now.second());
    Duration::from_secs(15 * 60 - secs_into_quarter + 5)
        .max(MAX_INLINE_WAIT + Duration::from_secs(5))
}

/// Hand the ten-second window's budget to [`ApiCounters`] for the admin endpoint. Responses
/// without the header (search) leave the last report standing.
fn note_budget(counters: &ApiCounters, headers: &HeaderMap) {
    if let Some(remaining) = header_ms(headers, H_REMAINING) {
        counters.record_rate_limit(remaining, header_ms(headers, H_MAX), Some(window(headers)));
    }
}

fn header_ms(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn window(headers: &HeaderMap) -> Duration {
    header_ms(headers, H_INTERVAL_MS)
        .filter(|ms| *ms > 0)
        .map_or(DEFAULT_WINDOW, Duration::from_millis)
}

/// Shared pacing state of one token.
struct Pacer {
    search_gap: Duration,
    state: Mutex<PaceState>,
}

#[derive(Default)]
struct PaceState {
    /// Calls wait until then (the window is nearly spent, or a short 429 said so).
    resume_at: Option<Instant>,
    /// Calls fail fast until then (the daily limit).
    blocked_until: Option<Instant>,
    /// Earliest start of the next search call.
    next_search_at: Option<Instant>,
}

impl Pacer {
    fn new(search_gap: Duration) -> Pacer {
        Pacer { search_gap, state: Mutex::new(PaceState::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PaceState> {
        // The state is a few instants; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn before(&self, lane: Lane) -> Result<(), ConnectorError> {
        let wait_until = {
            let mut st = self.lock();
            let now = Instant::now();
            if let Some(b) = st.blocked_until.filter(|b| *b > now) {
                return Err(ConnectorError::RateLimited { retry_after: Some(b - now) });
            }
            let mut at = st.resume_at.unwrap_or(now).max(now);
            if lane == Lane::Search {
                at = at.max(st.next_search_at.unwrap_or(now));
                st.next_search_at = Some(at + self.search_gap);
            }
            at
        };
        tokio::time::sleep_until(wait_until).await;
        Ok(())
    }

    fn observe(&self, headers: &HeaderMap) {
        let Some(remaining) = header_ms(headers, H_REMAINING) else { return };
        if remaining <= LOW_WATER {
            let until = Instant::now() + window(headers);
            tracing::debug!(remaining, "hubspot rate window nearly spent; pausing");
            let mut st = self.lock();
            st.resume_at = Some(st.resume_at.map_or(until, |r| r.max(until)));
        }
    }

    fn hold(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut st = self.lock();
        let slot = if d > MAX_INLINE_WAIT { &mut st.blocked_until } else { &mut st.resume_at };
        *slot = Some(slot.map_or(until, |r| r.max(until)));
    }
}
