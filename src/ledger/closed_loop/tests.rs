//! Closed-loop storage and attribution on a temp ledger: idempotent upserts, the cursor in the
//! page's transaction, persons resolved at report time (links, conversions, merges), and the
//! report's definitions on hand-made data whose right answers are written out below.

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts read as units_cents: 1_000_00 is 1,000.00"
)]

use chrono::TimeZone;

use super::attribution::{
    AttributionQuery, AttributionReport, CreditSource, OpportunityOutcome, TouchModel,
};
use super::*;
use crate::domain::RemoteId;
use crate::domain::closed_loop::TouchKind;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid")
}

const DAY: i64 = 86_400;

fn open() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    (dir, l)
}

fn crm() -> SystemName {
    SystemName("crm".into())
}

fn mkt() -> SystemName {
    SystemName("marketing".into())
}

fn rid(object_type: &str, id: &str) -> RemoteId {
    RemoteId { object_type: object_type.into(), id: id.into() }
}

fn opp(id: &str, cents: i64, won: Option<bool>, created: i64, contacts: &[&str]) -> Opportunity {
    Opportunity {
        remote: rid("Opportunity", id),
        name: Some(format!("Deal {id}")),
        amount_cents: Some(cents),
        currency: None,
        stage: match won {
            Some(true) => "Closed Won",
            Some(false) => "Closed Lost",
            None => "Prospecting",
        }
        .into(),
        pipeline: None,
        is_closed: won.is_some(),
        is_won: won == Some(true),
        close_date: Some(t(created + 10 * DAY).date_naive()),
        primary_campaign: None,
        contacts: contacts
            .iter()
            .enumerate()
            .map(|(i, c)| OpportunityContact {
                person: rid("Contact", c),
                primary: i == 0,
                role: Some("Decision Maker".into()),
            })
            .collect(),
        created_at: Some(t(created)),
        modified_at: t(created),
        deleted: false,
    }
}

fn touch(id: &str, person: RemoteId, campaign: &str, at: i64) -> CampaignTouch {
    CampaignTouch {
        touch_id: id.into(),
        person,
        lead: None,
        campaign_id: campaign.into(),
        campaign_name: Some(format!("Name of {campaign}")),
        kind: TouchKind::CampaignMember,
        at: t(at),
        responded: true,
        responded_on: None,
        modified_at: t(at),
        deleted: false,
    }
}

/// A person with links, written as the identity code would.
fn person(l: &Ledger, id: &str, links: &[(&str, &str, &str)]) {
    let conn = l.conn.lock().expect("lock");
    conn.execute(
        "INSERT INTO leads(id, fields, provenance, created_at, updated_at)
         VALUES (?1, '{}', '{}', '', '')",
        [id],
    )
    .expect("lead");
    for (system, object_type, remote_id) in links {
        conn.execute(
            "INSERT INTO links(lead_id, system, object_type, remote_id, reason, created_at)
             VALUES (?1, ?2, ?3, ?4, 'test', '')",
            params![id, system, object_type, remote_id],
        )
        .expect("link");
    }
}

fn merge(l: &Ledger, loser: &str, survivor: &str) {
    let conn = l.conn.lock().expect("lock");
    conn.execute("UPDATE leads SET merged_into = ?2 WHERE id = ?1", [loser, survivor])
        .expect("merge");
}

/// Every closed-loop row as text, to compare whole states.
fn dump(l: &Ledger) -> String {
    let conn = l.conn.lock().expect("lock");
    let mut out = String::new();
    for table in
        ["opportunities", "opportunity_contacts", "campaign_touches", "closed_loop_cursors"]
    {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2, 3")).expect("q");
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut line = Vec::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    line.push(format!("{v:?}"));
                }
                Ok(line.join("|"))
            })
            .expect("rows");
        for row in rows {
            out.push_str(&format!("{table}: {}\n", row.expect("row")));
        }
    }
    out
}

fn cursor(v: &str) -> Cursor {
    Cursor(Some(v.into()))
}

fn query(from: i64, to: i64) -> AttributionQuery {
    AttributionQuery { from: t(from), to: t(to), responded_only: true, opportunity_systems: None }
}

/// (model, source, campaign, won_count, won_cents, pipeline_count, pipeline_cents), in order.
type Flat = Vec<(TouchModel, CreditSource, Option<String>, u64, i64, u64, i64)>;

fn flat(r: &AttributionReport) -> Flat {
    r.rows
        .iter()
        .map(|row| {
            (
                row.model,
                row.source,
                row.campaign_id.clone(),
                row.won_count,
                row.won_cents,
                row.pipeline_count,
                row.pipeline_cents,
            )
        })
        .collect()
}

#[test]
fn storing_a_page_twice_changes_nothing() {
    let (_d, l) = open();
    let opps = [opp("006A", 100_00, Some(true), 0, &["003A", "003B"])];
    let touches = [touch("00vA", rid("Contact", "003A"), "701A", -DAY)];
    let first =
        l.store_closed_loop(&crm(), &opps, &touches, &[], Some(&cursor("c1")), t(5)).expect("1");
    assert_eq!((first.opportunities, first.touches, first.unchanged), (1, 1, 0));
    let before = dump(&l);

    // The same page again (a retry after a lost reply, or the overlap re-read), later.
    let again = l.store_closed_loop(&crm(), &opps, &touches, &[], None, t(99)).expect("2");
    assert_eq!(again, ClosedLoopStored { unchanged: 2, ..Default::default() });
    assert_eq!(dump(&l), before, "not one byte differs, first_seen_at included");
}

#[test]
fn a_changed_record_is_updated_and_an_older_one_is_skipped() {
    let (_d, l) = open();
    let v1 = opp("006A", 100_00, None, 0, &["003A"]);
    l.store_closed_loop(&crm(), std::slice::from_ref(&v1), &[], &[], None, t(1)).expect("v1");

    // Won later, and a second contact joined.
    let mut v2 = opp("006A", 250_00, Some(true), 0, &["003A", "003B"]);
    v2.modified_at = t(50);
    let s =
        l.store_closed_loop(&crm(), std::slice::from_ref(&v2), &[], &[], None, t(51)).expect("v2");
    assert_eq!(s.opportunities, 1);
    let after_v2 = dump(&l);
    assert!(after_v2.contains("Text(\"003B\")"), "{after_v2}");
    assert!(after_v2.contains("Integer(25000)"), "{after_v2}");

    // The older state read again from an overlap window does not undo it.
    let s = l.store_closed_loop(&crm(), &[v1], &[], &[], None, t(52)).expect("stale");
    assert_eq!(s, ClosedLoopStored { stale: 1, ..Default::default() });
    assert_eq!(dump(&l), after_v2);

    // A contact removed at the same modification stamp as the role change is a change.
    let mut v3 = v2.clone();
    v3.modified_at = t(60);
    v3.contacts.truncate(1);
    let s = l.store_closed_loop(&crm(), &[v3], &[], &[], None, t(61)).expect("v3");
    assert_eq!(s.opportunities, 1);
    assert!(!dump(&l).contains("003B"));
}

#[test]
fn the_cursor_commits_with_the_page_or_not_at_all() {
    let (_d, l) = open();
    l.store_closed_loop(&crm(), &[], &[], &[], Some(&cursor("c0")), t(0)).expect("c0");
    {
        let conn = l.conn.lock().expect("lock");
        // Fail the cursor write, which comes after the rows in the same transaction.
        conn.execute_batch(
            "CREATE TEMP TRIGGER fail_cursor BEFORE UPDATE ON closed_loop_cursors
             BEGIN SELECT RAISE(ABORT, 'injected'); END;
             CREATE TEMP TRIGGER fail_cursor_insert BEFORE INSERT ON closed_loop_cursors
             BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .expect("trigger");
    }
    let opps = [opp("006A", 100_00, Some(true), 0, &["003A"])];
    let touches = [touch("00vA", rid("Contact", "003A"), "701A", -DAY)];
    let err = l.store_closed_loop(&crm(), &opps, &touches, &[], Some(&cursor("c1")), t(1));
    assert!(err.is_err(), "the injected failure surfaces");
    assert_eq!(l.closed_loop_cursor(&crm()).expect("cursor"), cursor("c0"));
    let status = l.closed_loop_status().expect("status");
    assert_eq!((status[0].opportunities, status[0].touches), (0, 0), "no row without its cursor");

    // And the other way round: a failing row leaves the cursor where it was.
    {
        let conn = l.conn.lock().expect("lock");
        conn.execute_batch(
            "DROP TRIGGER fail_cursor; DROP TRIGGER fail_cursor_insert;
             CREATE TEMP TRIGGER fail_touch BEFORE INSERT ON campaign_touches
             BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .expect("trigger");
    }
    assert!(l.store_closed_loop(&crm(), &opps, &touches, &[], Some(&cursor("c1")), t(2)).is_err());
    assert_eq!(l.closed_loop_cursor(&crm()).expect("cursor"), cursor("c0"));
    assert!(!dump(&l).contains("006A"), "the opportunity before the failing touch rolled back");

    {
        let conn = l.conn.lock().expect("lock");
        conn.execute_batch("DROP TRIGGER fail_touch;").expect("drop");
    }
    l.store_closed_loop(&crm(), &opps, &touches, &[], Some(&cursor("c1")), t(3)).expect("ok");
    assert_eq!(l.closed_loop_cursor(&crm()).expect("cursor"), cursor("c1"));
    assert_eq!(l.closed_loop_cursor(&mkt()).expect("other system"), Cursor(None));
}

#[test]
fn first_and_last_touch_before_creation_in_the_window() {
    let (_d, l) = open();
    // P1: Salesforce contact 003A (converted from lead 00QA) and HubSpot contact 11.
    person(
        &l,
        "P1",
        &[("crm", "Contact", "003A"), ("crm", "Lead", "00QA"), ("marketing", "contact", "11")],
    );
    person(&l, "P2", &[("crm", "Contact", "003B")]);
    person(&l, "P3", &[("crm", "Contact", "003C")]);
    let now = 100 * DAY;
    let opps = [
        // P1, won in the window: first touch a HubSpot form, last the Salesforce webinar.
        opp("006W1", 1_000_00, Some(true), now - 20 * DAY, &["003A"]),
        // P2 primary, P1 second: P2 has no touch, so no_touch (the primary decides).
        opp("006W2", 500_50, Some(true), now - 20 * DAY, &["003B", "003A"]),
        // Open and created in the window: pipeline. Unknown primary, P3 second.
        opp("006P1", 300_00, None, now - 5 * DAY, &["003Z", "003C"]),
        // Open but created before the window: not pipeline.
        opp("006P0", 999_00, None, now - 40 * DAY, &["003A"]),
        // Won, but closed (created + 10 days) before the window.
        opp("006W0", 777_00, Some(true), now - 45 * DAY, &["003A"]),
        // Lost: counts nowhere.
        opp("006L", 123_00, Some(false), now - 5 * DAY, &["003A"]),
        // Nobody linked.
        opp("006N", 42_00, None, now - 2 * DAY, &["003Q"]),
    ];
    let mut converted = touch("00v2", rid("Contact", "003A"), "701WEB", now - 22 * DAY);
    converted.lead = Some(rid("Lead", "00QA"));
    let mut unresponded = touch("00v4", rid("Contact", "003A"), "701SENT", now - 21 * DAY);
    unresponded.responded = false;
    let mut deleted = touch("00v5", rid("Contact", "003A"), "701DEL", now - 21 * DAY);
    deleted.deleted = true;
    let crm_touches = [
        converted,
        unresponded,
        deleted,
        // After 006W1 was created: not a touch before it.
        touch("00v3", rid("Contact", "003A"), "701LATE", now - 10 * DAY),
        // A lead-only membership of P1 from before the conversion.
        touch("00v1", rid("Lead", "00QA"), "701EXPO", now - 30 * DAY),
        // P3: two touches at the same instant; ties go by touch id.
        touch("00vB", rid("Contact", "003C"), "701TIE_B", now - 6 * DAY),
        touch("00vA", rid("Contact", "003C"), "701TIE_A", now - 6 * DAY),
    ];
    let mut form = touch("11:Ebook:1", rid("contact", "11"), "Ebook", now - 60 * DAY);
    form.kind = TouchKind::FormSubmission;
    l.store_closed_loop(&crm(), &opps, &crm_touches, &[], None, t(now)).expect("crm");
    l.store_closed_loop(&mkt(), &[], &[form], &[], None, t(now)).expect("mkt");

    let r = l.attribution(&query(now - 30 * DAY, now)).expect("report");
    use CreditSource::*;
    use TouchModel::*;
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        flat(&r),
        vec![
            (FirstTouch, Campaign, s("Ebook"), 1, 1_000_00, 0, 0),
            (FirstTouch, NoTouch, None, 1, 500_50, 0, 0),
            (FirstTouch, Campaign, s("701TIE_A"), 0, 0, 1, 300_00),
            (FirstTouch, NoPerson, None, 0, 0, 1, 42_00),
            (LastTouch, Campaign, s("701WEB"), 1, 1_000_00, 0, 0),
            (LastTouch, NoTouch, None, 1, 500_50, 0, 0),
            (LastTouch, Campaign, s("701TIE_B"), 0, 0, 1, 300_00),
            (LastTouch, NoPerson, None, 0, 0, 1, 42_00),
        ]
    );
    assert_eq!(r.totals.len(), 1);
    let total = &r.totals[0];
    assert_eq!(
        (total.won_count, total.won_cents, total.pipeline_count, total.pipeline_cents),
        (2, 1_500_50, 2, 342_00)
    );
    let ebook = &r.rows[0];
    assert_eq!(ebook.system.as_deref(), Some("marketing"));
    assert_eq!(ebook.campaign_name.as_deref(), Some("Name of Ebook"));
    let w1 = r.opportunities.iter().find(|o| o.remote_id == "006W1").expect("006W1");
    assert_eq!(w1.person.as_deref(), Some("P1"));
    assert_eq!(w1.outcome, OpportunityOutcome::Won);

    // Counting every membership: the unresponded one (21 days before) becomes the last touch.
    let all = l
        .attribution(&AttributionQuery { responded_only: false, ..query(now - 30 * DAY, now) })
        .expect("all touches");
    let w1 = all.opportunities.iter().find(|o| o.remote_id == "006W1").expect("006W1");
    assert_eq!(w1.last_touch.as_ref().map(|t| t.campaign_id.as_str()), Some("701SENT"));

    // Only the opportunities of another system: nothing counts, though touches are there.
    let only_marketing = AttributionQuery {
        opportunity_systems: Some(["marketing".to_string()].into()),
        ..query(now - 30 * DAY, now)
    };
    let none = l.attribution(&only_marketing).expect("marketing only");
    assert!(none.rows.is_empty() && none.totals.is_empty() && none.opportunities.is_empty());

    // Reproducible: the same ledger gives the same report.
    assert_eq!(l.attribution(&query(now - 30 * DAY, now)).expect("again"), r);
}

#[test]
fn persons_are_resolved_when_the_report_runs_through_links_and_merges() {
    let (_d, l) = open();
    let now = 100 * DAY;
    // Stored before anyone is linked: the opportunity has no person yet.
    let opps = [opp("006A", 800_00, None, now - 3 * DAY, &["003A"])];
    let crm_touches = [touch("00v1", rid("Contact", "003A"), "701A", now - 9 * DAY)];
    let mut form = touch("7:Demo:1", rid("contact", "7"), "Demo", now - 20 * DAY);
    form.kind = TouchKind::FormSubmission;
    l.store_closed_loop(&crm(), &opps, &crm_touches, &[], None, t(now)).expect("crm");
    l.store_closed_loop(&mkt(), &[], &[form], &[], None, t(now)).expect("mkt");
    let q = query(now - 30 * DAY, now);
    let r = l.attribution(&q).expect("unlinked");
    assert_eq!(r.rows[0].source, CreditSource::NoPerson);
    assert_eq!(r.rows[0].pipeline_cents, 800_00);

    // Linked later: the stored rows are attributed without being rewritten.
    person(&l, "PA", &[("crm", "Contact", "003A")]);
    person(&l, "PB", &[("marketing", "contact", "7")]);
    let r = l.attribution(&q).expect("linked");
    let o = &r.opportunities[0];
    assert_eq!(o.person.as_deref(), Some("PA"));
    assert_eq!(o.first_touch.as_ref().map(|t| t.campaign_id.as_str()), Some("701A"));

    // PA turns out to be PB (merged into PB): the HubSpot form of PB is now the first touch,
    // and the person of the opportunity is the survivor.
    merge(&l, "PA", "PB");
    let r = l.attribution(&q).expect("merged");
    let o = &r.opportunities[0];
    assert_eq!(o.person.as_deref(), Some("PB"));
    assert_eq!(o.first_touch.as_ref().map(|t| t.campaign_id.as_str()), Some("Demo"));
    assert_eq!(o.last_touch.as_ref().map(|t| t.campaign_id.as_str()), Some("701A"));

    // A chain of merges is followed too.
    person(&l, "PC", &[]);
    merge(&l, "PB", "PC");
    let r = l.attribution(&q).expect("chain");
    assert_eq!(r.opportunities[0].person.as_deref(), Some("PC"));
    assert_eq!(r.rows[0].campaign_id.as_deref(), Some("Demo"));
}

#[test]
fn currencies_are_never_summed_together_and_deleted_opportunities_do_not_count() {
    let (_d, l) = open();
    person(&l, "P", &[("marketing", "contact", "1"), ("marketing", "contact", "2")]);
    let now = 100 * DAY;
    let deal = |id: &str, cents: i64, currency: Option<&str>, contact: &str| {
        let mut o = opp(id, cents, None, now - DAY, &[]);
        o.remote = rid("deal", id);
        o.currency = currency.map(str::to_string);
        o.contacts =
            vec![OpportunityContact { person: rid("contact", contact), primary: true, role: None }];
        o
    };
    let mut gone = deal("4", 1_000_000_00, Some("EUR"), "1");
    gone.deleted = true;
    let mut no_amount = deal("5", 0, Some("EUR"), "2");
    no_amount.amount_cents = None;
    let deals = [
        deal("1", 10_00, Some("EUR"), "1"),
        deal("2", 20_00, Some("USD"), "2"),
        deal("3", 5, None, "1"),
        gone,
        no_amount,
    ];
    let form = touch("1:Ebook:1", rid("contact", "1"), "Ebook", now - 9 * DAY);
    l.store_closed_loop(&mkt(), &deals, &[form], &[], None, t(now)).expect("store");
    let r = l.attribution(&query(now - 30 * DAY, now)).expect("report");
    let totals: Vec<(Option<&str>, u64, i64)> = r
        .totals
        .iter()
        .map(|x| (x.currency.as_deref(), x.pipeline_count, x.pipeline_cents))
        .collect();
    assert_eq!(totals, vec![(None, 1, 5), (Some("EUR"), 2, 10_00), (Some("USD"), 1, 20_00)]);
    let first: Vec<(Option<&str>, Option<&str>, i64)> = r
        .rows
        .iter()
        .filter(|x| x.model == TouchModel::FirstTouch)
        .map(|x| (x.campaign_id.as_deref(), x.currency.as_deref(), x.pipeline_cents))
        .collect();
    assert_eq!(
        first,
        vec![
            (Some("Ebook"), Some("USD"), 20_00),
            (Some("Ebook"), Some("EUR"), 10_00),
            (Some("Ebook"), None, 5),
        ],
        "sorted by amount; the EUR deal without an amount counts with 0 beside the other"
    );
}
