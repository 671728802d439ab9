//! HTTP to one Salesforce org: OAuth 2.0 client credentials, the cached session, status-to-error
//! mapping, query paging, and API usage bookkeeping.
//!
//! Every request goes through [`crate::retry::retry`] and is counted on [`ApiCounters`], with its
//! outcome and the daily budget left from `Sforce-Limit-Info`. A 401
//! (`INVALID_SESSION_ID`) re-authenticates exactly once within the same attempt; a second 401
//! is [`ConnectorError::Auth`]. Error strings carry status codes and Salesforce error codes,
//! never vendor messages (they can echo record values).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::config::SalesforceConfig;
use super::wire::{self, QueryResponse, Record, TokenError, TokenResponse};
use super::wire_soap;
use crate::connectors::{ApiCounters, ApiOutcome, ConnectorError, http};
use crate::retry::{RetryPolicy, retry};

/// How long to back off on `403 REQUEST_LIMIT_EXCEEDED`. Salesforce sends no `Retry-After`;
/// the code covers both the rolling 24 h allocation ("TotalRequests Limit exceeded") and the
/// concurrent long-request cap. A minute is long enough not to burn attempts on the second and
/// short enough to notice when the first frees up; after the retry budget is spent the caller
/// gets `RateLimited` and tries again on its own schedule.
pub(super) const REQUEST_LIMIT_BACKOFF: Duration = Duration::from_secs(60);

/// Whether a request reads or writes, for [`ApiCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallKind {
    Read,
    Write,
}

/// Where a request goes on the instance.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target<'a> {
    /// Relative to `/services/data/<version>/`, e.g. `query` or `composite/sobjects`.
    Api(&'a str),
    /// A path from the instance root as Salesforce hands it out (`nextRecordsUrl`), or a full
    /// URL on the same instance.
    Instance(&'a str),
}

/// One API request.
#[derive(Debug)]
pub(super) struct Call<'a> {
    pub method: Method,
    pub target: Target<'a>,
    pub query: Vec<(&'static str, String)>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
    pub kind: CallKind,
}

impl<'a> Call<'a> {
    pub fn get(target: Target<'a>) -> Call<'a> {
        Call {
            method: Method::GET,
            target,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            kind: CallKind::Read,
        }
    }
}

/// An access token and where to use it. `generation` tells a stale session from a fresh one
/// when several calls see a 401 at once.
#[derive(Clone)]
struct Session {
    token: SecretString,
    instance_url: Url,
    generation: u64,
}

/// A response as read off the wire.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

pub(super) struct Client {
    http: reqwest::Client,
    login_url: Url,
    api_version: String,
    client_id: String,
    client_secret: SecretString,
    policy: RetryPolicy,
    /// Held across the token request so concurrent callers share one authentication.
    session: tokio::sync::Mutex<Option<Session>>,
    counters: Arc<ApiCounters>,
    api_usage: Mutex<Option<(u64, u64)>>,
}

impl Client {
    pub fn new(
        cfg: &SalesforceConfig,
        counters: Arc<ApiCounters>,
    ) -> Result<Client, ConnectorError> {
        Ok(Client {
            http: http::client(cfg.request_timeout)?,
            login_url: cfg.login_url.clone(),
            api_version: cfg.api_version.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            policy: cfg.retry,
            session: tokio::sync::Mutex::new(None),
            counters,
            api_usage: Mutex::new(None),
        })
    }

    /// The latest `Sforce-Limit-Info: api-usage=<used>/<max>` seen on any response.
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        *self.api_usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Make an API call with retries; returns the body of a 2xx reply.
    pub async fn call(&self, call: &Call<'_>) -> Result<Vec<u8>, ConnectorError> {
        retry(self.policy, || self.attempt(call)).await
    }

    /// Run a SOQL query through `queryAll` (deleted rows, in the recycle bin or merged away,
    /// come back too, with `IsDeleted = true`) and follow `nextRecordsUrl` until done.
    /// `batch_size` is sent as the `Sforce-Query-Options` hint; the server may page below it.
    pub async fn query_all(
        &self,
        soql: &str,
        batch_size: u32,
    ) -> Result<Vec<Record>, ConnectorError> {
        self.query_at("queryAll", soql, batch_size).await
    }

    async fn query_at(
        &self,
        resource: &str,
        soql: &str,
        batch_size: u32,
    ) -> Result<Vec<Record>, ConnectorError> {
        let options = ("Sforce-Query-Options", format!("batchSize={batch_size}"));
        let mut first = Call::get(Target::Api(resource));
        first.query.push(("q", soql.to_string()));
        first.headers.push(options.clone());
        let mut page: QueryResponse = parse_json(&self.call(&first).await?, "query")?;
        let mut records = std::mem::take(&mut page.records);
        while !page.done {
            let Some(next) = page.next_records_url.take() else {
                // `done:false` without a locator cannot be followed; what we have is complete
                // as far as the server lets us see, and the keyset cursor resumes after it.
                tracing::warn!(connector = "salesforce", "query not done but no nextRecordsUrl");
                break;
            };
            let mut more = Call::get(Target::Instance(&next));
            more.headers.push(options.clone());
            page = parse_json(&self.call(&more).await?, "query page")?;
            records.append(&mut page.records);
        }
        Ok(records)
    }

    /// A SOAP API call (partner WSDL, `POST /services/Soap/u/<version>`) with retries; returns
    /// the body of a 2xx reply. `envelope` builds the request around the session id. An
    /// `INVALID_SESSION_ID` fault re-authenticates once, like a REST 401.
    pub async fn soap(
        &self,
        envelope: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<Vec<u8>, ConnectorError> {
        retry(self.policy, || self.soap_attempt(envelope)).await
    }

    async fn soap_attempt(
        &self,
        envelope: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<Vec<u8>, ConnectorError> {
        let session = self.session().await?;
        let mut reply = self.send_soap(&session, envelope).await?;
        let expired =
            |r: &Reply| wire_soap::fault_code(&r.body).as_deref() == Some("INVALID_SESSION_ID");
        if expired(&reply) {
            tracing::info!(connector = "salesforce", "soap session refused; re-authenticating");
            let fresh = self.reauthenticate(session.generation).await?;
            reply = self.send_soap(&fresh, envelope).await?;
            if expired(&reply) {
                return Err(ConnectorError::Auth(
                    "soap session refused right after re-authentication: INVALID_SESSION_ID".into(),
                ));
            }
        }
        if reply.status.is_success() {
            return Ok(reply.body);
        }
        Err(match wire_soap::fault_code(&reply.body) {
            Some(code) if code == "REQUEST_LIMIT_EXCEEDED" => {
                ConnectorError::RateLimited { retry_after: Some(REQUEST_LIMIT_BACKOFF) }
            }
            // A fault is the API's answer to this request (unsupported version, an operation
            // or argument it refuses): retrying the same request cannot help.
            Some(code) => ConnectorError::Rejected {
                code: or_http(sanitize_code(&code), reply.status),
                message: format!("soap fault (http {})", reply.status.as_u16()),
            },
            None => classify(reply.status, &reply.headers, &reply.body),
        })
    }

    async fn send_soap(
        &self,
        session: &Session,
        envelope: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<Reply, ConnectorError> {
        let version = self.api_version.trim_start_matches('v');
        let url = under(&session.instance_url, &format!("services/Soap/u/{version}"));
        self.counters.write();
        let req = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "text/xml; charset=UTF-8")
            // The partner WSDL's operations declare an empty SOAPAction.
            .header("SOAPAction", "\"\"")
            .body(envelope(session.token.expose_secret()));
        let reply = self.exchange(req).await?;
        let (status, body) = (reply.status, &reply.body);
        let limited = wire_soap::fault_code(body).as_deref() == Some("REQUEST_LIMIT_EXCEEDED");
        self.counters.outcome(if status.is_success() {
            ApiOutcome::Ok
        } else if limited {
            ApiOutcome::RateLimited
        } else {
            ApiOutcome::Error
        });
        tracing::debug!(connector = "salesforce", status = status.as_u16(), "soap call");
        Ok(reply)
    }

    /// Send a request and read its reply whole; a transport failure is counted as an error
    /// outcome. API usage is noted from the reply's headers; the caller counts the outcome.
    async fn exchange(&self, req: reqwest::RequestBuilder) -> Result<Reply, ConnectorError> {
        let resp = req.send().await.map_err(|e| {
            self.counters.outcome(ApiOutcome::Error);
            http::transport(&e)
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        self.note_usage(&headers);
        let body = resp.bytes().await.map_err(|e| {
            self.counters.outcome(ApiOutcome::Error);
            http::transport(&e)
        })?;
        Ok(Reply { status, headers, body: body.to_vec() })
    }

    /// One attempt: a session (cached or new), the request, and on 401 one re-authentication.
    async fn attempt(&self, call: &Call<'_>) -> Result<Vec<u8>, ConnectorError> {
        let session = self.session().await?;
        let mut reply = self.send(&session, call).await?;
        if reply.status == StatusCode::UNAUTHORIZED {
            tracing::info!(
                connector = "salesforce",
                code = %error_code(&reply.body),
                "session refused; re-authenticating"
            );
            let fresh = self.reauthenticate(session.generation).await?;
            reply = self.send(&fresh, call).await?;
            if reply.status == StatusCode::UNAUTHORIZED {
                return Err(ConnectorError::Auth(format!(
                    "session refused right after re-authentication: {}",
                    or_http(error_code(&reply.body), reply.status)
                )));
            }
        }
        if reply.status.is_success() {
            Ok(reply.body)
        } else {
            Err(classify(reply.status, &reply.headers, &reply.body))
        }
    }

    async fn session(&self) -> Result<Session, ConnectorError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let s = self.authenticate(0).await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Replace the session that just failed, unless another call already did.
    async fn reauthenticate(&self, stale: u64) -> Result<Session, ConnectorError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref().filter(|s| s.generation != stale) {
            return Ok(s.clone());
        }
        *guard = None;
        let s = self.authenticate(stale + 1).await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    /// `POST {login_url}/services/oauth2/token` with the client credentials grant.
    async fn authenticate(&self, generation: u64) -> Result<Session, ConnectorError> {
        let url = under(&self.login_url, "services/oauth2/token");
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", self.client_secret.expose_secret())
            .finish();
        self.counters.read();
        let resp = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| {
                self.counters.outcome(ApiOutcome::Error);
                http::transport(&e)
            })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            self.counters.outcome(ApiOutcome::Error);
            http::transport(&e)
        })?;
        self.counters.outcome(outcome(status, &body));
        if !status.is_success() {
            let code =
                serde_json::from_slice::<TokenError>(&body).map(|e| e.error).unwrap_or_default();
            return Err(match status {
                StatusCode::TOO_MANY_REQUESTS => {
                    ConnectorError::RateLimited { retry_after: http::retry_after(&headers) }
                }
                s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                    ConnectorError::Transient(format!("token endpoint: http {}", s.as_u16()))
                }
                StatusCode::NOT_FOUND => ConnectorError::Config(
                    "token endpoint not found (http 404): check login_url".into(),
                ),
                s => ConnectorError::Auth(format!(
                    "token request refused: {}",
                    or_http(sanitize_code(&code), s)
                )),
            });
        }
        let token: TokenResponse = parse_json(&body, "token response")?;
        let instance_url = http::parse_base_url(&token.instance_url).map_err(|p| {
            ConnectorError::Config(format!("instance_url from the token endpoint: {p}"))
        })?;
        tracing::debug!(connector = "salesforce", generation, "authenticated");
        Ok(Session { token: SecretString::from(token.access_token), instance_url, generation })
    }

    /// Send one request with this session; count it and its outcome; remember API usage.
    async fn send(&self, session: &Session, call: &Call<'_>) -> Result<Reply, ConnectorError> {
        let mut url = match call.target {
            Target::Api(path) => {
                under(&session.instance_url, &format!("services/data/{}/{path}", self.api_version))
            }
            Target::Instance(path) => instance_url(&session.instance_url, path)?,
        };
        if !call.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &call.query {
                pairs.append_pair(k, v);
            }
        }
        let mut req = self
            .http
            .request(call.method.clone(), url)
            .header(AUTHORIZATION, format!("Bearer {}", session.token.expose_secret()));
        for (k, v) in &call.headers {
            req = req.header(*k, v);
        }
        if let Some(body) = &call.body {
            req = req.header(CONTENT_TYPE, "application/json").body(body.clone());
        }
        match call.kind {
            CallKind::Read => self.counters.read(),
            CallKind::Write => self.counters.write(),
        }
        let reply = self.exchange(req).await?;
        self.counters.outcome(outcome(reply.status, &reply.body));
        tracing::debug!(connector = "salesforce", method = %call.method, status = reply.status.as_u16(), "api call");
        Ok(reply)
    }

    fn note_usage(&self, headers: &HeaderMap) {
        let Some(usage) = headers
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_limit_info)
        else {
            return;
        };
        *self.api_usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(usage);
        // The daily allocation rolls over 24 h: no window after which it is known to be full.
        let (used, max) = usage;
        self.counters.record_rate_limit(max.saturating_sub(used), Some(max), None);
    }
}

/// How a reply ends for [`ApiCounters`]: `403 REQUEST_LIMIT_EXCEEDED` is Salesforce's way of
/// saying 429 (api-facts §2.4).
fn outcome(status: StatusCode, body: &[u8]) -> ApiOutcome {
    if status.is_success() {
        ApiOutcome::Ok
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && error_code(body) == "REQUEST_LIMIT_EXCEEDED")
    {
        ApiOutcome::RateLimited
    } else {
        ApiOutcome::Error
    }
}

/// `api-usage=25/15000` (possibly among other comma-separated entries) as `(used, max)`.
pub(super) fn parse_limit_info(v: &str) -> Option<(u64, u64)> {
    v.split(',').find_map(|part| {
        let (k, val) = part.trim().split_once('=')?;
        if k.trim() != "api-usage" {
            return None;
        }
        let (used, max) = val.trim().split_once('/')?;
        Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
    })
}

/// The error class of a non-2xx API reply (401 is handled by the caller).
pub(super) fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ConnectorError {
    let errors = wire::parse_api_errors(body);
    let code = errors.first().map(|e| sanitize_code(&e.error_code)).unwrap_or_default();
    match status {
        StatusCode::FORBIDDEN if code == "REQUEST_LIMIT_EXCEEDED" => {
            ConnectorError::RateLimited { retry_after: Some(REQUEST_LIMIT_BACKOFF) }
        }
        // Other 403s (API_DISABLED_FOR_ORG, INSUFFICIENT_ACCESS, ...) are about the integration
        // user, not a record: stop the system and alert rather than dead-letter record by record.
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
            ConnectorError::Auth(format!("http {}: {}", status.as_u16(), or_http(code, status)))
        }
        StatusCode::TOO_MANY_REQUESTS => {
            ConnectorError::RateLimited { retry_after: http::retry_after(headers) }
        }
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
            ConnectorError::Transient(format!("http {}: {}", s.as_u16(), or_http(code, s)))
        }
        s => {
            // Field names help an operator; the vendor message stays out because it can echo
            // values and this error may be logged.
            let fields: Vec<&str> =
                errors.iter().flat_map(|e| e.fields.iter().map(String::as_str)).collect();
            let mut message = format!("http {}", s.as_u16());
            if !fields.is_empty() {
                message.push_str(&format!(" (fields: {})", fields.join(", ")));
            }
            ConnectorError::Rejected { code: or_http(code, s), message }
        }
    }
}

fn error_code(body: &[u8]) -> String {
    wire::parse_api_errors(body).first().map(|e| sanitize_code(&e.error_code)).unwrap_or_default()
}

/// Error codes are short upper-case identifiers; anything else is not trusted into a string
/// that may be logged.
fn sanitize_code(code: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok { code.to_string() } else { String::new() }
}

fn or_http(code: String, status: StatusCode) -> String {
    if code.is_empty() { format!("http_{}", status.as_u16()) } else { code }
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ConnectorError> {
    // serde_json's message names a position and the expected type, never the input text.
    serde_json::from_slice(body)
        .map_err(|e| ConnectorError::Transient(format!("malformed salesforce {what}: {e}")))
}

/// `base` + `/rel`, keeping any path prefix `base` has (a simulator may live under one).
fn under(base: &Url, rel: &str) -> Url {
    let mut u = base.clone();
    let (path, query) = match rel.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rel, None),
    };
    let prefix = base.path().trim_end_matches('/');
    u.set_path(&format!("{prefix}/{}", path.trim_start_matches('/')));
    u.set_query(query);
    u
}

/// Resolve a `nextRecordsUrl`: a path from the instance root, or a full URL that must point at
/// the same instance (never send the token elsewhere).
fn instance_url(instance: &Url, path: &str) -> Result<Url, ConnectorError> {
    if path.starts_with("http://") || path.starts_with("https://") {
        let u = Url::parse(path)
            .map_err(|_| ConnectorError::Transient("unparseable nextRecordsUrl".into()))?;
        if u.origin() != instance.origin() {
            return Err(ConnectorError::Config(
                "nextRecordsUrl points outside the instance; refusing to follow".into(),
            ));
        }
        return Ok(u);
    }
    // Salesforce's paths start at the instance root. A base path prefix is kept unless the
    // path already carries it.
    let prefix = instance.path().trim_end_matches('/');
    if !prefix.is_empty() && path.starts_with(prefix) {
        let mut u = instance.clone();
        let (p, q) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        u.set_path(p);
        u.set_query(q);
        return Ok(u);
    }
    Ok(under(instance, path))
}
