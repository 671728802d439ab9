//! Tests for the Salesforce connector: pure pieces (datetimes, cursor, config) directly, HTTP
//! behaviour against a wiremock org per test.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::cursor::{self, PollState, ScanPos, Start};
use super::mapping::{Position, parse_datetime};
use super::*;
use crate::domain::{Field, Fields};
use crate::retry::RetryPolicy;

const QUERY: &str = "/services/data/v62.0/query";
const QUERY_ALL: &str = "/services/data/v62.0/queryAll";
const TOKEN: &str = "/services/oauth2/token";
const SELECT: &str = "SELECT Id, SystemModstamp, IsDeleted, MasterRecordId, IsConverted, \
                      ConvertedContactId, Leadsync_Id__c, Email, FirstName, LastName, \
                      Company, Title, Phone, LeadSource, Status, HasOptedOutOfEmail FROM Lead";

fn env() -> HashMap<String, String> {
    [("SF_SECRET".to_string(), "s3cret\n".to_string())].into()
}

fn raw(login_url: &str) -> SalesforceConfigRaw {
    serde_json::from_value(json!({
        "login_url": login_url,
        "client_id": "cid",
        "client_secret_env": "SF_SECRET",
        "page_size": 200,
        "objects": ["Lead"],
    }))
    .expect("valid raw config")
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(1),
        max_interval: Duration::from_millis(5),
        max_attempts: 4,
    }
}

async fn org() -> (MockServer, SalesforceConnector) {
    let server = MockServer::start().await;
    let cfg = SalesforceConfig::from_raw(raw(&server.uri()), "systems.crm", &env())
        .expect("config is valid")
        .with_retry_policy(fast());
    (server, SalesforceConnector::new(cfg).expect("connector builds"))
}

/// A token response as Salesforce sends it: no `expires_in`.
fn token_body(server: &MockServer, token: &str) -> Value {
    json!({
        "access_token": token,
        "instance_url": server.uri(),
        "id": format!("{}/id/00D000000000001EAA/005000000000001AAA", server.uri()),
        "token_type": "Bearer",
        "issued_at": "1714557600000",
        "signature": "c2lnbmF0dXJl",
    })
}

async fn mount_token(server: &MockServer, token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path(TOKEN))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_id=cid"))
        .and(body_string_contains("client_secret=s3cret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(server, token)))
        .expect(times)
        .mount(server)
        .await;
}

fn empty_query() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"totalSize": 0, "done": true, "records": []}))
}

fn lead(id: &str, ts: &str) -> Value {
    json!({
        "attributes": {"type": "Lead", "url": format!("/services/data/v62.0/sobjects/Lead/{id}")},
        "Id": id,
        "SystemModstamp": ts,
        "Leadsync_Id__c": format!("ledger-{id}"),
        "Email": format!("{}@example.test", id.to_lowercase()),
        "FirstName": null,
        "LastName": "Doe",
        "Company": "Acme",
        "Status": "Working - Contacted",
        "HasOptedOutOfEmail": true,
    })
}

fn utc(s: &str) -> DateTime<Utc> {
    parse_datetime(s).expect("test datetime parses")
}

fn record(outbox_id: i64, op: PushOp, fields: Fields, person: Fields) -> PushRecord {
    PushRecord {
        outbox_id,
        ledger_key: format!("L{outbox_id}"),
        op,
        fields,
        person,
        stage_dates: Default::default(),
        stage_reason: None,
        owner: None,
    }
}

fn create() -> PushOp {
    PushOp::Create { object_type: "Lead".into() }
}

fn update(id: &str) -> PushOp {
    PushOp::Update { remote: RemoteId { object_type: "Lead".into(), id: id.into() } }
}

fn fields(pairs: &[(Field, &str)]) -> Fields {
    pairs.iter().map(|(f, v)| (*f, (*v).to_string())).collect()
}

// ---------------------------------------------------------------------------------------------
// Pure pieces

#[test]
fn parses_salesforce_datetimes() {
    let want = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).single().expect("valid date");
    for s in [
        "2024-05-01T10:00:00.000+0000",
        "2024-05-01T10:00:00.000+00:00",
        "2024-05-01T10:00:00.000Z",
        "2024-05-01T10:00:00Z",
        "2024-05-01T12:00:00.000+0200",
    ] {
        assert_eq!(parse_datetime(s), Some(want), "{s}");
    }
    assert_eq!(
        parse_datetime("2024-05-01T10:00:00.123+0000").map(|d| d.timestamp_subsec_millis()),
        Some(123)
    );
    assert_eq!(parse_datetime("2024-05-01 10:00:00"), None);
    assert_eq!(parse_datetime("yesterday"), None);
    assert_eq!(mapping::soql_datetime(want), "2024-05-01T10:00:00.000Z");
}

#[test]
fn keyset_soql_text() {
    let sel = ["Id", "SystemModstamp"];
    assert_eq!(
        cursor::poll_soql(&sel, "Lead", &Start::Beginning, 2000),
        "SELECT Id, SystemModstamp FROM Lead ORDER BY SystemModstamp, Id LIMIT 2000"
    );
    let after = Start::After(Position { ts: utc("2024-05-01T10:00:00Z"), id: "00Q1".into() });
    assert_eq!(
        cursor::poll_soql(&sel, "Lead", &after, 500),
        "SELECT Id, SystemModstamp FROM Lead WHERE SystemModstamp > 2024-05-01T10:00:00.000Z \
         OR (SystemModstamp = 2024-05-01T10:00:00.000Z AND Id > '00Q1') \
         ORDER BY SystemModstamp, Id LIMIT 500"
    );
    let from = Start::From(utc("2024-05-01T09:59:55Z"));
    assert_eq!(
        cursor::poll_soql(&sel, "Lead", &from, 200),
        "SELECT Id, SystemModstamp FROM Lead WHERE SystemModstamp >= 2024-05-01T09:59:55.000Z \
         ORDER BY SystemModstamp, Id LIMIT 200"
    );
}

fn pos(ts: &str, id: &str) -> Position {
    Position { ts: utc(ts), id: id.into() }
}

#[test]
fn cursor_is_monotonic_and_overlap_scan_is_separate() {
    let overlap = Duration::from_secs(5);
    // A short page: caught up, so the next cycle re-reads 5 s behind the watermark.
    let s1 = cursor::advance(
        None,
        &[pos("2024-05-01T10:00:00Z", "00Q1"), pos("2024-05-01T10:00:10Z", "00Q2")],
        false,
        overlap,
    )
    .expect("state after rows");
    assert_eq!((s1.ts, s1.id.as_str()), (utc("2024-05-01T10:00:10Z"), "00Q2"));
    assert_eq!(s1.start(), Start::From(utc("2024-05-01T10:00:05Z")));
    // Only rows inside the window are remembered as seen.
    assert_eq!(s1.seen, vec![("00Q2".to_string(), utc("2024-05-01T10:00:10Z"))]);

    // A full re-scan page that stays behind the watermark: the watermark does not move back,
    // and the scan continues from the page's last row instead of jumping to the watermark.
    let behind: Vec<Position> = (0..200)
        .map(|i| Position { ts: utc("2024-05-01T10:00:06Z"), id: format!("00Q{i:04}") })
        .collect();
    let s2 = cursor::advance(Some(&s1), &behind, true, overlap).expect("state");
    assert_eq!((s2.ts, s2.id.as_str()), (s1.ts, "00Q2"));
    assert_eq!(
        s2.start(),
        Start::After(Position { ts: utc("2024-05-01T10:00:06Z"), id: "00Q0199".into() })
    );

    // A full page that passes the watermark goes back to plain forward paging.
    let ahead = [pos("2024-05-01T10:00:20Z", "00Q9")];
    let s3 = cursor::advance(Some(&s2), &ahead, true, overlap).expect("state");
    assert_eq!(s3.scan, None);
    assert_eq!(s3.start(), Start::After(pos("2024-05-01T10:00:20Z", "00Q9")));

    // An empty caught-up poll keeps the watermark and re-arms the overlap scan.
    let s4 = cursor::advance(Some(&s3), &[], false, overlap).expect("state");
    assert_eq!((s4.ts, s4.id.as_str()), (s3.ts, "00Q9"));
    assert_eq!(s4.scan, Some(ScanPos { ts: utc("2024-05-01T10:00:15Z"), id: String::new() }));
    // Without overlap there is no re-scan at all.
    let s5 = cursor::advance(Some(&s3), &[], false, Duration::ZERO).expect("state");
    assert_eq!(s5.scan, None);
    assert!(s5.seen.is_empty());
    // Nothing ever seen: no cursor.
    assert_eq!(cursor::advance(None, &[], false, overlap), None);
}

#[test]
fn cursor_round_trips_and_rejects_foreign_text() {
    let state = PollState {
        ts: utc("2024-05-01T10:00:00Z"),
        id: "00Q1".into(),
        scan: None,
        seen: vec![("00Q1".into(), utc("2024-05-01T10:00:00Z"))],
    };
    let c = cursor::encode(Some(&state));
    assert_eq!(cursor::decode(&c).expect("ours"), Some(state));
    assert_eq!(cursor::decode(&Cursor(None)).expect("empty"), None);
    for bad in ["nonsense", r#"{"ts":"2024-05-01T10:00:00Z","id":"x' OR Id != '"}"#] {
        let e = cursor::decode(&Cursor(Some(bad.into()))).expect_err("not ours");
        assert!(matches!(e, ConnectorError::Config(_)), "{e}");
    }
}

#[test]
fn limit_info_header() {
    assert_eq!(client::parse_limit_info("api-usage=25/15000"), Some((25, 15000)));
    assert_eq!(
        client::parse_limit_info("per-app-api-usage=1/100(appName=x), api-usage=7/5000"),
        Some((7, 5000))
    );
    assert_eq!(client::parse_limit_info("api-usage=abc"), None);
}

#[test]
fn error_classes() {
    use reqwest::StatusCode;
    let h = reqwest::header::HeaderMap::new();
    let body = |code: &str| {
        serde_json::to_vec(&json!([{
            "message": "value jane@example.test is bad",
            "errorCode": code,
            "fields": ["Email"],
        }]))
        .expect("json")
    };
    let e = client::classify(StatusCode::FORBIDDEN, &h, &body("REQUEST_LIMIT_EXCEEDED"));
    assert!(matches!(
        e,
        ConnectorError::RateLimited { retry_after: Some(d) } if d == client::REQUEST_LIMIT_BACKOFF
    ));
    let e = client::classify(StatusCode::FORBIDDEN, &h, &body("API_DISABLED_FOR_ORG"));
    assert!(matches!(e, ConnectorError::Auth(_)));
    let e = client::classify(StatusCode::SERVICE_UNAVAILABLE, &h, &body("SERVER_UNAVAILABLE"));
    assert!(matches!(e, ConnectorError::Transient(_)));
    let e = client::classify(StatusCode::BAD_REQUEST, &h, &body("INVALID_FIELD"));
    match &e {
        ConnectorError::Rejected { code, message } => {
            assert_eq!(code, "INVALID_FIELD");
            assert!(message.contains("Email"), "field names are kept: {message}");
        }
        other => panic!("expected Rejected, got {other}"),
    }
    // The vendor message can echo values: it never reaches a Display.
    assert!(!e.to_string().contains("jane"), "{e}");
    let e = client::classify(StatusCode::NOT_FOUND, &h, b"<html>");
    assert_eq!(e.code(), "http_404");
}

// ---------------------------------------------------------------------------------------------
// Config

fn config_err(
    raw: SalesforceConfigRaw,
    env: &HashMap<String, String>,
) -> crate::connectors::KeyError {
    SalesforceConfig::from_raw(raw, "systems.crm", env).expect_err("config must be refused")
}

#[test]
fn config_defaults() {
    let raw: SalesforceConfigRaw = serde_json::from_value(json!({
        "login_url": "https://acme.my.salesforce.com",
        "client_id": "cid",
        "client_secret_env": "SF_SECRET",
    }))
    .expect("minimal config");
    let cfg = SalesforceConfig::from_raw(raw, "systems.crm", &env()).expect("valid");
    assert_eq!(cfg.api_version, "v62.0");
    assert_eq!(cfg.external_id_field, "Leadsync_Id__c");
    assert_eq!(cfg.page_size, 2000);
    assert_eq!(cfg.poll_interval, Duration::from_secs(30));
    assert_eq!(cfg.overlap, Duration::from_secs(5));
    assert_eq!(cfg.retry.max_attempts, 6);
    let maps: Vec<&str> = cfg.objects().collect();
    assert_eq!(maps, ["Lead", "Contact"], "both objects by default");
    assert_eq!(cfg.objects[0].1.property(Field::EmailOptOut), Some("HasOptedOutOfEmail"));
    assert_eq!(cfg.objects[1].1.property(Field::EmailOptOut), Some("HasOptedOutOfEmail"));
    assert!(!cfg.objects[1].1.maps(Field::Company), "Contact has no Company");
}

#[test]
fn config_errors_name_keys() {
    let e = config_err(raw("https://acme.my.salesforce.com"), &HashMap::new());
    assert_eq!(e.key, "systems.crm.client_secret_env");
    assert!(e.problem.contains("SF_SECRET"), "{e}");

    let e = config_err(raw("http://example.com"), &env());
    assert_eq!(
        e.to_string(),
        "systems.crm.login_url: plain http is only allowed for loopback addresses; use https"
    );

    let mut r = raw("https://a.test");
    r.api_version = "62".into();
    assert_eq!(config_err(r, &env()).key, "systems.crm.api_version");
    let mut r = raw("https://a.test");
    r.page_size = 100;
    assert_eq!(config_err(r, &env()).key, "systems.crm.page_size");
    let mut r = raw("https://a.test");
    r.poll_interval_secs = 0;
    assert_eq!(config_err(r, &env()).key, "systems.crm.poll_interval_secs");
    let mut r = raw("https://a.test");
    r.objects = Some(vec!["Account".into()]);
    assert_eq!(config_err(r, &env()).key, "systems.crm.objects");
    let mut r = raw("https://a.test");
    r.objects = Some(vec!["Lead".into(), "lead".into()]);
    assert!(config_err(r, &env()).problem.contains("twice"));
    let mut r = raw("https://a.test");
    r.objects = Some(Vec::new());
    assert_eq!(config_err(r, &env()).key, "systems.crm.objects");
    let mut r = raw("https://a.test");
    r.object = Some("Lead".into());
    let e = config_err(r, &env());
    assert_eq!((e.key.as_str(), e.problem.contains("not both")), ("systems.crm.objects", true));
    let mut r = raw("https://a.test");
    r.objects = None;
    r.object = Some("Opportunity".into());
    assert_eq!(config_err(r, &env()).key, "systems.crm.object");
    let mut r = raw("https://a.test");
    let mut m = FieldMap::salesforce_contact_default();
    m.fields.insert("company".into(), "MasterRecordId".into());
    r.contact_mapping = Some(m);
    r.objects = Some(vec!["Contact".into()]);
    assert_eq!(config_err(r, &env()).key, "systems.crm.contact_mapping.fields.company");
    let mut r = raw("https://a.test");
    r.external_id_field = "Bad Field".into();
    assert_eq!(config_err(r, &env()).key, "systems.crm.external_id_field");

    let mut r = raw("https://a.test");
    let mut m = FieldMap::salesforce_lead_default();
    m.fields.insert("title".into(), "Title, Id".into());
    r.mapping = Some(m);
    assert_eq!(config_err(r, &env()).key, "systems.crm.mapping.fields.title");
    let mut r = raw("https://a.test");
    let mut m = FieldMap::salesforce_lead_default();
    m.fields.insert("frist_name".into(), "FirstName".into());
    r.mapping = Some(m);
    assert_eq!(config_err(r, &env()).key, "systems.crm.mapping.fields.frist_name");
}

#[test]
fn unknown_config_keys_are_refused() {
    let e = serde_json::from_value::<SalesforceConfigRaw>(json!({
        "login_url": "https://a.test",
        "client_id": "cid",
        "client_secret_env": "SF_SECRET",
        "page_sise": 500,
    }))
    .expect_err("unknown key");
    assert!(e.to_string().contains("unknown field `page_sise`"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// HTTP: auth and retries

#[tokio::test]
async fn token_without_expires_in_is_cached_and_used() {
    let (server, sf) = org().await;
    mount_token(&server, "tok1", 1).await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .and(query_param("q", "SELECT Id FROM Lead LIMIT 1"))
        .and(header("authorization", "Bearer tok1"))
        .respond_with(empty_query().insert_header("Sforce-Limit-Info", "api-usage=18/15000"))
        .expect(2)
        .mount(&server)
        .await;
    sf.healthcheck().await.expect("healthy");
    sf.healthcheck().await.expect("healthy again, same token");
    assert_eq!(sf.api_usage(), Some((18, 15000)));
    let c = sf.counters().snapshot();
    assert_eq!((c.reads, c.writes, c.errors), (3, 0, 0));
}

#[tokio::test]
async fn invalid_session_reauthenticates_once_then_succeeds() {
    let (server, sf) = org().await;
    Mock::given(method("POST"))
        .and(path(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(&server, "old")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(&server, "new")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .and(header("authorization", "Bearer old"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!([
            {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .and(header("authorization", "Bearer new"))
        .respond_with(empty_query())
        .expect(1)
        .mount(&server)
        .await;
    sf.healthcheck().await.expect("healthy after one re-authentication");
    let c = sf.counters().snapshot();
    assert_eq!((c.reads, c.errors), (4, 1));
}

#[tokio::test]
async fn second_invalid_session_is_auth_error() {
    let (server, sf) = org().await;
    mount_token(&server, "tok", 2).await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!([
            {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
        ])))
        .expect(2)
        .mount(&server)
        .await;
    let e = sf.healthcheck().await.expect_err("refused twice");
    assert!(matches!(e, ConnectorError::Auth(ref m) if m.contains("INVALID_SESSION_ID")), "{e}");
}

#[tokio::test]
async fn token_endpoint_refusal_is_auth_and_not_retried() {
    let (server, sf) = org().await;
    Mock::given(method("POST"))
        .and(path(TOKEN))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_client", "error_description": "invalid client credentials"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = sf.healthcheck().await.expect_err("bad credentials");
    assert!(matches!(e, ConnectorError::Auth(ref m) if m.contains("invalid_client")), "{e}");
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let (server, sf) = org().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0.3"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(empty_query())
        .expect(1)
        .mount(&server)
        .await;
    let start = std::time::Instant::now();
    sf.healthcheck().await.expect("succeeds after waiting");
    // The retry policy's own delays are a few ms; only Retry-After explains 300 ms.
    assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
}

#[tokio::test]
async fn server_errors_are_retried() {
    let (server, sf) = org().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!([
            {"message": "down", "errorCode": "SERVER_UNAVAILABLE"}
        ])))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(empty_query())
        .expect(1)
        .mount(&server)
        .await;
    sf.healthcheck().await.expect("third attempt succeeds");
    let c = sf.counters().snapshot();
    assert_eq!((c.reads, c.errors), (4, 2));
}

#[tokio::test]
async fn server_errors_give_up_as_transient() {
    let (server, sf) = org().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .respond_with(ResponseTemplate::new(500))
        .expect(u64::from(fast().max_attempts))
        .mount(&server)
        .await;
    let e = sf.healthcheck().await.expect_err("always down");
    assert!(matches!(e, ConnectorError::Transient(_)), "{e}");
}

// ---------------------------------------------------------------------------------------------
// HTTP: polling and fetch

#[tokio::test]
async fn poll_follows_next_records_url_then_rescans_overlap() {
    let (server, sf) = org().await;
    mount_token(&server, "tok", 1).await;
    let first_q = format!("{SELECT} ORDER BY SystemModstamp, Id LIMIT 200");
    Mock::given(method("GET"))
        .and(path(QUERY_ALL))
        .and(query_param("q", first_q.as_str()))
        .and(header("Sforce-Query-Options", "batchSize=200"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 2, "done": false,
            "nextRecordsUrl": "/services/data/v62.0/query/01gD0000000002AIAQ-1",
            "records": [lead("00Q000000000001AAA", "2024-05-01T10:00:00.000+0000")],
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/services/data/v62.0/query/01gD0000000002AIAQ-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 2, "done": true,
            "records": [lead("00Q000000000002AAA", "2024-05-01T10:00:10.000+0000")],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let before = Utc::now();
    let page = sf.poll_changes(&Cursor(None)).await.expect("first poll");
    assert_eq!(page.changes.len(), 2);
    assert_eq!(page.poll_again_after, Duration::from_secs(30), "short page: caught up");
    let c = &page.changes[0];
    assert_eq!(c.remote, RemoteId { object_type: "Lead".into(), id: "00Q000000000001AAA".into() });
    assert_eq!(c.ledger_key.as_deref(), Some("ledger-00Q000000000001AAA"));
    assert_eq!(c.modified_at, utc("2024-05-01T10:00:00Z"));
    assert!(c.fetched_at >= before && c.fetched_at <= Utc::now());
    assert!(c.fate.is_live());
    assert_eq!(c.fields.get(&Field::EmailOptOut).map(String::as_str), Some("true"));
    assert_eq!(c.fields.get(&Field::LeadStatus).map(String::as_str), Some("working"));
    assert_eq!(c.fields.get(&Field::LastName).map(String::as_str), Some("Doe"));
    assert!(!c.fields.contains_key(&Field::FirstName), "null is absent");

    // Next cycle: re-read from watermark - 5 s. The watermark row comes back (already seen,
    // not emitted again) along with a row that committed late, behind the watermark.
    let rescan_q = format!(
        "{SELECT} WHERE SystemModstamp >= 2024-05-01T10:00:05.000Z ORDER BY SystemModstamp, Id LIMIT 200"
    );
    Mock::given(method("GET"))
        .and(path(QUERY_ALL))
        .and(query_param("q", rescan_q.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 2, "done": true,
            "records": [
                lead("00Q000000000003AAA", "2024-05-01T10:00:07.000+0000"),
                lead("00Q000000000002AAA", "2024-05-01T10:00:10.000+0000"),
            ],
        })))
        .expect(2)
        .mount(&server)
        .await;
    let page2 = sf.poll_changes(&page.next_cursor).await.expect("second poll");
    let ids: Vec<&str> = page2.changes.iter().map(|c| c.remote.id.as_str()).collect();
    assert_eq!(ids, ["00Q000000000003AAA"], "only the late row is new");
    let all = cursor::decode_all(&page2.next_cursor).expect("ours");
    let state = all.objects.get("Lead").expect("lead position");
    assert_eq!((state.ts, state.id.as_str()), (utc("2024-05-01T10:00:10Z"), "00Q000000000002AAA"));

    // Quiet org: the same re-scan emits nothing.
    let page3 = sf.poll_changes(&page2.next_cursor).await.expect("third poll");
    assert!(page3.changes.is_empty());
    assert_eq!(page3.next_cursor, page2.next_cursor);
}

#[tokio::test]
async fn full_page_polls_again_at_once_with_keyset() {
    let (server, sf) = org().await;
    mount_token(&server, "tok", 1).await;
    let rows: Vec<Value> =
        (0..200).map(|i| lead(&format!("00Q{i:015}"), "2024-05-01T10:00:00.000+0000")).collect();
    Mock::given(method("GET"))
        .and(path(QUERY_ALL))
        .and(query_param("q", format!("{SELECT} ORDER BY SystemModstamp, Id LIMIT 200").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 200, "done": true, "records": rows,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let page = sf.poll_changes(&Cursor(None)).await.expect("poll");
    assert_eq!(page.changes.len(), 200);
    assert_eq!(page.poll_again_after, Duration::ZERO);
    // Ties on SystemModstamp continue by Id.
    let next_q = format!(
        "{SELECT} WHERE SystemModstamp > 2024-05-01T10:00:00.000Z OR (SystemModstamp = \
         2024-05-01T10:00:00.000Z AND Id > '00Q000000000000199') ORDER BY SystemModstamp, Id LIMIT 200"
    );
    Mock::given(method("GET"))
        .and(path(QUERY_ALL))
        .and(query_param("q", next_q.as_str()))
        .respond_with(empty_query())
        .expect(1)
        .mount(&server)
        .await;
    let page2 = sf.poll_changes(&page.next_cursor).await.expect("poll");
    assert!(page2.changes.is_empty());
    assert_eq!(page2.poll_again_after, Duration::from_secs(30));
}

#[tokio::test]
async fn fetch_reads_collections_and_skips_unknown_ids() {
    let (server, sf) = org().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("GET"))
        .and(path("/services/data/v62.0/composite/sobjects/Lead"))
        .and(query_param("ids", "00Q000000000001EAA,00Q000000000009EAA"))
        .and(query_param(
            "fields",
            "Id,SystemModstamp,IsDeleted,MasterRecordId,IsConverted,ConvertedContactId,\
             Leadsync_Id__c,Email,FirstName,LastName,Company,Title,Phone,\
             LeadSource,Status,HasOptedOutOfEmail",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            lead("00Q000000000001EAA", "2024-05-01T10:00:00.000+0000"),
            null,
        ])))
        .expect(1)
        .mount(&server)
        .await;
    // The id the collections read did not return is asked again through queryAll (deleted
    // rows are only there); unknown there too, it is left out.
    Mock::given(method("GET"))
        .and(path(QUERY_ALL))
        .and(query_param("q", format!("{SELECT} WHERE Id IN ('00Q000000000009EAA')").as_str()))
        .respond_with(empty_query())
        .expect(1)
        .mount(&server)
        .await;
    let ids = [
        RemoteId { object_type: "Lead".into(), id: "00Q000000000001EAA".into() },
        RemoteId { object_type: "Lead".into(), id: "00Q000000000009EAA".into() },
        RemoteId { object_type: "Contact".into(), id: "003000000000001AAA".into() },
    ];
    let changes = sf.fetch(&ids).await.expect("fetch");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].remote.id, "00Q000000000001EAA");
}

// ---------------------------------------------------------------------------------------------
// HTTP: push

async fn sent_bodies(server: &MockServer, p: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .expect("recording is on")
        .iter()
        .filter(|r| r.url.path() == p)
        .map(|r| serde_json::from_slice(&r.body).expect("json body"))
        .collect()
}

#[tokio::test]
async fn push_mixed_batch_maps_per_record_results() {
    let (server, sf) = org().await;
    mount_token(&server, "tok", 1).await;
    let upsert = "/services/data/v62.0/composite/sobjects/Lead/Leadsync_Id__c";
    let update_path = "/services/data/v62.0/composite/sobjects";
    Mock::given(method("PATCH"))
        .and(path(upsert))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": "00Q000000000001AAA", "success": true, "errors": [], "created": true},
            {"id": "00Q000000000002AAA", "success": true, "errors": [], "created": false},
            {"success": false, "errors": [{
                "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "message": "Phone must be valid", "fields": ["Phone"]}]},
        ])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(update_path))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": "00Q000000000005AAA", "success": true, "errors": []},
            {"id": "00Q000000000006AAA", "success": false, "errors": [{
                "statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked", "fields": []}]},
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let person = fields(&[(Field::LastName, "Doe"), (Field::Company, "Acme")]);
    let batch = [
        record(
            1,
            create(),
            fields(&[(Field::Email, "a@x.test"), (Field::EmailOptOut, "true")]),
            Fields::new(),
        ),
        record(2, create(), fields(&[(Field::Email, "b@x.test")]), person.clone()),
        record(
            5,
            update("00Q000000000005AAA"),
            fields(&[(Field::LeadStatus, "working")]),
            person.clone(),
        ),
        record(3, create(), fields(&[(Field::Phone, "nope")]), person),
        record(
            6,
            update("00Q000000000006AAA"),
            fields(&[(Field::EmailOptOut, "false")]),
            Fields::new(),
        ),
    ];
    let out = sf.push(&batch).await.expect("well-formed calls");
    let lead = |id: &str| RemoteId { object_type: "Lead".into(), id: id.into() };
    assert_eq!(
        out,
        vec![
            PushOutcome::Accepted {
                outbox_id: 1,
                remote: lead("00Q000000000001AAA"),
                created: true
            },
            PushOutcome::Accepted {
                outbox_id: 2,
                remote: lead("00Q000000000002AAA"),
                created: false
            },
            PushOutcome::Accepted {
                outbox_id: 5,
                remote: lead("00Q000000000005AAA"),
                created: false
            },
            PushOutcome::Rejected {
                outbox_id: 3,
                code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
                message: "Phone must be valid (fields: Phone)".into(),
            },
            PushOutcome::Retry { outbox_id: 6, code: "UNABLE_TO_LOCK_ROW".into() },
        ]
    );

    let upserts = sent_bodies(&server, upsert).await;
    assert_eq!(upserts.len(), 1);
    assert_eq!(upserts[0]["allOrNone"], json!(false));
    let recs = upserts[0]["records"].as_array().expect("records");
    assert_eq!(recs.len(), 3);
    // Record 1 has no person fields: required fields get the placeholders and status "new".
    assert_eq!(
        recs[0],
        json!({
            "attributes": {"type": "Lead"},
            "Leadsync_Id__c": "L1",
            "Email": "a@x.test",
            "HasOptedOutOfEmail": true,
            "LastName": "[not provided]",
            "Company": "[not provided]",
            "Status": "Open - Not Contacted",
        })
    );
    // Record 2 takes required fields from the person.
    assert_eq!(recs[1]["LastName"], json!("Doe"));
    assert_eq!(recs[1]["Company"], json!("Acme"));
    assert_eq!(recs[1]["Leadsync_Id__c"], json!("L2"));
    assert!(recs[1].get("Id").is_none() && recs[1].get("id").is_none());

    let updates = sent_bodies(&server, update_path).await;
    assert_eq!(updates.len(), 1);
    assert_eq!(
        updates[0],
        json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Lead"}, "id": "00Q000000000005AAA", "Status": "Working - Contacted"},
            {"attributes": {"type": "Lead"}, "id": "00Q000000000006AAA", "HasOptedOutOfEmail": false},
        ]})
    );
    let c = sf.counters().snapshot();
    assert_eq!((c.reads, c.writes, c.errors), (1, 2, 0));
}

#[tokio::test]
async fn malformed_batch_is_rejected_whole_without_retry() {
    let (server, sf) = org().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("PATCH"))
        .and(path("/services/data/v62.0/composite/sobjects"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!([
            {"message": "Unexpected character ('x')", "errorCode": "JSON_PARSER_ERROR"}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let batch =
        [record(9, update("00Q000000000009AAA"), fields(&[(Field::Title, "CEO")]), Fields::new())];
    let e = sf.push(&batch).await.expect_err("whole call refused");
    assert!(
        matches!(&e, ConnectorError::Rejected { code, .. } if code == "JSON_PARSER_ERROR"),
        "{e}"
    );
}

#[tokio::test]
async fn push_refuses_other_objects_without_a_call() {
    let (server, sf) = org().await;
    let batch = [record(
        1,
        PushOp::Create { object_type: "Contact".into() },
        fields(&[(Field::Email, "a@x.test")]),
        Fields::new(),
    )];
    let out = sf.push(&batch).await.expect("no call needed");
    assert!(matches!(&out[0], PushOutcome::Rejected { code, .. } if code == "unsupported_object"));
    assert!(server.received_requests().await.expect("recording").is_empty());
}

#[tokio::test]
async fn concurrent_calls_share_one_reauthentication() {
    let (server, sf) = org().await;
    Mock::given(method("POST"))
        .and(path(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(&server, "old")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(&server, "new")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .and(header("authorization", "Bearer old"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!([{"message": "expired", "errorCode": "INVALID_SESSION_ID"}]))
                // Keep both calls in flight with the old token at the same time.
                .set_delay(Duration::from_millis(50)),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(QUERY))
        .and(header("authorization", "Bearer new"))
        .respond_with(empty_query())
        .expect(2)
        .mount(&server)
        .await;
    let (a, b) = tokio::join!(sf.healthcheck(), sf.healthcheck());
    a.expect("first call healthy");
    b.expect("second call healthy");
}

#[test]
fn placeholder_values_read_back_as_no_value() {
    let map = FieldMap::from_raw(&FieldMap::salesforce_lead_default(), "x").expect("valid");
    let rec: super::wire::Record = serde_json::from_value(json!({
        "Id": "00Q000000000001AAA",
        "SystemModstamp": "2024-05-01T10:00:00.000+0000",
        "Email": "a@b.test",
        "LastName": "[not provided]",
        "Company": "[not provided]"
    }))
    .expect("record");
    let (change, _) = super::mapping::record_to_change(
        &map,
        &Default::default(),
        "Lead",
        "Leadsync_Id__c",
        &rec,
        Utc::now(),
    )
    .expect("change");
    assert!(!change.fields.contains_key(&Field::LastName));
    assert!(!change.fields.contains_key(&Field::Company));
    assert_eq!(change.fields.get(&Field::Email).map(String::as_str), Some("a@b.test"));
}

#[test]
fn contract_custom_fields_are_read_by_any_casing_and_only_from_live_records() {
    let map = FieldMap::from_raw(&FieldMap::salesforce_lead_default(), "x").expect("valid");
    let props = crate::connectors::contract_props::ContractProps::new(
        [("score", "Score__c"), ("country", "Country"), ("tier", "Tier__c")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .into(),
    );
    let rec: super::wire::Record = serde_json::from_value(json!({
        "Id": "00Q000000000001AAA",
        "SystemModstamp": "2024-05-01T10:00:00.000+0000",
        "Email": "a@b.test",
        "score__c": 72.5,
        "Country": "CA",
        "Tier__c": null
    }))
    .expect("record");
    let (change, _) =
        super::mapping::record_to_change(&map, &props, "Lead", "X__c", &rec, Utc::now())
            .expect("change");
    assert_eq!(change.custom.get("score"), Some(&Some("72.5".to_string())));
    assert_eq!(change.custom.get("country"), Some(&Some("CA".to_string())));
    assert_eq!(change.custom.get("tier"), Some(&None), "null reads as empty");
    let mut gone = rec.clone();
    gone.insert("IsDeleted".into(), json!(true));
    let (change, _) =
        super::mapping::record_to_change(&map, &props, "Lead", "X__c", &gone, Utc::now())
            .expect("change");
    assert!(change.custom.is_empty(), "a deleted record says nothing about the person");
}

#[test]
fn last_activity_date_is_read_only_when_asked_and_only_from_live_records() {
    use crate::domain::LastActivity;
    let map = FieldMap::from_raw(&FieldMap::salesforce_lead_default(), "x").expect("valid");
    let on = crate::connectors::contract_props::ContractProps::default().with_last_activity(true);
    let off = crate::connectors::contract_props::ContractProps::default();
    let rec = |extra: serde_json::Value| -> super::wire::Record {
        let mut r = json!({
            "Id": "00Q000000000001AAA",
            "SystemModstamp": "2024-05-01T10:00:00.000+0000",
            "Email": "a@b.test",
        });
        if let (Some(r), Some(e)) = (r.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        serde_json::from_value(r).expect("record")
    };
    let read = |r: &super::wire::Record, p| {
        super::mapping::record_to_change(&map, p, "Lead", "X__c", r, Utc::now())
            .expect("change")
            .0
            .last_activity
    };
    let dated = rec(json!({"LastActivityDate": "2024-04-30"}));
    let day = chrono::NaiveDate::from_ymd_opt(2024, 4, 30).expect("date");
    assert_eq!(read(&dated, &on), Some(LastActivity::Date(day)));
    assert_eq!(read(&dated, &off), None, "not asked: says nothing");
    assert_eq!(read(&rec(json!({"lastactivitydate": null})), &on), Some(LastActivity::Never));
    assert_eq!(read(&rec(json!({})), &on), None, "not carried (an outbound message)");
    assert_eq!(read(&rec(json!({"LastActivityDate": "30/04/2024"})), &on), None);
    let deleted = rec(json!({"LastActivityDate": "2024-04-30", "IsDeleted": true}));
    assert_eq!(read(&deleted, &on), None, "a deleted record says nothing about the person");
}

#[test]
fn stage_dates_go_into_the_write_record_as_datetime_or_date() {
    use crate::connectors::contract_props::{ContractProps, DateKind, StageDateProp};
    let map = FieldMap::from_raw(&FieldMap::salesforce_lead_default(), "x").expect("valid");
    let props = ContractProps::default().with_stage_dates(
        [
            ("mql", StageDateProp { property: "MQL_Date__c".into(), kind: DateKind::Date }),
            ("sql", StageDateProp { property: "SQL_At__c".into(), kind: DateKind::DateTime }),
        ]
        .map(|(a, b)| (a.to_string(), b))
        .into(),
    );
    let at = super::mapping::parse_datetime("2026-11-20T23:30:00.000+0000").expect("time");
    let rec = PushRecord {
        outbox_id: 1,
        ledger_key: "L1".into(),
        op: PushOp::Update { remote: RemoteId { object_type: "Lead".into(), id: "00Q1".into() } },
        fields: Fields::new(),
        person: Fields::new(),
        stage_dates: [("mql", at), ("sql", at)].map(|(s, t)| (s.to_string(), t)).into(),
        stage_reason: None,
        owner: None,
    };
    let mut r = super::mapping::update_record(&map, "Lead", "00Q1", &rec);
    super::mapping::add_stage_dates(&mut r, &props, &rec);
    assert_eq!(r["MQL_Date__c"], "2026-11-20");
    assert_eq!(r["SQL_At__c"], "2026-11-20T23:30:00.000Z");
    assert_eq!(r["id"], "00Q1");
    assert!(r.get("OwnerId").is_none() && r.get("LeadSync_Reason__c").is_none());

    // The reason code and the escalation owner ride along; an empty reason is a null.
    let props = props.with_stage_reason(Some("LeadSync_Reason__c".into())).with_owner(true);
    let owner = "005000000000002AAA";
    let rec =
        PushRecord { stage_reason: Some("sla_expired".into()), owner: Some(owner.into()), ..rec };
    let mut r = super::mapping::update_record(&map, "Lead", "00Q1", &rec);
    super::mapping::add_stage_dates(&mut r, &props, &rec);
    assert_eq!((&r["LeadSync_Reason__c"], &r["OwnerId"]), (&json!("sla_expired"), &json!(owner)));
    let cleared = PushRecord { stage_reason: Some(String::new()), owner: None, ..rec.clone() };
    let mut r = super::mapping::update_record(&map, "Lead", "00Q1", &cleared);
    super::mapping::add_stage_dates(&mut r, &props, &cleared);
    assert_eq!(r["LeadSync_Reason__c"], Value::Null, "cleared");
    assert!(r.get("OwnerId").is_none());
    // A system that is not the CRM never writes an owner.
    let mut r = super::mapping::update_record(&map, "Lead", "00Q1", &rec);
    super::mapping::add_stage_dates(&mut r, &props.with_owner(false), &rec);
    assert!(r.get("OwnerId").is_none());
}
