//! HTTP side of the simulator: the axum router, one gate in front of every route (latency,
//! private-app auth, rate limits and their headers, injected faults, counters), and the handlers.
//!
//! Bodies are read as bytes and parsed here so that malformed JSON gets a HubSpot-shaped 400
//! instead of axum's plain-text rejection; clients such as the Node SDK fail on a non-JSON error.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::store::{
    self, Contact, PropError, SUBSCRIPTIONS, Selection, Store, WriteError, iso_ms, normalize_email,
};
use super::{Counters, Inner, hooks, search};

/// Largest number of inputs a batch endpoint accepts. HubSpot documents 100 for the contacts
/// batch endpoints; for `statuses/batch/unsubscribe-all` the cap is an assumption (its
/// reference names none), taken to be the same.
const BATCH_MAX: usize = 100;
/// Largest `limit` of the list endpoint.
const LIST_MAX: u64 = 100;

// ---------------------------------------------------------------------------------------------
// Errors

/// A HubSpot error response: `{status:"error", message, correlationId, category, ...}` as JSON.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, category: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({
                "status": "error",
                "message": message.into(),
                "correlationId": uuid::Uuid::new_v4().to_string(),
                "category": category,
            }),
        }
    }

    pub(crate) fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "resource not found")
    }

    fn with(mut self, key: &str, value: Value) -> ApiError {
        if let Some(obj) = self.body.as_object_mut() {
            obj.insert(key.to_string(), value);
        }
        self
    }

    fn invalid_properties(errors: &[PropError]) -> ApiError {
        let inline: Vec<Value> = errors
            .iter()
            .map(|e| {
                json!({
                    "isValid": false,
                    "message": e.message,
                    "error": e.code,
                    "name": e.name,
                    "localizedErrorMessage": e.message,
                })
            })
            .collect();
        let details: Vec<Value> = errors
            .iter()
            .map(|e| {
                json!({
                    "message": e.message,
                    "code": e.code,
                    "context": { "propertyName": [e.name] },
                })
            })
            .collect();
        let inline = serde_json::to_string(&inline).unwrap_or_default();
        ApiError::validation(format!("Property values were not valid: {inline}"))
            .with("errors", Value::Array(details))
    }

    fn non_unique_id_property(name: &str) -> ApiError {
        ApiError::validation(format!(
            "Unable to perform update/upsert by non-unique 0-1 property {name}"
        ))
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> ApiError {
        match error {
            WriteError::Invalid(errors) => ApiError::invalid_properties(&errors),
            WriteError::Conflict(id) => ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                format!("Contact already exists. Existing ID: {id}"),
            ),
            WriteError::NotFound => ApiError::not_found(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn rate_limit_response(policy: &str) -> Response {
    let message = match policy {
        "DAILY" => "You have reached your daily limit.",
        "SECONDLY" => "You have reached your secondly limit.",
        _ => "You have reached your ten_secondly_rolling limit.",
    };
    let body = json!({
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": uuid::Uuid::new_v4().to_string(),
        "policyName": policy,
        "requestId": uuid::Uuid::new_v4().to_string(),
    });
    (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
}

fn server_error_response(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (category, message) = match status.as_u16() {
        502 => ("BAD_GATEWAY", "Bad gateway"),
        503 => ("SERVICE_UNAVAILABLE", "Service temporarily unavailable"),
        504 => ("GATEWAY_TIMEOUT", "Gateway timeout"),
        _ => ("INTERNAL_ERROR", "internal error"),
    };
    ApiError::new(status, category, message).into_response()
}

// ---------------------------------------------------------------------------------------------
// Rate limits

/// Rolling windows for the one configured token.
#[derive(Debug, Default)]
pub(crate) struct RateState {
    ten_second: VecDeque<Instant>,
    search_second: VecDeque<Instant>,
    day: Option<chrono::NaiveDate>,
    day_count: u64,
}

type Headers = Vec<(&'static str, String)>;

impl RateState {
    fn roll_day(&mut self) {
        let today = chrono::Utc::now().date_naive();
        if self.day != Some(today) {
            self.day = Some(today);
            self.day_count = 0;
        }
    }

    fn prune(window: &mut VecDeque<Instant>, now: Instant, span: Duration) {
        while window.front().is_some_and(|t| now.duration_since(*t) >= span) {
            window.pop_front();
        }
    }

    fn headers(&self, opts: &super::HubspotSimOptions) -> Headers {
        let mut headers = Vec::new();
        if let Some(max) = opts.rate_limit_per_10s {
            let used = u32::try_from(self.ten_second.len()).unwrap_or(u32::MAX);
            headers.push(("x-hubspot-ratelimit-max", max.to_string()));
            headers.push(("x-hubspot-ratelimit-remaining", max.saturating_sub(used).to_string()));
            headers.push(("x-hubspot-ratelimit-interval-milliseconds", "10000".into()));
        }
        if let Some(max) = opts.daily_limit {
            headers.push(("x-hubspot-ratelimit-daily", max.to_string()));
            headers.push((
                "x-hubspot-ratelimit-daily-remaining",
                max.saturating_sub(self.day_count).to_string(),
            ));
        }
        headers
    }

    /// Admit one ordinary call, or name the policy that refuses it. Headers come either way.
    fn admit(
        &mut self,
        opts: &super::HubspotSimOptions,
        now: Instant,
    ) -> (Result<(), &'static str>, Headers) {
        self.roll_day();
        Self::prune(&mut self.ten_second, now, Duration::from_secs(10));
        if opts.daily_limit.is_some_and(|max| self.day_count >= max) {
            return (Err("DAILY"), self.headers(opts));
        }
        if opts.rate_limit_per_10s.is_some_and(|max| self.ten_second.len() >= max as usize) {
            return (Err("TEN_SECONDLY_ROLLING"), self.headers(opts));
        }
        self.ten_second.push_back(now);
        self.day_count += 1;
        (Ok(()), self.headers(opts))
    }

    /// Admit one search call: its own per-second window, plus the daily quota.
    fn admit_search(
        &mut self,
        opts: &super::HubspotSimOptions,
        now: Instant,
    ) -> Result<(), &'static str> {
        self.roll_day();
        Self::prune(&mut self.search_second, now, Duration::from_secs(1));
        if opts.daily_limit.is_some_and(|max| self.day_count >= max) {
            return Err("DAILY");
        }
        if opts.search_per_second.is_some_and(|max| self.search_second.len() >= max as usize) {
            return Err("SECONDLY");
        }
        self.search_second.push_back(now);
        self.day_count += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Router and gate

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Search,
}

fn classify(method: &Method, path: &str) -> Kind {
    if *method == Method::GET {
        Kind::Read
    } else if path.ends_with("/search") {
        Kind::Search
    } else if path.ends_with("/batch/read") {
        Kind::Read
    } else {
        Kind::Write
    }
}

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let base = format!("/crm/{}/objects/contacts", inner.opts.api_version);
    Router::new()
        .route(&base, get(list).post(create))
        .route(&format!("{base}/search"), post(search_handler))
        .route(&format!("{base}/merge"), post(merge))
        .route(&format!("{base}/gdpr-delete"), post(gdpr_delete))
        .route(&format!("{base}/batch/read"), post(batch_read))
        .route(&format!("{base}/batch/create"), post(batch_create))
        .route(&format!("{base}/batch/update"), post(batch_update))
        .route(&format!("{base}/batch/upsert"), post(batch_upsert))
        .route(&format!("{base}/batch/archive"), post(batch_archive))
        .route(&format!("{base}/{{id}}"), get(get_one).patch(patch_one).delete(delete_one))
        .route("/crm/v3/owners", get(owners))
        .route(&format!("/crm/{}/objects/deals", inner.opts.api_version), get(super::deals::list))
        .route(
            &format!("/crm/{}/objects/deals/batch/read", inner.opts.api_version),
            post(super::deals::batch_read),
        )
        .route(
            &format!("/crm/{}/objects/deals/search", inner.opts.api_version),
            post(super::deals::search),
        )
        .route(
            "/crm/v4/associations/deals/contacts/batch/read",
            post(super::deals::assoc_batch_read),
        )
        .route(
            "/communication-preferences/v4/statuses/{subscriber}",
            get(status_get).post(status_post),
        )
        // A static segment outranks `{subscriber}` in axum's router, so `batch` never reaches
        // the single-address handlers.
        .route(
            "/communication-preferences/v4/statuses/batch/unsubscribe-all",
            post(batch_unsubscribe_all_post),
        )
        .route(
            "/communication-preferences/v4/statuses/{subscriber}/unsubscribe-all",
            get(unsubscribe_all_get).post(unsubscribe_all_post),
        )
        .route(
            "/webhooks/v3/{app_id}/settings",
            get(hooks::settings_get).put(hooks::settings_put).delete(hooks::settings_delete),
        )
        .route(
            "/webhooks/v3/{app_id}/subscriptions",
            get(hooks::subscriptions_get).post(hooks::subscriptions_post),
        )
        .fallback(unrouted)
        .layer(middleware::from_fn_with_state(Arc::clone(&inner), gate))
        .with_state(inner)
}

async fn unrouted() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "Unable to route request")
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == token)
}

enum CallFault {
    Throttled,
    Server(u16),
}

fn take_call_fault(inner: &Inner) -> Option<CallFault> {
    let mut faults = inner.faults();
    if faults.rate_limited > 0 {
        faults.rate_limited -= 1;
        return Some(CallFault::Throttled);
    }
    let (status, left) = faults.server_errors.first_mut()?;
    let status = *status;
    *left = left.saturating_sub(1);
    if *left == 0 {
        faults.server_errors.remove(0);
    }
    Some(CallFault::Server(status))
}

/// Everything that happens before and after a handler, in HubSpot's order: auth, then limits,
/// then the work. Refused calls (401, 429) use no quota.
async fn gate(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    if !inner.opts.latency.is_zero() {
        tokio::time::sleep(inner.opts.latency).await;
    }
    let counters = &inner.counters;
    if !bearer_matches(req.headers(), &inner.opts.token) {
        Counters::bump(&counters.errors_returned, 1);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication \
             and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        )
        .into_response();
    }
    let kind = classify(req.method(), req.uri().path());
    let now = Instant::now();
    let headers = if kind == Kind::Search {
        let admitted = inner.limits().admit_search(&inner.opts, now);
        if let Err(policy) = admitted {
            Counters::bump(&counters.rate_limited, 1);
            Counters::bump(&counters.errors_returned, 1);
            return rate_limit_response(policy);
        }
        Vec::new()
    } else {
        let (admitted, headers) = inner.limits().admit(&inner.opts, now);
        if let Err(policy) = admitted {
            Counters::bump(&counters.rate_limited, 1);
            Counters::bump(&counters.errors_returned, 1);
            return with_headers(rate_limit_response(policy), &headers);
        }
        headers
    };
    match kind {
        Kind::Read => Counters::bump(&counters.api_reads, 1),
        Kind::Write => Counters::bump(&counters.api_writes, 1),
        Kind::Search => Counters::bump(&counters.search_calls, 1),
    }
    let response = match take_call_fault(&inner) {
        Some(CallFault::Throttled) => {
            Counters::bump(&counters.rate_limited, 1);
            rate_limit_response("TEN_SECONDLY_ROLLING")
        }
        Some(CallFault::Server(status)) => server_error_response(status),
        None => next.run(req).await,
    };
    if response.status().as_u16() >= 400 {
        Counters::bump(&counters.errors_returned, 1);
    }
    with_headers(response, &headers)
}

fn with_headers(mut response: Response, headers: &Headers) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Request helpers

fn query_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `properties` as one comma-separated value or repeated parameters (the SDKs send the latter).
fn query_properties(pairs: &[(String, String)]) -> Selection {
    let names = pairs
        .iter()
        .filter(|(k, _)| k == "properties")
        .flat_map(|(_, v)| v.split(',').map(str::to_string))
        .collect();
    Selection::from_names(names)
}

/// `propertiesWithHistory`, in either form `properties` takes.
fn query_history(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == "propertiesWithHistory")
        .flat_map(|(_, v)| v.split(',').map(|n| n.trim().to_string()))
        .filter(|n| !n.is_empty())
        .collect()
}

fn query_archived(pairs: &[(String, String)]) -> bool {
    query_get(pairs, "archived").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::validation(format!(
            "Invalid input JSON on line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

fn properties_of(value: &Value) -> Result<BTreeMap<String, Value>, ApiError> {
    match value.get("properties") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(_) => Err(ApiError::validation("properties must be an object")),
    }
}

/// The `inputs` array of a batch body, capped at [`BATCH_MAX`].
fn batch_inputs(body: &Value) -> Result<Vec<Value>, ApiError> {
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::validation("inputs must be an array"))?;
    if inputs.len() > BATCH_MAX {
        return Err(ApiError::validation(format!(
            "Batch input too large: {} inputs, at most {BATCH_MAX} allowed",
            inputs.len()
        )));
    }
    Ok(inputs.clone())
}

/// An input's `id`, as a string even when sent as a number.
fn input_id(input: &Value) -> Result<String, ApiError> {
    match input.get("id") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(ApiError::validation("each input needs an id")),
    }
}

fn reject_duplicates(keys: &[String]) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    let dupes: Vec<&String> = keys.iter().filter(|k| !seen.insert(k.as_str())).collect();
    if dupes.is_empty() {
        return Ok(());
    }
    let list: Vec<&str> = dupes.iter().map(|s| s.as_str()).collect();
    Err(ApiError::validation(format!(
        "Duplicate IDs found in batch input: [{}]. IDs must be unique",
        list.join(", ")
    )))
}

/// `idProperty` for record-id look-ups: absent or `hs_object_id` means record ids, `email`
/// means email addresses when `email_ok`; anything else is refused as HubSpot does.
fn id_property(raw: Option<&Value>, email_ok: bool) -> Result<bool, ApiError> {
    match raw.and_then(Value::as_str) {
        None | Some("") | Some("hs_object_id") => Ok(false),
        Some("email") if email_ok => Ok(true),
        Some(other) => Err(ApiError::non_unique_id_property(other)),
    }
}

fn batch_body(results: Vec<Value>, errors: Vec<Value>, started: i64) -> Value {
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso_ms(started),
        "completedAt": iso_ms(store::now_ms()),
    });
    if !errors.is_empty()
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("numErrors".into(), json!(errors.len()));
        obj.insert("errors".into(), Value::Array(errors));
    }
    body
}

fn batch_response(
    ok: StatusCode,
    results: Vec<Value>,
    errors: Vec<Value>,
    started: i64,
) -> Response {
    let status = if errors.is_empty() { ok } else { StatusCode::MULTI_STATUS };
    (status, axum::Json(batch_body(results, errors, started))).into_response()
}

fn not_found_entry(ids: Vec<String>) -> Value {
    json!({
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.",
        "context": { "ids": ids },
        "errors": [],
    })
}

fn injected_entry(key: &str) -> Value {
    json!({
        "status": "error",
        "category": "INTERNAL_ERROR",
        "message": "internal error while processing this input",
        "context": { "ids": [key] },
        "errors": [],
    })
}

/// Use up an injected per-input fault matching any of `keys`.
fn take_input_fault(inner: &Inner, keys: &[&str]) -> Option<String> {
    let mut faults = inner.faults();
    let at =
        faults.batch_inputs.iter().position(|f| keys.iter().any(|k| normalize_email(k) == *f))?;
    Some(faults.batch_inputs.remove(at))
}

fn host_link(headers: &HeaderMap, path: &str, after: &str) -> String {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}{path}?after={after}")
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Contacts: single-record endpoints

async fn list(
    State(inner): State<Arc<Inner>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let pairs = query_pairs(&raw);
    let limit = match query_get(&pairs, "limit") {
        None | Some("") => 10,
        Some(v) => v.parse::<u64>().map_err(|_| ApiError::validation("limit must be a number"))?,
    };
    if limit > LIST_MAX {
        return Err(ApiError::validation(format!("limit must be at most {LIST_MAX}")));
    }
    let after = match query_get(&pairs, "after") {
        None | Some("") => 0,
        Some(v) => v.parse::<u64>().map_err(|_| ApiError::validation("after must be a cursor"))?,
    };
    let selection = query_properties(&pairs);
    let archived = query_archived(&pairs);
    let store = inner.store();
    let mut page = store.page(after, archived);
    let taken: Vec<&Contact> = page.by_ref().take(usize::try_from(limit).unwrap_or(0)).collect();
    let next = if limit > 0 { page.next().map(|c| c.id) } else { None };
    let history = query_history(&pairs);
    let results: Vec<Value> =
        taken.iter().map(|c| store.render_with_history(c, &selection, &history)).collect();
    let mut body = json!({ "results": results });
    if let (Some(next), Some(obj)) = (next, body.as_object_mut()) {
        let path = format!("/crm/{}/objects/contacts", inner.opts.api_version);
        obj.insert(
            "paging".into(),
            json!({ "next": { "after": next.to_string(), "link": host_link(&headers, &path, &next.to_string()) } }),
        );
    }
    Ok(json_response(StatusCode::OK, body))
}

/// `GET /crm/v3/owners`: the portal's owners ([`super::store::OWNERS`]), paged like the other
/// v3 lists (`limit` default 100, at most 500; `after` from `paging.next`).
async fn owners(RawQuery(raw): RawQuery, headers: HeaderMap) -> ApiResult {
    let pairs = query_pairs(&raw);
    let limit = match query_get(&pairs, "limit") {
        None | Some("") => 100,
        Some(v) => {
            v.parse::<usize>().map_err(|_| ApiError::validation("limit must be a number"))?
        }
    };
    if limit > 500 {
        return Err(ApiError::validation("limit must be at most 500"));
    }
    let after = match query_get(&pairs, "after") {
        None | Some("") => 0,
        Some(v) => {
            v.parse::<usize>().map_err(|_| ApiError::validation("after must be a cursor"))?
        }
    };
    let all = super::store::OWNERS;
    let results: Vec<Value> = all
        .iter()
        .skip(after)
        .take(limit)
        .map(|(id, email, first, last, user)| {
            json!({
                "id": id, "email": email, "firstName": first, "lastName": last, "userId": user,
                "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-01T00:00:00Z",
                "archived": false, "type": "PERSON",
            })
        })
        .collect();
    let mut body = json!({ "results": results });
    let next = after.saturating_add(limit);
    if limit > 0
        && next < all.len()
        && let Some(obj) = body.as_object_mut()
    {
        let after = next.to_string();
        obj.insert(
            "paging".into(),
            json!({ "next": { "after": after, "link": host_link(&headers, "/crm/v3/owners", &after) } }),
        );
    }
    Ok(json_response(StatusCode::OK, body))
}

async fn get_one(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let pairs = query_pairs(&raw);
    let by_email = id_property(query_get(&pairs, "idProperty").map(|v| json!(v)).as_ref(), true)?;
    let store = inner.store();
    let found = if query_archived(&pairs) {
        store.resolve_archived(&id, by_email)
    } else {
        store.resolve(&id, by_email)
    };
    let contact = found.and_then(|id| store.contact(id)).ok_or_else(ApiError::not_found)?;
    let record =
        store.render_with_history(contact, &query_properties(&pairs), &query_history(&pairs));
    Ok(json_response(StatusCode::OK, record))
}

async fn create(State(inner): State<Arc<Inner>>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    let props = properties_of(&body)?;
    let mut store = inner.store();
    let id = store.create(&props, store::now_ms())?;
    Counters::bump(&inner.counters.records_created, 1);
    let contact = store.contact(id).ok_or_else(ApiError::not_found)?;
    Ok(json_response(StatusCode::CREATED, store.render(contact, &Selection::AllSet)))
}

async fn patch_one(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult {
    let pairs = query_pairs(&raw);
    let by_email = id_property(query_get(&pairs, "idProperty").map(|v| json!(v)).as_ref(), true)?;
    let body = parse_body(&body)?;
    let props = properties_of(&body)?;
    let mut store = inner.store();
    let id = store.resolve(&id, by_email).ok_or_else(ApiError::not_found)?;
    if store.update(id, &props, true, store::now_ms())? {
        Counters::bump(&inner.counters.records_updated, 1);
    }
    let contact = store.contact(id).ok_or_else(ApiError::not_found)?;
    Ok(json_response(StatusCode::OK, store.render(contact, &Selection::AllSet)))
}

async fn delete_one(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let pairs = query_pairs(&raw);
    let by_email = id_property(query_get(&pairs, "idProperty").map(|v| json!(v)).as_ref(), true)?;
    let mut store = inner.store();
    if let Some(id) = store.resolve(&id, by_email)
        && store.archive(id, store::now_ms())
    {
        Counters::bump(&inner.counters.records_updated, 1);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Contacts: batch endpoints

async fn batch_read(
    State(inner): State<Arc<Inner>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult {
    let started = store::now_ms();
    let archived = query_archived(&query_pairs(&raw));
    let body = parse_body(&body)?;
    let by_email = id_property(body.get("idProperty"), true)?;
    let inputs = batch_inputs(&body)?;
    let keys = inputs.iter().map(input_id).collect::<Result<Vec<_>, _>>()?;
    let names = body
        .get("properties")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let selection = Selection::from_names(names);
    let history: Vec<String> = body
        .get("propertiesWithHistory")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let store = inner.store();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for key in keys {
        let found = if archived {
            store.resolve_archived(&key, by_email)
        } else {
            store.resolve(&key, by_email)
        };
        match found.and_then(|id| store.contact(id)) {
            Some(contact) => results.push(store.render_with_history(contact, &selection, &history)),
            None => missing.push(key),
        }
    }
    let errors = if missing.is_empty() { Vec::new() } else { vec![not_found_entry(missing)] };
    Ok(batch_response(StatusCode::OK, results, errors, started))
}

async fn batch_create(State(inner): State<Arc<Inner>>, body: Bytes) -> ApiResult {
    let started = store::now_ms();
    let body = parse_body(&body)?;
    let inputs = batch_inputs(&body)?;
    let props = inputs.iter().map(properties_of).collect::<Result<Vec<_>, _>>()?;
    let mut store = inner.store();
    // Validate everything first: one bad input fails the whole batch.
    let mut prepared = Vec::with_capacity(props.len());
    let mut errors = Vec::new();
    for p in &props {
        match store.validate(p) {
            Ok(values) => prepared.push(values),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_properties(&errors));
    }
    let mut seen = HashSet::new();
    for values in &prepared {
        if let Some(email) = values.get("email").filter(|e| !e.is_empty()) {
            if let Some(existing) = store.id_by_email(email) {
                return Err(WriteError::Conflict(existing).into());
            }
            if !seen.insert(email.clone()) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "CONFLICT",
                    "Contact already exists: two inputs share an email address",
                ));
            }
        }
    }
    let now = store::now_ms();
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for values in prepared {
        let email = values.get("email").cloned().unwrap_or_default();
        if !email.is_empty()
            && let Some(key) = take_input_fault(&inner, &[&email])
        {
            failed.push(injected_entry(&key));
            continue;
        }
        let id = store.commit_create(values, now);
        Counters::bump(&inner.counters.records_created, 1);
        if let Some(contact) = store.contact(id) {
            results.push(store.render(contact, &Selection::AllSet));
        }
    }
    Ok(batch_response(StatusCode::CREATED, results, failed, started))
}

async fn batch_update(State(inner): State<Arc<Inner>>, body: Bytes) -> ApiResult {
    let started = store::now_ms();
    let body = parse_body(&body)?;
    id_property(body.get("idProperty"), false)?;
    let inputs = batch_inputs(&body)?;
    let mut keyed = Vec::with_capacity(inputs.len());
    for input in &inputs {
        id_property(input.get("idProperty"), false)?;
        keyed.push((input_id(input)?, properties_of(input)?));
    }
    reject_duplicates(&keyed.iter().map(|(k, _)| k.trim().to_string()).collect::<Vec<_>>())?;
    let mut store = inner.store();
    let mut missing = Vec::new();
    let mut prepared = Vec::new();
    let mut invalid = Vec::new();
    // Property errors fail the batch even on inputs whose id is unknown.
    for (_, props) in &keyed {
        if let Err(e) = store.validate(props) {
            invalid.extend(e);
        }
    }
    if !invalid.is_empty() {
        return Err(ApiError::invalid_properties(&invalid));
    }
    for (key, props) in &keyed {
        let Some(id) = store.resolve(key, false) else {
            missing.push(key.clone());
            continue;
        };
        match store.prepare_update(id, props) {
            Ok(values) => prepared.push((key.clone(), id, values)),
            Err(WriteError::Invalid(e)) => invalid.extend(e),
            Err(other) => return Err(other.into()),
        }
    }
    if !invalid.is_empty() {
        return Err(ApiError::invalid_properties(&invalid));
    }
    let now = store::now_ms();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    if !missing.is_empty() {
        errors.push(not_found_entry(missing));
    }
    for (key, id, values) in prepared {
        if let Some(fault) = take_input_fault(&inner, &[&key]) {
            errors.push(injected_entry(&fault));
            continue;
        }
        if store.commit_update(id, values, true, now) {
            Counters::bump(&inner.counters.records_updated, 1);
        }
        if let Some(contact) = store.contact(id) {
            results.push(store.render(contact, &Selection::AllSet));
        }
    }
    Ok(batch_response(StatusCode::OK, results, errors, started))
}

async fn batch_upsert(State(inner): State<Arc<Inner>>, body: Bytes) -> ApiResult {
    let started = store::now_ms();
    let body = parse_body(&body)?;
    let inputs = batch_inputs(&body)?;
    let mut keyed = Vec::with_capacity(inputs.len());
    for input in &inputs {
        match input.get("idProperty").and_then(Value::as_str) {
            Some("email") => {}
            Some(other) => return Err(ApiError::non_unique_id_property(other)),
            None => return Err(ApiError::validation("each upsert input needs an idProperty")),
        }
        keyed.push((normalize_email(&input_id(input)?), properties_of(input)?));
    }
    reject_duplicates(&keyed.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())?;
    let mut store = inner.store();
    enum Plan {
        Create(BTreeMap<String, String>),
        Update(u64, BTreeMap<String, String>),
    }
    let mut plans = Vec::new();
    let mut invalid = Vec::new();
    for (email, props) in &keyed {
        let outcome = match store.id_by_email(email) {
            Some(id) => store.prepare_update(id, props).map(|v| Plan::Update(id, v)),
            None => {
                let mut props = props.clone();
                props.entry("email".into()).or_insert_with(|| Value::String(email.clone()));
                store.prepare_create(&props).map(Plan::Create)
            }
        };
        match outcome {
            Ok(plan) => plans.push((email.clone(), plan)),
            Err(WriteError::Invalid(e)) => invalid.extend(e),
            Err(other) => return Err(other.into()),
        }
    }
    if !invalid.is_empty() {
        return Err(ApiError::invalid_properties(&invalid));
    }
    let now = store::now_ms();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (email, plan) in plans {
        if let Some(fault) = take_input_fault(&inner, &[&email]) {
            errors.push(injected_entry(&fault));
            continue;
        }
        let (id, new) = match plan {
            Plan::Create(values) => {
                Counters::bump(&inner.counters.records_created, 1);
                (store.commit_create(values, now), true)
            }
            Plan::Update(id, values) => {
                if store.commit_update(id, values, true, now) {
                    Counters::bump(&inner.counters.records_updated, 1);
                }
                (id, false)
            }
        };
        if let Some(contact) = store.contact(id) {
            let mut record = store.render(contact, &Selection::AllSet);
            if let Some(obj) = record.as_object_mut() {
                obj.insert("new".into(), Value::Bool(new));
            }
            results.push(record);
        }
    }
    Ok(batch_response(StatusCode::OK, results, errors, started))
}

async fn batch_archive(State(inner): State<Arc<Inner>>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    let inputs = batch_inputs(&body)?;
    let keys = inputs.iter().map(input_id).collect::<Result<Vec<_>, _>>()?;
    reject_duplicates(&keys.iter().map(|k| k.trim().to_string()).collect::<Vec<_>>())?;
    let mut store = inner.store();
    let now = store::now_ms();
    for key in keys {
        if let Some(id) = store.resolve(&key, false)
            && store.archive(id, now)
        {
            Counters::bump(&inner.counters.records_updated, 1);
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Search and merge

async fn search_handler(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body)?;
    let mut store = inner.store();
    let page = search::run(&mut store, &body, &inner.opts).map_err(ApiError::validation)?;
    let mut out = json!({ "total": page.total, "results": page.results });
    if let (Some(next), Some(obj)) = (page.next_after, out.as_object_mut()) {
        let path = format!("/crm/{}/objects/contacts/search", inner.opts.api_version);
        obj.insert(
            "paging".into(),
            json!({ "next": { "after": next.to_string(), "link": host_link(&headers, &path, &next.to_string()) } }),
        );
    }
    Ok(json_response(StatusCode::OK, out))
}

fn id_field(body: &Value, name: &str) -> Result<String, ApiError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(ApiError::validation(format!("{name} is required"))),
    }
}

async fn merge(State(inner): State<Arc<Inner>>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    let primary = id_field(&body, "primaryObjectId")?;
    let other = id_field(&body, "objectIdToMerge")?;
    let mut store = inner.store();
    let primary = store.resolve(&primary, false).ok_or_else(ApiError::not_found)?;
    let other = store.resolve(&other, false).ok_or_else(ApiError::not_found)?;
    if primary == other {
        return Err(ApiError::validation("Cannot merge a contact with itself"));
    }
    let id = store.merge(primary, other, store::now_ms())?;
    Counters::bump(&inner.counters.records_updated, 1);
    let contact = store.contact(id).ok_or_else(ApiError::not_found)?;
    Ok(json_response(StatusCode::OK, store.render(contact, &Selection::AllSet)))
}

/// `POST /crm/{v}/objects/contacts/gdpr-delete` `{objectId, idProperty?}` → 204: erases a live
/// or archived contact for good (see `Store::gdpr_delete`; a merged-away id resolves to its
/// survivor). An email no contact holds is blocklisted and answered 204, as HubSpot documents;
/// an unknown record id is 404.
async fn gdpr_delete(State(inner): State<Arc<Inner>>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    let key = id_field(&body, "objectId")?;
    let by_email = id_property(body.get("idProperty"), true)?;
    let mut store = inner.store();
    match store.resolve(&key, by_email).or_else(|| store.resolve_archived(&key, by_email)) {
        Some(id) => {
            store.gdpr_delete(id, store::now_ms());
            Counters::bump(&inner.counters.records_updated, 1);
        }
        None if by_email => store.blocklist(&key),
        None => return Err(ApiError::not_found()),
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Communication preferences v4 (subscription state per email address)

fn require_email_channel(raw: &Option<String>, body: Option<&Value>) -> Result<(), ApiError> {
    let pairs = query_pairs(raw);
    let channel = query_get(&pairs, "channel").map(str::to_string).or_else(|| {
        body.and_then(|b| b.get("channel")).and_then(Value::as_str).map(str::to_string)
    });
    match channel.as_deref() {
        Some("EMAIL") => Ok(()),
        _ => Err(ApiError::validation("channel is required and must be EMAIL")),
    }
}

fn subscriber(raw: &str) -> Result<String, ApiError> {
    let email = normalize_email(raw);
    if email.contains('@') {
        Ok(email)
    } else {
        Err(ApiError::validation("subscriberIdString must be an email address"))
    }
}

fn status_entries(store: &Store, email: &str) -> Vec<Value> {
    let state = store.opt_state(email);
    SUBSCRIPTIONS
        .iter()
        .map(|(sub_id, name)| {
            let sub = state.subs.get(sub_id);
            let (status, ts) = match (state.all, sub) {
                (Some(ts), _) => ("UNSUBSCRIBED", Some(ts)),
                (None, Some(s)) => (s.status, Some(s.ts_ms)),
                (None, None) => ("NOT_SPECIFIED", None),
            };
            json!({
                "subscriberIdString": email,
                "subscriptionId": sub_id,
                "subscriptionName": name,
                "channel": "EMAIL",
                "status": status,
                "source": if ts.is_some() { "Public API" } else { "Default" },
                "legalBasis": sub.and_then(|s| s.legal_basis.clone()),
                "legalBasisExplanation": sub.and_then(|s| s.legal_basis_explanation.clone()),
                "setStatusSuccessReason": Value::Null,
                "timestamp": iso_ms(ts.unwrap_or_else(store::now_ms)),
            })
        })
        .collect()
}

async fn status_get(
    State(inner): State<Arc<Inner>>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let started = store::now_ms();
    require_email_channel(&query, None)?;
    let email = subscriber(&raw)?;
    let store = inner.store();
    Ok(json_response(
        StatusCode::OK,
        batch_body(status_entries(&store, &email), Vec::new(), started),
    ))
}

/// Set one subscription's status. `SUBSCRIBED` for an address that opted out is a 400.
async fn status_post(
    State(inner): State<Arc<Inner>>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body)?;
    require_email_channel(&query, Some(&body))?;
    let email = subscriber(&raw)?;
    let status = match body.get("statusState").and_then(Value::as_str) {
        Some("SUBSCRIBED") => "SUBSCRIBED",
        Some("UNSUBSCRIBED") => "UNSUBSCRIBED",
        Some("NOT_SPECIFIED") => "NOT_SPECIFIED",
        _ => {
            return Err(ApiError::validation(
                "statusState must be SUBSCRIBED, UNSUBSCRIBED or NOT_SPECIFIED",
            ));
        }
    };
    let sub_id = match body.get("subscriptionId") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|id| SUBSCRIPTIONS.iter().any(|(s, _)| s == id))
    .ok_or_else(|| {
        ApiError::validation("subscriptionId must name a subscription of this portal")
    })?;
    let legal = body.get("legalBasis").and_then(Value::as_str).map(str::to_string);
    let explanation = body.get("legalBasisExplanation").and_then(Value::as_str).map(str::to_string);
    let mut store = inner.store();
    let changed = store
        .set_subscription(&email, sub_id, status, legal, explanation, store::now_ms())
        .map_err(ApiError::validation)?;
    let mut entry = status_entries(&store, &email)
        .into_iter()
        .find(|e| e.get("subscriptionId").and_then(Value::as_u64) == Some(sub_id))
        .unwrap_or(Value::Null);
    if let Some(obj) = entry.as_object_mut() {
        let reason = if changed { "REQUESTED_CHANGE" } else { "NO_STATUS_CHANGE" };
        obj.insert("setStatusSuccessReason".into(), json!(reason));
    }
    Ok(json_response(StatusCode::OK, entry))
}

async fn unsubscribe_all_get(
    State(inner): State<Arc<Inner>>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let started = store::now_ms();
    require_email_channel(&query, None)?;
    let email = subscriber(&raw)?;
    let store = inner.store();
    let results: Vec<Value> = store
        .opt_state(&email)
        .all
        .map(|ts| {
            json!({
                "subscriberIdString": email,
                "wideStatusType": "PORTAL_WIDE",
                "status": "UNSUBSCRIBED",
                "channel": "EMAIL",
                "timestamp": iso_ms(ts),
            })
        })
        .into_iter()
        .collect();
    Ok(json_response(StatusCode::OK, batch_body(results, Vec::new(), started)))
}

/// Unsubscribe an address from all email; sets `hs_email_optout` on its contact. With
/// `verbose=true` the response lists the resulting statuses, otherwise `results` is empty.
async fn unsubscribe_all_post(
    State(inner): State<Arc<Inner>>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let started = store::now_ms();
    require_email_channel(&query, None)?;
    let email = subscriber(&raw)?;
    let verbose = query_get(&query_pairs(&query), "verbose").is_some_and(|v| v == "true");
    let mut store = inner.store();
    let (changed, contact_changed) = store.unsubscribe_all(&email, store::now_ms());
    if contact_changed {
        Counters::bump(&inner.counters.records_updated, 1);
    }
    let results = if verbose {
        let reason = if changed { "REQUESTED_CHANGE" } else { "NO_STATUS_CHANGE" };
        status_entries(&store, &email)
            .into_iter()
            .map(|mut e| {
                if let Some(obj) = e.as_object_mut() {
                    obj.insert("setStatusSuccessReason".into(), json!(reason));
                }
                e
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(json_response(StatusCode::OK, batch_body(results, Vec::new(), started)))
}

/// Unsubscribe a set of addresses from all email in one call (`{"inputs": ["a@b.test", ...]}`,
/// at most [`BATCH_MAX`]), with the single call's effect per address. Results always list each
/// distinct address once with its statuses (the simulator does not need `verbose`); an input
/// that is not an email address, or that has an injected fault, becomes a 207 error entry whose
/// `context.ids` holds the input as sent, and the other inputs are applied. Inputs that are not
/// strings fail the whole call with 400, as a malformed body does.
async fn batch_unsubscribe_all_post(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult {
    let started = store::now_ms();
    require_email_channel(&query, None)?;
    let body = parse_body(&body)?;
    let inputs = batch_inputs(&body)?;
    let raws = inputs
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| ApiError::validation("each input must be an email address string"))?;
    let now = store::now_ms();
    let mut store = inner.store();
    let mut seen = HashSet::new();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for raw in raws {
        let Ok(email) = subscriber(&raw) else {
            errors.push(json!({
                "status": "error",
                "category": "VALIDATION_ERROR",
                "message": "subscriberIdString must be an email address",
                "context": { "ids": [raw] },
                "errors": [],
            }));
            continue;
        };
        if let Some(fault) = take_input_fault(&inner, &[&raw]) {
            errors.push(injected_entry(&fault));
            continue;
        }
        if !seen.insert(email.clone()) {
            continue;
        }
        let (changed, contact_changed) = store.unsubscribe_all(&email, now);
        if contact_changed {
            Counters::bump(&inner.counters.records_updated, 1);
        }
        let reason = if changed { "REQUESTED_CHANGE" } else { "NO_STATUS_CHANGE" };
        let statuses: Vec<Value> = status_entries(&store, &email)
            .into_iter()
            .map(|mut e| {
                if let Some(obj) = e.as_object_mut() {
                    obj.insert("setStatusSuccessReason".into(), json!(reason));
                }
                e
            })
            .collect();
        results.push(json!({ "subscriberIdString": email, "statuses": statuses }));
    }
    Ok(batch_response(StatusCode::OK, results, errors, started))
}
