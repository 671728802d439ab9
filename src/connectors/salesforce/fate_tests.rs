//! The connector against the Salesforce simulator: what happens to records as a whole
//! (deleted, merged, converted), Contact polling and pushes, and the older cursor form.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::cursor::{self, PollState};
use super::mapping::parse_datetime;
use super::*;
use crate::domain::{Field, Fields, RecordFate};
use crate::retry::RetryPolicy;
use crate::sim::salesforce::{SalesforceSim, SalesforceSimOptions};

async fn sim() -> SalesforceSim {
    let sim = SalesforceSim::new(SalesforceSimOptions::default());
    sim.start("127.0.0.1:0").await.expect("sim binds");
    sim
}

fn connector(sim: &SalesforceSim, objects: Option<&[&str]>) -> SalesforceConnector {
    let mut raw = json!({
        "login_url": sim.base_url(),
        "client_id": "sim-client-id",
        "client_secret_env": "SF_SECRET",
        "page_size": 200,
    });
    if let Some(o) = objects {
        raw["objects"] = json!(o);
    }
    let raw: SalesforceConfigRaw = serde_json::from_value(raw).expect("raw config");
    let env: HashMap<String, String> =
        [("SF_SECRET".to_string(), "sim-client-secret".to_string())].into();
    let policy = RetryPolicy {
        initial: Duration::from_millis(1),
        max_interval: Duration::from_millis(5),
        max_attempts: 3,
    };
    let cfg = SalesforceConfig::from_raw(raw, "systems.crm", &env)
        .expect("valid config")
        .with_retry_policy(policy);
    SalesforceConnector::new(cfg).expect("connector builds")
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

fn lead(sim: &SalesforceSim, n: u32, extra: Value) -> String {
    let mut v = json!({"LastName": format!("L{n}"), "Company": "Acme", "Email": format!("p{n}@example.test")});
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    sim.insert("Lead", obj(v)).expect("lead inserts")
}

fn rid(object_type: &str, id: &str) -> RemoteId {
    RemoteId { object_type: object_type.into(), id: id.into() }
}

fn by_id<'a>(changes: &'a [Change], id: &str) -> Vec<&'a Change> {
    changes.iter().filter(|c| c.remote.id == id).collect()
}

/// Drain the poll until it is caught up; returns every change and the last cursor.
async fn poll_all(sf: &SalesforceConnector, mut cursor: Cursor) -> (Vec<Change>, Cursor) {
    let mut out = Vec::new();
    for _ in 0..20 {
        let page = sf.poll_changes(&cursor).await.expect("poll");
        out.extend(page.changes);
        cursor = page.next_cursor;
        if page.poll_again_after > Duration::ZERO {
            return (out, cursor);
        }
    }
    panic!("poll never caught up");
}

#[tokio::test]
async fn poll_reports_deletes_merges_and_conversions_of_leads_and_contacts() {
    let sim = sim().await;
    let converted = lead(&sim, 1, json!({"Title": "CTO", "Leadsync_Id__c": "ledger-1"}));
    let master = lead(&sim, 2, json!({}));
    let loser = lead(&sim, 3, json!({"Title": "VP"}));
    let deleted = lead(&sim, 4, json!({}));
    let plain_contact =
        sim.insert("Contact", obj(json!({"LastName": "C", "Email": "c@example.test"}))).expect("c");
    let contact = sim.convert_lead(&converted).expect("converts");
    sim.merge_records("Lead", &master, &[&loser]).expect("merges");
    sim.ui_delete("Lead", &deleted).expect("deletes");

    let sf = connector(&sim, None);
    let (changes, cursor) = poll_all(&sf, Cursor(None)).await;

    let c = by_id(&changes, &converted);
    assert_eq!(c.len(), 1, "{changes:?}");
    assert_eq!(c[0].fate, RecordFate::ConvertedTo { remote: rid("Contact", &contact) });
    assert_eq!(c[0].fields.get(&Field::Title).map(String::as_str), Some("CTO"), "still mapped");
    assert_eq!(c[0].ledger_key.as_deref(), Some("ledger-1"));

    let k = by_id(&changes, &contact);
    assert_eq!(k.len(), 1);
    assert_eq!(k[0].remote.object_type, "Contact");
    assert!(k[0].fate.is_live());
    assert_eq!(k[0].fields.get(&Field::Email).map(String::as_str), Some("p1@example.test"));
    assert_eq!(k[0].fields.get(&Field::Title).map(String::as_str), Some("CTO"));
    assert!(!k[0].fields.contains_key(&Field::Company), "a Contact has no Company");
    assert_eq!(by_id(&changes, &plain_contact).len(), 1);

    let l = by_id(&changes, &loser);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].fate, RecordFate::MergedInto { survivor: master.clone() });
    assert!(l[0].fields.is_empty(), "a merged-away record carries no values");
    let m = by_id(&changes, &master);
    assert_eq!(m.len(), 1);
    assert!(m[0].fate.is_live());
    assert_eq!(m[0].fields.get(&Field::Title).map(String::as_str), Some("VP"), "filled by merge");

    let d = by_id(&changes, &deleted);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].fate, RecordFate::Deleted);
    let stamp = sim.get("Lead", &deleted).expect("in the bin")["SystemModstamp"].clone();
    assert_eq!(Some(d[0].modified_at), stamp.as_str().and_then(parse_datetime));

    // Oldest first across both objects.
    assert!(changes.windows(2).all(|w| w[0].modified_at <= w[1].modified_at));
    // Each object keeps its own position.
    let positions = cursor::decode_all(&cursor).expect("ours");
    assert_eq!(positions.objects.keys().collect::<Vec<_>>(), ["Contact", "Lead"]);
    assert_eq!(positions.objects["Contact"].id, contact);

    // Quiet org: nothing again.
    let page = sf.poll_changes(&cursor).await.expect("poll");
    assert!(page.changes.is_empty(), "{:?}", page.changes);
}

#[tokio::test]
async fn an_old_lead_only_cursor_resumes_leads_and_reads_contacts_from_the_start() {
    let sim = sim().await;
    let old = lead(&sim, 1, json!({}));
    let contact = sim.insert("Contact", obj(json!({"LastName": "C"}))).expect("contact");
    let rec = sim.get("Lead", &old).expect("lead");
    let ts = rec["SystemModstamp"].as_str().and_then(parse_datetime).expect("stamp");
    // The cursor a Lead-only connector wrote before this change: one bare state.
    let legacy = cursor::encode(Some(&PollState { ts, id: old.clone(), scan: None, seen: vec![] }));
    sim.advance_clock(Duration::from_secs(10));
    let new = lead(&sim, 2, json!({}));

    let sf = connector(&sim, None);
    let (changes, cursor) = poll_all(&sf, legacy).await;
    let ids: Vec<&str> = changes.iter().map(|c| c.remote.id.as_str()).collect();
    assert!(!ids.contains(&old.as_str()), "the old lead position is kept: {ids:?}");
    assert!(ids.contains(&new.as_str()) && ids.contains(&contact.as_str()), "{ids:?}");
    let positions = cursor::decode_all(&cursor).expect("now the new form");
    assert_eq!(positions.v, 2);
    assert_eq!(positions.objects["Lead"].id, new);
}

#[tokio::test]
async fn fetch_reads_contacts_and_deleted_merged_and_converted_ids() {
    let sim = sim().await;
    let converted = lead(&sim, 1, json!({}));
    let master = lead(&sim, 2, json!({}));
    let loser = lead(&sim, 3, json!({}));
    let deleted = lead(&sim, 4, json!({}));
    let contact = sim.convert_lead(&converted).expect("converts");
    let gone_contact = sim.insert("Contact", obj(json!({"LastName": "G"}))).expect("contact");
    sim.merge_records("Lead", &master, &[&loser]).expect("merges");
    sim.ui_delete("Lead", &deleted).expect("deletes");
    sim.ui_delete("Contact", &gone_contact).expect("deletes");
    let unknown = super::with_checksum("00Q5g0000000zzz");
    assert!(super::is_record_id(&unknown) && !super::is_record_id("00Q5g0000000zzzAAA"));

    let sf = connector(&sim, None);
    let changes = sf
        .fetch(&[
            rid("Lead", &converted),
            rid("Lead", &loser),
            rid("Lead", &deleted),
            rid("Lead", &unknown),
            rid("Contact", &contact),
            rid("Contact", &gone_contact),
            rid("contact", "not an id"),
        ])
        .await
        .expect("fetch");
    let fate = |id: &str| by_id(&changes, id).first().map(|c| c.fate.clone());
    assert_eq!(
        fate(&converted),
        Some(RecordFate::ConvertedTo { remote: rid("Contact", &contact) })
    );
    assert_eq!(fate(&loser), Some(RecordFate::MergedInto { survivor: master.clone() }));
    assert_eq!(fate(&deleted), Some(RecordFate::Deleted));
    assert_eq!(fate(&contact), Some(RecordFate::Live));
    assert_eq!(fate(&gone_contact), Some(RecordFate::Deleted));
    assert_eq!(changes.len(), 5, "unknown and malformed ids are left out: {changes:?}");
    assert_eq!(by_id(&changes, &contact)[0].remote.object_type, "Contact");
}

#[tokio::test]
async fn pushes_update_contacts_and_converted_leads_are_rejected() {
    let sim = sim().await;
    let converted = lead(&sim, 1, json!({}));
    let live = lead(&sim, 2, json!({}));
    let contact = sim.convert_lead(&converted).expect("converts");
    let sf = connector(&sim, None);
    let title = |t: &str| -> Fields { [(Field::Title, t.to_string())].into() };
    let update = |outbox_id, object_type: &str, id: &str, t: &str| PushRecord {
        outbox_id,
        ledger_key: format!("L{outbox_id}"),
        op: PushOp::Update { remote: rid(object_type, id) },
        fields: title(t),
        person: Fields::new(),
        stage_dates: Default::default(),
        stage_reason: None,
        owner: None,
    };
    let batch = [
        update(1, "Contact", &contact, "Contact title"),
        update(2, "Lead", &converted, "Too late"),
        update(3, "Lead", &live, "Lead title"),
        PushRecord {
            outbox_id: 4,
            ledger_key: "L4".into(),
            op: PushOp::Create { object_type: "Contact".into() },
            fields: title("x"),
            person: Fields::new(),
            stage_dates: Default::default(),
            stage_reason: None,
            owner: None,
        },
    ];
    let out = sf.push(&batch).await.expect("push");
    assert_eq!(
        out[0],
        PushOutcome::Accepted { outbox_id: 1, remote: rid("Contact", &contact), created: false }
    );
    assert!(
        matches!(&out[1], PushOutcome::Rejected { code, .. } if code == "CANNOT_UPDATE_CONVERTED_LEAD"),
        "{:?}",
        out[1]
    );
    assert!(matches!(&out[2], PushOutcome::Accepted { created: false, .. }), "{:?}", out[2]);
    assert!(
        matches!(&out[3], PushOutcome::Rejected { code, .. } if code == "unsupported_object"),
        "creates stay Lead-only: {:?}",
        out[3]
    );
    assert_eq!(sim.get("Contact", &contact).expect("contact")["Title"], "Contact title");
    assert_eq!(sim.get("Lead", &live).expect("lead")["Title"], "Lead title");
    assert_eq!(sim.stats().api_writes, 1, "one collections call for both object types");
    let maps = sf.object_maps();
    assert_eq!(maps.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["Lead", "Contact"]);
    assert!(maps[0].1.maps(Field::Company) && !maps[1].1.maps(Field::Company));
}

#[tokio::test]
async fn a_lead_only_connector_ignores_contacts() {
    let sim = sim().await;
    let converted = lead(&sim, 1, json!({}));
    let contact = sim.convert_lead(&converted).expect("converts");
    let sf = connector(&sim, Some(&["Lead"]));
    let (changes, _) = poll_all(&sf, Cursor(None)).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].fate, RecordFate::ConvertedTo { remote: rid("Contact", &contact) });
    assert!(sf.fetch(&[rid("Contact", &contact)]).await.expect("fetch").is_empty());
    let out = sf
        .push(&[PushRecord {
            outbox_id: 1,
            ledger_key: "L1".into(),
            op: PushOp::Update { remote: rid("Contact", &contact) },
            fields: Fields::new(),
            person: Fields::new(),
            stage_dates: Default::default(),
            stage_reason: None,
            owner: None,
        }])
        .await
        .expect("no call");
    assert!(matches!(&out[0], PushOutcome::Rejected { code, .. } if code == "unsupported_object"));
}

#[tokio::test]
async fn notifications_of_converted_leads_carry_the_conversion() {
    let sim = sim().await;
    let sf = connector(&sim, None);
    let mut fields: std::collections::BTreeMap<String, Option<String>> = [
        "Email",
        "FirstName",
        "LastName",
        "Company",
        "Title",
        "Phone",
        "LeadSource",
        "Status",
        "HasOptedOutOfEmail",
        "Leadsync_Id__c",
    ]
    .iter()
    .map(|f| ((*f).to_string(), None))
    .collect();
    fields.insert("SystemModstamp".into(), Some("2024-05-01T10:00:00.000Z".into()));
    fields.insert("LastName".into(), Some("L".into()));
    let id = "00Q5g00000000AAAAA";
    assert!(
        sf.change_from_notification("Lead", id, &fields, Utc::now()).is_none(),
        "without the conversion fields the record must be fetched"
    );
    fields.insert("IsConverted".into(), Some("true".into()));
    fields.insert("ConvertedContactId".into(), Some("0035g00000000AAAAA".into()));
    let c = sf.change_from_notification("Lead", id, &fields, Utc::now()).expect("complete");
    assert_eq!(c.fate, RecordFate::ConvertedTo { remote: rid("Contact", "0035g00000000AAAAA") });
    assert_eq!(c.fields.get(&Field::LastName).map(String::as_str), Some("L"));
}

#[tokio::test]
async fn merge_records_goes_through_the_soap_api_and_reads_back_as_a_merge() {
    let sim = sim().await;
    let master = lead(&sim, 1, json!({}));
    let loser = lead(&sim, 2, json!({"Title": "VP"}));
    let sf = connector(&sim, None);
    let (_, cursor) = poll_all(&sf, Cursor(None)).await;
    // A session the org has since revoked: the SOAP fault re-authenticates once.
    sim.revoke_tokens();
    let writes = sim.stats().api_writes;
    assert_eq!(sf.merge_records("Lead", &master, &loser).await.expect("merges"), master);
    assert_eq!(
        sim.stats().api_writes,
        writes + 1,
        "one SOAP call (the refused one is not counted)"
    );
    let bin = sim.get("Lead", &loser).expect("in the bin");
    assert_eq!(
        (bin["IsDeleted"].clone(), bin["MasterRecordId"].clone()),
        (json!(true), json!(master))
    );
    let (changes, _) = poll_all(&sf, cursor).await;
    let l = by_id(&changes, &loser);
    assert_eq!(l[0].fate, RecordFate::MergedInto { survivor: master.clone() });
    let m = by_id(&changes, &master);
    assert_eq!(m[0].fields.get(&Field::Title).map(String::as_str), Some("VP"), "blank filled");

    // Merging it again: refused for this record (final), with Salesforce's status code.
    match sf.merge_records("Lead", &master, &loser).await {
        Err(ConnectorError::Rejected { code, .. }) => assert_eq!(code, "ENTITY_IS_DELETED"),
        other => panic!("expected a refusal: {other:?}"),
    }
    // A lead cannot be merged into a contact, nor an unknown id.
    let contact =
        sim.insert("Contact", obj(json!({"LastName": "C", "Email": "c@example.test"}))).expect("c");
    let third = lead(&sim, 3, json!({}));
    let err = sf.merge_records("Lead", &contact, &third).await.expect_err("wrong type");
    assert!(
        matches!(err, ConnectorError::Rejected { ref code, .. } if code == "INVALID_CROSS_REFERENCE_KEY"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_soap_outage_is_retried() {
    use crate::sim::salesforce::Fault;
    let sim = sim().await;
    let master = lead(&sim, 1, json!({}));
    let loser = lead(&sim, 2, json!({}));
    let sf = connector(&sim, None);
    sim.inject(Fault::ServerError { status: 503, count: 2 });
    assert_eq!(sf.merge_records("Lead", &master, &loser).await.expect("retried"), master);
    assert_eq!(sim.stats().api_writes, 1, "the refused attempts did nothing");
}

/// Convergence seed 266 (all ops): a human converted a lead, then deleted the converted lead.
/// Read first as a delete, the conversion was never seen: the contact became a person of its
/// own and was created at HubSpot next to the human's contact. A deleted converted lead is
/// still a conversion; its contact carries the person on.
#[test]
fn a_converted_lead_deleted_afterwards_reads_as_converted() {
    let rec = |deleted: bool, converted: bool| -> super::wire::Record {
        let mut m = Map::new();
        m.insert("Id".into(), json!("00Q5g0000000AAAEA2"));
        m.insert("IsDeleted".into(), json!(deleted));
        m.insert("IsConverted".into(), json!(converted));
        if converted {
            m.insert("ConvertedContactId".into(), json!("0035g0000000AAAAA2"));
        }
        m
    };
    let contact = RecordFate::ConvertedTo { remote: rid("Contact", "0035g0000000AAAAA2") };
    assert_eq!(super::mapping::fate_of(&rec(true, true)), contact);
    assert_eq!(super::mapping::fate_of(&rec(false, true)), contact);
    assert_eq!(super::mapping::fate_of(&rec(true, false)), RecordFate::Deleted);
    assert_eq!(super::mapping::fate_of(&rec(false, false)), RecordFate::Live);
}
