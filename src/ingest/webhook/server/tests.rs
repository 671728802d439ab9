//! Tests for the webhook listener: answers to good and bad requests, durable-before-ack, and a
//! property test that whatever verifies is stored exactly once however often it is delivered.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use proptest::prelude::*;
use secrecy::SecretString;
use tower::ServiceExt as _;

use super::*;
use crate::ingest::webhook::hubspot::sign_v3;
use crate::ledger::Ledger;

const SECRET: &str = "hubspot-client-secret";
const SF_SECRET: &str = "sf-endpoint-secret-0123456789";
const ORG: &str = "00Dxx0000001gPLEAY";
const HOST: &str = "hooks.test:8088";

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Arc<Ledger>,
    state: WebhookState,
}

fn fixture(max_body_bytes: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(Ledger::open(&dir.path().join("l.db")).expect("open"));
    let (sink, _thread) = NoticeSink::start(Arc::clone(&ledger), Arc::new(|_| {})).expect("sink");
    let snapshot: SnapshotFn = Arc::new(|_, _| None);
    let receivers = vec![
        Receiver {
            name: SystemName("marketing".into()),
            kind: ReceiverKind::Hubspot(HubspotVerifyConfig {
                client_secrets: vec![SecretString::from(SECRET)],
                allow_legacy: false,
            }),
        },
        Receiver {
            name: SystemName("crm".into()),
            kind: ReceiverKind::Salesforce {
                config: SalesforceOutboundConfig { organization_id: ORG.into() },
                secret: SecretString::from(SF_SECRET),
                snapshot,
            },
        },
    ];
    let state =
        WebhookState::new(receivers, sink, ServerConfig { public_url: None, max_body_bytes });
    Fixture { _dir: dir, ledger, state }
}

fn hubspot_body(ids: &[u64]) -> String {
    let events: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"eventId":{id},"subscriptionId":1,"portalId":62515,"appId":7,"occurredAt":1700000000000,"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":{},"changeSource":"CRM_UI","propertyName":"email","propertyValue":"x{id}@example.test"}}"#,
                1000 + id
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

fn now_ms() -> String {
    Utc::now().timestamp_millis().to_string()
}

fn signed(path: &str, body: &str, secret: &str, ts: &str) -> Request<Body> {
    let uri = format!("http://{HOST}{path}");
    Request::post(path)
        .header("host", HOST)
        .header("content-type", "application/json")
        .header("x-hubspot-signature-v3", sign_v3(secret, "POST", &uri, body.as_bytes(), ts))
        .header("x-hubspot-request-timestamp", ts)
        .body(Body::from(body.to_string()))
        .expect("request")
}

async fn send(f: &Fixture, req: Request<Body>) -> (StatusCode, String) {
    let resp = router(f.state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn stored(f: &Fixture, system: &str) -> usize {
    f.ledger.pending_notices(&SystemName(system.into()), 100_000).expect("pending").len()
}

#[tokio::test]
async fn a_signed_hubspot_batch_is_stored_once_and_acknowledged_every_time() {
    let f = fixture(1 << 20);
    let body = hubspot_body(&[1, 2, 3]);
    for _ in 0..3 {
        let (status, _) = send(&f, signed("/webhooks/marketing", &body, SECRET, &now_ms())).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(stored(&f, "marketing"), 3);
    let stats = f.state.stats();
    assert_eq!(stats.accepted_requests.load(Ordering::Relaxed), 3);
    assert_eq!(stats.new_events.load(Ordering::Relaxed), 3);
    let notices = f.ledger.pending_notices(&SystemName("marketing".into()), 10).expect("pending");
    assert_eq!(notices[0].notice.remote.id, "1001");
    assert_eq!(notices[0].notice.dedupe_key, "hubspot:62515:1");
}

#[tokio::test]
async fn bad_credentials_are_401_and_store_nothing() {
    let f = fixture(1 << 20);
    let body = hubspot_body(&[1]);
    let stale = (Utc::now().timestamp_millis() - 301_000).to_string();
    let future = (Utc::now().timestamp_millis() + 301_000).to_string();
    let cases = [
        signed("/webhooks/marketing", &body, "wrong-secret", &now_ms()),
        signed("/webhooks/marketing", &body, SECRET, &stale),
        signed("/webhooks/marketing", &body, SECRET, &future),
        // Signed for another path: the URL is part of what is signed.
        {
            let mut r = signed("/webhooks/other", &body, SECRET, &now_ms());
            *r.uri_mut() = "/webhooks/marketing".parse().expect("uri");
            r
        },
        Request::post("/webhooks/marketing")
            .header("host", HOST)
            .body(Body::from(body.clone()))
            .expect("unsigned"),
    ];
    for req in cases {
        let (status, text) = send(&f, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        assert!(!text.contains("example.test"), "no body content in answers");
    }
    assert_eq!(stored(&f, "marketing"), 0);
    let stats = f.state.stats();
    assert_eq!(stats.rejected(Reason::BadSignature), 3);
    assert_eq!(stats.rejected(Reason::StaleTimestamp), 2);
}

#[tokio::test]
async fn malformed_oversized_and_unknown_get_their_own_answers() {
    let f = fixture(4096);
    let (status, text) =
        send(&f, signed("/webhooks/marketing", "{not json", SECRET, &now_ms())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");

    let big = hubspot_body(&(1..100).collect::<Vec<_>>());
    assert!(big.len() > 4096);
    let (status, _) = send(&f, signed("/webhooks/marketing", &big, SECRET, &now_ms())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a Content-Length (chunked), the limit holds while reading.
    let chunks: Vec<Result<String, std::io::Error>> =
        big.as_bytes().chunks(1000).map(|c| Ok(String::from_utf8_lossy(c).into_owned())).collect();
    let req = Request::post("/webhooks/marketing")
        .header("host", HOST)
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("chunked");
    let (status, _) = send(&f, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, _) = send(&f, signed("/webhooks/nobody", "[]", SECRET, &now_ms())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&f, signed("/webhooks/marketing/extra", "[]", SECRET, &now_ms())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no path secrets for HubSpot");
    let get = Request::get("/webhooks/marketing").body(Body::empty()).expect("get");
    let (status, _) = send(&f, get).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    let stats = f.state.stats();
    assert_eq!(stats.rejected(Reason::Malformed), 1);
    assert_eq!(stats.rejected(Reason::TooLarge), 2);
    assert_eq!(stats.rejected(Reason::UnknownSystem), 2);
    assert_eq!(stored(&f, "marketing"), 0);
}

#[tokio::test]
async fn an_unwritable_ledger_is_503_and_the_retry_is_stored() {
    let f = fixture(1 << 20);
    let body = hubspot_body(&[7]);
    f.ledger.set_query_only_for_test(true);
    let (status, _) = send(&f, signed("/webhooks/marketing", &body, SECRET, &now_ms())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "never a 2xx for what is not stored");
    f.ledger.set_query_only_for_test(false);
    assert_eq!(stored(&f, "marketing"), 0);
    let (status, _) = send(&f, signed("/webhooks/marketing", &body, SECRET, &now_ms())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored(&f, "marketing"), 1);
    assert_eq!(f.state.stats().rejected(Reason::LedgerUnavailable), 1);
}

fn outbound(org: &str, ids: &[u32]) -> String {
    let notifications: String = ids
        .iter()
        .map(|i| {
            format!(
                r#"<Notification><Id>04l5g00000AB{i:04}</Id><sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>00Q5g00000XY{i:06}</sf:Id><sf:Email>l{i}@example.test</sf:Email></sObject></Notification>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>{org}</OrganizationId><ActionId>04k5g000000TESTAA2</ActionId><SessionId xsi:nil="true"/><EnterpriseUrl>https://x.my.salesforce.com/services/Soap/c/60.0</EnterpriseUrl><PartnerUrl>https://x.my.salesforce.com/services/Soap/u/60.0</PartnerUrl>{notifications}</notifications></soapenv:Body></soapenv:Envelope>"#
    )
}

fn soap(path: &str, body: String, basic: Option<&str>) -> Request<Body> {
    let mut b = Request::post(path)
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", "\"\"");
    if let Some(pass) = basic {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("sf:{pass}"));
        b = b.header("authorization", format!("Basic {token}"));
    }
    b.body(Body::from(body)).expect("request")
}

#[tokio::test]
async fn salesforce_needs_the_secret_and_gets_the_soap_ack() {
    let f = fixture(1 << 20);
    let (status, text) =
        send(&f, soap(&format!("/webhooks/crm/{SF_SECRET}"), outbound(ORG, &[1, 2]), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("<Ack>true</Ack>"), "{text}");
    let (status, text) =
        send(&f, soap("/webhooks/crm", outbound(ORG, &[2, 3]), Some(SF_SECRET))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(stored(&f, "crm"), 3, "notification 2 was delivered twice");

    let refused = [
        soap("/webhooks/crm", outbound(ORG, &[4]), None),
        soap("/webhooks/crm/not-the-secret", outbound(ORG, &[4]), None),
        soap("/webhooks/crm", outbound(ORG, &[4]), Some("not-the-secret")),
        soap(&format!("/webhooks/crm/{SF_SECRET}"), outbound("00Dxx0000009zzzEAA", &[4]), None),
    ];
    for req in refused {
        let (status, text) = send(&f, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        assert!(!text.contains("Ack"), "no ack for what is refused");
    }
    let (status, _) =
        send(&f, soap(&format!("/webhooks/crm/{SF_SECRET}"), "<soapenv:Envelope".into(), None))
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(stored(&f, "crm"), 3);
    assert_eq!(f.state.stats().rejected(Reason::WrongOrganization), 1);
}

#[test]
fn hubspot_events_become_contact_notices() {
    let body = r#"[
      {"eventId":1,"portalId":9,"occurredAt":1700000000000,"subscriptionType":"contact.creation","objectId":11,"changeFlag":"CREATED"},
      {"eventId":2,"portalId":9,"occurredAt":1700000000001,"subscriptionType":"contact.merge","objectId":11,"primaryObjectId":11,"mergedObjectIds":[12,13],"newObjectId":14,"numberOfPropertiesMoved":3},
      {"eventId":3,"portalId":9,"occurredAt":1700000000002,"subscriptionType":"company.creation","objectId":50},
      {"eventId":4,"portalId":9,"occurredAt":1700000000003,"subscriptionType":"contact.privacyDeletion","objectId":15}
    ]"#;
    let events = crate::ingest::webhook::hubspot::parse_events(body.as_bytes()).expect("parses");
    let notices = hubspot_notices(&events);
    assert_eq!(notices.len(), 3, "company events are not ours");
    assert_eq!(notices[0].kind, NoticeKind::Created);
    assert_eq!(notices[1].kind, NoticeKind::Merged);
    assert_eq!(notices[1].remote.id, "14", "the merged record lives on under newObjectId");
    assert_eq!(notices[1].related, ["12", "13", "11"]);
    assert_eq!(notices[2].kind, NoticeKind::Deleted);
    assert_eq!(notices[2].dedupe_key, "hubspot:9:4");
    // An erased contact cannot be fetched: the notice carries its fate itself.
    let erased = notices[2].snapshot.as_ref().expect("a privacy deletion carries its state");
    assert_eq!(erased.fate, crate::domain::RecordFate::Deleted);
    assert_eq!(erased.remote.id, "15");
    assert!(erased.fields.is_empty());
    assert_eq!(erased.modified_at, notices[2].occurred_at);
    // Other events are fetched.
    assert!(notices[0].snapshot.is_none() && notices[1].snapshot.is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any body that verifies and parses is stored exactly once however many times it is
    /// delivered, interleaved with forgeries; anything that fails verification stores nothing.
    #[test]
    fn verified_events_are_stored_exactly_once(
        batches in prop::collection::vec(prop::collection::btree_set(1u64..60, 1..8), 1..6),
        repeats in prop::collection::vec(1usize..4, 6),
        forge in prop::collection::vec(0usize..3, 6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let f = fixture(1 << 20);
            let mut expected = std::collections::BTreeSet::new();
            for (i, ids) in batches.iter().enumerate() {
                let ids: Vec<u64> = ids.iter().copied().collect();
                let body = hubspot_body(&ids);
                // A forgery first: same events, tampered body or wrong key.
                let bad = match forge[i] {
                    0 => signed("/webhooks/marketing", &body, "attacker", &now_ms()),
                    1 => {
                        let mut r = signed("/webhooks/marketing", &body, SECRET, &now_ms());
                        *r.body_mut() = Body::from(body.replace("contact", "contakt"));
                        r
                    }
                    _ => signed("/webhooks/marketing", &body, SECRET, "1"),
                };
                let (status, _) = send(&f, bad).await;
                prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
                prop_assert_eq!(stored(&f, "marketing"), expected.len());
                for _ in 0..repeats[i] {
                    let (status, _) =
                        send(&f, signed("/webhooks/marketing", &body, SECRET, &now_ms())).await;
                    prop_assert_eq!(status, StatusCode::OK);
                }
                expected.extend(ids);
                prop_assert_eq!(stored(&f, "marketing"), expected.len());
            }
            Ok(())
        })?;
    }
}
