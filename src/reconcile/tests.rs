//! Unit and property tests of the reconciler.

use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn rules() -> Rules {
    Rules::salesforce_hubspot_defaults()
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid time")
}

fn fields(p: &[(Field, &str)]) -> Fields {
    p.iter().map(|(f, v)| (*f, (*v).to_string())).collect()
}

fn change(id: &str, obj: &str, f: Fields, at: i64) -> Change {
    Change {
        remote: RemoteId { object_type: obj.into(), id: id.into() },
        fields: f,
        ledger_key: None,
        modified_at: t(at),
        fetched_at: t(at),
        fate: crate::domain::RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

fn mkt() -> SystemName {
    SystemName("marketing".into())
}
fn crm() -> SystemName {
    SystemName("crm".into())
}

/// A live change always yields a decision.
fn rec(
    ctx: &Context,
    system: &SystemName,
    change: &Change,
    rules: &Rules,
    new_id: &str,
    now: DateTime<Utc>,
) -> Decision {
    reconcile(ctx, system, change, rules, new_id, now).expect("a live change is decided")
}

/// Apply a decision to an in-memory "ledger" of one person (what the SQL layer does).
fn applied(ctx: &Context, system: &SystemName, c: &Change, d: &Decision) -> LeadState {
    let mut links = ctx.linked.as_ref().map(|l| l.links.clone()).unwrap_or_default();
    match links.iter_mut().find(|k| &k.system == system && k.remote == c.remote) {
        Some(k) => {
            k.known = d.record_known.clone();
            k.agreed = d.record_agreed.clone();
            k.own_email_at = d.record_own_email_at.or(k.own_email_at);
        }
        None => links.push(LinkState {
            known: d.record_known.clone(),
            agreed: d.record_agreed.clone(),
            own_email_at: d.record_own_email_at,
            ..LinkState::new(system.clone(), c.remote.clone())
        }),
    }
    LeadState {
        id: d.lead_id.clone(),
        fields: d.lead_fields.clone(),
        provenance: d.provenance.clone(),
        links,
        ..LeadState::default()
    }
}

#[test]
fn new_marketing_contact_is_a_new_person_not_yet_for_the_crm() {
    let c = change(
        "1",
        "contact",
        fields(&[(Field::Email, "a@x.test"), (Field::LifecycleStage, "lead")]),
        0,
    );
    let d = rec(&Context::default(), &mkt(), &c, &rules(), "L1", t(1));
    assert!(d.is_new_lead);
    assert_eq!(d.new_link, Some(LinkReason::NewPerson));
    assert!(d.pushes.is_empty(), "a lead below MQL is not handed to the CRM: {:?}", d.pushes);
}

#[test]
fn mql_is_created_in_the_crm() {
    let c = change(
        "1",
        "contact",
        fields(&[(Field::Email, "a@x.test"), (Field::LifecycleStage, "mql")]),
        0,
    );
    let d = rec(&Context::default(), &mkt(), &c, &rules(), "L1", t(1));
    assert_eq!(d.pushes.len(), 1);
    assert_eq!(d.pushes[0].system, crm());
    assert_eq!(d.pushes[0].remote, None);
}

#[test]
fn crm_status_working_lifts_stage_and_reaches_marketing() {
    let r = rules();
    let c1 = change(
        "1",
        "contact",
        fields(&[(Field::Email, "a@x.test"), (Field::LifecycleStage, "mql")]),
        0,
    );
    let d1 = rec(&Context::default(), &mkt(), &c1, &r, "L1", t(1));
    let lead = applied(&Context::default(), &mkt(), &c1, &d1);
    let c2 = Change {
        ledger_key: Some("L1".into()),
        ..change(
            "00Q1",
            "Lead",
            fields(&[(Field::Email, "A@x.test"), (Field::LeadStatus, "working")]),
            5,
        )
    };
    let ctx = Context { by_key: Some(lead), ..Context::default() };
    let d2 = rec(&ctx, &crm(), &c2, &r, "unused", t(6));
    assert_eq!(d2.new_link, Some(LinkReason::MatchedLedgerKey));
    assert_eq!(d2.lead_fields.get(&Field::LifecycleStage).map(String::as_str), Some("sql"));
    let to_mkt: Vec<_> = d2.pushes.iter().filter(|p| p.system == mkt()).collect();
    assert_eq!(to_mkt.len(), 1);
    assert_eq!(to_mkt[0].fields.get(&Field::LifecycleStage).map(String::as_str), Some("sql"));
    assert_eq!(to_mkt[0].fields.get(&Field::LeadStatus).map(String::as_str), Some("working"));
    // The email differs only in case: not pushed.
    assert!(!to_mkt[0].fields.contains_key(&Field::Email));
}

#[test]
fn opt_out_is_never_undone() {
    let r = rules();
    let c1 = change(
        "1",
        "contact",
        fields(&[(Field::Email, "a@x.test"), (Field::EmailOptOut, "true")]),
        0,
    );
    let d1 = rec(&Context::default(), &mkt(), &c1, &r, "L1", t(1));
    let lead = applied(&Context::default(), &mkt(), &c1, &d1);
    let c2 = change(
        "1",
        "contact",
        fields(&[(Field::Email, "a@x.test"), (Field::EmailOptOut, "false")]),
        2,
    );
    let ctx = Context { linked: Some(lead), ..Context::default() };
    let d2 = rec(&ctx, &mkt(), &c2, &r, "unused", t(3));
    assert_eq!(d2.lead_fields.get(&Field::EmailOptOut).map(String::as_str), Some("true"));
    // And leadsync does not push "false" anywhere, nor "true" back to a record that shows
    // false (that would be the vendor's own decision to resubscribe, which only the vendor
    // may make; the opt-out stays in the ledger and in every other system).
    assert!(
        d2.pushes
            .iter()
            .all(|p| p.fields.get(&Field::EmailOptOut).map(String::as_str) != Some("false"))
    );
}

#[test]
fn stale_snapshot_does_not_undo_our_push() {
    let r = rules();
    let link = LinkState {
        system: mkt(),
        remote: RemoteId { object_type: "contact".into(), id: "1".into() },
        known: fields(&[(Field::Email, "a@x.test"), (Field::LeadStatus, "working")]),
        agreed: Fields::new(),
        pushed: fields(&[(Field::LeadStatus, "working")]),
        pushed_at: Some(t(10)),
        by_rule: false,
        own_email_at: None,
    };
    let lead = LeadState {
        id: "L1".into(),
        fields: fields(&[(Field::Email, "a@x.test"), (Field::LeadStatus, "working")]),
        provenance: BTreeMap::new(),
        links: vec![link],
        ..LeadState::default()
    };
    // Read at t=9, before our push at t=10, processed after it.
    let c = Change {
        fetched_at: t(9),
        ..change(
            "1",
            "contact",
            fields(&[(Field::Email, "a@x.test"), (Field::LeadStatus, "new")]),
            8,
        )
    };
    let ctx = Context { linked: Some(lead), ..Context::default() };
    let d = rec(&ctx, &mkt(), &c, &r, "unused", t(11));
    assert_eq!(d.lead_fields.get(&Field::LeadStatus).map(String::as_str), Some("working"));
    let back: Vec<_> = d.pushes.iter().filter(|p| p.system == mkt()).collect();
    assert!(back.iter().all(|p| !p.fields.contains_key(&Field::LeadStatus)), "{back:?}");
    // It cannot tell a state from before the push from an edit made after it landed: the
    // record is read again.
    assert!(reread_needed(&ctx, &mkt(), &c));
    // A read that started after the push ended is news, and settles it.
    let fresh = Change { fetched_at: t(12), ..c.clone() };
    assert!(!reread_needed(&ctx, &mkt(), &fresh));
    let d = rec(&ctx, &mkt(), &fresh, &r, "unused", t(12));
    assert_eq!(d.lead_fields.get(&Field::LeadStatus).map(String::as_str), Some("new"));
    // An early read that shows what was pushed (the push's own echo) needs no second look,
    // nor does one of another record.
    let echo = Change {
        fields: fields(&[(Field::Email, "a@x.test"), (Field::LeadStatus, "working")]),
        ..c.clone()
    };
    assert!(!reread_needed(&ctx, &mkt(), &echo));
    assert!(!reread_needed(&ctx, &crm(), &c));
}

fn arb_fields() -> impl Strategy<Value = Fields> {
    (
        prop::sample::select(vec!["a@x.test", "B@x.test"]),
        prop::option::of(prop::sample::select(vec!["Ann", "Bob"])),
        prop::option::of(prop::sample::select(vec!["subscriber", "lead", "mql", "sql"])),
        prop::option::of(prop::sample::select(vec!["new", "working", "unqualified"])),
        prop::option::of(prop::sample::select(vec!["true", "false"])),
    )
        .prop_map(|(e, n, s, st, o)| {
            let mut f = Fields::new();
            f.insert(Field::Email, e.to_string());
            if let Some(n) = n {
                f.insert(Field::FirstName, n.into());
            }
            if let Some(s) = s {
                f.insert(Field::LifecycleStage, s.into());
            }
            if let Some(st) = st {
                f.insert(Field::LeadStatus, st.into());
            }
            if let Some(o) = o {
                f.insert(Field::EmailOptOut, o.into());
            }
            f
        })
}

proptest! {
    /// Applying the same change twice equals applying it once, and the second time plans
    /// the same pushes (which the outbox coalesces), never new ones.
    #[test]
    fn idempotent(a in arb_fields(), b in arb_fields(), from_crm in any::<bool>()) {
        let r = rules();
        let (sys, obj) = if from_crm { (crm(), "Lead") } else { (mkt(), "contact") };
        let c0 = change("1", obj, a, 0);
        let d0 = rec(&Context::default(), &sys, &c0, &r, "L1", t(1));
        let lead = applied(&Context::default(), &sys, &c0, &d0);
        let c1 = change("1", obj, b, 5);
        let ctx = Context { linked: Some(lead), ..Context::default() };
        let d1 = rec(&ctx, &sys, &c1, &r, "x", t(6));
        let lead1 = applied(&ctx, &sys, &c1, &d1);
        let ctx2 = Context { linked: Some(lead1), ..Context::default() };
        let d2 = rec(&ctx2, &sys, &c1, &r, "x", t(7));
        prop_assert_eq!(&d2.lead_fields, &d1.lead_fields);
        prop_assert!(!d2.lead_changed);
        prop_assert_eq!(&d2.pushes, &d1.pushes);
    }

    /// A record that already shows the person's values gets no push (no echo).
    #[test]
    fn no_echo(a in arb_fields()) {
        let r = rules();
        let c0 = change("1", "contact", a, 0);
        let d0 = rec(&Context::default(), &mkt(), &c0, &r, "L1", t(1));
        let lead = applied(&Context::default(), &mkt(), &c0, &d0);
        // When the record reports exactly what leadsync now holds, no write results.
        let projected = r.system(&mkt()).map(|s| s.map.writable(&lead.fields)).unwrap_or_default();
        let c1 = change("1", "contact", projected, 9);
        let ctx = Context { linked: Some(lead), ..Context::default() };
        let d1 = rec(&ctx, &mkt(), &c1, &r, "x", t(10));
        prop_assert!(d1.pushes.iter().all(|p| p.system != mkt()), "{:?}", d1.pushes);
    }

    /// Changes to different fields from the two systems commute.
    #[test]
    fn independent_changes_commute(name in prop::sample::select(vec!["Ann", "Bob"]),
                                   status in prop::sample::select(vec!["new", "working"])) {
        let r = rules();
        let base = fields(&[(Field::Email, "a@x.test"), (Field::LifecycleStage, "mql")]);
        let c0 = change("1", "contact", base.clone(), 0);
        let d0 = rec(&Context::default(), &mkt(), &c0, &r, "L1", t(1));
        let lead = applied(&Context::default(), &mkt(), &c0, &d0);
        let mut m = base.clone();
        m.insert(Field::FirstName, name.into());
        let cm = change("1", "contact", m, 5);
        let cc = Change { ledger_key: Some("L1".into()), ..change("00Q1", "Lead",
            fields(&[(Field::Email, "a@x.test"), (Field::LeadStatus, status)]), 5) };
        let run = |first: (&SystemName, &Change), second: (&SystemName, &Change)| {
            let ctx = Context { linked: Some(lead.clone()), ..Context::default() };
            let ctx = if first.0 == &crm() { Context { linked: None, by_key: ctx.linked, ..Context::default() } } else { ctx };
            let d = rec(&ctx, first.0, first.1, &r, "x", t(6));
            let l = applied(&ctx, first.0, first.1, &d);
            let ctx2 = if second.0 == &crm() { Context { by_key: Some(l), ..Context::default() } } else { Context { linked: Some(l), ..Context::default() } };
            rec(&ctx2, second.0, second.1, &r, "x", t(7)).lead_fields
        };
        let (crm_s, mkt_s) = (crm(), mkt());
        prop_assert_eq!(run((&mkt_s, &cm), (&crm_s, &cc)), run((&crm_s, &cc), (&mkt_s, &cm)));
    }
}

// ---- Identity: three-way resolution, field rules, fates -------------------------------------

/// A person linked to a Salesforce lead and a HubSpot contact that both hold, and agree on,
/// `f`; `f`'s provenance is at t(0).
fn linked_pair(f: &[(Field, &str)]) -> LeadState {
    let fs = fields(f);
    let link = |sys: SystemName, obj: &str, id: &str| LinkState {
        known: fs.clone(),
        agreed: fs.clone(),
        ..LinkState::new(sys, RemoteId { object_type: obj.into(), id: id.into() })
    };
    LeadState {
        id: "L1".into(),
        fields: fs.clone(),
        provenance: fs
            .keys()
            .map(|k| {
                (*k, Provenance { system: "crm".into(), value: None, at: t(0), rule: "x".into() })
            })
            .collect(),
        links: vec![link(crm(), "Lead", "00Q1"), link(mkt(), "contact", "1")],
        ..LeadState::default()
    }
}

fn with_rule(field: Field, rule: &str) -> Rules {
    let mut r = rules();
    r.field_rules.insert(field, FieldRule::parse(rule).expect("rule"));
    r
}

fn base() -> Vec<(Field, &'static str)> {
    vec![(Field::Email, "a@x.test"), (Field::Company, "Acme"), (Field::Title, "CTO")]
}

/// `lead` after the marketing record `1` was seen holding `f` (and agreeing with the person).
fn marketing_changed(lead: &LeadState, f: &[(Field, &str)], at: i64, r: &Rules) -> LeadState {
    let c = change("1", "contact", fields(f), at);
    let ctx = Context { linked: Some(lead.clone()), ..Context::default() };
    let d = rec(&ctx, &mkt(), &c, r, "x", t(at));
    applied(&ctx, &mkt(), &c, &d)
}

#[test]
fn a_change_on_one_side_only_is_taken_without_conflict() {
    let r = rules();
    let lead = linked_pair(&base());
    let c = change(
        "00Q1",
        "Lead",
        fields(&[(Field::Email, "a@x.test"), (Field::Company, "Acme"), (Field::Title, "CEO")]),
        5,
    );
    let ctx = Context { linked: Some(lead), ..Context::default() };
    let d = rec(&ctx, &crm(), &c, &r, "x", t(6));
    assert_eq!(d.lead_fields[&Field::Title], "CEO");
    assert!(d.audit.iter().all(|a| a.kind != "conflict"), "{:?}", d.audit);
    let to_mkt: Vec<_> = d.pushes.iter().filter(|p| p.system == mkt()).collect();
    assert_eq!(to_mkt[0].fields.get(&Field::Title).map(String::as_str), Some("CEO"));
    assert_eq!(d.record_agreed[&Field::Title], "CEO", "record and person now agree");
}

#[test]
fn changes_on_both_sides_are_a_conflict_the_newer_wins_under_most_recent() {
    let r = rules();
    // Marketing changed the title at t=5 (taken: one-sided); the person now differs from what
    // the CRM record last agreed on.
    let lead = marketing_changed(
        &linked_pair(&base()),
        &[(Field::Email, "a@x.test"), (Field::Title, "VP")],
        5,
        &r,
    );
    assert_eq!(lead.fields[&Field::Title], "VP");
    // The CRM changed it too, at t=4 (older) and then at t=7 (newer).
    let ctx = Context { linked: Some(lead.clone()), ..Context::default() };
    let older = change("00Q1", "Lead", fields(&[(Field::Title, "Head")]), 4);
    let d = rec(&ctx, &crm(), &older, &r, "x", t(8));
    assert_eq!(d.lead_fields[&Field::Title], "VP", "the older side loses");
    assert!(d.audit.iter().any(|a| a.kind == "conflict"));
    let newer = change("00Q1", "Lead", fields(&[(Field::Title, "Head")]), 7);
    let d = rec(&ctx, &crm(), &newer, &r, "x", t(8));
    assert_eq!(d.lead_fields[&Field::Title], "Head", "the newer side wins");
    assert!(d.audit.iter().any(|a| a.kind == "conflict"));
}

#[test]
fn review_rule_parks_a_conflict_and_holds_the_field() {
    let r = with_rule(Field::Title, "review");
    let lead = marketing_changed(
        &linked_pair(&base()),
        &[(Field::Email, "a@x.test"), (Field::Title, "VP")],
        5,
        &r,
    );
    let ctx = Context { linked: Some(lead), ..Context::default() };
    let c = change("00Q1", "Lead", fields(&[(Field::Title, "Head")]), 7);
    let d = rec(&ctx, &crm(), &c, &r, "x", t(8));
    assert_eq!(d.lead_fields[&Field::Title], "VP", "nothing decided alone");
    assert!(matches!(&d.reviews[..], [ReviewIntent::Conflict { field: Field::Title, .. }]));
    assert!(
        d.pushes.iter().all(|p| !p.fields.contains_key(&Field::Title)),
        "a held field is not pushed: {:?}",
        d.pushes
    );
}

#[test]
fn prefer_crm_keeps_the_crm_value_against_marketing_and_unless_blank_fills_in() {
    let r = with_rule(Field::Company, "prefer crm");
    let lead = linked_pair(&base());
    let d = {
        let ctx = Context { linked: Some(lead.clone()), ..Context::default() };
        let c = change("1", "contact", fields(&[(Field::Company, "Acme Corp")]), 5);
        rec(&ctx, &mkt(), &c, &r, "x", t(6))
    };
    assert_eq!(d.lead_fields[&Field::Company], "Acme");
    let back: Vec<_> = d.pushes.iter().filter(|p| p.system == mkt()).collect();
    assert_eq!(
        back[0].fields.get(&Field::Company).map(String::as_str),
        Some("Acme"),
        "pushed back"
    );

    // The CRM record holds no company: `prefer crm` takes nothing from elsewhere, `unless
    // blank` does.
    let mut blank = lead.clone();
    blank.links[0].known.remove(&Field::Company);
    for (rule, expect) in [("prefer crm", "Acme"), ("prefer crm unless blank", "Acme Corp")] {
        let r = with_rule(Field::Company, rule);
        let ctx = Context { linked: Some(blank.clone()), ..Context::default() };
        let c = change("1", "contact", fields(&[(Field::Company, "Acme Corp")]), 5);
        let d = rec(&ctx, &mkt(), &c, &r, "x", t(6));
        assert_eq!(d.lead_fields[&Field::Company], expect, "{rule}");
    }
}

#[test]
fn dont_sync_is_never_taken_nor_pushed() {
    let r = with_rule(Field::Title, "don't sync");
    let lead = linked_pair(&base());
    let ctx = Context { linked: Some(lead), ..Context::default() };
    let c = change("1", "contact", fields(&[(Field::Title, "Intern")]), 5);
    let d = rec(&ctx, &mkt(), &c, &r, "x", t(6));
    assert_eq!(d.lead_fields[&Field::Title], "CTO");
    assert!(d.pushes.iter().all(|p| !p.fields.contains_key(&Field::Title)));
}

#[test]
fn a_deleted_record_closes_its_link_with_a_tombstone_and_is_not_recreated() {
    let r = rules();
    let mut f = base();
    f.push((Field::LifecycleStage, "mql"));
    let lead = linked_pair(&f);
    let ctx = Context { linked: Some(lead), ..Context::default() };
    let c = Change { fate: RecordFate::Deleted, ..change("00Q1", "Lead", Fields::new(), 5) };
    let d = reconcile(&ctx, &crm(), &c, &r, "x", t(6)).expect("linked");
    assert_eq!(d.close_link, Some(CloseLink { reason: "deleted", tombstone: true }));
    assert!(d.pushes.iter().all(|p| p.system != crm()), "no create in the CRM: {:?}", d.pushes);
    // With recreate_deleted the person is created there again.
    let mut r2 = rules();
    r2.recreate_deleted = true;
    let d = reconcile(&ctx, &crm(), &c, &r2, "x", t(6)).expect("linked");
    assert!(d.pushes.iter().any(|p| p.system == crm() && p.remote.is_none()));
    // A deleted record nobody links concerns nobody.
    assert!(reconcile(&Context::default(), &crm(), &c, &r, "x", t(6)).is_none());
}

#[test]
fn a_vendor_merge_folds_the_losers_person_into_the_survivors() {
    let r = rules();
    let p1 = linked_pair(&base());
    let mut p2 = LeadState {
        id: "L2".into(),
        fields: fields(&[(Field::Email, "b@x.test"), (Field::Phone, "+14155550100")]),
        ..LeadState::default()
    };
    p2.links
        .push(LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: "2".into() }));
    // Contact 1 (person L1) merged into contact 2 (person L2).
    let c = Change {
        fate: RecordFate::MergedInto { survivor: "2".into() },
        ..change("1", "contact", Fields::new(), 5)
    };
    let ctx =
        Context { linked: Some(p1), related: Some(p2), related_linked: true, ..Context::default() };
    let d = reconcile(&ctx, &mkt(), &c, &r, "x", t(6)).expect("linked");
    assert_eq!(d.lead_id, "L2");
    assert_eq!(d.absorb.as_deref(), Some("L1"));
    assert_eq!(d.close_link.as_ref().map(|c| c.reason), Some("merged"));
    assert_eq!(d.lead_fields[&Field::Email], "b@x.test", "the survivor's values stay");
    assert_eq!(d.lead_fields[&Field::Title], "CTO", "blanks are filled from the absorbed person");
    assert!(
        d.pushes.iter().all(|p| p.remote.as_ref().is_none_or(|r| r.id != "1")),
        "nothing to the merged-away record"
    );
}

#[test]
fn a_converted_lead_hands_its_person_to_the_contact() {
    let r = rules();
    let lead = linked_pair(&base());
    let contact = RemoteId { object_type: "Contact".into(), id: "0031".into() };
    let c = Change {
        fate: RecordFate::ConvertedTo { remote: contact.clone() },
        ..change(
            "00Q1",
            "Lead",
            fields(&[(Field::Email, "a@x.test"), (Field::LeadStatus, "converted")]),
            5,
        )
    };
    let ctx = Context { linked: Some(lead), ..Context::default() };
    let d = reconcile(&ctx, &crm(), &c, &r, "x", t(6)).expect("linked");
    assert_eq!(d.lead_id, "L1", "the person is kept");
    assert_eq!(d.close_link.as_ref().map(|c| c.reason), Some("converted"));
    assert_eq!(d.link_other, Some((contact, "converted_from_lead")));
    assert_eq!(d.lead_fields[&Field::LifecycleStage], "opportunity");
    assert!(
        d.pushes.iter().all(|p| p.remote.as_ref().is_none_or(|r| r.id != "00Q1")),
        "a converted lead is read-only"
    );
    assert!(d.pushes.iter().all(|p| !(p.system == crm() && p.remote.is_none())), "no new lead");
}

/// Convergence seed 1672 (all ops, polling): a lead converted, and its contact read and
/// linked (by a rule) in the same batch as the lead, whose email differs from the person's
/// (changed at HubSpot since): the lead matches its person only by a fuzzy rule. The person's
/// records are all still theirs: no create anywhere, and the contact gets the person's email.
#[test]
fn a_converted_lead_matched_by_a_rule_keeps_its_persons_records() {
    let r = rules();
    let who = [
        (Field::FirstName, "Lucas"),
        (Field::LastName, "Mensah"),
        (Field::Company, "Nakatomi Trading"),
        (Field::Phone, "+1 (980) 407-1503"),
    ];
    let mut person = fields(&who);
    person.insert(Field::Email, "lucas@globex.test".into());
    let mut at_crm = fields(&who);
    at_crm.insert(Field::Email, "lucas.mensah@nakatomi.test".into());
    let contact = RemoteId { object_type: "Contact".into(), id: "0031".into() };
    let lead = LeadState {
        id: "L1".into(),
        fields: person.clone(),
        links: vec![
            LinkState {
                known: person.clone(),
                agreed: person.clone(),
                ..LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: "9".into() })
            },
            LinkState {
                known: at_crm.clone(),
                by_rule: true,
                ..LinkState::new(crm(), contact.clone())
            },
        ],
        ..LeadState::default()
    };
    let mut converted = at_crm;
    converted.insert(Field::LeadStatus, "converted".into());
    let c = Change {
        fate: RecordFate::ConvertedTo { remote: contact.clone() },
        ..change("00Q1", "Lead", converted, -5)
    };
    let ctx = Context {
        candidates: vec![lead.clone()],
        related: Some(lead),
        related_linked: true,
        ..Context::default()
    };
    let d = rec(&ctx, &crm(), &c, &r, "x", t(6));
    assert_eq!(d.lead_id, "L1", "the rule ties the lead to its person");
    assert!(!d.is_new_lead);
    assert!(d.pushes.iter().all(|p| p.remote.is_some()), "no create: {:?}", d.pushes);
    let to_contact = d.pushes.iter().find(|p| p.remote.as_ref() == Some(&contact));
    assert_eq!(
        to_contact.and_then(|p| p.fields.get(&Field::Email)).map(String::as_str),
        Some("lucas@globex.test"),
        "the contact is sent the person's email: {:?}",
        d.pushes
    );
}

#[test]
fn only_opt_outs_reach_a_second_record_of_the_same_system() {
    let r = rules();
    let mut lead = linked_pair(&base());
    lead.links
        .push(LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: "9".into() }));
    lead.fields.insert(Field::EmailOptOut, "true".into());
    let pushes = plan_pushes(&lead, &r);
    let second: Vec<_> =
        pushes.iter().filter(|p| p.remote.as_ref().is_some_and(|x| x.id == "9")).collect();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].fields.keys().copied().collect::<Vec<_>>(), vec![Field::EmailOptOut]);
}

#[test]
fn an_email_that_is_not_written_does_not_resend_the_opt_out() {
    let r = rules();
    let person = fields(&[(Field::Email, "new@x.test"), (Field::EmailOptOut, "true")]);
    let link = |id: &str, email: &str| LinkState {
        known: fields(&[(Field::Email, email), (Field::EmailOptOut, "true")]),
        ..LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: id.into() })
    };
    // The email is held for review: it is not written, so neither is the opt-out again.
    let mut lead = LeadState {
        id: "L1".into(),
        fields: person.clone(),
        links: vec![link("1", "old@x.test")],
        ..LeadState::default()
    };
    lead.held.insert(Field::Email);
    let to_mkt = |l: &LeadState| -> Vec<PushIntent> {
        plan_pushes(l, &r).into_iter().filter(|p| p.system == mkt()).collect()
    };
    assert!(to_mkt(&lead).is_empty(), "{:?}", to_mkt(&lead));
    // A second contact keeps its own email, and is opted out already.
    lead.held.clear();
    lead.links = vec![link("1", "new@x.test"), link("2", "alt@x.test")];
    assert!(to_mkt(&lead).is_empty(), "{:?}", to_mkt(&lead));
    // The primary's new email is written, with the opt-out again (consent per address).
    lead.links = vec![link("1", "old@x.test")];
    let p = to_mkt(&lead);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].fields.get(&Field::Email).map(String::as_str), Some("new@x.test"));
    assert_eq!(p[0].fields.get(&Field::EmailOptOut).map(String::as_str), Some("true"));
}

/// A contact linked by email in the same batch as one a fuzzy rule linked is the primary in
/// the plan as in every later load of the ledger (which lists rule-made links last): the
/// person's email goes to the contact that holds it, never onto the fuzzy-linked one, which
/// HubSpot would refuse (409: another contact has that email). Seen in `bench --fuzzy 5`
/// as CONFLICT dead letters.
#[test]
fn an_email_link_in_the_same_batch_outranks_a_fuzzy_one_as_primary() {
    let r = rules();
    let mut lead = linked_pair(&[(Field::Email, "a@x.test"), (Field::FirstName, "Ann")]);
    let fuzzy = lead.links.iter_mut().find(|k| k.system == mkt()).expect("the contact link");
    fuzzy.by_rule = true;
    fuzzy.known.insert(Field::Email, "ann.other@y.test".into());
    fuzzy.agreed.remove(&Field::Email);
    let c = change(
        "2",
        "contact",
        fields(&[(Field::Email, "a@x.test"), (Field::FirstName, "Anne")]),
        5,
    );
    let ctx = Context { by_email: Some(lead), ..Context::default() };
    let d = rec(&ctx, &mkt(), &c, &r, "unused", t(6));
    let to_fuzzy = |p: &&PushIntent| p.remote.as_ref().is_some_and(|id| id.id == "1");
    assert!(
        d.pushes.iter().filter(to_fuzzy).all(|p| !p.fields.contains_key(&Field::Email)),
        "the person's email must not be written onto the fuzzy-linked contact: {:?}",
        d.pushes
    );
    let mut links = vec![LinkState { by_rule: true, ..LinkState::new(mkt(), c.remote.clone()) }];
    add_link(&mut links, LinkState::new(crm(), c.remote.clone()));
    assert!(!links[0].by_rule, "exact links go before rule-made ones, as the ledger orders them");
}

/// Convergence seed 146: an email typed on a person's second HubSpot contact became the
/// person's email, which HubSpot then refused on the primary contact (409, dead-lettered).
/// It stays that record's own address; an email edited on the primary still moves the person.
#[test]
fn an_email_edited_on_a_second_record_of_a_system_stays_that_records_own() {
    let r = rules();
    let mut lead = linked_pair(&base());
    let alt = fields(&[(Field::Email, "alt@mail.test"), (Field::Company, "Acme")]);
    lead.links.push(LinkState {
        known: alt.clone(),
        agreed: fields(&[(Field::Company, "Acme")]),
        ..LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: "2".into() })
    });
    let ctx = Context { linked: Some(lead.clone()), ..Context::default() };
    let c = change(
        "2",
        "contact",
        fields(&[(Field::Email, "v7@x.test"), (Field::Company, "Acme"), (Field::Title, "CFO")]),
        5,
    );
    let d = rec(&ctx, &mkt(), &c, &r, "x", t(6));
    assert_eq!(d.lead_fields[&Field::Email], "a@x.test", "the person keeps the primary's email");
    assert_eq!(d.record_known[&Field::Email], "v7@x.test", "the record's link knows its own");
    assert!(
        d.pushes.iter().all(|p| !p.fields.contains_key(&Field::Email)),
        "no email is pushed anywhere: {:?}",
        d.pushes
    );
    assert!(d.audit.iter().any(|a| a.kind == "record_email"), "{:?}", d.audit);

    // The same edit on the primary contact is the person's new email, written to the CRM.
    let c = change("1", "contact", fields(&[(Field::Email, "v8@x.test")]), 7);
    let d = rec(&ctx, &mkt(), &c, &r, "x", t(8));
    assert_eq!(d.lead_fields[&Field::Email], "v8@x.test");
    let to_crm: Vec<_> = d.pushes.iter().filter(|p| p.system == crm()).collect();
    assert_eq!(to_crm[0].fields.get(&Field::Email).map(String::as_str), Some("v8@x.test"));

    // Salesforce does not refuse one email on two records: there a second lead's new email
    // is the person's (convergence seed 160: a lead next to the converted contact).
    let mut lead = linked_pair(&base());
    lead.links.push(LinkState {
        known: fields(&base()),
        agreed: fields(&base()),
        ..LinkState::new(crm(), RemoteId { object_type: "Lead".into(), id: "00Q2".into() })
    });
    let ctx = Context { linked: Some(lead), ..Context::default() };
    let c = change("00Q2", "Lead", fields(&[(Field::Email, "v9@x.test")]), 9);
    let d = rec(&ctx, &crm(), &c, &r, "x", t(10));
    assert_eq!(d.lead_fields[&Field::Email], "v9@x.test");
}

/// Convergence seed 2345: a human deleted the primary HubSpot contact and typed a new email
/// on the second one; leadsync read the edit while that contact was still a second record (its
/// own address, not the person's) and then the delete. The contact that takes the deleted
/// one's place keeps the address typed there, and the person takes it, since it is newer than
/// the person's; the deleted record's address is not written over it. A second contact that
/// only holds the address it was made with (a duplicate) gets the person's as before, and so
/// does one whose address was typed before the person's email last changed.
#[test]
fn a_deleted_primary_hands_the_person_the_address_typed_on_the_record_taking_its_place() {
    let r = rules();
    let second = RemoteId { object_type: "contact".into(), id: "2".into() };
    let mut lead = linked_pair(&base());
    lead.links.push(LinkState {
        known: fields(&[(Field::Email, "alt@mail.test"), (Field::Company, "Acme")]),
        agreed: fields(&[(Field::Company, "Acme")]),
        ..LinkState::new(mkt(), second.clone())
    });
    let deleted = |lead: &LeadState, at: i64| {
        let ctx = Context { linked: Some(lead.clone()), ..Context::default() };
        let mut c = change("1", "contact", fields(&[(Field::Email, "a@x.test")]), at);
        c.fate = crate::domain::RecordFate::Deleted;
        reconcile(&ctx, &mkt(), &c, &r, "x", t(at + 1)).expect("a delete of a linked record")
    };
    let email_to = |d: &Decision, remote: &str| {
        d.pushes
            .iter()
            .find(|p| p.remote.as_ref().is_some_and(|id| id.id == remote))
            .and_then(|p| p.fields.get(&Field::Email).cloned())
    };

    // A duplicate's own address from before: the person's is written to it.
    let d = deleted(&lead, 5);
    assert_eq!(d.lead_fields[&Field::Email], "a@x.test");
    assert_eq!(email_to(&d, "2").as_deref(), Some("a@x.test"));

    // The human types a new address on the second contact, read while it is second.
    let ctx = Context { linked: Some(lead.clone()), ..Context::default() };
    let c =
        change("2", "contact", fields(&[(Field::Email, "v3@x.test"), (Field::Company, "Acme")]), 7);
    let d = rec(&ctx, &mkt(), &c, &r, "x", t(8));
    assert_eq!(d.lead_fields[&Field::Email], "a@x.test", "still that record's own address");
    assert_eq!(d.record_own_email_at, Some(t(7)));
    let typed = applied(&ctx, &mkt(), &c, &d);

    // Then the primary's delete: the second contact is primary now, and its address wins.
    let d = deleted(&typed, 9);
    assert_eq!(d.lead_fields[&Field::Email], "v3@x.test");
    assert_eq!(d.provenance[&Field::Email].at, t(7), "dated when it was typed");
    assert_eq!(d.provenance[&Field::Email].rule, "record_email");
    assert_eq!(email_to(&d, "2"), None, "nothing written over the typed address");
    let to_crm = d.pushes.iter().find(|p| p.system == crm()).expect("a push to the CRM");
    assert_eq!(to_crm.fields.get(&Field::Email).map(String::as_str), Some("v3@x.test"));

    // An email the person took after that (typed in Salesforce) is newer: it stays.
    let mut newer = typed.clone();
    newer.fields.insert(Field::Email, "v4@x.test".into());
    newer.provenance.insert(
        Field::Email,
        Provenance { system: "crm".into(), value: None, at: t(8), rule: "most recent".into() },
    );
    let d = deleted(&newer, 9);
    assert_eq!(d.lead_fields[&Field::Email], "v4@x.test");
    assert_eq!(email_to(&d, "2").as_deref(), Some("v4@x.test"));

    // The delete of a second record hands nobody anything.
    let ctx = Context { linked: Some(typed.clone()), ..Context::default() };
    let mut c = change("2", "contact", Fields::new(), 9);
    c.fate = crate::domain::RecordFate::Deleted;
    let d = reconcile(&ctx, &mkt(), &c, &r, "x", t(10)).expect("decided");
    assert_eq!(d.lead_fields[&Field::Email], "a@x.test");
}

/// Convergence seed 113: a second contact made under another address and archived before
/// leadsync read it was unknown by its email, and the person (until then only in the CRM)
/// was then created at HubSpot. A fuzzy rule at the auto-link threshold ties it to its
/// person as the live record would have been tied: link opened and closed, tombstone.
#[test]
fn a_deleted_record_the_fuzzy_rules_link_tombstones_its_person() {
    let r = rules();
    let who = [
        (Field::FirstName, "Esther"),
        (Field::LastName, "Lewis"),
        (Field::Company, "Blue Sun Pty Ltd"),
    ];
    let mut person = fields(&who);
    person.insert(Field::Email, "esther.lewis@bluesun.test".into());
    let lead = LeadState {
        id: "L1".into(),
        fields: person.clone(),
        links: vec![LinkState {
            known: person.clone(),
            agreed: person,
            ..LinkState::new(crm(), RemoteId { object_type: "Lead".into(), id: "00Q1".into() })
        }],
        ..LeadState::default()
    };
    let mut gone = fields(&who);
    gone.insert(Field::Email, "esther.alt@mail.test".into());
    let c = Change { fate: RecordFate::Deleted, ..change("13", "contact", gone, 5) };
    let ctx = Context { candidates: vec![lead], ..Context::default() };
    let d = reconcile(&ctx, &mkt(), &c, &r, "x", t(6)).expect("the fuzzy rules link it");
    assert_eq!(d.lead_id, "L1");
    assert!(matches!(d.new_link, Some(LinkReason::MatchedRule { .. })), "{:?}", d.new_link);
    assert_eq!(d.close_link, Some(CloseLink { reason: "deleted", tombstone: true }));
    assert!(!d.lead_changed, "a deleted record's values are not taken");
    assert!(d.pushes.iter().all(|p| p.system != mkt()), "not created at HubSpot: {:?}", d.pushes);
    // Below the auto-link threshold it concerns nobody (no review for a deleted record).
    let mut other = fields(&[(Field::FirstName, "Esther"), (Field::LastName, "Lewis")]);
    other.insert(Field::Email, "esther.alt@mail.test".into());
    let c = Change { fate: RecordFate::Deleted, ..change("13", "contact", other, 5) };
    assert!(reconcile(&ctx, &mkt(), &c, &r, "x", t(6)).is_none());
}

/// Convergence seed 109 (all ops): an email typed on a second HubSpot contact (kept as its
/// own) was overwritten with the person's old one once HubSpot merged the primary into it:
/// the survivor keeps its address at HubSpot, and so the person takes it.
#[test]
fn a_merge_survivor_in_a_unique_email_system_gives_the_person_its_address() {
    let r = rules();
    let mut lead = linked_pair(&base());
    let second = fields(&[(Field::Email, "v3@x.test"), (Field::Company, "Acme")]);
    lead.links.push(LinkState {
        known: second.clone(),
        agreed: fields(&[(Field::Company, "Acme")]),
        ..LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: "2".into() })
    });
    let ctx = Context {
        linked: Some(lead.clone()),
        related: Some(lead.clone()),
        related_linked: true,
        ..Context::default()
    };
    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "2".into() },
        ..change("1", "contact", Fields::new(), 5)
    };
    let d = reconcile(&ctx, &mkt(), &merged, &r, "x", t(6)).expect("linked");
    assert_eq!(d.lead_fields[&Field::Email], "v3@x.test");
    assert_eq!(d.provenance[&Field::Email].rule, "merge_survivor");
    let to_crm: Vec<_> = d.pushes.iter().filter(|p| p.system == crm()).collect();
    assert_eq!(to_crm[0].fields.get(&Field::Email).map(String::as_str), Some("v3@x.test"));
    assert!(
        d.pushes.iter().all(|p| p.system != mkt() || !p.fields.contains_key(&Field::Email)),
        "the survivor is not given the old address: {:?}",
        d.pushes
    );
    // A Salesforce merge (emails not unique there) leaves the person's email alone.
    let mut lead = linked_pair(&base());
    lead.links.push(LinkState {
        known: fields(&[(Field::Email, "v4@x.test")]),
        ..LinkState::new(crm(), RemoteId { object_type: "Lead".into(), id: "00Q2".into() })
    });
    let ctx = Context {
        linked: Some(lead.clone()),
        related: Some(lead),
        related_linked: true,
        ..Context::default()
    };
    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "00Q2".into() },
        ..change("00Q1", "Lead", Fields::new(), 5)
    };
    let d = reconcile(&ctx, &crm(), &merged, &r, "x", t(6)).expect("linked");
    assert_eq!(d.lead_fields[&Field::Email], "a@x.test");
}

/// The survivor's address is older than an email the person took after the merge (a human
/// typed it in Salesforce, and that edit was read before the merge was): the newer address
/// stays the person's and goes to the survivor.
#[test]
fn a_merge_survivor_does_not_undo_an_email_newer_than_the_merge() {
    let r = rules();
    let mut lead = linked_pair(&base());
    lead.fields.insert(Field::Email, "new@x.test".into());
    lead.provenance.insert(
        Field::Email,
        Provenance { system: "crm".into(), value: None, at: t(7), rule: "x".into() },
    );
    lead.links.push(LinkState {
        known: fields(&[(Field::Email, "v3@x.test"), (Field::Company, "Acme")]),
        agreed: fields(&[(Field::Company, "Acme")]),
        ..LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: "2".into() })
    });
    let ctx = Context {
        linked: Some(lead.clone()),
        related: Some(lead.clone()),
        related_linked: true,
        ..Context::default()
    };
    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "2".into() },
        ..change("1", "contact", Fields::new(), 5)
    };
    let d = reconcile(&ctx, &mkt(), &merged, &r, "x", t(8)).expect("linked");
    assert_eq!(d.lead_fields.get(&Field::Email).map(String::as_str), Some("new@x.test"));
    let to_mkt: Vec<_> = d.pushes.iter().filter(|p| p.system == mkt()).collect();
    assert_eq!(
        to_mkt.first().and_then(|p| p.fields.get(&Field::Email)).map(String::as_str),
        Some("new@x.test"),
        "the survivor gets the newer address: {:?}",
        d.pushes
    );
}

/// Convergence seed 161 (duplicate, merge, email-early): a second contact was merged into
/// the person's primary contact, a human then changed the email in Salesforce, and the
/// survivor was edited again before leadsync read the merge, so the merge is dated after the
/// email edit. The survivor was the primary already: its address is no news, and the newer
/// email stays the person's and goes to the survivor.
#[test]
fn a_merge_into_the_primary_does_not_undo_a_newer_email() {
    let r = rules();
    let mut lead = linked_pair(&base());
    lead.fields.insert(Field::Email, "new@x.test".into());
    lead.provenance.insert(
        Field::Email,
        Provenance { system: "crm".into(), value: None, at: t(7), rule: "x".into() },
    );
    // Leadsync read the edit on the lead; the survivor was not written yet.
    for link in lead.links.iter_mut().filter(|k| k.system == crm()) {
        link.known.insert(Field::Email, "new@x.test".into());
        link.agreed.insert(Field::Email, "new@x.test".into());
    }
    lead.links.push(LinkState {
        known: fields(&[(Field::Email, "alt@mail.test"), (Field::Company, "Acme")]),
        agreed: fields(&[(Field::Company, "Acme")]),
        by_rule: true,
        ..LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: "2".into() })
    });
    let ctx = Context {
        linked: Some(lead.clone()),
        related: Some(lead.clone()),
        related_linked: true,
        ..Context::default()
    };
    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "1".into() },
        ..change("2", "contact", Fields::new(), 8)
    };
    let d = reconcile(&ctx, &mkt(), &merged, &r, "x", t(9)).expect("linked");
    assert_eq!(d.lead_fields.get(&Field::Email).map(String::as_str), Some("new@x.test"));
    let to_mkt: Vec<_> = d.pushes.iter().filter(|p| p.system == mkt()).collect();
    assert_eq!(
        to_mkt.first().and_then(|p| p.fields.get(&Field::Email)).map(String::as_str),
        Some("new@x.test"),
        "the survivor gets the newer address: {:?}",
        d.pushes
    );
    assert!(
        d.pushes.iter().all(|p| p.system != crm() || !p.fields.contains_key(&Field::Email)),
        "Salesforce keeps the human's edit: {:?}",
        d.pushes
    );
}

/// Convergence seed 63 (all ops): leadsync's contact `1`, the person's primary, was merged at
/// HubSpot into the hand-made duplicate `3` while another fuzzy-linked duplicate `2` stood
/// before `3` in line. `2` became the primary and was sent the person's address, which `3`
/// holds now (409, a dead letter and a record left with another email). The survivor takes
/// the merged record's place instead.
#[test]
fn a_merge_survivor_takes_the_place_of_the_primary_merged_into_it() {
    let r = rules();
    let mut lead = linked_pair(&base());
    for (id, email) in [("2", "alt2@mail.test"), ("3", "alt3@mail.test")] {
        lead.links.push(LinkState {
            known: fields(&[
                (Field::Email, email),
                (Field::Company, "Acme"),
                (Field::Title, "CTO"),
            ]),
            agreed: fields(&[(Field::Company, "Acme"), (Field::Title, "CTO")]),
            by_rule: true,
            ..LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: id.into() })
        });
    }
    // As the ledger loads it: the survivor's person is this one, so `related` stays empty.
    let ctx = Context { linked: Some(lead.clone()), related_linked: true, ..Context::default() };
    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "3".into() },
        ..change("1", "contact", Fields::new(), 5)
    };
    let d = reconcile(&ctx, &mkt(), &merged, &r, "x", t(6)).expect("linked");
    let three = RemoteId { object_type: "contact".into(), id: "3".into() };
    assert_eq!(d.take_place, Some(three));
    assert_eq!(d.lead_fields[&Field::Email], "alt3@mail.test", "the survivor's address");
    assert!(
        d.pushes.iter().all(|p| p.system != mkt() || !p.fields.contains_key(&Field::Email)),
        "no contact is sent an address another one holds: {:?}",
        d.pushes
    );
    // Merged into the next in line, nothing moves; nor when a second record is merged away.
    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "2".into() },
        ..change("1", "contact", Fields::new(), 5)
    };
    let d = reconcile(&ctx, &mkt(), &merged, &r, "x", t(6)).expect("linked");
    assert_eq!(d.take_place, None);
    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "3".into() },
        ..change("2", "contact", Fields::new(), 5)
    };
    let d = reconcile(&ctx, &mkt(), &merged, &r, "x", t(6)).expect("linked");
    assert_eq!(d.take_place, None);
}

/// Convergence seed 113, the other order: the second contact under another address was
/// deleted and its delete read before the person existed (it matched nobody then). The
/// person made later from the CRM lead is scored against the kept identity: at the auto-link
/// threshold it is tombstoned at HubSpot (not created there), as when the delete is read
/// after the person exists (`a_deleted_record_the_fuzzy_rules_link_tombstones_its_person`).
#[test]
fn a_person_made_after_a_lookalike_was_deleted_unread_is_not_created_there() {
    let r = rules();
    let who = [
        (Field::FirstName, "Esther"),
        (Field::LastName, "Lewis"),
        (Field::Company, "Blue Sun Pty Ltd"),
        (Field::LifecycleStage, "mql"),
    ];
    let mut lead = fields(&who);
    lead.insert(Field::Email, "esther.lewis@bluesun.test".into());
    let c = change("00Q1", "Lead", lead, 5);
    let mut gone = fields(&who[..3]);
    gone.insert(Field::Email, "esther.alt@mail.test".into());
    let deleted = DeletedRecord {
        system: mkt(),
        remote: RemoteId { object_type: "contact".into(), id: "13".into() },
        fields: gone,
    };
    let creates_at_hubspot =
        |d: &Decision| d.pushes.iter().any(|p| p.system == mkt() && p.remote.is_none());

    // Without the kept identity the person is created at HubSpot (what the seed saw).
    let d = rec(&Context::default(), &crm(), &c, &r, "L1", t(6));
    assert!(creates_at_hubspot(&d), "{:?}", d.pushes);
    assert!(d.deleted_matches.is_empty());

    let ctx = Context { deleted_lookalikes: vec![deleted.clone()], ..Context::default() };
    let d = rec(&ctx, &crm(), &c, &r, "L1", t(6));
    assert!(d.is_new_lead);
    assert!(!creates_at_hubspot(&d), "tombstoned at HubSpot: {:?}", d.pushes);
    assert!(d.pushes.iter().all(|p| p.system != mkt()), "{:?}", d.pushes);
    let [m] = &d.deleted_matches[..] else { panic!("one match: {:?}", d.deleted_matches) };
    assert_eq!((&m.system, &m.remote), (&deleted.system, &deleted.remote));
    assert!(r.matcher.verdict(m.score) == Verdict::AutoLink, "{m:?}");
    // The trail says why: the rule, the score and the deleted record.
    let a = d.audit.iter().find(|a| a.kind == "deleted_match").expect("audited");
    assert_eq!(a.detail["remote"], "contact/13", "{:?}", a.detail);
    assert_eq!(a.detail["system"], "marketing");
    assert_eq!(a.detail["rule"], m.rule.as_str());

    // In the review band (another mailbox at the same employer's domain): audited, nothing
    // tombstoned, the create goes ahead.
    let mut maybe = fields(&[(Field::FirstName, "Esther"), (Field::LastName, "Lewis")]);
    maybe.insert(Field::Email, "elewis@bluesun.test".into());
    let review = DeletedRecord { fields: maybe, ..deleted.clone() };
    let score = r
        .matcher
        .score(&r.matcher.profile_of(&c.fields), &r.matcher.profile_of(&review.fields))
        .expect("a rule fires");
    assert_eq!(r.matcher.verdict(score.value), Verdict::Review, "{score:?}");
    let ctx = Context { deleted_lookalikes: vec![review], ..Context::default() };
    let d = rec(&ctx, &crm(), &c, &r, "L1", t(6));
    assert!(creates_at_hubspot(&d), "{:?}", d.pushes);
    assert!(d.deleted_matches.is_empty());
    assert!(d.audit.iter().any(|a| a.kind == "possible_deleted_match"), "{:?}", d.audit);

    // A record read live again after its own unread delete is not its own lookalike.
    let restored = Change { remote: deleted.remote.clone(), ..c.clone() };
    let ctx = Context { deleted_lookalikes: vec![deleted.clone()], ..Context::default() };
    let d = rec(&ctx, &mkt(), &restored, &r, "L1", t(6));
    assert!(d.deleted_matches.is_empty(), "{:?}", d.deleted_matches);
    // Nor does an existing person take it (only a person made now does).
    let existing = LeadState { id: "L0".into(), fields: c.fields.clone(), ..LeadState::default() };
    let ctx = Context {
        by_email: Some(existing),
        deleted_lookalikes: vec![deleted],
        ..Context::default()
    };
    let d = rec(&ctx, &crm(), &c, &r, "L1", t(6));
    assert!(d.deleted_matches.is_empty());
}

/// Convergence seed 746 (all ops, load): a hand-made HubSpot duplicate became a person of its
/// own, then a last-name edit on the primary made the two alike and the rescore folded them.
/// The duplicate's address was newer, so `most recent` gave it to the person, and HubSpot
/// refused it on the primary (the duplicate holds it: 409). In a system with unique emails
/// where the surviving person has a record, the folded person's address from there is that
/// second record's own: the person keeps theirs.
#[test]
fn a_fold_keeps_the_persons_address_over_a_second_records_in_a_unique_email_system() {
    let r = rules();
    let prov = |system: &str, at: i64| Provenance {
        system: system.into(),
        value: None,
        at: t(at),
        rule: "most_recent".into(),
    };
    let contact =
        |id: &str| LinkState::new(mkt(), RemoteId { object_type: "contact".into(), id: id.into() });
    let winner = LeadState {
        id: "L1".into(),
        fields: fields(&[(Field::Email, "valentina@sterling.test"), (Field::LastName, "Tanaka")]),
        provenance: [(Field::Email, prov("marketing", 1)), (Field::LastName, prov("marketing", 5))]
            .into(),
        links: vec![contact("3")],
        ..LeadState::default()
    };
    let loser = LeadState {
        id: "L2".into(),
        fields: fields(&[(Field::Email, "valentina.alt@mail.test"), (Field::LastName, "Tanaka")]),
        provenance: [(Field::Email, prov("marketing", 4))].into(),
        links: vec![contact("14")],
        ..LeadState::default()
    };
    let mut merged = merge_persons(&winner, &loser, &r, t(6));
    newer_values_carry_on(&mut merged, &loser, &winner, &r, None);
    assert_eq!(merged.fields[&Field::Email], "valentina@sterling.test");
    // With no record of the survivor there, the newer address is the person's as before.
    let crm_only = LeadState {
        links: vec![LinkState::new(
            crm(),
            RemoteId { object_type: "Lead".into(), id: "00Q1".into() },
        )],
        ..winner
    };
    let mut merged = merge_persons(&crm_only, &loser, &r, t(6));
    newer_values_carry_on(&mut merged, &loser, &crm_only, &r, None);
    assert_eq!(merged.fields[&Field::Email], "valentina.alt@mail.test");
}

/// Convergence seed 4967 (all ops, load): a human's second Salesforce lead, which kept its
/// own older address (second records get opt-outs only), was converted; its contact, linked
/// unread and sent the opt-out, was then read with the lead's old address dated at the
/// conversion, and `most recent` took it over the human's newer email. Its first read is a
/// first sight: the person's values stand (and go to the contact).
#[test]
fn a_contact_sent_only_the_opt_out_is_still_seen_for_the_first_time() {
    let r = rules();
    let newer = "valentina@acme.test";
    let mut person = fields(&[(Field::Email, newer), (Field::LastName, "Robinson")]);
    person.insert(Field::EmailOptOut, "true".into());
    let lead = RemoteId { object_type: "Lead".into(), id: "00Q1".into() };
    let contact = RemoteId { object_type: "Contact".into(), id: "0031".into() };
    let opted = fields(&[(Field::EmailOptOut, "true")]);
    let lead_state = LeadState {
        id: "L1".into(),
        fields: person.clone(),
        provenance: [(
            Field::Email,
            Provenance {
                system: "marketing".into(),
                value: None,
                at: t(1),
                rule: "most_recent".into(),
            },
        )]
        .into(),
        links: vec![
            LinkState {
                known: person.clone(),
                agreed: person.clone(),
                ..LinkState::new(crm(), lead)
            },
            LinkState {
                known: opted.clone(),
                agreed: opted.clone(),
                pushed: opted,
                pushed_at: Some(t(3)),
                ..LinkState::new(crm(), contact.clone())
            },
        ],
        ..LeadState::default()
    };
    let old = fields(&[
        (Field::Email, "VALENTINA.ROBINSON@DUNDER.TEST"),
        (Field::LastName, "Robinson"),
        (Field::EmailOptOut, "true"),
    ]);
    let c = change("0031", "Contact", old, 2);
    let ctx = Context { linked: Some(lead_state), ..Context::default() };
    let d = rec(&ctx, &crm(), &c, &r, "x", t(4));
    assert_eq!(d.lead_fields[&Field::Email], newer, "the contact's copy does not revert it");
}
