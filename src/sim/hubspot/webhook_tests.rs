//! App webhooks end to end: the simulator's API and UI methods change contacts, a local
//! receiver gets the batches and checks them with the daemon's own verifier
//! (`ingest::webhook::hubspot`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::{HubspotSim, HubspotSimOptions, HubspotWebhookOptions, LegacySignature};
use crate::ingest::webhook::hubspot::{
    HubspotEvent, HubspotRequest, HubspotVerifyConfig, verify, verify_and_parse,
};
use crate::sim::webhooks::testing::{Received, Script, receiver};

const TOKEN: &str = "pat-na1-webhook-test";
const SECRET: &str = "app-secret-for-tests";

fn ok() -> Script {
    Arc::new(|_, _| (200, String::new()))
}

fn opts(target: &str, legacy: Option<LegacySignature>, time_scale: f64) -> HubspotSimOptions {
    HubspotSimOptions {
        token: TOKEN.into(),
        webhooks: HubspotWebhookOptions {
            target_url: Some(target.to_owned()),
            client_secret: SECRET.into(),
            legacy_signature: legacy,
            batch_window: Duration::from_millis(20),
            time_scale,
            ..HubspotWebhookOptions::default()
        },
        ..HubspotSimOptions::unlimited()
    }
}

fn verify_config(allow_legacy: bool) -> HubspotVerifyConfig {
    HubspotVerifyConfig { client_secrets: vec![SecretString::from(SECRET)], allow_legacy }
}

/// Verifies one received request against `target_base` (what the daemon's public URL is) and
/// parses its events.
fn check(r: &Received, target_base: &str) -> Vec<HubspotEvent> {
    assert_eq!(r.method, "POST");
    assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
    let uri = format!("{target_base}{}", r.path_and_query);
    let req = HubspotRequest::from_headers("POST", &uri, &r.headers, &r.body);
    let now = chrono::Utc::now().timestamp_millis();
    verify_and_parse(&verify_config(false), &req, now).expect("v3 signature verifies")
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Waits until the sim has no event in flight (the receiver records a request before the
/// sender has read its answer).
async fn settled(sim: &HubspotSim) -> super::SimStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = sim.stats();
        if stats.webhook_events_queued == 0 {
            return stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "events still queued: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn api_post(sim: &HubspotSim, path: &str, body: Value) -> reqwest::Response {
    Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn api_and_ui_changes_arrive_signed_with_the_right_events() {
    let rx = receiver(ok(), Duration::ZERO).await;
    let target = format!("{}/hooks/hubspot?portal=62515", rx.base);
    let sim = HubspotSim::new(opts(&target, None, 1.0));
    sim.start("127.0.0.1:0").await.unwrap();

    let resp = api_post(
        &sim,
        "/crm/v3/objects/contacts",
        json!({"properties": {"email": "ada@example.test", "firstname": "Ada"}}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let id: u64 = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();

    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    let events = check(&got[0], &rx.base);
    assert_eq!(events.len(), 3, "creation + 2 property changes, in one batch");
    let creation = &events[0];
    assert_eq!(creation.subscription_type, "contact.creation");
    assert_eq!(creation.change_flag.as_deref(), Some("CREATED"));
    assert_eq!(creation.object_id, id);
    assert_eq!(creation.portal_id, 62_515);
    assert_eq!(creation.app_id, Some(1_000_001));
    assert_eq!(creation.attempt_number, 0);
    assert_eq!(creation.change_source.as_deref(), Some("API"));
    assert!(creation.subscription_id.is_some());
    let now = chrono::Utc::now().timestamp_millis();
    assert!((now - creation.occurred_at).abs() < 10_000);
    let mut changed: Vec<(String, String)> = events[1..]
        .iter()
        .map(|e| {
            assert_eq!(e.subscription_type, "contact.propertyChange");
            (e.property_name.clone().unwrap(), e.property_value.clone().unwrap().0)
        })
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        vec![("email".into(), "ada@example.test".into()), ("firstname".into(), "Ada".into())]
    );
    let mut ids: Vec<u64> = events.iter().map(|e| e.event_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "event ids are unique");

    // A person edits the contact: one propertyChange per changed property, from the UI.
    sim.ui_update(&id.to_string(), props(&[("lastname", "Lovelace"), ("firstname", "Ada")]))
        .unwrap();
    let got = rx.wait_for(2, Duration::from_secs(5)).await;
    let events = check(&got[1], &rx.base);
    assert_eq!(events.len(), 1, "unchanged firstname fires nothing");
    assert_eq!(events[0].property_name.as_deref(), Some("lastname"));
    assert_eq!(events[0].change_source.as_deref(), Some("CRM_UI"));

    // Merge, then archive the survivor.
    let other = sim.insert(props(&[("email", "ada2@example.test"), ("phone", "123")])).unwrap();
    rx.wait_for(3, Duration::from_secs(5)).await;
    let resp = api_post(
        &sim,
        "/crm/v3/objects/contacts/merge",
        json!({"primaryObjectId": id.to_string(), "objectIdToMerge": other}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let got = rx.wait_for(4, Duration::from_secs(5)).await;
    let events = check(&got[3], &rx.base);
    let merge = events.iter().find(|e| e.subscription_type == "contact.merge").expect("merge");
    assert_eq!(merge.primary_object_id, Some(id));
    assert_eq!(merge.merged_object_ids, vec![other.parse::<u64>().unwrap()]);
    assert_eq!(merge.new_object_id, Some(id));
    assert_eq!(merge.number_of_properties_moved, Some(2), "phone + hs_additional_emails");
    assert!(events.iter().any(|e| e.property_name.as_deref() == Some("phone")));

    let resp = Client::new()
        .delete(format!("{}/crm/v3/objects/contacts/{id}", sim.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let got = rx.wait_for(5, Duration::from_secs(5)).await;
    let events = check(&got[4], &rx.base);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].subscription_type, "contact.deletion");
    assert_eq!(events[0].object_id, id);

    // Opt-out through the communication preferences API touches hs_email_optout.
    let c3 = sim.insert(props(&[("email", "grace@example.test")])).unwrap();
    rx.wait_for(6, Duration::from_secs(5)).await;
    let resp = Client::new()
        .post(format!(
            "{}/communication-preferences/v4/statuses/grace@example.test/unsubscribe-all?channel=EMAIL",
            sim.base_url()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = rx.wait_for(7, Duration::from_secs(5)).await;
    let events = check(&got[6], &rx.base);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object_id, c3.parse::<u64>().unwrap());
    assert_eq!(events[0].property_name.as_deref(), Some("hs_email_optout"));
    assert_eq!(events[0].property_value.as_ref().unwrap().0, "true");

    let stats = settled(&sim).await;
    assert_eq!(stats.webhook_requests_sent, 7);
    assert_eq!(stats.webhook_requests_succeeded, 7);
    assert_eq!(stats.webhook_events_queued, 0);
    sim.stop();
}

#[tokio::test]
async fn legacy_signatures_are_sent_when_configured() {
    for (version, tag) in [(LegacySignature::V1, "v1"), (LegacySignature::V2, "v2")] {
        let rx = receiver(ok(), Duration::ZERO).await;
        let target = format!("{}/hook", rx.base);
        let sim = HubspotSim::new(opts(&target, Some(version), 1.0));
        sim.insert(props(&[("email", "a@example.test")])).unwrap();
        let got = rx.wait_for(1, Duration::from_secs(5)).await;
        let r = &got[0];
        assert_eq!(r.headers.get("x-hubspot-signature-version").unwrap(), tag);
        check(r, &rx.base); // v3 is always there too
        // Without the v3 headers, the legacy signature alone must verify.
        let uri = format!("{}{}", rx.base, r.path_and_query);
        let legacy = HubspotRequest {
            method: "POST",
            uri: &uri,
            body: &r.body,
            signature_v3: None,
            timestamp: None,
            signature: r.headers.get("x-hubspot-signature").and_then(|v| v.to_str().ok()),
            signature_version: Some(tag),
        };
        verify(&verify_config(true), &legacy, 0).expect("legacy signature verifies");
        // And a tampered body does not.
        let tampered = HubspotRequest { body: b"[]", ..legacy };
        assert!(verify(&verify_config(true), &tampered, 0).is_err());
        sim.stop();
    }
}

#[tokio::test]
async fn failed_batches_are_retried_with_the_same_events_and_fresh_signatures() {
    let script: Script =
        Arc::new(|n, _| if n < 2 { (500, "boom".into()) } else { (200, String::new()) });
    let rx = receiver(script, Duration::ZERO).await;
    // First retry after ~2 min, second after ~4 min: 12 ms and 24 ms at this scale.
    let sim = HubspotSim::new(opts(&rx.base, None, 0.0001));
    sim.insert(props(&[("email", "r@example.test")])).unwrap();
    let got = rx.wait_for(3, Duration::from_secs(5)).await;
    let batches: Vec<Vec<HubspotEvent>> = got.iter().map(|r| check(r, &rx.base)).collect();
    let ids = |b: &Vec<HubspotEvent>| b.iter().map(|e| e.event_id).collect::<Vec<_>>();
    assert_eq!(ids(&batches[0]), ids(&batches[1]));
    assert_eq!(ids(&batches[0]), ids(&batches[2]));
    for (attempt, batch) in batches.iter().enumerate() {
        assert!(batch.iter().all(|e| e.attempt_number == attempt as u32), "attempt {attempt}");
    }
    let ts: Vec<&str> = got
        .iter()
        .map(|r| r.headers.get("x-hubspot-request-timestamp").unwrap().to_str().unwrap())
        .collect();
    assert!(ts[0] < ts[1] && ts[1] < ts[2], "each try is re-signed at send time: {ts:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.received().len(), 3, "no retry after success");
    let stats = settled(&sim).await;
    assert_eq!(
        (
            stats.webhook_requests_sent,
            stats.webhook_requests_succeeded,
            stats.webhook_failed_attempts
        ),
        (3, 1, 2)
    );
    assert_eq!(stats.webhook_events_queued, 0);
    sim.stop();
}

#[tokio::test]
async fn a_receiver_that_always_fails_gets_ten_retries_then_the_batch_is_dropped() {
    let script: Script = Arc::new(|_, _| (503, String::new()));
    let rx = receiver(script, Duration::ZERO).await;
    // 24 h of retries in ~1.7 s.
    let sim = HubspotSim::new(opts(&rx.base, None, 0.00002));
    sim.insert(props(&[("email", "f@example.test")])).unwrap(); // creation + email change
    let got = rx.wait_for(11, Duration::from_secs(10)).await;
    let attempts: Vec<u32> = got.iter().map(|r| check(r, &rx.base)[0].attempt_number).collect();
    assert_eq!(attempts, (0..=10).collect::<Vec<u32>>());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sim.stats().webhook_events_dropped == 0 {
        assert!(tokio::time::Instant::now() < deadline, "batch never dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = sim.stats();
    assert_eq!(stats.webhook_events_dropped, 2);
    assert_eq!(stats.webhook_events_queued, 0);
    assert_eq!(stats.webhook_requests_sent, 11);
    assert_eq!(stats.webhook_failed_attempts, 11);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.received().len(), 11, "nothing after the tenth retry");
    sim.stop();
}

#[tokio::test]
async fn concurrency_stays_within_the_limit_and_batches_within_100_events() {
    let rx = receiver(ok(), Duration::from_millis(150)).await;
    let mut o = opts(&rx.base, None, 1.0);
    o.webhooks.max_concurrent_requests = 5;
    o.webhooks.batch_window = Duration::from_millis(1);
    let sim = HubspotSim::new(o);
    // Each insert: creation + 3 property changes = 4 events; 300 inserts = 1,200 events.
    for i in 0..300 {
        sim.insert(props(&[
            ("email", &format!("p{i}@example.test")),
            ("firstname", "P"),
            ("lastname", "Q"),
        ]))
        .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let total: usize = rx.received().iter().map(|r| check(r, &rx.base).len()).sum();
        if total >= 1200 {
            assert_eq!(total, 1200);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {total} events arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = rx.received();
    assert!(got.iter().all(|r| check(r, &rx.base).len() <= 100));
    assert!(rx.max_in_flight() <= 5, "{} requests in flight", rx.max_in_flight());
    assert!(rx.max_in_flight() >= 2, "the limit was never approached; test too weak");
    settled(&sim).await;
    sim.stop();
}

#[tokio::test]
async fn no_target_means_nothing_is_queued_and_the_target_can_be_set_later() {
    let rx = receiver(ok(), Duration::ZERO).await;
    let mut o = opts(&rx.base, None, 1.0);
    o.webhooks.target_url = None;
    let sim = HubspotSim::new(o);
    sim.insert(props(&[("email", "before@example.test")])).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.received().is_empty());
    assert_eq!(sim.stats().webhook_events_queued, 0);
    sim.set_webhook_target(Some(format!("{}/late", rx.base)));
    sim.insert(props(&[("email", "after@example.test")])).unwrap();
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].path_and_query, "/late");
    assert_eq!(check(&got[0], &rx.base).len(), 2);
    sim.stop();
    // Stopped: nothing more is sent.
    sim.insert(props(&[("email", "stopped@example.test")])).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn management_api_validates_and_applies_settings_and_subscriptions() {
    let rx = receiver(ok(), Duration::ZERO).await;
    let mut o = opts(&rx.base, None, 1.0);
    o.webhooks.target_url = None;
    let sim = HubspotSim::new(o);
    sim.start("127.0.0.1:0").await.unwrap();
    let http = Client::new();
    let url = |p: &str| format!("{}/webhooks/v3/1000001{p}", sim.base_url());
    let r = http.get(url("/settings")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 404, "no settings yet");
    for bad in [
        json!({"targetUrl": rx.base}),
        json!({"throttling": {"maxConcurrentRequests": 10}}),
        json!({"targetUrl": rx.base, "throttling": {"maxConcurrentRequests": 4}}),
    ] {
        let r = http.put(url("/settings")).bearer_auth(TOKEN).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let good = json!({"targetUrl": format!("{}/via-api", rx.base), "throttling": {"maxConcurrentRequests": 6}});
    let r = http.put(url("/settings")).bearer_auth(TOKEN).json(&good).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r: Value =
        http.get(url("/settings")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["throttling"]["maxConcurrentRequests"], 6);

    let r: Value = http
        .get(url("/subscriptions"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subs = r["results"].as_array().unwrap();
    assert!(subs.iter().any(|s| s["eventType"] == "contact.creation"));
    assert!(subs.iter().any(|s| s["propertyName"] == "email"));
    let r = http
        .post(url("/subscriptions"))
        .bearer_auth(TOKEN)
        .json(&json!({"eventType": "contact.propertyChange"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "propertyChange needs a propertyName");
    let r = http
        .post(url("/subscriptions"))
        .bearer_auth(TOKEN)
        .json(&json!({"eventType": "contact.associationChange", "active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let wrong_app = format!("{}/webhooks/v3/42/settings", sim.base_url());
    assert_eq!(http.get(wrong_app).bearer_auth(TOKEN).send().await.unwrap().status(), 404);

    sim.insert(props(&[("email", "m@example.test")])).unwrap();
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].path_and_query, "/via-api");
    sim.stop();
}

#[tokio::test]
async fn ui_merge_archive_restore_and_gdpr_delete_send_their_events() {
    let rx = receiver(ok(), Duration::ZERO).await;
    let target = format!("{}/hooks/hubspot", rx.base);
    let sim = HubspotSim::new(opts(&target, None, 1.0));
    sim.start("127.0.0.1:0").await.unwrap();
    let a = sim.insert(props(&[("email", "a@example.test")])).unwrap();
    let b = sim.insert(props(&[("email", "b@example.test"), ("phone", "1")])).unwrap();
    let c = sim.insert(props(&[("email", "c@example.test")])).unwrap();
    // The creations may travel in one request or several: wait until all three arrived.
    let mut seen = 0;
    let mut created = 0;
    while created < 3 {
        seen += 1;
        let got = rx.wait_for(seen, Duration::from_secs(5)).await;
        created += check(&got[seen - 1], &rx.base)
            .iter()
            .filter(|e| e.subscription_type == "contact.creation")
            .count();
    }

    sim.ui_merge(&a, &b).unwrap();
    seen += 1;
    let got = rx.wait_for(seen, Duration::from_secs(5)).await;
    let events = check(&got[seen - 1], &rx.base);
    let merge = events.iter().find(|e| e.subscription_type == "contact.merge").expect("merge");
    assert_eq!(merge.change_source.as_deref(), Some("CRM_UI"));
    assert_eq!(merge.merged_object_ids, vec![b.parse::<u64>().unwrap()]);
    assert!(sim.ui_merge(&a, &b).is_err(), "b resolves to a now: merging a with itself");

    assert!(sim.ui_archive(&c));
    assert!(!sim.ui_archive(&c), "already archived");
    seen += 1;
    let got = rx.wait_for(seen, Duration::from_secs(5)).await;
    let events = check(&got[seen - 1], &rx.base);
    assert_eq!(events[0].subscription_type, "contact.deletion");

    sim.ui_restore(&c).unwrap();
    seen += 1;
    let got = rx.wait_for(seen, Duration::from_secs(5)).await;
    let events = check(&got[seen - 1], &rx.base);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].subscription_type, "contact.restore");
    assert_eq!(events[0].object_id, c.parse::<u64>().unwrap());
    assert!(sim.ui_restore(&c).is_err(), "not archived any more");

    assert!(sim.gdpr_delete(&c));
    seen += 1;
    let got = rx.wait_for(seen, Duration::from_secs(5)).await;
    let events = check(&got[seen - 1], &rx.base);
    assert_eq!(events[0].subscription_type, "contact.privacyDeletion");
    assert!(sim.get(&c).is_none());
    assert!(!sim.gdpr_delete(&c));
    sim.stop();
}
