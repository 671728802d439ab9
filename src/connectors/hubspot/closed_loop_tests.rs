//! Closed-loop polling against the HubSpot simulator: deals with their contacts, incremental
//! changes (association changes included), form conversions as touches, paging and errors.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::connectors::closed_loop::{ClosedLoopPage, ClosedLoopSource};
use crate::domain::closed_loop::TouchKind;
use crate::retry::RetryPolicy;
use crate::sim::hubspot::{Fault, HubspotSim, HubspotSimOptions};

const TOKEN: &str = "pat-na1-00000000-closed";

async fn sim() -> HubspotSim {
    let sim = HubspotSim::new(HubspotSimOptions {
        token: TOKEN.into(),
        ..HubspotSimOptions::unlimited()
    });
    sim.start("127.0.0.1:0").await.expect("bind a local port");
    sim
}

fn connector(sim: &HubspotSim, token: &str, page_size: u32) -> HubspotConnector {
    let raw = HubspotConfigRaw {
        base_url: sim.base_url(),
        token_env: Some("HS_TOKEN".into()),
        search_min_interval_ms: 0,
        overlap_secs: 0,
        page_size,
        ..HubspotConfigRaw::default()
    };
    let env = [("HS_TOKEN".to_string(), token.to_string())].into();
    let mut cfg = HubspotConfig::from_raw(raw, "systems.marketing", &env).expect("valid config");
    cfg.retry = RetryPolicy {
        initial: Duration::from_millis(1),
        max_interval: Duration::from_millis(5),
        max_attempts: 2,
    };
    HubspotConnector::new(cfg).expect("connector builds")
}

fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn person(sim: &HubspotSim, n: u32) -> String {
    sim.insert(props(&[("email", &format!("p{n}@example.test"))])).expect("insert")
}

async fn drain(c: &HubspotConnector, mut cursor: Cursor) -> (ClosedLoopPage, usize) {
    let mut all = ClosedLoopPage::default();
    for calls in 1..=200 {
        let page = c.poll_closed_loop(&cursor).await.expect("poll works");
        all.opportunities.extend(page.opportunities);
        all.touches.extend(page.touches);
        cursor = page.next_cursor;
        if page.poll_again_after > Duration::ZERO {
            all.next_cursor = cursor;
            return (all, calls);
        }
    }
    panic!("poll never caught up");
}

/// Let the millisecond clock move so the next write gets a later stamp.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

#[tokio::test]
async fn deals_come_with_contacts_and_changes_are_incremental() {
    let sim = sim().await;
    let c = connector(&sim, TOKEN, 100);
    let (a, b) = (person(&sim, 1), person(&sim, 2));
    let deal = sim
        .create_deal(props(&[
            ("dealname", "Big"),
            ("amount", "1234.56"),
            ("dealstage", "qualifiedtobuy"),
            ("closedate", "2026-06-30"),
            ("deal_currency_code", "EUR"),
        ]))
        .unwrap();
    sim.associate_deal(&deal, &a, true).unwrap();
    sim.associate_deal(&deal, &b, true).unwrap();
    let (page, _) = drain(&c, Cursor(None)).await;
    assert_eq!(page.opportunities.len(), 1, "{:?}", page.opportunities);
    let d = &page.opportunities[0];
    assert_eq!((d.remote.object_type.as_str(), d.remote.id.as_str()), ("deal", deal.as_str()));
    assert_eq!(d.amount_cents, Some(123_456));
    assert_eq!(d.currency.as_deref(), Some("EUR"));
    assert_eq!(d.stage, "qualifiedtobuy");
    assert_eq!(d.pipeline.as_deref(), Some("default"));
    assert!(!d.is_closed && !d.is_won);
    assert_eq!(d.close_date.map(|x| x.to_string()).as_deref(), Some("2026-06-30"));
    let ids: Vec<&str> = d.contacts.iter().map(|x| x.person.id.as_str()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    assert!(d.contacts[0].primary && !d.contacts[1].primary);

    let quiet = c.poll_closed_loop(&page.next_cursor).await.unwrap();
    assert!(quiet.opportunities.is_empty() && quiet.touches.is_empty());

    tick().await;
    sim.update_deal(&deal, props(&[("dealstage", "closedwon")])).unwrap();
    let won = c.poll_closed_loop(&quiet.next_cursor).await.unwrap();
    assert_eq!(won.opportunities.len(), 1);
    assert!(won.opportunities[0].is_closed && won.opportunities[0].is_won);
    assert_eq!(won.opportunities[0].contacts.len(), 2);

    tick().await;
    sim.associate_deal(&deal, &a, false).unwrap();
    let less = c.poll_closed_loop(&won.next_cursor).await.unwrap();
    assert_eq!(less.opportunities.len(), 1, "an association change moves the deal");
    let ids: Vec<&str> =
        less.opportunities[0].contacts.iter().map(|x| x.person.id.as_str()).collect();
    assert_eq!(ids, [b.as_str()]);
}

#[tokio::test]
async fn form_conversions_become_first_and_last_touches() {
    let sim = sim().await;
    let c = connector(&sim, TOKEN, 100);
    let who = person(&sim, 1);
    let _silent = person(&sim, 2);
    sim.submit_form(&who, "Ebook download", Some("ORGANIC_SEARCH"), Some(1_780_000_000_000))
        .unwrap();
    let (page, _) = drain(&c, Cursor(None)).await;
    assert_eq!(page.touches.len(), 1, "{:?}", page.touches);
    let t = &page.touches[0];
    assert_eq!(t.person.id, who);
    assert_eq!(t.kind, TouchKind::FormSubmission);
    assert_eq!(t.campaign_id, "Ebook download");
    assert_eq!(t.at.timestamp_millis(), 1_780_000_000_000);
    assert!(t.responded);

    sim.submit_form(&who, "Demo request", None, Some(1_780_000_100_000)).unwrap();
    let next = c.poll_closed_loop(&page.next_cursor).await.unwrap();
    let mut got: Vec<(&str, i64)> =
        next.touches.iter().map(|t| (t.campaign_id.as_str(), t.at.timestamp_millis())).collect();
    got.sort_unstable();
    assert_eq!(got, [("Demo request", 1_780_000_100_000), ("Ebook download", 1_780_000_000_000)]);
    let ids: Vec<&str> = next.touches.iter().map(|t| t.touch_id.as_str()).collect();
    assert!(ids.contains(&page.touches[0].touch_id.as_str()), "the first touch keeps its id");
    let rec = sim.get(&who).unwrap();
    assert_eq!(rec.get("num_conversion_events").cloned().flatten().as_deref(), Some("2"));
    assert_eq!(
        rec.get("hs_analytics_source").cloned().flatten().as_deref(),
        Some("ORGANIC_SEARCH")
    );
}

#[tokio::test]
async fn many_deals_page_through_without_loss() {
    let sim = sim().await;
    let c = connector(&sim, TOKEN, 10);
    let mut made = Vec::new();
    for n in 0..35 {
        let p = person(&sim, n);
        let d =
            sim.create_deal(props(&[("dealname", &format!("D{n}")), ("amount", "10")])).unwrap();
        sim.associate_deal(&d, &p, true).unwrap();
        made.push(d);
    }
    let (page, calls) = drain(&c, Cursor(None)).await;
    assert!(calls >= 4, "35 deals at 10 a page take several polls, took {calls}");
    let mut got: Vec<String> = page.opportunities.iter().map(|o| o.remote.id.clone()).collect();
    got.sort_unstable();
    got.dedup();
    made.sort_unstable();
    assert_eq!(got, made);
    assert!(page.opportunities.iter().all(|o| o.contacts.len() == 1));
}

#[tokio::test]
async fn errors_surface_as_connector_errors() {
    let sim = sim().await;
    let bad = connector(&sim, "pat-na1-wrong", 100);
    let err = bad.poll_closed_loop(&Cursor(None)).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Auth(_)), "{err:?}");
    let c = connector(&sim, TOKEN, 100);
    sim.inject(Fault::ServerError { status: 502, count: 5 });
    let err = c.poll_closed_loop(&Cursor(None)).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Transient(_)), "{err:?}");
    let err = c.poll_closed_loop(&Cursor(Some("garbage".into()))).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Config(_)), "{err:?}");
}
