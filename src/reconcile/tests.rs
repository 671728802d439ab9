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
        }
        None => links.push(LinkState {
            known: d.record_known.clone(),
            agreed: d.record_agreed.clone(),
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
