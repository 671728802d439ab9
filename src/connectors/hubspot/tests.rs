//! Tests of the HubSpot connector against wiremock upstreams.
//!
//! Search is exercised against `FakeSearch`, a tiny responder that holds a dataset and
//! evaluates the filters and sort the connector sends (ties in an order no client can rely
//! on), so paging logic is tested against behaviour, not against canned pages.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::*;
use crate::connectors::KeyError;
use crate::domain::{Field, Fields};
use crate::retry::RetryPolicy;

const TOKEN: &str = "pat-na1-00000000-test";
const CONTACTS: &str = "/crm/v3/objects/contacts";

fn env() -> HashMap<String, String> {
    HashMap::from([("HS_TOKEN".to_string(), TOKEN.to_string())])
}

fn raw(uri: &str) -> HubspotConfigRaw {
    HubspotConfigRaw {
        base_url: uri.to_string(),
        token_env: Some("HS_TOKEN".into()),
        search_min_interval_ms: 0,
        // The archived sweep has its own tests; here it would add list calls to every scan.
        archived_sweep_every: 0,
        ..HubspotConfigRaw::default()
    }
}

fn connector_with(raw: HubspotConfigRaw) -> HubspotConnector {
    let mut cfg = HubspotConfig::from_raw(raw, "systems.marketing", &env()).expect("valid config");
    // Fast retries keep the suite quick; the retry module has its own timing tests.
    cfg.retry = RetryPolicy {
        initial: Duration::from_millis(1),
        max_interval: Duration::from_millis(5),
        max_attempts: cfg.retry.max_attempts,
    };
    HubspotConnector::new(cfg).expect("connector builds")
}

fn connector(server: &MockServer) -> HubspotConnector {
    connector_with(raw(&server.uri()))
}

fn iso(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("valid test timestamp")
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn contact(id: &str, email: &str, modified_ms: i64) -> Value {
    json!({
        "id": id,
        "properties": {
            "email": email,
            "hs_object_id": id,
            "lastmodifieddate": iso(modified_ms),
        },
        "createdAt": iso(modified_ms),
        "updatedAt": iso(modified_ms),
        "archived": false
    })
}

fn fields(pairs: &[(Field, &str)]) -> Fields {
    pairs.iter().map(|(f, v)| (*f, (*v).to_string())).collect()
}

fn update(outbox_id: i64, id: &str, f: Fields, person: Fields) -> PushRecord {
    PushRecord {
        outbox_id,
        ledger_key: format!("L{outbox_id}"),
        op: PushOp::Update { remote: RemoteId { object_type: "contact".into(), id: id.into() } },
        fields: f,
        person,
        stage_dates: Default::default(),
        stage_reason: None,
        owner: None,
    }
}

fn create(outbox_id: i64, f: Fields) -> PushRecord {
    PushRecord {
        outbox_id,
        ledger_key: format!("L{outbox_id}"),
        op: PushOp::Create { object_type: "contact".into() },
        fields: f.clone(),
        person: f,
        stage_dates: Default::default(),
        stage_reason: None,
        owner: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Auth, retries, rate limits

#[tokio::test]
async fn sends_bearer_token_and_counts_reads() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(CONTACTS))
        .and(query_param("limit", "1"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    c.healthcheck().await.expect("healthy");
    let n = c.counters().snapshot();
    assert_eq!((n.reads, n.writes, n.errors), (1, 0, 0));
}

#[tokio::test]
async fn unauthorized_is_auth_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "status": "error", "message": "Authentication credentials not found.",
            "category": "INVALID_AUTHENTICATION", "correlationId": "c-1"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let err = connector(&server).healthcheck().await.expect_err("401 fails");
    match err {
        ConnectorError::Auth(m) => assert!(m.contains("cannot be refreshed"), "{m}"),
        other => panic!("expected Auth, got {other:?}"),
    }
}

#[tokio::test]
async fn ten_secondly_429_waits_the_advertised_interval() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("X-HubSpot-RateLimit-Interval-Milliseconds", "300")
                .set_body_json(json!({
                    "status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"
                })),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let start = tokio::time::Instant::now();
    c.healthcheck().await.expect("second attempt succeeds");
    assert!(start.elapsed() >= Duration::from_millis(300), "waited {:?}", start.elapsed());
    assert_eq!(c.counters().snapshot().errors, 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    c.healthcheck().await.expect("third attempt succeeds");
    let n = c.counters().snapshot();
    assert_eq!((n.reads, n.errors), (3, 2));
}

#[tokio::test]
async fn daily_limit_returns_at_once_and_blocks_later_calls() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "status": "error", "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT", "policyName": "DAILY"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let start = tokio::time::Instant::now();
    for _ in 0..2 {
        match c.healthcheck().await {
            Err(ConnectorError::RateLimited { retry_after: Some(d) }) => {
                assert!(d > Duration::from_secs(60) && d <= Duration::from_secs(15 * 60 + 5))
            }
            other => panic!("expected a long RateLimited, got {other:?}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(5), "must not sleep through a daily limit");
}

#[tokio::test]
async fn low_remaining_budget_pauses_before_the_next_call() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-HubSpot-RateLimit-Remaining", "1")
                .insert_header("X-HubSpot-RateLimit-Interval-Milliseconds", "250")
                .set_body_json(json!({"results": []})),
        )
        .expect(2)
        .mount(&server)
        .await;
    let c = connector(&server);
    c.healthcheck().await.expect("first call");
    let start = tokio::time::Instant::now();
    c.healthcheck().await.expect("second call");
    assert!(start.elapsed() >= Duration::from_millis(250), "waited {:?}", start.elapsed());
}

#[tokio::test]
async fn search_calls_are_spaced() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/search")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total": 0, "results": []})))
        .expect(3)
        .mount(&server)
        .await;
    let c = connector_with(HubspotConfigRaw { search_min_interval_ms: 120, ..raw(&server.uri()) });
    let start = tokio::time::Instant::now();
    let mut cursor = Cursor(None);
    for _ in 0..3 {
        cursor = c.poll_changes(&cursor).await.expect("poll").next_cursor;
    }
    assert!(start.elapsed() >= Duration::from_millis(240), "took {:?}", start.elapsed());
}

#[test]
fn classifies_rate_limit_policies() {
    use reqwest::header::HeaderMap;
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 7, 30).single().expect("valid");
    let body = |policy: &str, msg: &str| wire::ErrorBody {
        policy_name: (!policy.is_empty()).then(|| policy.to_string()),
        message: Some(msg.into()),
        ..wire::ErrorBody::default()
    };
    let wait = |h: &HeaderMap, b: &wire::ErrorBody| match client::classify(
        StatusCode::TOO_MANY_REQUESTS,
        h,
        b,
        now,
    ) {
        ConnectorError::RateLimited { retry_after } => retry_after,
        other => panic!("expected RateLimited, got {other:?}"),
    };
    let none = HeaderMap::new();
    assert_eq!(wait(&none, &body("TEN_SECONDLY_ROLLING", "")), Some(Duration::from_secs(10)));
    assert_eq!(wait(&none, &body("SECONDLY", "")), Some(Duration::from_secs(1)));
    assert_eq!(
        wait(&none, &body("", "You have reached your secondly limit.")),
        Some(Duration::from_secs(1))
    );
    // 10:07:30 -> next quarter hour 10:15:00, plus 5 s.
    assert_eq!(wait(&none, &body("DAILY", "")), Some(Duration::from_secs(7 * 60 + 30 + 5)));
    // 10:14:30 -> the quarter hour is 30 s away, too close: wait past the inline limit.
    let late = Utc.with_ymd_and_hms(2026, 1, 1, 10, 14, 30).single().expect("valid");
    assert_eq!(client::until_daily_probe(late), Duration::from_secs(65));
    let mut ra = HeaderMap::new();
    ra.insert("retry-after", "3".parse().expect("header"));
    assert_eq!(wait(&ra, &body("DAILY", "")), Some(Duration::from_secs(3)));

    let validation = wire::ErrorBody {
        category: Some("VALIDATION_ERROR".into()),
        message: Some("Property values were not valid: [{\"isValid\":false,\"message\":\"Email address ann@x is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]".into()),
        ..wire::ErrorBody::default()
    };
    match client::classify(StatusCode::BAD_REQUEST, &none, &validation, now) {
        ConnectorError::Rejected { code, message } => {
            assert_eq!(code, "VALIDATION_ERROR");
            assert!(message.contains("email=INVALID_EMAIL"), "{message}");
            assert!(!message.contains("ann@x"), "no values in messages: {message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(matches!(
        client::classify(StatusCode::BAD_GATEWAY, &none, &wire::ErrorBody::default(), now),
        ConnectorError::Transient(_)
    ));
    assert!(matches!(
        client::classify(StatusCode::FORBIDDEN, &none, &wire::ErrorBody::default(), now),
        ConnectorError::Auth(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Push

/// Answers batch update calls: 400 VALIDATION_ERROR (or, with `conflict`, 409 CONFLICT: an
/// email another contact holds) for the whole batch when any input id is in `bad`, else 200
/// with one result per input (in reverse order).
struct EchoUpdate {
    bad: BTreeSet<String>,
    conflict: bool,
}

impl Respond for EchoUpdate {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = req.body_json().expect("json body");
        let ids: Vec<String> = body["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|i| i["id"].as_str().expect("id").to_string())
            .collect();
        if ids.iter().any(|i| self.bad.contains(i)) && self.conflict {
            return ResponseTemplate::new(409).set_body_json(json!({
                "status": "error",
                "message": "Contact already exists. Existing ID: 77",
                "correlationId": "c-3", "category": "CONFLICT"
            }));
        }
        if ids.iter().any(|i| self.bad.contains(i)) {
            return ResponseTemplate::new(400).set_body_json(json!({
                "status": "error",
                "message": "Property values were not valid: [{\"isValid\":false,\"message\":\"Email address nope is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]",
                "correlationId": "c-2", "category": "VALIDATION_ERROR"
            }));
        }
        let results: Vec<Value> =
            ids.iter().rev().map(|i| contact(i, "x@example.com", 1_700_000_000_000)).collect();
        ResponseTemplate::new(200).set_body_json(json!({"status": "COMPLETE", "results": results}))
    }
}

#[tokio::test]
async fn batch_207_rejects_unknown_id_and_accepts_the_rest() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/batch/update")))
        .respond_with(ResponseTemplate::new(207).set_body_json(json!({
            "status": "COMPLETE",
            "results": [contact("2", "b@example.com", 1), contact("1", "a@example.com", 1)],
            "numErrors": 1,
            "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND",
                        "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                        "context": {"ids": ["999"]}}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let f = fields(&[(Field::FirstName, "Ann")]);
    let batch = vec![
        update(10, "1", f.clone(), Fields::new()),
        update(11, "999", f.clone(), Fields::new()),
        update(12, "2", f.clone(), Fields::new()),
        update(13, "3", f, Fields::new()),
    ];
    let out = c.push(&batch).await.expect("push");
    assert!(
        matches!(&out[0], PushOutcome::Accepted { outbox_id: 10, remote, created: false } if remote.id == "1")
    );
    assert!(
        matches!(&out[1], PushOutcome::Rejected { outbox_id: 11, code, .. } if code == "OBJECT_NOT_FOUND")
    );
    assert!(
        matches!(&out[2], PushOutcome::Accepted { outbox_id: 12, remote, .. } if remote.id == "2")
    );
    // Neither in results nor in errors: not confirmed, so retried.
    assert!(matches!(&out[3], PushOutcome::Retry { outbox_id: 13, code } if code == "unconfirmed"));
    assert_eq!(c.counters().snapshot().writes, 1);
}

#[tokio::test]
async fn whole_batch_validation_error_is_bisected_to_the_bad_record() {
    let server = MockServer::start().await;
    // [1,2,3,4] -> 400; [1,2] -> 200; [3,4] -> 400; [3] -> 400; [4] -> 200.
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/batch/update")))
        .respond_with(EchoUpdate { bad: BTreeSet::from(["3".to_string()]), conflict: false })
        .expect(5)
        .mount(&server)
        .await;
    let c = connector(&server);
    let f = fields(&[(Field::LastName, "Doe")]);
    let batch: Vec<PushRecord> =
        (1..=4).map(|i| update(i, &i.to_string(), f.clone(), Fields::new())).collect();
    let out = c.push(&batch).await.expect("push");
    assert_eq!(out.len(), 4);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.outbox_id(), i as i64 + 1, "outcomes come back in input order");
        if i == 2 {
            match o {
                PushOutcome::Rejected { code, message, .. } => {
                    assert_eq!(code, "VALIDATION_ERROR");
                    assert!(!message.contains("nope"), "vendor text with values is not passed on");
                }
                other => panic!("expected Rejected, got {other:?}"),
            }
        } else {
            assert!(matches!(o, PushOutcome::Accepted { .. }), "{o:?}");
        }
    }
}

#[tokio::test]
async fn whole_batch_conflict_is_bisected_to_the_record_whose_email_is_taken() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/batch/update")))
        .respond_with(EchoUpdate { bad: BTreeSet::from(["2".to_string()]), conflict: true })
        .expect(5)
        .mount(&server)
        .await;
    let c = connector(&server);
    let f = fields(&[(Field::Email, "taken@example.com")]);
    let batch: Vec<PushRecord> =
        (1..=4).map(|i| update(i, &i.to_string(), f.clone(), Fields::new())).collect();
    let out = c.push(&batch).await.expect("push");
    let rejected: Vec<i64> = out
        .iter()
        .filter(|o| matches!(o, PushOutcome::Rejected { code, .. } if code == "CONFLICT"))
        .map(PushOutcome::outbox_id)
        .collect();
    assert_eq!(rejected, [2], "only the record whose email is taken is rejected: {out:?}");
    assert_eq!(out.iter().filter(|o| matches!(o, PushOutcome::Accepted { .. })).count(), 3);
}

#[tokio::test]
async fn upsert_maps_results_by_email_not_order() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/batch/upsert")))
        .and(body_string_contains("\"idProperty\":\"email\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "COMPLETE",
            "results": [
                {"id": "303", "new": true, "properties": {"email": "carol@example.com"}},
                {"id": "101", "new": false, "properties": {"email": "ann@example.com"}},
                {"id": "202", "new": true, "properties": {"email": "bob@example.com"}}
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let batch = vec![
        create(1, fields(&[(Field::Email, "Ann@Example.com"), (Field::FirstName, "Ann")])),
        create(2, fields(&[(Field::Email, "bob@example.com")])),
        create(3, fields(&[(Field::FirstName, "Nomail")])),
        create(4, fields(&[(Field::Email, "CAROL@example.com")])),
    ];
    let out = c.push(&batch).await.expect("push");
    let accepted = |o: &PushOutcome| match o {
        PushOutcome::Accepted { remote, created, .. } => (remote.id.clone(), *created),
        other => panic!("expected Accepted, got {other:?}"),
    };
    assert_eq!(accepted(&out[0]), ("101".into(), false));
    assert_eq!(accepted(&out[1]), ("202".into(), true));
    assert!(matches!(&out[2], PushOutcome::Rejected { code, .. } if code == "missing_email"));
    assert_eq!(accepted(&out[3]), ("303".into(), true));
    let reqs = server.received_requests().await.expect("recording is on");
    let body: Value = reqs[0].body_json().expect("json");
    let ids: Vec<&str> = body["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["Ann@Example.com", "bob@example.com", "CAROL@example.com"]);
}

const UNSUBSCRIBE_BATCH: &str = "/communication-preferences/v4/statuses/batch/unsubscribe-all";

/// The email inputs of each batch unsubscribe call received, in order.
async fn unsubscribe_inputs(server: &MockServer) -> Vec<Vec<String>> {
    let reqs = server.received_requests().await.expect("recording is on");
    reqs.iter()
        .filter(|r| r.url.path() == UNSUBSCRIBE_BATCH)
        .map(|r| {
            let body: Value = r.body_json().expect("json");
            body["inputs"]
                .as_array()
                .expect("inputs")
                .iter()
                .map(|e| e.as_str().expect("emails are strings").to_string())
                .collect()
        })
        .collect()
}

/// Answers a batch unsubscribe like HubSpot: every input listed (lower-cased, as HubSpot
/// stores addresses) as unsubscribed, except the `bad` addresses, which come back as 207
/// errors naming them.
struct EchoUnsubscribe {
    bad: BTreeSet<String>,
}

impl Respond for EchoUnsubscribe {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = req.body_json().expect("json");
        let inputs: Vec<String> = body["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .filter_map(|e| e.as_str().map(str::to_lowercase))
            .collect();
        assert!(inputs.len() <= 100, "at most 100 addresses per call");
        let (bad, good): (Vec<String>, Vec<String>) =
            inputs.into_iter().partition(|e| self.bad.contains(e));
        let results: Vec<Value> = good
            .iter()
            .map(|e| {
                json!({"subscriberIdString": e, "statuses": [{
                    "channel": "EMAIL", "status": "UNSUBSCRIBED", "subscriberIdString": e,
                    "subscriptionId": 1, "timestamp": "2026-01-01T00:00:00Z"
                }]})
            })
            .collect();
        let errors: Vec<Value> = bad
            .iter()
            .map(|e| {
                json!({"status": "error", "category": "VALIDATION_ERROR",
                       "message": format!("{e} is not a valid subscriber"),
                       "context": {"subscriberIdString": [e]}})
            })
            .collect();
        let status = if errors.is_empty() { 200 } else { 207 };
        ResponseTemplate::new(status).set_body_json(json!({
            "status": "COMPLETE", "results": results, "numErrors": errors.len(), "errors": errors,
            "startedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:00:00Z"
        }))
    }
}

#[tokio::test]
async fn opt_outs_go_in_one_batch_call_after_the_property_write() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/batch/update")))
        .respond_with(EchoUpdate { bad: BTreeSet::new(), conflict: false })
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(UNSUBSCRIBE_BATCH))
        .and(query_param("channel", "EMAIL"))
        .respond_with(EchoUnsubscribe { bad: BTreeSet::new() })
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let batch = vec![
        // Opt-out with another field: property write, then unsubscribe (email from person).
        update(
            1,
            "1",
            fields(&[(Field::FirstName, "Ann"), (Field::EmailOptOut, "true")]),
            fields(&[(Field::Email, "ann@example.com")]),
        ),
        // "false" is never written anywhere.
        update(
            2,
            "2",
            fields(&[(Field::LastName, "Bee"), (Field::EmailOptOut, "false")]),
            fields(&[(Field::Email, "bee@example.com")]),
        ),
        // Opt-out alone: no property write at all.
        update(
            3,
            "3",
            fields(&[(Field::EmailOptOut, "true")]),
            fields(&[(Field::Email, "cat+news@example.com")]),
        ),
        // Another record for Ann's address (other case): the address is sent once.
        update(
            4,
            "4",
            fields(&[(Field::EmailOptOut, "true")]),
            fields(&[(Field::Email, "ANN@example.com")]),
        ),
        update(
            5,
            "5",
            fields(&[(Field::EmailOptOut, "true")]),
            fields(&[(Field::Email, "dan@example.com")]),
        ),
    ];
    let out = c.push(&batch).await.expect("push");
    for (i, o) in out.iter().enumerate() {
        assert!(
            matches!(o, PushOutcome::Accepted { outbox_id, remote, created: false }
                if *outbox_id == i as i64 + 1 && remote.id == (i + 1).to_string()),
            "{o:?}"
        );
    }
    let reqs = server.received_requests().await.expect("recording is on");
    let update_bodies: Vec<String> = reqs
        .iter()
        .filter(|r| r.url.path().ends_with("/batch/update"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(update_bodies.len(), 1);
    assert!(!update_bodies[0].contains("hs_email_optout"), "{}", update_bodies[0]);
    let body: Value = serde_json::from_str(&update_bodies[0]).expect("json");
    assert_eq!(body["inputs"].as_array().expect("inputs").len(), 2);
    assert_eq!(
        unsubscribe_inputs(&server).await,
        vec![vec!["ann@example.com", "cat+news@example.com", "dan@example.com"]]
    );
    // The unsubscribe came after the property write, and nothing went to a per-address route.
    let pos = |p: &str| reqs.iter().position(|r| r.url.path() == p).expect("request made");
    assert!(pos(&format!("{CONTACTS}/batch/update")) < pos(UNSUBSCRIBE_BATCH));
    assert_eq!(reqs.len(), 2);
    assert_eq!(c.counters().snapshot().writes, 2);
}

#[tokio::test]
async fn opt_outs_are_sent_100_addresses_per_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UNSUBSCRIBE_BATCH))
        .respond_with(EchoUnsubscribe { bad: BTreeSet::new() })
        .expect(3)
        .mount(&server)
        .await;
    let c = connector(&server);
    let batch: Vec<PushRecord> = (1..=250)
        .map(|i| {
            update(
                i,
                &i.to_string(),
                fields(&[(Field::EmailOptOut, "true")]),
                fields(&[(Field::Email, &format!("p{i}@example.com"))]),
            )
        })
        .collect();
    let out = c.push(&batch).await.expect("push");
    assert!(out.iter().all(|o| matches!(o, PushOutcome::Accepted { .. })));
    let sizes: Vec<usize> = unsubscribe_inputs(&server).await.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
}

#[tokio::test]
async fn opt_out_207_rejects_the_named_address_only() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/batch/update")))
        .respond_with(EchoUpdate { bad: BTreeSet::new(), conflict: false })
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(UNSUBSCRIBE_BATCH))
        .respond_with(EchoUnsubscribe { bad: BTreeSet::from(["bad@example.com".to_string()]) })
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let opt = fields(&[(Field::FirstName, "X"), (Field::EmailOptOut, "true")]);
    let batch = vec![
        update(1, "1", opt.clone(), fields(&[(Field::Email, "ok@example.com")])),
        // The error names the lower-cased address; the record spelled it otherwise.
        update(2, "2", opt.clone(), fields(&[(Field::Email, "Bad@Example.com")])),
        // Its property write was accepted, but the opt-out has no address to go to.
        update(3, "3", opt, Fields::new()),
    ];
    let out = c.push(&batch).await.expect("push");
    assert!(matches!(&out[0], PushOutcome::Accepted { outbox_id: 1, .. }), "{:?}", out[0]);
    match &out[1] {
        PushOutcome::Rejected { outbox_id: 2, code, message } => {
            assert_eq!(code, "VALIDATION_ERROR");
            assert!(!message.to_lowercase().contains("bad@example.com"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(
        matches!(&out[2], PushOutcome::Rejected { outbox_id: 3, code, .. } if code == "missing_email")
    );
    assert_eq!(unsubscribe_inputs(&server).await, vec![vec!["ok@example.com", "Bad@Example.com"]]);
}

#[tokio::test]
async fn opt_out_207_without_a_result_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UNSUBSCRIBE_BATCH))
        .respond_with(ResponseTemplate::new(207).set_body_json(json!({
            "status": "COMPLETE",
            "results": [{"subscriberIdString": "a@example.com", "statuses": []}],
            "numErrors": 1,
            "errors": [{"status": "error", "category": "INTERNAL_ERROR", "context": {}}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let opt = fields(&[(Field::EmailOptOut, "true")]);
    let batch = vec![
        update(1, "1", opt.clone(), fields(&[(Field::Email, "a@example.com")])),
        update(2, "2", opt, fields(&[(Field::Email, "b@example.com")])),
    ];
    let out = c.push(&batch).await.expect("push");
    assert!(matches!(&out[0], PushOutcome::Accepted { outbox_id: 1, .. }), "{:?}", out[0]);
    assert!(
        matches!(&out[1], PushOutcome::Retry { outbox_id: 2, code } if code == "unconfirmed"),
        "{:?}",
        out[1]
    );
}

#[tokio::test]
async fn opt_out_batch_failures_retry_reject_or_fail_the_push() {
    let opt = fields(&[(Field::EmailOptOut, "true")]);
    let batch = vec![
        update(1, "1", opt.clone(), fields(&[(Field::Email, "a@example.com")])),
        update(2, "2", opt, fields(&[(Field::Email, "b@example.com")])),
    ];

    // Retryable (5xx after the call's own retries): both records are retried.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UNSUBSCRIBE_BATCH))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"status": "error"})))
        .mount(&server)
        .await;
    let out = connector(&server).push(&batch).await.expect("push");
    assert!(out.iter().all(|o| matches!(o, PushOutcome::Retry { .. })), "{out:?}");
    assert_eq!(unsubscribe_inputs(&server).await[0], vec!["a@example.com", "b@example.com"]);

    // Auth: the push fails, nothing is decided per record.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UNSUBSCRIBE_BATCH))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"status": "error", "category": "INVALID_AUTHENTICATION"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = connector(&server).push(&batch).await.expect_err("auth fails the push");
    assert!(matches!(err, ConnectorError::Auth(_)), "{err:?}");

    // A whole-call VALIDATION_ERROR is bisected to the bad address.
    struct RefuseBad;
    impl Respond for RefuseBad {
        fn respond(&self, req: &Request) -> ResponseTemplate {
            let body: Value = req.body_json().expect("json");
            if body["inputs"].as_array().expect("inputs").iter().any(|e| e == "b@example.com") {
                ResponseTemplate::new(400).set_body_json(json!({
                    "status": "error", "category": "VALIDATION_ERROR",
                    "message": "b@example.com is not valid"
                }))
            } else {
                ResponseTemplate::new(200)
                    .set_body_json(json!({"status": "COMPLETE", "results": []}))
            }
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UNSUBSCRIBE_BATCH))
        .respond_with(RefuseBad)
        .expect(3)
        .mount(&server)
        .await;
    let out = connector(&server).push(&batch).await.expect("push");
    assert!(matches!(&out[0], PushOutcome::Accepted { outbox_id: 1, .. }), "{:?}", out[0]);
    assert!(
        matches!(&out[1], PushOutcome::Rejected { outbox_id: 2, code, message }
            if code == "VALIDATION_ERROR" && !message.contains("b@example")),
        "{:?}",
        out[1]
    );
}

#[tokio::test]
async fn opt_outs_against_the_simulator_use_one_write_per_hundred() {
    use crate::sim::hubspot::{HubspotSim, HubspotSimOptions};
    let sim = HubspotSim::new(HubspotSimOptions {
        token: TOKEN.into(),
        ..HubspotSimOptions::unlimited()
    });
    sim.start("127.0.0.1:0").await.expect("bind a local port");
    let mut ids = Vec::new();
    for i in 0..120 {
        let props = BTreeMap::from([("email".to_string(), format!("s{i}@example.com"))]);
        ids.push(sim.insert(props).expect("insert"));
    }
    let c = connector_with(raw(&sim.base_url()));
    let batch: Vec<PushRecord> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            update(
                i as i64 + 1,
                id,
                fields(&[(Field::EmailOptOut, "true")]),
                fields(&[(Field::Email, &format!("S{i}@example.com"))]),
            )
        })
        .collect();
    let writes_before = sim.stats().api_writes;
    let out = c.push(&batch).await.expect("push");
    assert!(out.iter().all(|o| matches!(o, PushOutcome::Accepted { .. })), "{out:?}");
    assert_eq!(sim.stats().api_writes - writes_before, 2);
    for id in &ids {
        assert_eq!(sim.get(id).expect("contact")["hs_email_optout"].as_deref(), Some("true"));
    }
}

#[tokio::test]
async fn fetch_leaves_out_unknown_ids_and_chunks_by_100() {
    let server = MockServer::start().await;
    struct ReadSome;
    impl Respond for ReadSome {
        fn respond(&self, req: &Request) -> ResponseTemplate {
            let body: Value = req.body_json().expect("json");
            let inputs = body["inputs"].as_array().expect("inputs");
            assert!(inputs.len() <= 100);
            let props: Vec<&str> = body["properties"]
                .as_array()
                .expect("props")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(props.contains(&"lastmodifieddate") && props.contains(&"hs_object_id"));
            let results: Vec<Value> = inputs
                .iter()
                .filter_map(|i| i["id"].as_str())
                .filter(|id| *id != "404")
                .map(|id| contact(id, &format!("p{id}@example.com"), 1_700_000_000_000))
                .collect();
            ResponseTemplate::new(207).set_body_json(json!({
                "status": "COMPLETE", "results": results, "numErrors": 1,
                "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": ["404"]}}]
            }))
        }
    }
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/batch/read")))
        .respond_with(ReadSome)
        .expect(3)
        .mount(&server)
        .await;
    let c = connector(&server);
    let mut ids: Vec<RemoteId> =
        (1..=149).map(|i| RemoteId { object_type: "contact".into(), id: i.to_string() }).collect();
    ids.push(RemoteId { object_type: "contact".into(), id: "404".into() });
    let got = c.fetch(&ids).await.expect("fetch");
    assert_eq!(got.len(), 149);
    let first = &got[0];
    assert_eq!(first.remote.object_type, "contact");
    assert_eq!(first.fields.get(&Field::Email).map(String::as_str), Some("p1@example.com"));
    assert_eq!(first.modified_at.timestamp_millis(), 1_700_000_000_000);
    assert!(first.ledger_key.is_none() && first.fate.is_live());
    // The one id neither read returned is asked again among archived contacts.
    let reqs = server.received_requests().await.expect("recording");
    let archived: Vec<&Request> =
        reqs.iter().filter(|r| r.url.query() == Some("archived=true")).collect();
    assert_eq!(archived.len(), 1);
    let body: Value = archived[0].body_json().expect("json");
    assert_eq!(body["inputs"], json!([{"id": "404"}]));
}

#[tokio::test]
async fn fetch_of_only_unknown_ids_is_empty_not_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/batch/read")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "status": "error", "category": "OBJECT_NOT_FOUND", "message": "not found"
        })))
        .expect(2)
        .mount(&server)
        .await;
    let ids = [RemoteId { object_type: "contact".into(), id: "404".into() }];
    let got = connector(&server).fetch(&ids).await.expect("fetch");
    assert!(got.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Poll

/// A search endpoint over an in-memory dataset of (id, lastmodifieddate ms). It evaluates the
/// filters and the sort the client sends, orders ties on `lastmodifieddate` by descending id
/// (any order is allowed), refuses `after` past 10,000 like HubSpot, and counts calls.
#[derive(Clone, Default)]
struct FakeSearch {
    data: Arc<Mutex<BTreeMap<u64, i64>>>,
    calls: Arc<AtomicUsize>,
}

impl FakeSearch {
    fn set(&self, id: u64, ts: i64) {
        self.data.lock().expect("lock").insert(id, ts);
    }
}

impl Respond for FakeSearch {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let body: Value = req.body_json().expect("json body");
        let after: usize = body["after"].as_str().and_then(|a| a.parse().ok()).unwrap_or(0);
        let limit = body["limit"].as_u64().expect("limit") as usize;
        if limit > 200 || after + limit > 10_000 {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"status": "error", "category": "VALIDATION_ERROR"}));
        }
        let props: Vec<&str> = body["properties"]
            .as_array()
            .expect("properties")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(props.contains(&"lastmodifieddate") && props.contains(&"hs_object_id"));
        let filters = body["filterGroups"][0]["filters"].as_array().expect("filters").clone();
        let data = self.data.lock().expect("lock").clone();
        let mut rows: Vec<(u64, i64)> = data
            .into_iter()
            .filter(|(id, ts)| {
                filters.iter().all(|f| {
                    let v: i64 =
                        f["value"].as_str().expect("string value").parse().expect("number");
                    let x = match f["propertyName"].as_str() {
                        Some("lastmodifieddate") => *ts,
                        Some("hs_object_id") => *id as i64,
                        other => panic!("unexpected filter property {other:?}"),
                    };
                    match f["operator"].as_str() {
                        Some("GTE") => x >= v,
                        Some("GT") => x > v,
                        Some("EQ") => x == v,
                        other => panic!("unexpected operator {other:?}"),
                    }
                })
            })
            .collect();
        let sort = &body["sorts"][0];
        assert_eq!(sort["direction"], "ASCENDING");
        match sort["propertyName"].as_str() {
            Some("lastmodifieddate") => rows.sort_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))),
            Some("hs_object_id") => rows.sort_by_key(|r| r.0),
            other => panic!("unexpected sort {other:?}"),
        }
        let total = rows.len();
        let page: Vec<Value> = rows
            .iter()
            .skip(after)
            .take(limit)
            .map(|(id, ts)| contact(&id.to_string(), &format!("p{id}@example.com"), *ts))
            .collect();
        let mut resp = json!({"total": total, "results": page});
        if after + limit < total {
            resp["paging"] = json!({"next": {"after": (after + limit).to_string()}});
        }
        ResponseTemplate::new(200).set_body_json(resp)
    }
}

async fn search_server(fake: &FakeSearch) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{CONTACTS}/search")))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    server
}

/// Poll until a page says "caught up"; returns the changes and the last cursor.
async fn drain(
    c: &HubspotConnector,
    mut cursor: Cursor,
    max_pages: usize,
) -> (Vec<Change>, Cursor) {
    let mut all = Vec::new();
    for _ in 0..max_pages {
        let page = c.poll_changes(&cursor).await.expect("poll");
        all.extend(page.changes);
        cursor = page.next_cursor;
        if page.poll_again_after > Duration::ZERO {
            assert_eq!(page.poll_again_after, Duration::from_secs(30));
            return (all, cursor);
        }
    }
    panic!("poll did not catch up within {max_pages} pages");
}

fn cursor_json(c: &Cursor) -> Value {
    serde_json::from_str(c.0.as_deref().expect("cursor set")).expect("cursor is json")
}

#[tokio::test]
async fn tie_group_larger_than_a_page_is_read_once_without_looping() {
    let fake = FakeSearch::default();
    let t = 1_600_000_000_000; // long ago: the pass settles at once
    for id in 1..=50 {
        fake.set(id, t - 1_000 + id as i64);
    }
    for id in 100..550 {
        fake.set(id, t); // an import: 450 records in one millisecond
    }
    for id in 1000..1050 {
        fake.set(id, t + 1 + (id as i64 % 7));
    }
    let server = search_server(&fake).await;
    let c = connector(&server);
    let (changes, cursor) = drain(&c, Cursor(None), 50).await;
    let ids: Vec<&str> = changes.iter().map(|ch| ch.remote.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 550, "nothing lost");
    assert_eq!(ids.len(), 550, "nothing emitted twice");
    assert!(
        fake.calls.load(Ordering::SeqCst) <= 10,
        "calls: {}",
        fake.calls.load(Ordering::SeqCst)
    );
    let cj = cursor_json(&cursor);
    assert_eq!(cj["watermark_ms"], json!(t + 7));
    // Settled: the next poll asks strictly after the watermark and finds nothing.
    let page = c.poll_changes(&cursor).await.expect("poll");
    assert!(page.changes.is_empty());
    assert!(page.poll_again_after > Duration::ZERO);
}

#[tokio::test]
async fn more_than_ten_thousand_changes_with_large_ties_are_all_read() {
    let fake = FakeSearch::default();
    let t = 1_600_000_000_000;
    for id in 0..10_500u64 {
        fake.set(id + 1, t + (id / 300) as i64); // groups of 300 share one millisecond
    }
    let server = search_server(&fake).await;
    let c = connector(&server);
    let (changes, _) = drain(&c, Cursor(None), 400).await;
    let unique: BTreeSet<&str> = changes.iter().map(|ch| ch.remote.id.as_str()).collect();
    assert_eq!(unique.len(), 10_500);
    assert_eq!(changes.len(), 10_500);
    // Oldest first.
    assert!(changes.windows(2).all(|w| w[0].modified_at <= w[1].modified_at));
}

#[tokio::test]
async fn records_modified_mid_scan_are_not_skipped() {
    let fake = FakeSearch::default();
    let t = 1_600_000_000_000;
    for id in 1..=500u64 {
        fake.set(id, t + id as i64);
    }
    let server = search_server(&fake).await;
    let c = connector(&server);
    let first = c.poll_changes(&Cursor(None)).await.expect("poll");
    assert_eq!(first.changes.len(), 200);
    assert_eq!(first.poll_again_after, Duration::ZERO);
    // Record 5 (already read) and record 300 (not yet read) change now: with offset paging,
    // record 201 would slide onto the page already read and be skipped.
    fake.set(5, t + 10_000);
    fake.set(300, t + 10_001);
    let (rest, _) = drain(&c, first.next_cursor, 20).await;
    let mut all = first.changes;
    all.extend(rest);
    let ids: BTreeSet<String> = all.iter().map(|ch| ch.remote.id.clone()).collect();
    assert_eq!(ids.len(), 500);
    let fives: Vec<i64> = all
        .iter()
        .filter(|ch| ch.remote.id == "5")
        .map(|ch| ch.modified_at.timestamp_millis())
        .collect();
    assert_eq!(fives, vec![t + 5, t + 10_000], "the new state of record 5 is seen too");
}

#[tokio::test]
async fn re_anchors_for_late_index_entries_without_duplicates() {
    let fake = FakeSearch::default();
    let now = Utc::now().timestamp_millis();
    for id in 1..=5u64 {
        fake.set(id, now - 5_000 + id as i64 * 500); // up to now - 2500
    }
    let server = search_server(&fake).await;
    let c = connector(&server);
    let (changes, cursor) = drain(&c, Cursor(None), 5).await;
    assert_eq!(changes.len(), 5);
    let cj = cursor_json(&cursor);
    let wm = now - 2_500;
    assert_eq!(cj["watermark_ms"], json!(wm));
    assert_eq!(cj["ts_ms"], json!(wm - 30_000), "next pass starts overlap_secs earlier");
    assert_eq!(cj["inclusive"], json!(true));

    // A quiet cycle re-reads the overlap window but emits nothing again.
    let quiet = c.poll_changes(&cursor).await.expect("poll");
    assert!(quiet.changes.is_empty(), "{:?}", quiet.changes);
    assert_eq!(cursor_json(&quiet.next_cursor)["watermark_ms"], json!(wm));

    // A record stamped before the watermark shows up in the index late: still found.
    fake.set(42, now - 4_000);
    let late = c.poll_changes(&quiet.next_cursor).await.expect("poll");
    let ids: Vec<&str> = late.changes.iter().map(|ch| ch.remote.id.as_str()).collect();
    assert_eq!(ids, vec!["42"]);
    let cj = cursor_json(&late.next_cursor);
    assert_eq!(cj["watermark_ms"], json!(wm), "watermark never goes backwards");
    assert!(cj["ts_ms"].as_i64().expect("ts") <= wm - 30_000);
}

#[tokio::test]
async fn poll_maps_properties_and_stamps_fetch_time() {
    let fake = FakeSearch::default();
    fake.set(7, 1_600_000_000_123);
    let server = search_server(&fake).await;
    let c = connector(&server);
    let before = Utc::now();
    let page = c.poll_changes(&Cursor(None)).await.expect("poll");
    let ch = &page.changes[0];
    assert_eq!(ch.remote, RemoteId { object_type: "contact".into(), id: "7".into() });
    assert_eq!(ch.fields.get(&Field::Email).map(String::as_str), Some("p7@example.com"));
    assert_eq!(ch.modified_at.timestamp_millis(), 1_600_000_000_123);
    assert!(ch.fetched_at >= before && ch.fetched_at <= Utc::now());
    let reqs = server.received_requests().await.expect("recording is on");
    let body: Value = reqs[0].body_json().expect("json");
    assert_eq!(
        body["filterGroups"][0]["filters"][0],
        json!({"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"})
    );
    assert_eq!(
        body["sorts"][0],
        json!({"propertyName": "lastmodifieddate", "direction": "ASCENDING"})
    );
    assert_eq!(body["limit"], json!(200));
    assert!(body.get("after").is_none());
}

// ---------------------------------------------------------------------------------------------
// Config

fn config_err(raw: HubspotConfigRaw) -> KeyError {
    HubspotConfig::from_raw(raw, "systems.marketing", &env()).expect_err("invalid")
}

#[test]
fn config_errors_name_the_key() {
    let e = config_err(raw("http://api.hubapi.com"));
    assert_eq!(e.key, "systems.marketing.base_url");
    assert!(e.to_string().contains("plain http is only allowed for loopback"), "{e}");

    let e =
        config_err(HubspotConfigRaw { token_env: Some("NOPE".into()), ..raw("https://x.test") });
    assert_eq!(e.to_string(), "systems.marketing.token_env: environment variable NOPE is not set");

    for bad in [0, 201] {
        let e = config_err(HubspotConfigRaw { page_size: bad, ..raw("https://x.test") });
        assert_eq!(e.key, "systems.marketing.page_size");
    }

    let mut mapping = FieldMap::hubspot_contact_default();
    mapping.fields.insert("frist_name".into(), "firstname".into());
    let e = config_err(HubspotConfigRaw { mapping: Some(mapping), ..raw("https://x.test") });
    assert_eq!(e.key, "systems.marketing.mapping.fields.frist_name");

    let e = config_err(HubspotConfigRaw { api_version: "v3/../x".into(), ..raw("https://x.test") });
    assert_eq!(e.key, "systems.marketing.api_version");
}

#[test]
fn config_defaults_and_unknown_keys() {
    let raw: HubspotConfigRaw =
        serde_json::from_value(json!({"token_env": "HS_TOKEN"})).expect("defaults fill in");
    let cfg = HubspotConfig::from_raw(raw, "systems.marketing", &env()).expect("valid");
    assert_eq!(cfg.base_url.as_str(), "https://api.hubapi.com/");
    assert_eq!(cfg.api_version, "v3");
    assert_eq!(cfg.page_size, 200);
    assert_eq!(cfg.poll_interval, Duration::from_secs(30));
    assert_eq!(cfg.overlap, Duration::from_secs(30));
    assert_eq!(cfg.search_min_interval, Duration::from_millis(250));
    assert_eq!(cfg.retry.max_attempts, 6);
    assert!(cfg.map.maps(Field::Email));
    let unknown =
        serde_json::from_value::<HubspotConfigRaw>(json!({"token_env": "X", "pagesize": 5}));
    assert!(unknown.is_err());
    // The token never shows in Debug output.
    assert!(!format!("{cfg:?}").contains(TOKEN));
}
