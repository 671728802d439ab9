//! The governed lifecycle inside one reconciliation, without a ledger.

use std::sync::Arc;

use chrono::TimeZone;

use super::*;
use crate::contract::config::ContractRaw;
use crate::domain::{Change, RecordFate, RemoteId};
use crate::reconcile::{Context, Decision, LinkState, reconcile};

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid time")
}

const CONTRACT: &str = r#"
[contract]
fields = { score = "number" }
events = ["callback_requested"]
[contract.lifecycle]
forward = { sal = ["reported"] }
[contract.mapping]
status_stages = { working = "sal" }
status_events = { working = "callback_requested" }
[contract.qualification.mql]
all = ["title is set", "lead_source is Web"]
[contract.qualification.sql]
all = ["stage is sal", "event callback_requested"]
"#;

#[derive(serde::Deserialize)]
struct Wrapper {
    contract: ContractRaw,
}

/// Read TOML the way `Settings::load` does (the `config` crate).
fn raw(toml: &str) -> ContractRaw {
    config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Wrapper>())
        .map(|w| w.contract)
        .expect("contract toml")
}

fn rules() -> Rules {
    let raw = raw(CONTRACT);
    let mut r = Rules::salesforce_hubspot_defaults();
    r.contract = Some(Arc::new(raw.validate("contract").expect("valid")));
    r
}

fn mkt() -> SystemName {
    SystemName("marketing".into())
}

fn change(f: &[(Field, &str)], at: i64) -> Change {
    Change {
        remote: RemoteId { object_type: "contact".into(), id: "1".into() },
        fields: f.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
        ledger_key: None,
        modified_at: t(at),
        fetched_at: t(at),
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

/// The person and context after applying `d` (what the ledger would load next time).
fn next(prev: &Context, c: &Change, d: &Decision) -> Context {
    let mut links = prev.linked.as_ref().map(|l| l.links.clone()).unwrap_or_default();
    match links.iter_mut().find(|k| k.remote == c.remote) {
        Some(k) => k.known = d.record_known.clone(),
        None => {
            let mut k = LinkState::new(mkt(), c.remote.clone());
            k.known = d.record_known.clone();
            links.push(k);
        }
    }
    let lead = LeadState {
        id: d.lead_id.clone(),
        fields: d.lead_fields.clone(),
        provenance: d.provenance.clone(),
        links,
        ..LeadState::default()
    };
    let mut ctx = Context { linked: Some(lead), ..Context::default() };
    if let Some(g) = &d.lifecycle {
        ctx.lifecycles.insert(g.lead_id.clone(), g.state.clone());
    }
    ctx
}

fn stage(d: &Decision) -> Option<LifecycleStage> {
    d.lifecycle.as_ref().and_then(|g| g.state.stage)
}

#[test]
fn without_a_contract_nothing_is_governed() {
    let r = Rules::salesforce_hubspot_defaults();
    let c = change(&[(Field::Email, "a@x.test"), (Field::LifecycleStage, "mql")], 1);
    let d = reconcile(&Context::default(), &mkt(), &c, &r, "P1", t(2)).expect("decided");
    assert!(d.lifecycle.is_none());
    assert!(d.audit.iter().all(|a| a.kind != "stage"));
}

#[test]
fn rules_qualify_then_a_status_report_and_its_event_make_sql() {
    let r = rules();
    let c1 = change(&[(Field::Email, "a@x.test"), (Field::LifecycleStage, "lead")], 1);
    let d1 = reconcile(&Context::default(), &mkt(), &c1, &r, "P1", t(2)).expect("decided");
    assert_eq!(stage(&d1), Some(LifecycleStage::Lead), "placed; the MQL rule does not hold");

    let ctx = next(&Context::default(), &c1, &d1);
    let c2 = change(
        &[
            (Field::Email, "a@x.test"),
            (Field::LifecycleStage, "lead"),
            (Field::Title, "CTO"),
            (Field::LeadSource, "Web"),
        ],
        3,
    );
    let d2 = reconcile(&ctx, &mkt(), &c2, &r, "unused", t(4)).expect("decided");
    assert_eq!(stage(&d2), Some(LifecycleStage::Mql));
    assert_eq!(d2.lead_fields.get(&Field::LifecycleStage).map(String::as_str), Some("mql"));
    let moved: Vec<_> = d2.audit.iter().filter(|a| a.kind == "stage").collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].detail["via"], "rule");

    // Sales works the lead: the status reports SAL (a floor) and stamps the call-back
    // event, so the SQL rule holds within the same evaluation.
    let ctx = next(&ctx, &c2, &d2);
    let mut f3: Vec<(Field, &str)> = c2.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    f3.push((Field::LeadStatus, "working"));
    let c3 = change(&f3, 5);
    let d3 = reconcile(&ctx, &mkt(), &c3, &r, "unused", t(6)).expect("decided");
    assert_eq!(stage(&d3), Some(LifecycleStage::Sql));
    let g = d3.lifecycle.as_ref().expect("governed");
    assert_eq!(g.state.events.get("callback_requested"), Some(&t(5)));
    assert!(g.state.dates.get(LifecycleStage::Sal).is_some());
    assert_eq!(d3.lead_fields.get(&Field::LifecycleStage).map(String::as_str), Some("sql"));
}

#[test]
fn a_backward_report_is_refused_and_the_stage_is_written_back() {
    let r = rules();
    let c1 = change(&[(Field::Email, "a@x.test"), (Field::LifecycleStage, "sql")], 1);
    let d1 = reconcile(&Context::default(), &mkt(), &c1, &r, "P1", t(2)).expect("decided");
    let ctx = next(&Context::default(), &c1, &d1);
    let c2 = change(&[(Field::Email, "a@x.test"), (Field::LifecycleStage, "lead")], 3);
    let d2 = reconcile(&ctx, &mkt(), &c2, &r, "unused", t(4)).expect("decided");
    assert_eq!(stage(&d2), Some(LifecycleStage::Sql));
    let refused: Vec<_> = d2.audit.iter().filter(|a| a.kind == "stage_refused").collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].detail["refusal"].as_str().is_some_and(|s| s.contains("named transition")));
    assert_eq!(d2.lead_fields.get(&Field::LifecycleStage).map(String::as_str), Some("sql"));
    // The record shows lead: the governed stage goes back to it as a forward write.
    let back = d2.pushes.iter().find(|p| p.system == mkt()).expect("a push to marketing");
    assert_eq!(back.fields.get(&Field::LifecycleStage).map(String::as_str), Some("sql"));
}

#[test]
fn a_recycle_clears_the_forward_only_stage_and_rules_do_not_undo_it() {
    let r = rules();
    let contract = r.contract.clone().expect("contract");
    let c1 =
        change(&[(Field::Email, "a@x.test"), (Field::Title, "CTO"), (Field::LeadSource, "Web")], 1);
    let d1 = reconcile(&Context::default(), &mkt(), &c1, &r, "P1", t(2)).expect("decided");
    assert_eq!(stage(&d1), Some(LifecycleStage::Mql));
    let mut ctx = next(&Context::default(), &c1, &d1);
    // HubSpot holds MQL (leadsync pushed it).
    let lead = ctx.linked.as_mut().expect("lead");
    lead.links[0].known.insert(Field::LifecycleStage, "mql".into());
    let mut state = ctx.lifecycles.get("P1").cloned().expect("governed");
    let (tr, audit) = named_move(
        &contract,
        &r.status_implies_stage,
        &mut state,
        &mut lead.fields,
        &mut lead.provenance,
        NamedMove::Recycle,
        "no_response",
        None,
        t(10),
    )
    .expect("allowed");
    assert_eq!((tr.from, tr.to), (LifecycleStage::Mql, LifecycleStage::Recycled));
    assert_eq!(audit[0].detail["reason"], "no_response");
    assert_eq!(lead.fields.get(&Field::LifecycleStage).map(String::as_str), Some("lead"));
    assert_eq!(lead.fields.get(&Field::LeadStatus).map(String::as_str), Some("nurture"));
    // The pushes clear HubSpot's stage first (not "lead", which HubSpot would ignore).
    let pushes = crate::reconcile::plan_pushes(lead, &r);
    let hs = pushes.iter().find(|p| p.system == mkt()).expect("marketing push");
    assert_eq!(hs.fields.get(&Field::LifecycleStage).map(String::as_str), Some(""));
    assert_eq!(hs.fields.get(&Field::LeadStatus).map(String::as_str), Some("nurture"));
    // Once cleared, the next plan writes the recycled projection forward.
    lead.links[0].known.insert(Field::LifecycleStage, String::new());
    let pushes = crate::reconcile::plan_pushes(lead, &r);
    let hs = pushes.iter().find(|p| p.system == mkt()).expect("marketing push");
    assert_eq!(hs.fields.get(&Field::LifecycleStage).map(String::as_str), Some("lead"));
    lead.links[0].known.insert(Field::LifecycleStage, "lead".into());
    lead.links[0].known.insert(Field::LeadStatus, "nurture".into());
    ctx.lifecycles.insert("P1".into(), state);

    // The next change (the MQL rule still holds) does not undo the recycle: it held before.
    let c2 = change(
        &[
            (Field::Email, "a@x.test"),
            (Field::Title, "CTO"),
            (Field::LeadSource, "Web"),
            (Field::Phone, "1"),
        ],
        20,
    );
    let d2 = reconcile(&ctx, &mkt(), &c2, &r, "unused", t(21)).expect("decided");
    assert_eq!(stage(&d2), Some(LifecycleStage::Recycled));
    // It stops holding, then holds again (new engagement): the person re-qualifies.
    let ctx = next(&ctx, &c2, &d2);
    let c3 = change(&[(Field::Email, "a@x.test"), (Field::LeadSource, "Event")], 30);
    let d3 = reconcile(&ctx, &mkt(), &c3, &r, "unused", t(31)).expect("decided");
    assert_eq!(stage(&d3), Some(LifecycleStage::Recycled));
    let ctx = next(&ctx, &c3, &d3);
    let c4 = change(&[(Field::Email, "a@x.test"), (Field::LeadSource, "Web")], 40);
    let d4 = reconcile(&ctx, &mkt(), &c4, &r, "unused", t(41)).expect("decided");
    assert_eq!(stage(&d4), Some(LifecycleStage::Mql));
    let mql = d4.lifecycle.as_ref().expect("governed").state.dates.get(LifecycleStage::Mql);
    assert_eq!(mql.map(|e| e.times), Some(2), "a second entry into MQL");
}

#[test]
fn the_sal_source_rule_refusal_is_audited_once() {
    // A rule into SAL exists but the table lets only reports enter SAL.
    let mut raw = raw(CONTRACT);
    raw.qualification.insert(
        "sal".into(),
        crate::contract::config::RuleRaw { all: vec!["title is set".into()], ..Default::default() },
    );
    let mut r = Rules::salesforce_hubspot_defaults();
    r.contract = Some(Arc::new(raw.validate("contract").expect("valid")));
    let c1 = change(
        &[(Field::Email, "a@x.test"), (Field::LifecycleStage, "mql"), (Field::Title, "CTO")],
        1,
    );
    let d1 = reconcile(&Context::default(), &mkt(), &c1, &r, "P1", t(2)).expect("decided");
    assert_eq!(stage(&d1), Some(LifecycleStage::Mql));
    let refused: Vec<_> = d1.audit.iter().filter(|a| a.kind == "stage_refused").collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].detail["via"], "rule");
    let ctx = next(&Context::default(), &c1, &d1);
    let c2 = change(
        &[
            (Field::Email, "a@x.test"),
            (Field::LifecycleStage, "mql"),
            (Field::Title, "CTO"),
            (Field::Phone, "1"),
        ],
        3,
    );
    let d2 = reconcile(&ctx, &mkt(), &c2, &r, "unused", t(4)).expect("decided");
    assert!(d2.audit.iter().all(|a| a.kind != "stage_refused"), "edge triggered: once");
}

#[test]
fn the_mapping_validates_its_names() {
    let bad_event = "[contract]\n[contract.mapping]\nstatus_events = { working = \"nope\" }\n";
    let e = raw(bad_event).validate("contract").expect_err("undeclared event");
    assert_eq!(e.key, "contract.mapping.status_events.working");
    let bad_stage =
        "[contract]\n[contract.mapping]\nstatus_stages = { unqualified = \"disqualified\" }\n";
    let e = raw(bad_stage).validate("contract").expect_err("named-only stage");
    assert_eq!(e.key, "contract.mapping.status_stages.unqualified");
    let bad_domain = "[contract]\n[contract.mapping]\nrecycled_stage = \"sal\"\n";
    let e = raw(bad_domain).validate("contract").expect_err("not a six-stage value");
    assert_eq!(e.key, "contract.mapping.recycled_stage");
    let example: &str = include_str!("../../../config/contract.example.toml");
    let c = raw(example).validate("contract").expect("the example is valid");
    assert_eq!(c.mapping.status_stages.get("working"), Some(&LifecycleStage::Sal));
    assert_eq!(c.mapping.recycled_stage, Some(Stage::Lead));
    assert_eq!(c.mapping.disqualified_stage, None);
}

const SCORED: &str = r#"
[contract]
fields = { score = "number", country = "text" }
[contract.qualification.mql]
all = ["score >= 50", "country in [US, CA]"]
"#;

fn scored_rules() -> Rules {
    let mut r = Rules::salesforce_hubspot_defaults();
    r.contract = Some(Arc::new(raw(SCORED).validate("contract").expect("valid")));
    r
}

fn with_custom(mut c: Change, custom: &[(&str, Option<&str>)]) -> Change {
    c.custom = custom.iter().map(|(k, v)| ((*k).to_string(), v.map(str::to_string))).collect();
    c
}

#[test]
fn a_hubspot_score_fires_the_mql_rule_and_custom_values_follow_the_latest_state() {
    let r = scored_rules();
    let base = [(Field::Email, "s@x.test"), (Field::LifecycleStage, "lead")];
    let c1 = with_custom(change(&base, 1), &[("score", Some("30")), ("country", Some(" US "))]);
    let d1 = reconcile(&Context::default(), &mkt(), &c1, &r, "P1", t(2)).expect("decided");
    assert_eq!(stage(&d1), Some(LifecycleStage::Lead), "a score of 30 is not enough");
    let g1 = d1.lifecycle.as_ref().expect("governed");
    assert_eq!(g1.state.custom.get("score").map(String::as_str), Some("30"));
    assert_eq!(g1.state.custom.get("country").map(String::as_str), Some("US"), "trimmed");

    // Only the score changes at HubSpot: no canonical field is news, the rule fires anyway.
    let ctx = next(&Context::default(), &c1, &d1);
    let c2 = with_custom(change(&base, 3), &[("score", Some("61")), ("country", Some("US"))]);
    let d2 = reconcile(&ctx, &mkt(), &c2, &r, "P1", t(4)).expect("decided");
    assert_eq!(stage(&d2), Some(LifecycleStage::Mql));
    assert!(d2.audit.iter().any(|a| a.kind == "stage" && a.detail["via"] == "rule"));
    assert_eq!(d2.lead_fields.get(&Field::LifecycleStage).map(String::as_str), Some("mql"));

    // An older state of another system's record does not undo the newer score; a newer
    // blank value clears the country.
    let ctx = next(&ctx, &c2, &d2);
    let crm = SystemName("crm".into());
    let mut old = with_custom(change(&[(Field::Email, "s@x.test")], 2), &[("score", Some("10"))]);
    old.remote = RemoteId { object_type: "Lead".into(), id: "00Q1".into() };
    let d3 = reconcile(&ctx, &crm, &old, &r, "P1", t(5)).expect("decided");
    let g3 = d3.lifecycle.as_ref().expect("governed");
    assert_eq!(g3.state.custom.get("score").map(String::as_str), Some("61"));
    let mut ctx = ctx;
    ctx.lifecycles.insert("P1".into(), g3.state.clone());
    let c4 = with_custom(change(&base, 6), &[("country", None), ("region", Some("EMEA"))]);
    let d4 = reconcile(&ctx, &mkt(), &c4, &r, "P1", t(7)).expect("decided");
    let g4 = d4.lifecycle.as_ref().expect("governed");
    assert!(!g4.state.custom.contains_key("country"), "blank clears");
    assert!(!g4.state.custom.contains_key("region"), "undeclared names are ignored");
    assert_eq!(
        g4.state.stage,
        Some(LifecycleStage::Mql),
        "a rule that stops holding moves nobody back"
    );
}
