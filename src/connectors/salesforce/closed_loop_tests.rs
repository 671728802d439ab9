//! Closed-loop polling against the Salesforce simulator: incremental opportunities with their
//! contacts, role changes, deletes, campaign members as touches, paging and errors.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::*;
use crate::connectors::closed_loop::{ClosedLoopPage, ClosedLoopSource};
use crate::domain::closed_loop::{ActivityKind, TouchKind};
use crate::retry::RetryPolicy;
use crate::sim::salesforce::{Fault, SalesforceSim, SalesforceSimOptions};

async fn sim() -> SalesforceSim {
    let sim = SalesforceSim::new(SalesforceSimOptions::default());
    sim.start("127.0.0.1:0").await.expect("sim binds");
    sim
}

fn connector(sim: &SalesforceSim, page_size: u32) -> SalesforceConnector {
    let raw = json!({
        "login_url": sim.base_url(),
        "client_id": "sim-client-id",
        "client_secret_env": "SF_SECRET",
        "page_size": page_size,
        "overlap_secs": 0,
    });
    let raw: SalesforceConfigRaw = serde_json::from_value(raw).expect("raw config");
    let env: HashMap<String, String> =
        [("SF_SECRET".to_string(), "sim-client-secret".to_string())].into();
    let policy = RetryPolicy {
        initial: Duration::from_millis(1),
        max_interval: Duration::from_millis(5),
        max_attempts: 2,
    };
    let cfg = SalesforceConfig::from_raw(raw, "systems.crm", &env)
        .expect("valid config")
        .with_retry_policy(policy);
    SalesforceConnector::new(cfg).expect("connector builds")
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

fn contact(sim: &SalesforceSim, n: u32) -> String {
    sim.insert("Contact", obj(json!({"LastName": format!("C{n}")}))).expect("contact inserts")
}

/// Poll until a page says nothing more is waiting; all pages' data, and the last cursor.
async fn drain(c: &SalesforceConnector, mut cursor: Cursor) -> (ClosedLoopPage, usize) {
    let mut all = ClosedLoopPage::default();
    for calls in 1..=100 {
        let page = c.poll_closed_loop(&cursor).await.expect("poll works");
        all.opportunities.extend(page.opportunities);
        all.touches.extend(page.touches);
        all.activities.extend(page.activities);
        cursor = page.next_cursor;
        if page.poll_again_after > Duration::ZERO {
            all.next_cursor = cursor;
            all.poll_again_after = page.poll_again_after;
            return (all, calls);
        }
    }
    panic!("poll never caught up");
}

#[tokio::test]
async fn opportunities_come_with_contacts_and_changes_are_incremental() {
    let sim = sim().await;
    let c = connector(&sim, 200);
    let camp = sim.create_campaign("Webinar").unwrap();
    let (a, b) = (contact(&sim, 1), contact(&sim, 2));
    let opp = sim
        .create_opportunity("Big", Some(1234.5), "Prospecting", "2026-06-30", Some(&camp))
        .unwrap();
    sim.add_contact_role(&opp, &b, false, Some("Influencer")).unwrap();
    sim.add_contact_role(&opp, &a, true, Some("Decision Maker")).unwrap();
    let quiet = sim.create_opportunity("Quiet", None, "Qualification", "2026-07-01", None).unwrap();

    let (page, _) = drain(&c, Cursor(None)).await;
    assert_eq!(page.opportunities.len(), 2, "{:?}", page.opportunities);
    let big = page.opportunities.iter().find(|o| o.remote.id == opp).unwrap();
    assert_eq!(big.remote.object_type, "Opportunity");
    assert_eq!(big.amount_cents, Some(123_450));
    assert_eq!(big.stage, "Prospecting");
    assert!(!big.is_closed && !big.is_won);
    assert_eq!(big.close_date.map(|d| d.to_string()).as_deref(), Some("2026-06-30"));
    assert_eq!(big.primary_campaign.as_deref(), Some(camp.as_str()));
    let people: Vec<(&str, bool)> =
        big.contacts.iter().map(|x| (x.person.id.as_str(), x.primary)).collect();
    assert_eq!(people, [(a.as_str(), true), (b.as_str(), false)], "primary first");
    assert_eq!(big.contacts[0].role.as_deref(), Some("Decision Maker"));
    let cursor = page.next_cursor;

    // Nothing changed: nothing comes back.
    let again = c.poll_closed_loop(&cursor).await.unwrap();
    assert!(again.opportunities.is_empty() && again.touches.is_empty());

    // Winning the deal is seen, and only that deal.
    sim.set_opportunity_stage(&opp, "Closed Won", Some(2000.0)).unwrap();
    let page = c.poll_closed_loop(&again.next_cursor).await.unwrap();
    assert_eq!(page.opportunities.len(), 1);
    let won = &page.opportunities[0];
    assert!(won.is_closed && won.is_won);
    assert_eq!(won.amount_cents, Some(200_000));
    assert_eq!(won.contacts.len(), 2, "the full contact list, not only what changed");

    // A new role on the quiet deal does not move its modstamp, yet the deal comes back.
    let role = sim.add_contact_role(&quiet, &a, true, None).unwrap();
    let page = c.poll_closed_loop(&page.next_cursor).await.unwrap();
    assert_eq!(page.opportunities.len(), 1);
    assert_eq!(page.opportunities[0].remote.id, quiet);
    assert_eq!(page.opportunities[0].contacts[0].person.id, a);
    // Removing it gives the deal again, with no contacts.
    sim.ui_delete("OpportunityContactRole", &role).unwrap();
    let page = c.poll_closed_loop(&page.next_cursor).await.unwrap();
    assert_eq!(page.opportunities.len(), 1);
    assert!(page.opportunities[0].contacts.is_empty());
    // A deleted deal is reported as deleted.
    sim.ui_delete("Opportunity", &quiet).unwrap();
    let page = c.poll_closed_loop(&page.next_cursor).await.unwrap();
    assert_eq!(page.opportunities.len(), 1);
    assert!(page.opportunities[0].deleted);
}

#[tokio::test]
async fn campaign_members_become_touches_and_follow_conversion() {
    let sim = sim().await;
    let c = connector(&sim, 200);
    let camp = sim.create_campaign("Spring webinar").unwrap();
    let lead = sim.insert("Lead", obj(json!({"LastName": "L", "Company": "Acme"}))).unwrap();
    let member = sim.add_campaign_member(&camp, &lead, "Sent").unwrap();

    let (page, _) = drain(&c, Cursor(None)).await;
    assert_eq!(page.touches.len(), 1);
    let t = &page.touches[0];
    assert_eq!(t.touch_id, member);
    assert_eq!((t.person.object_type.as_str(), t.person.id.as_str()), ("Lead", lead.as_str()));
    assert_eq!(t.lead, None);
    assert_eq!(t.campaign_id, camp);
    assert_eq!(t.campaign_name.as_deref(), Some("Spring webinar"));
    assert_eq!(t.kind, TouchKind::CampaignMember);
    assert!(!t.responded && t.responded_on.is_none() && !t.deleted);

    sim.ui_update("CampaignMember", &member, obj(json!({"Status": "Responded"}))).unwrap();
    let page2 = c.poll_closed_loop(&page.next_cursor).await.unwrap();
    assert_eq!(page2.touches.len(), 1);
    assert!(page2.touches[0].responded && page2.touches[0].responded_on.is_some());

    let contact = sim.convert_lead(&lead).unwrap();
    let page3 = c.poll_closed_loop(&page2.next_cursor).await.unwrap();
    assert_eq!(page3.touches.len(), 1);
    let t = &page3.touches[0];
    assert_eq!(
        (t.person.object_type.as_str(), t.person.id.as_str()),
        ("Contact", contact.as_str())
    );
    assert_eq!(t.lead.as_ref().map(|l| l.id.as_str()), Some(lead.as_str()));
    assert_eq!(t.touch_id, member, "the same touch, now on the contact");
}

#[tokio::test]
async fn many_records_page_through_without_loss_or_repeats() {
    let sim = sim().await;
    let c = connector(&sim, 200);
    let camp = sim.create_campaign("C").unwrap();
    let mut opps = Vec::new();
    for n in 0..450 {
        let who = contact(&sim, n);
        sim.add_campaign_member(&camp, &who, if n % 2 == 0 { "Responded" } else { "Sent" })
            .unwrap();
        let o = sim
            .create_opportunity(
                &format!("O{n}"),
                Some(f64::from(n)),
                "Prospecting",
                "2026-01-01",
                None,
            )
            .unwrap();
        sim.add_contact_role(&o, &who, true, None).unwrap();
        opps.push(o);
    }
    let (page, calls) = drain(&c, Cursor(None)).await;
    assert!(calls >= 3, "450 rows at 200 a page take several polls, took {calls}");
    let mut got: Vec<&str> = page.opportunities.iter().map(|o| o.remote.id.as_str()).collect();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 450);
    assert!(page.opportunities.iter().all(|o| o.contacts.len() == 1));
    let mut touches: Vec<&str> = page.touches.iter().map(|t| t.touch_id.as_str()).collect();
    touches.sort_unstable();
    assert_eq!(touches.len(), 450);
    touches.dedup();
    assert_eq!(touches.len(), 450, "no touch twice");
    assert_eq!(page.touches.iter().filter(|t| t.responded).count(), 225);
}

#[tokio::test]
async fn errors_surface_as_connector_errors() {
    let sim = sim().await;
    let c = connector(&sim, 200);
    sim.inject(Fault::ServerError { status: 503, count: 5 });
    let err = c.poll_closed_loop(&Cursor(None)).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Transient(_)), "{err:?}");
    let err = c.poll_closed_loop(&Cursor(Some("{not ours".into()))).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Config(_)), "{err:?}");
    // A refused token is an auth failure, not a retry loop.
    let raw = json!({"login_url": sim.base_url(), "client_id": "wrong", "client_secret_env": "SF_SECRET"});
    let raw: SalesforceConfigRaw = serde_json::from_value(raw).unwrap();
    let env: HashMap<String, String> = [("SF_SECRET".to_string(), "nope".to_string())].into();
    let bad =
        SalesforceConnector::new(SalesforceConfig::from_raw(raw, "systems.crm", &env).unwrap())
            .unwrap();
    let err = bad.poll_closed_loop(&Cursor(None)).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Auth(_)), "{err:?}");
}

#[tokio::test]
async fn tasks_on_people_are_activities_and_follow_a_conversion_to_the_contact() {
    let sim = sim().await;
    let c = connector(&sim, 200);
    let lead =
        sim.insert("Lead", obj(json!({"LastName": "L", "Company": "Acme"}))).expect("lead inserts");
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
    let call = sim.log_task(&lead, "Call", day).unwrap();
    let email = sim.log_task(&lead, "ListEmail", day).unwrap();
    let todo = sim
        .insert("Task", obj(json!({"WhoId": lead, "Subject": "Call back", "TaskSubtype": "Task"})))
        .unwrap();
    // A task on nobody is no activity of a person.
    sim.insert("Task", obj(json!({"Subject": "Prepare deck"}))).unwrap();

    let (page, _) = drain(&c, Cursor(None)).await;
    let got: Vec<(String, ActivityKind, bool, String)> = page
        .activities
        .iter()
        .map(|a| (a.activity_id.clone(), a.kind, a.completed, a.who_remote_id.to_string()))
        .collect();
    let on_lead = format!("Lead/{lead}");
    assert_eq!(
        got,
        vec![
            (call.clone(), ActivityKind::Call, true, on_lead.clone()),
            (email, ActivityKind::Email, true, on_lead.clone()),
            (todo.clone(), ActivityKind::Other, false, on_lead),
        ]
    );
    let created = sim.get("Task", &call).unwrap()["CreatedDate"].as_str().unwrap().to_owned();
    assert_eq!(Some(page.activities[0].at), mapping::parse_datetime(&created));
    assert!(page.activities.iter().all(|a| !a.deleted));

    // Nothing new: nothing read. A conversion moves the tasks to the contact; a delete shows.
    let (again, _) = drain(&c, page.next_cursor.clone()).await;
    assert!(again.activities.is_empty(), "{:?}", again.activities);
    let contact = sim.convert_lead(&lead).unwrap();
    sim.ui_delete("Task", &todo).unwrap();
    let (moved, _) = drain(&c, again.next_cursor).await;
    let by_id: HashMap<&str, &crate::domain::closed_loop::Activity> =
        moved.activities.iter().map(|a| (a.activity_id.as_str(), a)).collect();
    assert_eq!(by_id.len(), 3);
    assert_eq!(by_id[call.as_str()].who_remote_id.to_string(), format!("Contact/{contact}"));
    assert!(by_id[todo.as_str()].deleted);
}
