//! Outbound messages end to end: Lead writes through the API and the handle reach a local
//! receiver, which parses them with the daemon's own parser (`ingest::webhook::salesforce`).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use serde_json::{Map, Value, json};

use super::{SalesforceOutboundOptions, SalesforceSim, SalesforceSimOptions};
use crate::ingest::webhook::salesforce::{
    OutboundMessage, SalesforceOutboundConfig, ack_response, parse_outbound_message,
};
use crate::sim::webhooks::testing::{Received, Script, receiver};

fn acking() -> Script {
    Arc::new(|_, _| (200, ack_response().to_owned()))
}

fn sim_with(url: &str, time_scale: f64) -> SalesforceSim {
    SalesforceSim::new(SalesforceSimOptions {
        outbound: SalesforceOutboundOptions {
            endpoint_url: Some(url.to_owned()),
            batch_window: Duration::from_millis(20),
            time_scale,
            ..SalesforceOutboundOptions::default()
        },
        ..SalesforceSimOptions::default()
    })
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn parse(sim: &SalesforceSim, r: &Received) -> OutboundMessage {
    assert_eq!(r.method, "POST");
    assert_eq!(r.headers.get("content-type").unwrap(), "text/xml; charset=utf-8");
    assert_eq!(r.headers.get("soapaction").unwrap(), "\"\"");
    let config = SalesforceOutboundConfig { organization_id: sim.organization_id() };
    parse_outbound_message(&config, &r.body).expect("parseable outbound message")
}

fn field(m: &OutboundMessage, i: usize, name: &str) -> Option<String> {
    m.notifications[i]
        .fields
        .get(name)
        .unwrap_or_else(|| panic!("{name} sent"))
        .clone()
        .map(|s| s.0)
}

async fn settled(sim: &SalesforceSim) -> super::SimStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = sim.stats();
        if stats.outbound_notifications_queued == 0 {
            return stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "still queued: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn api_create_and_ui_edit_send_parseable_messages_with_latest_values() {
    let rx = receiver(acking(), Duration::ZERO).await;
    let sim = sim_with(&format!("{}/sf/outbound", rx.base), 1.0);
    sim.start("127.0.0.1:0").await.unwrap();
    let http = Client::new();
    let token: Value = http
        .post(format!("{}/services/oauth2/token", sim.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client-id"),
            ("client_secret", "sim-client-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let r: Value = http
        .post(format!("{}/services/data/v62.0/sobjects/Lead", sim.base_url()))
        .bearer_auth(&token)
        .json(&json!({"LastName": "O'Brien <&>", "Company": "Acme", "Email": "ob@example.test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["id"].as_str().unwrap().to_owned();

    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    let m = parse(&sim, &got[0]);
    assert_eq!(m.organization_id, sim.organization_id());
    assert!(m.session_id.is_none());
    assert!(m.enterprise_url.contains("/services/Soap/c/"));
    assert_eq!(m.notifications.len(), 1);
    let n = &m.notifications[0];
    assert_eq!(n.object_type, "Lead");
    assert_eq!(n.record_id, id);
    assert!(n.notification_id.starts_with("04l"));
    assert_eq!(field(&m, 0, "LastName").as_deref(), Some("O'Brien <&>"), "escaped and back");
    assert_eq!(field(&m, 0, "Email").as_deref(), Some("ob@example.test"));
    assert_eq!(field(&m, 0, "FirstName"), None, "null sent as xsi:nil");
    assert_eq!(field(&m, 0, "HasOptedOutOfEmail").as_deref(), Some("false"));
    let stamp = field(&m, 0, "SystemModstamp").unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(&stamp).is_ok(), "{stamp}");
    assert!(stamp.ends_with('Z'));

    sim.ui_update("Lead", &id, obj(json!({"Title": "CTO"}))).unwrap();
    let got = rx.wait_for(2, Duration::from_secs(5)).await;
    let m2 = parse(&sim, &got[1]);
    assert_eq!(field(&m2, 0, "Title").as_deref(), Some("CTO"));
    assert_ne!(m2.notifications[0].notification_id, n.notification_id);

    sim.convert_lead(&id).unwrap();
    let got = rx.wait_for(3, Duration::from_secs(5)).await;
    let m3 = parse(&sim, &got[2]);
    assert_eq!(m3.notifications[0].record_id, id, "only the Lead, not the new Contact");
    assert_eq!(field(&m3, 0, "IsConverted").as_deref(), Some("true"));
    assert!(field(&m3, 0, "ConvertedContactId").unwrap().starts_with("003"));
    let stats = settled(&sim).await;
    assert_eq!((stats.outbound_requests_sent, stats.outbound_requests_succeeded), (3, 3));
    sim.stop();
}

#[tokio::test]
async fn a_wrong_ack_is_retried_with_the_same_notification_and_the_latest_values() {
    // 200 without an Ack, then an Ack of false, then a proper ack.
    let script: Script = Arc::new(|n, _| match n {
        0 => (200, "<ok/>".to_owned()),
        1 => (200, ack_response().replace("<Ack>true</Ack>", "<Ack>false</Ack>")),
        _ => (200, ack_response().to_owned()),
    });
    let rx = receiver(script, Duration::ZERO).await;
    // 5 s and 10 s first retries become 50 ms and 100 ms.
    let sim = sim_with(&rx.base, 0.01);
    let id = sim
        .insert("Lead", obj(json!({"LastName": "Retry", "Company": "Acme", "Title": "Old"})))
        .unwrap();
    // First try (no ack) and first retry (Ack false) carry the old value.
    let got = rx.wait_for(2, Duration::from_secs(5)).await;
    let first_id = parse(&sim, &got[0]).notifications[0].notification_id.clone();
    for r in &got[..2] {
        let m = parse(&sim, r);
        assert_eq!(m.notifications[0].notification_id, first_id);
        assert_eq!(field(&m, 0, "Title").as_deref(), Some("Old"));
    }
    // Changed before the second retry: that retry carries the new value (and the edit gets
    // its own notification).
    sim.ui_update("Lead", &id, obj(json!({"Title": "New"}))).unwrap();
    let got = rx.wait_for(4, Duration::from_secs(5)).await;
    let messages: Vec<OutboundMessage> = got.iter().map(|r| parse(&sim, r)).collect();
    let tries: Vec<&OutboundMessage> =
        messages.iter().filter(|m| m.notifications[0].notification_id == first_id).collect();
    assert_eq!(tries.len(), 3, "retried after 200-without-ack and after Ack false");
    assert_eq!(field(tries[2], 0, "Title").as_deref(), Some("New"));
    let edit = messages.iter().find(|m| m.notifications[0].notification_id != first_id).unwrap();
    assert_eq!(field(edit, 0, "Title").as_deref(), Some("New"));
    let stats = settled(&sim).await;
    assert_eq!(stats.outbound_failed_attempts, 2);
    assert_eq!(stats.outbound_requests_succeeded, 2);
    sim.stop();
}

#[tokio::test]
async fn basic_auth_comes_from_the_url_and_deletes_send_nothing() {
    let rx = receiver(acking(), Duration::ZERO).await;
    let url = rx.base.replace("http://", "http://sfuser:p%40ss@") + "/hook";
    let sim = sim_with(&url, 1.0);
    let id = sim.insert("Lead", obj(json!({"LastName": "Auth", "Company": "Acme"}))).unwrap();
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    let auth = got[0].headers.get("authorization").unwrap().to_str().unwrap();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.strip_prefix("Basic ").unwrap())
        .unwrap();
    assert_eq!(decoded, b"sfuser:p@ss");
    assert_eq!(got[0].path_and_query, "/hook");

    sim.ui_delete("Lead", &id).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.received().len(), 1, "a delete fires no outbound message");
    assert_eq!(settled(&sim).await.outbound_requests_sent, 1);
    sim.stop();
}

#[tokio::test]
async fn many_writes_are_batched_up_to_100_and_a_failing_endpoint_drops_after_24h() {
    let script: Script = Arc::new(|_, _| (500, String::new()));
    let rx = receiver(script, Duration::ZERO).await;
    // 24 h of back-off in ~0.9 s.
    let sim = sim_with(&rx.base, 0.00001);
    for i in 0..150 {
        sim.insert("Lead", obj(json!({"LastName": format!("L{i}"), "Company": "Acme"}))).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.stats().outbound_notifications_dropped < 150 {
        assert!(tokio::time::Instant::now() < deadline, "not dropped: {:?}", sim.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = rx.received();
    assert!(got.iter().all(|r| parse(&sim, r).notifications.len() <= 100));
    let sent: usize = got.iter().map(|r| parse(&sim, r).notifications.len()).sum();
    // 150 notifications, each tried 22 times (first try + 21 retries).
    assert_eq!(sent, 150 * 22);
    let stats = settled(&sim).await;
    assert_eq!(stats.outbound_notifications_dropped, 150);
    sim.stop();
}

#[tokio::test]
async fn a_rolled_back_collection_sends_nothing() {
    let rx = receiver(acking(), Duration::ZERO).await;
    let sim = sim_with(&rx.base, 1.0);
    sim.start("127.0.0.1:0").await.unwrap();
    let http = Client::new();
    let token: Value = http
        .post(format!("{}/services/oauth2/token", sim.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client-id"),
            ("client_secret", "sim-client-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = |all_or_none: bool| {
        json!({"allOrNone": all_or_none, "records": [
            {"attributes": {"type": "Lead"}, "LastName": "Good", "Company": "Acme"},
            {"attributes": {"type": "Lead"}, "LastName": "Bad"},
        ]})
    };
    for all_or_none in [true, false] {
        let r = http
            .post(format!("{}/services/data/v62.0/composite/sobjects", sim.base_url()))
            .bearer_auth(token["access_token"].as_str().unwrap())
            .json(&body(all_or_none))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Only the partial-success call created a Lead: one message with one notification.
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.received().len(), 1);
    let m = parse(&sim, &got[0]);
    assert_eq!(m.notifications.len(), 1);
    assert_eq!(field(&m, 0, "LastName").as_deref(), Some("Good"));
    sim.stop();
}

#[test]
fn only_a_true_ack_in_the_outbound_namespace_counts() {
    use super::outbound::is_ack;
    assert!(is_ack(ack_response().as_bytes()));
    assert!(!is_ack(ack_response().replace(">true<", ">false<").as_bytes()));
    assert!(!is_ack(
        ack_response().replace("http://soap.sforce.com/2005/09/outbound", "urn:other").as_bytes()
    ));
    assert!(!is_ack(b"<Ack>true</Ack>"));
    assert!(!is_ack(b"not xml <"));
    assert!(!is_ack(b""));
}
