//! HTTP face of the simulator: one fallback handler that parses the path itself, so that
//! trailing slashes, any `vNN.N` version and percent-encoded segments behave as in Salesforce.
//!
//! Every data call passes, in order: latency, session check, concurrency limit, injected
//! delay / server error / request-limit faults, the daily API limit, then the resource. Every
//! data response carries `Sforce-Limit-Info`; every error body is JSON with a JSON content type.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_TYPE, HeaderName};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::soql::{self, matching_rows};
use super::store::{
    Incoming, Obj, RecError, Store, Undo, Val, decode, default_owner_id, format_datetime, make_id,
    normalize_id, org_id, parse_datetime,
};
use super::{Cursor, Inner, State as SimState, bump};

/// Records per create, update, upsert or delete request.
const MAX_WRITE_RECORDS: usize = 200;
/// Ids per collection read.
const MAX_READ_IDS: usize = 2000;

const JSON_CT: &str = "application/json;charset=UTF-8";

pub(super) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(inner)
        // Bodies of 200 records or 2000 ids are far below this; real orgs allow ~50 MB.
        .layer(DefaultBodyLimit::max(50 << 20))
}

async fn handle(
    State(sim): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !sim.opts.latency.is_zero() {
        tokio::time::sleep(sim.opts.latency).await;
    }
    let resp = route(&sim, &method, &uri, &headers, &body).await;
    if resp.status().is_client_error() || resp.status().is_server_error() {
        bump(&sim.counters.errors_returned, 1);
    }
    resp
}

fn json_resp(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CT));
    r
}

/// Salesforce's top-level error: a JSON array of `{message, errorCode}`.
fn sf_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_resp(status, &json!([{"message": message, "errorCode": code}]))
}

fn sf_error_fields(status: StatusCode, e: &RecError) -> Response {
    json_resp(status, &json!([{"message": e.message, "errorCode": e.code, "fields": e.fields}]))
}

fn not_found() -> Response {
    sf_error(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist")
}

fn method_not_allowed(method: &Method, allowed: &str) -> Response {
    sf_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        &format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
    )
}

fn json_parser_error(message: &str) -> Response {
    sf_error(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", message)
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| char::from(c).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn route(
    sim: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let segs: Vec<String> =
        uri.path().split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["services", "oauth2", "token"] => token(sim, method, headers, body),
        ["services", "data"] => versions(method),
        ["services", "data", ver, rest @ ..] => {
            data(sim, method, ver, rest, &query_pairs(uri), headers, body).await
        }
        ["services", "Soap", "u", ver] => super::soap::handle(sim, method, ver, body).await,
        _ => not_found(),
    }
}

fn versions(method: &Method) -> Response {
    if method != Method::GET {
        return method_not_allowed(method, "GET,HEAD");
    }
    let list: Vec<Value> = [
        ("Summer '23", "58.0"),
        ("Winter '24", "59.0"),
        ("Spring '24", "60.0"),
        ("Summer '24", "61.0"),
        ("Winter '25", "62.0"),
        ("Spring '25", "63.0"),
        ("Summer '25", "64.0"),
    ]
    .iter()
    .map(|(label, v)| json!({"label": label, "url": format!("/services/data/v{v}"), "version": v}))
    .collect();
    json_resp(StatusCode::OK, &Value::Array(list))
}

fn random_string(n: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())])).collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn oauth_error(error: &str, description: &str) -> Response {
    json_resp(StatusCode::BAD_REQUEST, &json!({"error": error, "error_description": description}))
}

/// `POST /services/oauth2/token`, client credentials only. The body is read whole whether or
/// not it came chunked (jsforce sends no `Content-Length`).
fn token(sim: &Inner, method: &Method, headers: &HeaderMap, body: &[u8]) -> Response {
    bump(&sim.counters.token_requests, 1);
    if method != Method::POST {
        return oauth_error("invalid_request", "must use HTTP POST");
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| param(&form, k).unwrap_or_default();
    if get("grant_type") != "client_credentials" {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    if get("client_id") != sim.opts.client_id {
        return oauth_error("invalid_client_id", "client identifier invalid");
    }
    if get("client_secret") != sim.opts.client_secret {
        return oauth_error("invalid_client", "invalid client credentials");
    }
    let org = org_id();
    let access_token = format!("{}!{}", &org[..15], random_string(96, ALNUM));
    let instance_url = instance_url(sim, headers);
    let issued_at = chrono::Utc::now().timestamp_millis().to_string();
    let signature = format!("{}=", random_string(43, ALNUM));
    sim.lock().sessions.insert(access_token.clone(), Instant::now());
    let mut r = json_resp(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "instance_url": instance_url,
            "id": format!("{instance_url}/id/{org}/{}", default_owner_id()),
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
            "scope": "api",
        }),
    );
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("no-cache,must-revalidate,max-age=0,no-store,private"),
    );
    r
}

/// The address the sim was started on, or else the Host the client used (router-only use).
fn instance_url(sim: &Inner, headers: &HeaderMap) -> String {
    let started = sim.base_url.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    started.unwrap_or_else(|| {
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        format!("http://{host}")
    })
}

pub(super) fn valid_version(ver: &str) -> bool {
    let Some(num) = ver.strip_prefix('v') else {
        return false;
    };
    let Some((major, minor)) = num.split_once('.') else {
        return false;
    };
    let ok_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    ok_digits(major)
        && ok_digits(minor)
        && major.parse::<u32>().is_ok_and(|m| (20..=99).contains(&m))
        && (major != "99" || minor.bytes().all(|b| b == b'0'))
}

/// Decrements the in-flight count when the request is done, however it ends.
struct InflightGuard<'a>(&'a Inner);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn session_expired() -> Response {
    let mut r =
        sf_error(StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID", "Session expired or invalid");
    r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Token"));
    r
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then(|| token.trim())
}

/// The gate in front of every data call: says whether to go on, and what to wait first.
pub(super) enum Gate {
    Go(Option<std::time::Duration>),
    Stop(Response),
}

fn gate(sim: &Inner, headers: &HeaderMap) -> Gate {
    gate_token(sim, bearer(headers))
}

/// [`gate`] for a session token found elsewhere (the SOAP API's `SessionHeader`).
pub(super) fn gate_token(sim: &Inner, token: Option<&str>) -> Gate {
    let mut st = sim.lock();
    let Some(token) = token else {
        return Gate::Stop(session_expired());
    };
    let now = Instant::now();
    match st.sessions.get_mut(token) {
        Some(last) if sim.opts.session_ttl.is_none_or(|ttl| now.duration_since(*last) <= ttl) => {
            *last = now;
        }
        Some(_) => {
            st.sessions.remove(token);
            return Gate::Stop(session_expired());
        }
        None => return Gate::Stop(session_expired()),
    }
    let delay = take_counted(&mut st.faults.delays).map(|(d, _)| d);
    if let Some((status, _)) = take_counted(&mut st.faults.server_errors) {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let resp = if status == 500 {
            sf_error(
                code,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact \
                 support: 1234567890-12345 (-1234567890)",
            )
        } else {
            sf_error(code, "SERVER_UNAVAILABLE", "Server temporarily unavailable")
        };
        return Gate::Stop(resp);
    }
    if st.faults.limit_errors > 0 {
        st.faults.limit_errors -= 1;
        return Gate::Stop(limit_exceeded("TotalRequests Limit exceeded."));
    }
    if st.api_used >= sim.opts.daily_api_limit {
        return Gate::Stop(limit_exceeded("TotalRequests Limit exceeded."));
    }
    st.api_used += 1;
    Gate::Go(delay)
}

/// Take one use from the first armed `(value, remaining)` fault.
fn take_counted<T: Copy>(list: &mut Vec<(T, u32)>) -> Option<(T, u32)> {
    list.retain(|(_, n)| *n > 0);
    let first = list.first_mut()?;
    first.1 -= 1;
    Some(*first)
}

fn limit_exceeded(message: &str) -> Response {
    sf_error(StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED", message)
}

pub(super) fn with_limit_info(sim: &Inner, mut resp: Response) -> Response {
    let used = sim.lock().api_used;
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{}", sim.opts.daily_api_limit))
    {
        resp.headers_mut().insert(HeaderName::from_static("sforce-limit-info"), v);
    }
    resp
}

/// One data call's context.
struct Req<'a> {
    sim: &'a Inner,
    method: &'a Method,
    ver: &'a str,
    query: &'a [(String, String)],
    headers: &'a HeaderMap,
    body: &'a [u8],
}

async fn data(
    sim: &Inner,
    method: &Method,
    ver: &str,
    rest: &[&str],
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if !valid_version(ver) {
        return not_found();
    }
    let in_flight = sim.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InflightGuard(sim);
    if sim.opts.max_concurrent.is_some_and(|max| in_flight > max) {
        return with_limit_info(sim, limit_exceeded("ConcurrentPerOrgLongTxn Limit exceeded."));
    }
    let delay = match gate(sim, headers) {
        Gate::Go(delay) => delay,
        Gate::Stop(resp) => return with_limit_info(sim, resp),
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let is_read = method == Method::GET
        || (method == Method::POST && matches!(rest, ["composite", "sobjects", _]));
    if is_read {
        bump(&sim.counters.api_reads, 1);
    } else {
        bump(&sim.counters.api_writes, 1);
    }
    let req = Req { sim, method, ver, query, headers, body };
    let resp = dispatch(&req, rest);
    with_limit_info(sim, resp)
}

fn dispatch(req: &Req<'_>, rest: &[&str]) -> Response {
    let m = req.method;
    match rest {
        [] => match *m {
            Method::GET => {
                let v = req.ver;
                json_resp(
                    StatusCode::OK,
                    &json!({
                        "limits": format!("/services/data/{v}/limits"),
                        "query": format!("/services/data/{v}/query"),
                        "queryAll": format!("/services/data/{v}/queryAll"),
                        "sobjects": format!("/services/data/{v}/sobjects"),
                        "composite": format!("/services/data/{v}/composite"),
                    }),
                )
            }
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        ["limits"] => match *m {
            Method::GET => {
                let used = req.sim.lock().api_used;
                let max = req.sim.opts.daily_api_limit;
                json_resp(
                    StatusCode::OK,
                    &json!({"DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)}}),
                )
            }
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        [q @ ("query" | "queryAll")] => match *m {
            Method::GET => run_query(req, *q == "queryAll"),
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        ["query" | "queryAll", locator] => match *m {
            Method::GET => query_more(req, locator),
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        ["sobjects", obj] => match (m, Obj::parse(obj)) {
            (_, None) => not_found(),
            (&Method::POST, Some(o)) => create_one(req, o),
            (&Method::GET, Some(o)) => json_resp(
                StatusCode::OK,
                &json!({"objectDescribe": {"name": o.name()}, "recentItems": []}),
            ),
            _ => method_not_allowed(m, "GET,HEAD,POST"),
        },
        ["sobjects", obj, kind @ ("updated" | "deleted")] => match (m, Obj::parse(obj)) {
            (_, None) => not_found(),
            (&Method::GET, Some(o)) => replication(req, o, *kind == "deleted"),
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        ["sobjects", obj, id] => match (m, Obj::parse(obj)) {
            (_, None) => not_found(),
            (&Method::GET, Some(o)) => get_one(req, o, id),
            (&Method::PATCH, Some(o)) => update_one(req, o, id),
            (&Method::DELETE, Some(o)) => delete_one(req, o, id),
            _ => method_not_allowed(m, "GET,PATCH,HEAD,DELETE"),
        },
        ["sobjects", obj, field, value] => match (m, Obj::parse(obj)) {
            (_, None) => not_found(),
            (&Method::PATCH, Some(o)) => upsert_one(req, o, field, value),
            _ => method_not_allowed(m, "PATCH"),
        },
        ["composite", "sobjects"] => match *m {
            Method::POST => collection_write(req, WriteKind::Create),
            Method::PATCH => collection_write(req, WriteKind::Update),
            Method::DELETE => collection_delete(req),
            _ => method_not_allowed(m, "POST,PATCH,DELETE"),
        },
        ["composite", "sobjects", obj] => match (m, Obj::parse(obj)) {
            (_, None) => not_found(),
            (&Method::GET | &Method::POST, Some(o)) => collection_read(req, o),
            _ => method_not_allowed(m, "GET,POST"),
        },
        ["composite", "sobjects", obj, field] => match (m, Obj::parse(obj)) {
            (_, None) => not_found(),
            (&Method::PATCH, Some(o)) => {
                // Bound first: a lock guard in a match scrutinee would live through the arms.
                let ext = external_id_field(&req.sim.lock().store, o, field);
                match ext {
                    Some(f) => collection_write(req, WriteKind::Upsert(o, f)),
                    None => sf_error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD",
                        &format!(
                            "Field name provided, {field} is not an External ID or indexed field for {}",
                            o.name()
                        ),
                    ),
                }
            }
            _ => method_not_allowed(m, "PATCH"),
        },
        _ => not_found(),
    }
}

fn external_id_field(store: &Store, obj: Obj, name: &str) -> Option<usize> {
    let schema = &store.table(obj).schema;
    schema.field(name).filter(|f| schema.external_ids.contains(f))
}

// ---------------------------------------------------------------------------------------------
// Query

fn batch_size(req: &Req<'_>) -> usize {
    let hinted =
        req.headers.get("sforce-query-options").and_then(|v| v.to_str().ok()).and_then(|v| {
            v.split(',')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("batchSize"))
                .and_then(|(_, n)| n.trim().parse::<usize>().ok())
        });
    hinted.unwrap_or(req.sim.opts.query_batch_size).clamp(200, 2000)
}

fn record_url(ver: &str, obj: Obj, id: &str) -> String {
    format!("/services/data/{ver}/sobjects/{}/{id}", obj.name())
}

fn run_query(req: &Req<'_>, include_deleted: bool) -> Response {
    let Some(soql_text) = param(req.query, "q") else {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        );
    };
    let batch = batch_size(req);
    let mut st = req.sim.lock();
    let q = match soql::parse(soql_text, &st.store) {
        Ok(q) => q,
        Err(e) => return sf_error(StatusCode::BAD_REQUEST, e.code, &e.message),
    };
    let table = st.store.table(q.obj);
    let rows = matching_rows(&q, table, include_deleted);
    if q.count {
        return json_resp(
            StatusCode::OK,
            &json!({"totalSize": rows.len(), "done": true, "records": []}),
        );
    }
    // The snapshot: values as they are now, whatever later writes do.
    let snapshot: Vec<(String, Vec<Val>)> = rows
        .iter()
        .map(|r| {
            let rec = &table.rows[*r];
            (
                rec.id(&table.schema).to_owned(),
                q.select.iter().map(|f| rec.vals[*f].clone()).collect(),
            )
        })
        .collect();
    let cursor = Cursor {
        obj: q.obj,
        fields: q.select.clone(),
        rows: snapshot,
        batch,
        last_access: Instant::now(),
    };
    let locator = if cursor.rows.len() > batch {
        st.cursor_seq += 1;
        let id = make_id("01g", st.cursor_seq);
        expire_cursors(&mut st, req.sim);
        Some(id)
    } else {
        None
    };
    let body = page(&st.store, req.ver, &cursor, 0, locator.as_deref());
    if let Some(id) = locator {
        st.cursors.insert(id, cursor);
    }
    json_resp(StatusCode::OK, &body)
}

/// Drop idle cursors and, beyond the per-org cap, the least recently used ones.
fn expire_cursors(st: &mut SimState, sim: &Inner) {
    let ttl = sim.opts.query_locator_ttl;
    let now = Instant::now();
    st.cursors.retain(|_, c| now.duration_since(c.last_access) <= ttl);
    while st.cursors.len() >= sim.opts.max_open_cursors.max(1) {
        let Some(oldest) =
            st.cursors.iter().min_by_key(|(_, c)| c.last_access).map(|(k, _)| k.clone())
        else {
            break;
        };
        st.cursors.remove(&oldest);
    }
}

fn page(store: &Store, ver: &str, c: &Cursor, start: usize, locator: Option<&str>) -> Value {
    let schema = &store.table(c.obj).schema;
    let end = (start + c.batch).min(c.rows.len());
    let records: Vec<Value> = c.rows[start.min(end)..end]
        .iter()
        .map(|(id, vals)| {
            let mut m = Map::new();
            m.insert(
                "attributes".into(),
                json!({"type": c.obj.name(), "url": record_url(ver, c.obj, id)}),
            );
            for (f, v) in c.fields.iter().zip(vals) {
                m.insert(schema.fields[*f].name.clone(), v.to_json());
            }
            Value::Object(m)
        })
        .collect();
    let mut body =
        json!({"totalSize": c.rows.len(), "done": end >= c.rows.len(), "records": records});
    if end < c.rows.len()
        && let Some(loc) = locator
    {
        body["nextRecordsUrl"] = json!(format!("/services/data/{ver}/query/{loc}-{end}"));
    }
    body
}

fn query_more(req: &Req<'_>, locator: &str) -> Response {
    let gone = || sf_error(StatusCode::NOT_FOUND, "INVALID_QUERY_LOCATOR", "invalid query locator");
    let Some((id, offset)) = locator.rsplit_once('-') else {
        return gone();
    };
    let Ok(offset) = offset.parse::<usize>() else {
        return gone();
    };
    let mut st = req.sim.lock();
    let ttl = req.sim.opts.query_locator_ttl;
    let now = Instant::now();
    st.cursors.retain(|_, c| now.duration_since(c.last_access) <= ttl);
    let SimState { cursors, store, .. } = &mut *st;
    let Some(cursor) = cursors.get_mut(id) else {
        return gone();
    };
    if offset > cursor.rows.len() {
        return gone();
    }
    cursor.last_access = now;
    let body = page(store, req.ver, cursor, offset, Some(id));
    json_resp(StatusCode::OK, &body)
}

// ---------------------------------------------------------------------------------------------
// Replication: `GET /sobjects/{SObject}/updated|deleted?start=..&end=..`

/// Ids per replication answer before `EXCEEDED_ID_LIMIT`.
const MAX_REPLICATION_IDS: usize = 600_000;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Windows are truncated to the minute, may not end in the future, may not start more than 30
/// days ago, and use `SystemModstamp` (updated) or the deletion time (deleted). Dates must be
/// URL-encoded: an unencoded `+` arrives as a space and is rejected, as for SOQL.
fn replication(req: &Req<'_>, obj: Obj, deleted: bool) -> Response {
    let bad = |msg: &str| sf_error(StatusCode::BAD_REQUEST, "INVALID_REPLICATION_DATE", msg);
    let date = |k: &str| param(req.query, k).and_then(parse_datetime);
    let (Some(start), Some(end)) = (date("start"), date("end")) else {
        return bad("start and end must be dateTime values such as 2024-05-01T10:00:00+00:00");
    };
    let st = req.sim.lock();
    let now = st.store.now_ms();
    let minute = |ms: i64| ms - ms.rem_euclid(MINUTE_MS);
    let (start, end) = (minute(start), minute(end.min(now)));
    if start >= end {
        return bad("startDate must chronologically precede endDate by more than one minute");
    }
    if now - start > 30 * DAY_MS {
        return bad("startDate cannot be more than 30 days ago");
    }
    let table = st.store.table(obj);
    let stamp = table.schema.modstamp;
    let in_window = |ms: i64| (start..end).contains(&ms);
    if deleted {
        let recs: Vec<Value> = table
            .rows
            .iter()
            .filter_map(|r| r.deleted_at.filter(|d| in_window(*d)).map(|d| (r, d)))
            .map(|(r, d)| json!({"id": r.id(&table.schema), "deletedDate": format_datetime(d)}))
            .collect();
        let earliest = table.rows.iter().filter_map(|r| r.deleted_at).min().unwrap_or(start);
        return json_resp(
            StatusCode::OK,
            &json!({
                "deletedRecords": recs,
                "earliestDateAvailable": format_datetime(minute(earliest)),
                "latestDateCovered": format_datetime(end),
            }),
        );
    }
    let ids: Vec<&str> = table
        .rows
        .iter()
        .filter(|r| !r.is_deleted() && matches!(r.vals[stamp], Val::Dt(ms) if in_window(ms)))
        .map(|r| r.id(&table.schema))
        .collect();
    if ids.len() > MAX_REPLICATION_IDS {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "too many ids in the window",
        );
    }
    json_resp(StatusCode::OK, &json!({"ids": ids, "latestDateCovered": format_datetime(end)}))
}

// ---------------------------------------------------------------------------------------------
// Writes

#[derive(Clone, Copy)]
enum WriteKind {
    Create,
    Update,
    Upsert(Obj, usize),
}

/// One record of a write request, ready to apply or already failed.
enum Op {
    Create(Obj, Incoming),
    Update(Obj, String, Incoming),
    Upsert(Obj, usize, Incoming),
    Delete(String),
    Failed(Option<String>, RecError),
}

/// Outcome of one record.
struct Outcome {
    id: Option<String>,
    created: Option<bool>,
    error: Option<RecError>,
    /// What was applied, for the stats once the request commits.
    effect: Effect,
}

#[derive(Clone, Copy, PartialEq)]
enum Effect {
    None,
    Created,
    Updated,
    Deleted,
}

fn parse_body(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "Unexpected character or end of input: {e} at [line:{}, column:{}]",
            e.line(),
            e.column()
        )
    })
}

/// Decision (api-facts is silent): a well-formed id that names no record.
fn invalid_cross_reference() -> RecError {
    RecError::new("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[])
}

fn malformed_id(id: &str) -> RecError {
    RecError::new("MALFORMED_ID", format!("malformed id {id}"), &[])
}

/// Find the row an id names, checking it belongs to `obj` (when given).
fn find_row(store: &Store, obj: Option<Obj>, id: &str) -> Result<(Obj, usize), RecError> {
    let Some(norm) = normalize_id(id) else {
        return Err(malformed_id(id));
    };
    let Some(owner) = Obj::of_id(&norm) else {
        return Err(malformed_id(id));
    };
    if obj.is_some_and(|o| o != owner) {
        return Err(malformed_id(id));
    }
    store.table(owner).row_of(&norm).map(|r| (owner, r)).ok_or_else(invalid_cross_reference)
}

/// A pending injected record failure that matches this write, consumed if found.
fn record_fault(
    st: &mut SimState,
    obj: Obj,
    row: Option<usize>,
    inc: Option<&Incoming>,
) -> Option<RecError> {
    if !st.faults.records.iter().any(|(o, ..)| *o == obj) {
        return None;
    }
    let table = st.store.table(obj);
    let mut view = row.map(|r| table.wire(r)).unwrap_or_default();
    if let Some(inc) = inc {
        for (sent, idx, val) in &inc.fields {
            let name = idx.map_or_else(|| sent.clone(), |i| table.schema.fields[i].name.clone());
            view.insert(name, val.to_json());
        }
    }
    let pos = st.faults.records.iter().position(|(o, pred, ..)| *o == obj && pred(&view))?;
    let (_, _, code, message) = st.faults.records.remove(pos);
    Some(RecError { code, message, fields: Vec::new() })
}

/// Apply a request's records in order; with `all_or_none`, undo everything if any failed.
fn apply(sim: &Inner, st: &mut SimState, ops: Vec<Op>, all_or_none: bool) -> Vec<Outcome> {
    let mut undo: Vec<Undo> = Vec::new();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let o = match op {
            Op::Failed(id, e) => {
                Outcome { id, created: None, error: Some(e), effect: Effect::None }
            }
            Op::Create(obj, inc) => match record_fault(st, obj, None, Some(&inc)) {
                Some(e) => {
                    Outcome { id: None, created: None, error: Some(e), effect: Effect::None }
                }
                None => match st.store.create(obj, &inc) {
                    Ok((id, u)) => {
                        undo.push(u);
                        Outcome {
                            id: Some(id),
                            created: None,
                            error: None,
                            effect: Effect::Created,
                        }
                    }
                    Err(e) => {
                        Outcome { id: None, created: None, error: Some(e), effect: Effect::None }
                    }
                },
            },
            Op::Update(obj, id, inc) => {
                let res = find_row(&st.store, Some(obj), &id).and_then(|(o, row)| {
                    if let Some(e) = record_fault(st, o, Some(row), Some(&inc)) {
                        return Err(e);
                    }
                    st.store.update(o, row, &inc)
                });
                match res {
                    Ok(u) => {
                        undo.push(u);
                        let full = normalize_id(&id).unwrap_or(id);
                        Outcome {
                            id: Some(full),
                            created: None,
                            error: None,
                            effect: Effect::Updated,
                        }
                    }
                    Err(e) => Outcome {
                        id: Some(id),
                        created: None,
                        error: Some(e),
                        effect: Effect::None,
                    },
                }
            }
            Op::Upsert(obj, field, inc) => upsert(st, obj, field, &inc, &mut undo),
            Op::Delete(id) => {
                let res = find_row(&st.store, None, &id).and_then(|(o, row)| {
                    if let Some(e) = record_fault(st, o, Some(row), None) {
                        return Err(e);
                    }
                    st.store.delete(o, row)
                });
                match res {
                    Ok(u) => {
                        undo.push(u);
                        let full = normalize_id(&id).unwrap_or(id);
                        Outcome {
                            id: Some(full),
                            created: None,
                            error: None,
                            effect: Effect::Deleted,
                        }
                    }
                    Err(e) => Outcome {
                        id: Some(id),
                        created: None,
                        error: Some(e),
                        effect: Effect::None,
                    },
                }
            }
        };
        out.push(o);
    }
    let failed = out.iter().filter(|o| o.error.is_some()).count();
    bump(&sim.counters.record_errors, failed as u64);
    if all_or_none && failed > 0 {
        st.store.rollback(undo);
        for o in &mut out {
            if o.error.is_none() {
                if o.effect == Effect::Created {
                    o.id = None;
                }
                o.created = None;
                o.effect = Effect::None;
                o.error = Some(RecError::new(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was \
                     using AllOrNone header",
                    &[],
                ));
            }
        }
    }
    for o in &out {
        match o.effect {
            Effect::Created => bump(&sim.counters.records_created, 1),
            Effect::Updated => bump(&sim.counters.records_updated, 1),
            Effect::Deleted => bump(&sim.counters.records_deleted, 1),
            Effect::None => {}
        }
    }
    out
}

fn upsert(
    st: &mut SimState,
    obj: Obj,
    field: usize,
    inc: &Incoming,
    undo: &mut Vec<Undo>,
) -> Outcome {
    let fail =
        |e: RecError| Outcome { id: None, created: None, error: Some(e), effect: Effect::None };
    let table = st.store.table(obj);
    let name = table.schema.fields[field].name.clone();
    if inc.get(table.schema.id).is_some() {
        return fail(RecError::new(
            "INVALID_FIELD",
            "Upsert by external id does not allow the Id field",
            &["Id"],
        ));
    }
    let Some(Val::Str(value)) = inc.get(field) else {
        return fail(RecError::new("MISSING_ARGUMENT", format!("{name} not specified"), &[]));
    };
    match table.by_external_id(field, value) {
        Some(row) => {
            if let Some(e) = record_fault(st, obj, Some(row), Some(inc)) {
                return fail(e);
            }
            let id = st.store.table(obj).rows[row].id(&st.store.table(obj).schema).to_owned();
            match st.store.update(obj, row, inc) {
                Ok(u) => {
                    undo.push(u);
                    Outcome {
                        id: Some(id),
                        created: Some(false),
                        error: None,
                        effect: Effect::Updated,
                    }
                }
                Err(e) => fail(e),
            }
        }
        None => {
            if let Some(e) = record_fault(st, obj, None, Some(inc)) {
                return fail(e);
            }
            match st.store.create(obj, inc) {
                Ok((id, u)) => {
                    undo.push(u);
                    Outcome {
                        id: Some(id),
                        created: Some(true),
                        error: None,
                        effect: Effect::Created,
                    }
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn outcome_json(o: &Outcome, with_created: bool) -> Value {
    let mut m = Map::new();
    if let Some(id) = &o.id {
        m.insert("id".into(), json!(id));
    }
    m.insert("success".into(), json!(o.error.is_none()));
    let errors: Vec<Value> = o.error.iter().map(RecError::to_json).collect();
    m.insert("errors".into(), Value::Array(errors));
    if with_created && let Some(c) = o.created {
        m.insert("created".into(), json!(c));
    }
    Value::Object(m)
}

fn exceeded_id_limit() -> Response {
    sf_error(
        StatusCode::BAD_REQUEST,
        "EXCEEDED_ID_LIMIT",
        "record limit reached. cannot submit more than 200 records into this call",
    )
}

/// `POST /composite/sobjects` (create), `PATCH /composite/sobjects` (update) and
/// `PATCH /composite/sobjects/{SObject}/{ExternalIdField}` (upsert).
fn collection_write(req: &Req<'_>, kind: WriteKind) -> Response {
    let body = match parse_body(req.body) {
        Ok(v) => v,
        Err(m) => return json_parser_error(&m),
    };
    let Some(obj_body) = body.as_object() else {
        return json_parser_error("Cannot deserialize instance of request body from START_ARRAY");
    };
    let all_or_none = match obj_body.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return json_parser_error("Cannot deserialize instance of boolean for allOrNone");
        }
    };
    let Some(records) = obj_body.get("records").and_then(Value::as_array) else {
        return json_parser_error(
            "Cannot deserialize request: records is required and must be an array",
        );
    };
    if records.len() > MAX_WRITE_RECORDS {
        return exceeded_id_limit();
    }
    let mut st = req.sim.lock();
    let mut ops = Vec::with_capacity(records.len());
    for rec in records {
        let Some(map) = rec.as_object() else {
            return json_parser_error(
                "Cannot deserialize instance of SObject from a non-object value",
            );
        };
        let declared = map.get("attributes").and_then(|a| a.get("type")).and_then(Value::as_str);
        let obj = match (kind, declared) {
            (WriteKind::Upsert(o, _), None) => o,
            (_, None) => {
                return sf_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TYPE",
                    "Must send a concrete entity type.",
                );
            }
            (_, Some(t)) => match Obj::parse(t) {
                Some(o) => o,
                None => {
                    return sf_error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_TYPE",
                        &format!("sObject type '{t}' is not supported."),
                    );
                }
            },
        };
        if let WriteKind::Upsert(o, _) = kind
            && o != obj
        {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("Records must all be of type {}", o.name()),
            );
        }
        let schema = &st.store.table(obj).schema;
        let op = match kind {
            WriteKind::Create => match decode(schema, map) {
                Ok(inc) => Op::Create(obj, inc),
                Err(m) => return json_parser_error(&m),
            },
            WriteKind::Upsert(o, f) => match decode(schema, map) {
                Ok(inc) => Op::Upsert(o, f, inc),
                Err(m) => return json_parser_error(&m),
            },
            WriteKind::Update => {
                let mut rest = map.clone();
                let id = rest.remove("id").or_else(|| rest.remove("Id"));
                match decode(schema, &rest) {
                    Err(m) => return json_parser_error(&m),
                    Ok(inc) => match id.as_ref().and_then(Value::as_str) {
                        Some(id) => Op::Update(obj, id.to_owned(), inc),
                        None => Op::Failed(
                            None,
                            RecError::new(
                                "MISSING_ARGUMENT",
                                "Id not specified in an update call",
                                &[],
                            ),
                        ),
                    },
                }
            }
        };
        ops.push(op);
    }
    let out = apply(req.sim, &mut st, ops, all_or_none);
    let with_created = matches!(kind, WriteKind::Upsert(..));
    json_resp(
        StatusCode::OK,
        &Value::Array(out.iter().map(|o| outcome_json(o, with_created)).collect()),
    )
}

/// `DELETE /composite/sobjects?ids=a,b&allOrNone=true`.
fn collection_delete(req: &Req<'_>) -> Response {
    let ids: Vec<String> = param(req.query, "ids")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return sf_error(StatusCode::BAD_REQUEST, "MISSING_ARGUMENT", "ids not specified");
    }
    if ids.len() > MAX_WRITE_RECORDS {
        return exceeded_id_limit();
    }
    let all_or_none = param(req.query, "allOrNone").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut st = req.sim.lock();
    let ops = ids.into_iter().map(Op::Delete).collect();
    let out = apply(req.sim, &mut st, ops, all_or_none);
    json_resp(StatusCode::OK, &Value::Array(out.iter().map(|o| outcome_json(o, false)).collect()))
}

/// `GET /composite/sobjects/{SObject}?ids=..&fields=..` and the POST form jsforce uses.
/// Unknown or deleted ids come back as `null` in their place.
fn collection_read(req: &Req<'_>, obj: Obj) -> Response {
    let (ids, fields): (Vec<String>, Vec<String>) = if req.method == Method::GET {
        let split = |name: &str| -> Vec<String> {
            param(req.query, name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        (split("ids"), split("fields"))
    } else {
        let body = match parse_body(req.body) {
            Ok(v) => v,
            Err(m) => return json_parser_error(&m),
        };
        let strings = |k: &str| -> Option<Vec<String>> {
            body.get(k)?.as_array()?.iter().map(|v| v.as_str().map(str::to_owned)).collect()
        };
        match (strings("ids"), strings("fields")) {
            (Some(i), Some(f)) => (i, f),
            _ => {
                return json_parser_error(
                    "Cannot deserialize request: ids and fields must be arrays of strings",
                );
            }
        }
    };
    if ids.len() > MAX_READ_IDS {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 2000 records into this call",
        );
    }
    if fields.is_empty() {
        return sf_error(StatusCode::BAD_REQUEST, "MISSING_ARGUMENT", "fields not specified");
    }
    let st = req.sim.lock();
    let table = st.store.table(obj);
    let mut cols = Vec::new();
    for f in &fields {
        match table.schema.field(f) {
            Some(i) => cols.push(i),
            None => {
                return sf_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("No such column '{f}' on entity '{}'.", obj.name()),
                );
            }
        }
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let Some(norm) = normalize_id(id) else {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "MALFORMED_ID",
                &format!("malformed id {id}"),
            );
        };
        let row = table.row_of(&norm).filter(|r| !table.rows[*r].is_deleted());
        out.push(match row {
            None => Value::Null,
            Some(r) => record_json(&st.store, req.ver, obj, r, Some(&cols)),
        });
    }
    json_resp(StatusCode::OK, &Value::Array(out))
}

/// One record with `attributes`, `Id` and the given fields (all when `None`).
fn record_json(store: &Store, ver: &str, obj: Obj, row: usize, cols: Option<&[usize]>) -> Value {
    let table = store.table(obj);
    let rec = &table.rows[row];
    let id = rec.id(&table.schema);
    let mut m = Map::new();
    m.insert("attributes".into(), json!({"type": obj.name(), "url": record_url(ver, obj, id)}));
    m.insert("Id".into(), json!(id));
    let all: Vec<usize> = (0..table.schema.fields.len()).collect();
    for f in cols.unwrap_or(&all) {
        m.insert(table.schema.fields[*f].name.clone(), rec.vals[*f].to_json());
    }
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------------
// Single records

fn single_error(e: &RecError) -> Response {
    let status = match e.code.as_str() {
        "ENTITY_IS_DELETED" => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    sf_error_fields(status, e)
}

fn body_object(req: &Req<'_>) -> Result<Map<String, Value>, String> {
    match parse_body(req.body)? {
        Value::Object(m) => Ok(m),
        _ => Err("Cannot deserialize instance of SObject from START_ARRAY".to_owned()),
    }
}

/// `POST /sobjects/{SObject}` → 201 `{id, success, errors}`.
fn create_one(req: &Req<'_>, obj: Obj) -> Response {
    let map = match body_object(req) {
        Ok(m) => m,
        Err(m) => return json_parser_error(&m),
    };
    let mut st = req.sim.lock();
    let inc = match decode(&st.store.table(obj).schema, &map) {
        Ok(i) => i,
        Err(m) => return json_parser_error(&m),
    };
    let out = apply(req.sim, &mut st, vec![Op::Create(obj, inc)], true);
    match out.first() {
        Some(Outcome { id: Some(id), error: None, .. }) => {
            json_resp(StatusCode::CREATED, &json!({"id": id, "success": true, "errors": []}))
        }
        Some(Outcome { error: Some(e), .. }) => single_error(e),
        _ => not_found(),
    }
}

fn get_one(req: &Req<'_>, obj: Obj, id: &str) -> Response {
    let st = req.sim.lock();
    let table = st.store.table(obj);
    let Some(row) = normalize_id(id).and_then(|n| table.row_of(&n)) else {
        return not_found();
    };
    if table.rows[row].is_deleted() {
        return not_found();
    }
    let cols = match param(req.query, "fields") {
        None => None,
        Some(list) => {
            let mut cols = Vec::new();
            for f in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match table.schema.field(f) {
                    Some(i) => cols.push(i),
                    None => {
                        return sf_error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_FIELD",
                            &format!("No such column '{f}' on entity '{}'.", obj.name()),
                        );
                    }
                }
            }
            Some(cols)
        }
    };
    json_resp(StatusCode::OK, &record_json(&st.store, req.ver, obj, row, cols.as_deref()))
}

/// `PATCH /sobjects/{SObject}/{Id}` → 204.
fn update_one(req: &Req<'_>, obj: Obj, id: &str) -> Response {
    let map = match body_object(req) {
        Ok(m) => m,
        Err(m) => return json_parser_error(&m),
    };
    let mut st = req.sim.lock();
    match find_row(&st.store, Some(obj), id) {
        Ok(_) => {}
        Err(e) if e.code == "MALFORMED_ID" => return sf_error_fields(StatusCode::BAD_REQUEST, &e),
        Err(_) => return not_found(),
    }
    let inc = match decode(&st.store.table(obj).schema, &map) {
        Ok(i) => i,
        Err(m) => return json_parser_error(&m),
    };
    let out = apply(req.sim, &mut st, vec![Op::Update(obj, id.to_owned(), inc)], true);
    match out.first().and_then(|o| o.error.as_ref()) {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(e) => single_error(e),
    }
}

/// `DELETE /sobjects/{SObject}/{Id}` → 204.
fn delete_one(req: &Req<'_>, obj: Obj, id: &str) -> Response {
    let mut st = req.sim.lock();
    match find_row(&st.store, Some(obj), id) {
        Ok(_) => {}
        Err(e) if e.code == "MALFORMED_ID" => return sf_error_fields(StatusCode::BAD_REQUEST, &e),
        Err(_) => return not_found(),
    }
    let out = apply(req.sim, &mut st, vec![Op::Delete(id.to_owned())], true);
    match out.first().and_then(|o| o.error.as_ref()) {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(e) => single_error(e),
    }
}

/// `PATCH /sobjects/{SObject}/{ExternalIdField}/{value}` → 201 created or 200 updated.
fn upsert_one(req: &Req<'_>, obj: Obj, field: &str, value: &str) -> Response {
    let map = match body_object(req) {
        Ok(m) => m,
        Err(m) => return json_parser_error(&m),
    };
    let mut st = req.sim.lock();
    let Some(f) = external_id_field(&st.store, obj, field) else {
        return sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Provided external ID field does not exist or is not accessible: {field}"),
        );
    };
    let mut inc = match decode(&st.store.table(obj).schema, &map) {
        Ok(i) => i,
        Err(m) => return json_parser_error(&m),
    };
    // The value comes from the path; a copy in the body is ignored.
    inc.fields.retain(|(_, i, _)| *i != Some(f));
    inc.fields.push((field.to_owned(), Some(f), Val::Str(value.to_owned())));
    let out = apply(req.sim, &mut st, vec![Op::Upsert(obj, f, inc)], true);
    match out.first() {
        Some(o @ Outcome { error: None, created, .. }) => {
            let status = if *created == Some(true) { StatusCode::CREATED } else { StatusCode::OK };
            json_resp(status, &outcome_json(o, true))
        }
        Some(Outcome { error: Some(e), .. }) => single_error(e),
        None => not_found(),
    }
}
