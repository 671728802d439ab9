//! The re-evaluation sweep against a reference: [`Ledger::reevaluate_batch`] must write
//! exactly what the straightforward version wrote (each person loaded whole, re-planned when
//! their fields changed, stage dates queued, state written when it changed), row for row, on
//! a mixed population: persons reconciled from both systems (links, pending creates and
//! updates, dates already sent), persons seeded without their stage projected, persons not
//! placed yet, persons with events, recycled and disqualified persons. The pipelined sweep
//! (scan on a read connection, then write the persons it names) must write the same, and
//! must not lose a change committed between its scan and its write.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};

use super::*;
use crate::contract::config::ContractRaw;
use crate::domain::{Change, Field, RecordFate, RemoteId, SystemName};
use crate::ledger::SeedPerson;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 14, 0, 0).single().expect("valid")
}

#[derive(serde::Deserialize)]
struct Wrapper {
    contract: ContractRaw,
}

/// A contract close to the example one, its stage dates mapped onto the default systems
/// (`crm`, `marketing`) so that the sweep queues them; `mql` is the MQL rule.
fn rules(mql: &str) -> Rules {
    let mut r = rules_without_dates(mql);
    let toml = r#"
[contract.mapping.stage_dates.marketing]
mql = "leadsync_mql_date"
sql = "leadsync_sql_date"
[contract.mapping.stage_dates.crm]
mql = { property = "MQL_Date__c", type = "date" }
"#;
    r.contract = Some(Arc::new(contract(&format!("{}{toml}", contract_toml(mql)))));
    r
}

/// The same rules before the stage-date mapping was added.
fn rules_without_dates(mql: &str) -> Rules {
    let mut r = Rules::salesforce_hubspot_defaults();
    r.contract = Some(Arc::new(contract(&contract_toml(mql))));
    r
}

fn contract(toml: &str) -> Contract {
    let raw = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Wrapper>())
        .expect("contract toml")
        .contract;
    raw.validate("contract").expect("valid contract")
}

fn contract_toml(mql: &str) -> String {
    format!(
        r#"
[contract]
fields = {{ score = "number", country = "text" }}
events = ["callback_requested", "meeting_booked"]
[contract.lifecycle]
forward = {{ sal = ["reported"] }}
[contract.lifecycle.recycle]
moves = ["mql -> recycled", "sal -> recycled", "sql -> recycled"]
reasons = ["no_response"]
[contract.mapping]
status_stages = {{ working = "sal" }}
status_events = {{ working = "callback_requested" }}
recycled_stage = "lead"
recycled_status = "nurture"
disqualified_stage = ""
disqualified_status = "unqualified"
[contract.qualification.mql]
all = [{mql}]
none = ["email_opt_out is true"]
[contract.qualification.sql]
all = ["stage is sal"]
any = ["event callback_requested", "event meeting_booked within 30 days"]
"#
    )
}

const OLD: &str = r#""score >= 50", "title is set", "country in [US, CA, GB]""#;
const NEW: &str = r#""score >= 40", "title is set", "country in [US, CA, GB, DE]""#;

/// The sweep as it was written first: the reference the faster one must match.
fn reference_batch(
    l: &Ledger,
    rules: &Rules,
    sweep: Sweep,
    after: Option<&str>,
    batch: usize,
    now: DateTime<Utc>,
) -> Result<ReevalBatch> {
    let Some(contract) = rules.contract.as_deref() else { return Ok(ReevalBatch::default()) };
    l.with_tx(|tx| {
        let sql = match sweep {
            Sweep::Everyone => {
                "SELECT id FROM leads WHERE merged_into IS NULL AND id > ?1
                 ORDER BY id LIMIT ?2"
            }
            Sweep::WithEvents => {
                "SELECT l.id FROM leads l JOIN lifecycle c ON c.lead_id = l.id
                 WHERE l.merged_into IS NULL AND l.id > ?1
                   AND json_extract(c.state, '$.events') != '{}'
                 ORDER BY l.id LIMIT ?2"
            }
        };
        let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let ids: Vec<String> = tx
            .prepare_cached(sql)?
            .query_map(params![after.unwrap_or(""), limit], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        let mut out = ReevalBatch { persons: ids.len(), ..ReevalBatch::default() };
        for id in &ids {
            let Some(mut lead) = load_lead(tx, id)? else { continue };
            let mut state = load(tx, id)?.unwrap_or_default();
            let (fields_before, state_before) = (lead.fields.clone(), state.clone());
            let entries = reevaluate(
                contract,
                &rules.status_implies_stage,
                &mut state,
                &mut lead.fields,
                &mut lead.provenance,
                now,
            );
            if lead.fields != fields_before {
                write_lead(tx, id, false, &lead.fields, &lead.provenance, now)?;
                replan(tx, id, rules, now)?;
            }
            reference_dates(tx, contract, id, &mut state, now)?;
            if state == state_before {
                continue;
            }
            out.moved += usize::from(state.stage != state_before.stage);
            write(tx, id, &state, now)?;
            for e in &entries {
                audit(tx, now, Some(id), None, e.kind, &e.detail)?;
            }
        }
        out.next = (ids.len() >= batch.max(1)).then(|| ids.last().cloned()).flatten();
        Ok(out)
    })
}

/// `queue_stage_dates` as it was written first (the person loaded whole for their links).
fn reference_dates(
    tx: &Transaction<'_>,
    contract: &Contract,
    lead_id: &str,
    state: &mut PersonLifecycle,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut lead = None;
    for system in contract.mapping.stage_dates.keys() {
        let unsent = unsent_dates(contract, state, system);
        if unsent.is_empty() {
            continue;
        }
        if lead.is_none() {
            lead = load_lead(tx, lead_id)?;
        }
        let Some(l) = &lead else { return Ok(()) };
        let (object_type, remote_id) = match l.links.iter().find(|k| k.system.as_str() == system) {
            Some(k) => (k.remote.object_type.clone(), k.remote.id.clone()),
            None => {
                let create: Option<String> = tx
                    .prepare_cached(
                        "SELECT object_type FROM outbox WHERE lead_id = ?1 AND system = ?2
                         AND remote_id = '' AND state = 'pending'",
                    )?
                    .query_row(params![lead_id, system], |r| r.get(0))
                    .optional()?;
                match create {
                    Some(object_type) => (object_type, String::new()),
                    None => continue,
                }
            }
        };
        let dates: std::collections::BTreeMap<String, DateTime<Utc>> =
            unsent.iter().map(|(st, at)| (st.as_str().to_string(), *at)).collect();
        add_dates(tx, lead_id, system, &object_type, &remote_id, &dates, now)?;
        state.dates_sent.entry(system.clone()).or_default().extend(unsent);
    }
    Ok(())
}

fn change(system: &str, i: usize, rng: &mut impl Rng, at: DateTime<Utc>) -> Change {
    let mut fields: Fields = [(Field::Email, format!("p{i}@x.test"))].into();
    if rng.random_bool(0.7) {
        fields.insert(Field::Title, "CTO".into());
    }
    if rng.random_bool(0.1) {
        fields.insert(Field::EmailOptOut, "true".into());
    }
    let stage = ["subscriber", "lead", "lead", "mql", "sql", "opportunity"][rng.random_range(0..6)];
    fields.insert(Field::LifecycleStage, stage.into());
    if rng.random_bool(0.2) {
        fields.insert(Field::LeadStatus, "working".into());
    }
    let mut custom = std::collections::BTreeMap::new();
    custom.insert("score".to_string(), Some(rng.random_range(0..100u32).to_string()));
    custom.insert(
        "country".to_string(),
        Some(["US", "CA", "GB", "DE", "FR"][rng.random_range(0..5)].to_string()),
    );
    let object_type = if system == "crm" { "Lead" } else { "contact" };
    Change {
        remote: RemoteId { object_type: object_type.into(), id: format!("{system}-{i}") },
        fields,
        ledger_key: None,
        modified_at: at,
        fetched_at: at,
        fate: RecordFate::Live,
        custom,
        last_activity: None,
    }
}

/// A person seeded as the contract bench does (stage and dates, not projected onto the
/// fields), some not placed, some with a date already sent.
fn seeded(i: usize, rng: &mut impl Rng, now: DateTime<Utc>) -> SeedPerson {
    use LifecycleStage::{Disqualified, Lead, Mql, Recycled, Sal, Sql, Subscriber};
    let mut fields: Fields = [(Field::Email, format!("s{i}@x.test"))].into();
    if rng.random_bool(0.7) {
        fields.insert(Field::Title, "Engineer".into());
    }
    if rng.random_bool(0.2) {
        fields.insert(Field::LifecycleStage, "lead".into());
    }
    let mut state = PersonLifecycle::default();
    state.custom.insert("score".into(), rng.random_range(0..100u32).to_string());
    state.custom.insert("country".into(), ["US", "CA", "GB", "DE", "FR"][i % 5].into());
    if rng.random_bool(0.3) {
        let at = now - Duration::days(rng.random_range(0..60));
        state.events.insert("meeting_booked".into(), at);
    }
    let path: &[LifecycleStage] = match rng.random_range(0..8u32) {
        0 => &[Subscriber],
        1 | 2 => &[Lead],
        3 => &[Lead, Mql],
        4 => &[Lead, Mql, Sal],
        5 => &[Lead, Mql, Sal, Sql],
        6 => &[Lead, Mql, Recycled],
        _ => &[Lead, Disqualified],
    };
    let mut at = now - Duration::days(100);
    for s in path {
        state.dates.enter(*s, at);
        at += Duration::days(3);
    }
    state.stage = path.last().copied();
    if rng.random_bool(0.3)
        && let Some(e) = state.dates.get(Mql)
    {
        state.dates_sent.entry("marketing".into()).or_default().insert(Mql, e.last);
    }
    let placed = rng.random_bool(0.85);
    SeedPerson { id: format!("S{i:04}"), fields, lifecycle: placed.then_some(state) }
}

/// The same population, built deterministically in a fresh ledger.
/// The changes are reconciled before the stage dates were mapped, so linked persons and
/// persons with a pending create have dates no system has had (the sweeps after the first
/// find them sent).
fn population(dir: &std::path::Path) -> Ledger {
    let undated = rules_without_dates(OLD);
    let l = Ledger::open(&dir.join("l.db")).expect("open");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let start = t0() - Duration::days(20);
    let mut n = 0usize;
    for round in 0..2i64 {
        for system in ["marketing", "crm"] {
            let at = start + Duration::hours(round * 24 + i64::from(system == "crm"));
            let changes: Vec<Change> = (0..40)
                .filter(|i| system == "marketing" || i % 3 == 0)
                .map(|i| change(system, i, &mut rng, at))
                .collect();
            l.ingest(&SystemName(system.into()), "poll", &changes, None, at).expect("ingest");
            let mut mint = || {
                n += 1;
                format!("P{n:04}")
            };
            l.reconcile_pending(&undated, 1000, at, &mut mint).expect("reconcile");
        }
    }
    let people: Vec<SeedPerson> = (0..60).map(|i| seeded(i, &mut rng, start)).collect();
    l.seed_persons(people, start).expect("seed");
    // A few writes the vendor refused for good (dead letters, as `record_push_results` leaves
    // them): a create and an update with the same fields are not queued again, so the sweep
    // cannot put stage dates on them as it writes them and queues those dates the other way.
    l.conn
        .lock()
        .expect("lock")
        .execute_batch(
            "UPDATE outbox SET state = 'dead', error_code = 'REFUSED'
             WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND remote_id = ''
                          ORDER BY id LIMIT 3)
                OR id IN (SELECT id FROM outbox WHERE state = 'pending' AND remote_id != ''
                          ORDER BY id LIMIT 3)",
        )
        .expect("dead letters");
    l
}

/// Every row the sweep may write, in a stable order.
fn dump(l: &Ledger) -> Vec<String> {
    let conn = l.conn.lock().expect("lock");
    let mut out = Vec::new();
    for sql in [
        "SELECT id, email_norm, fields, provenance, updated_at, merged_into FROM leads ORDER BY id",
        "SELECT lead_id, stage, state, updated_at FROM lifecycle ORDER BY lead_id",
        "SELECT * FROM outbox ORDER BY id",
        "SELECT * FROM audit ORDER BY id",
    ] {
        let mut stmt = conn.prepare(sql).expect("sql");
        let cols = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut row = Vec::with_capacity(cols);
                for c in 0..cols {
                    row.push(match r.get_ref(c)? {
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                        other => format!("{other:?}"),
                    });
                }
                Ok(row.join(" | "))
            })
            .expect("query");
        out.extend(rows.map(|r| r.expect("row")));
    }
    out
}

/// The pipelined sweep, one batch: the scan on a read connection, then the persons it found
/// written in transactions as small as one person (a zero budget), as the daemon's sweep
/// does when its transactions run out of time.
///
/// With `flip`, every hint of the scan is turned over: the writer's hint (whose fields
/// change) must change only how it reads, never what it writes.
fn pipelined_batch(
    l: &Ledger,
    rules: &Rules,
    sweep: Sweep,
    after: Option<&str>,
    batch: usize,
    now: DateTime<Utc>,
    flip: bool,
) -> Result<ReevalBatch> {
    let reader = LedgerReader::open(l.path())?;
    let (mut out, mut ids) = reader.sweep_scan(rules, sweep, after, batch, now)?;
    for p in &mut ids {
        p.fields_change ^= flip;
    }
    let mut rest = &ids[..];
    while !rest.is_empty() {
        let b = l.reevaluate_persons(rules, sweep, rest, std::time::Duration::ZERO, now)?;
        assert_eq!(b.persons, 1, "a zero budget ends the transaction after one person");
        out.moved += b.moved;
        rest = &rest[b.persons..];
    }
    Ok(out)
}

type Batcher =
    dyn Fn(&Ledger, &Rules, Sweep, Option<&str>, usize, DateTime<Utc>) -> Result<ReevalBatch>;

fn run(l: &Ledger, r: &Rules, sweep: Sweep, now: DateTime<Utc>, f: &Batcher) -> Vec<ReevalBatch> {
    let (mut out, mut after) = (Vec::new(), None::<String>);
    loop {
        let b = f(l, r, sweep, after.as_deref(), 7, now).expect("batch");
        after.clone_from(&b.next);
        out.push(b);
        if after.is_none() {
            return out;
        }
    }
}

#[test]
fn the_sweep_writes_what_the_reference_sweep_writes() {
    let (old, new) = (rules(OLD), rules(NEW));
    let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (dc, dd) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (a, b, c) = (population(da.path()), population(db.path()), population(dc.path()));
    let d = population(dd.path());
    assert_eq!(dump(&a), dump(&b), "the population is deterministic");
    assert_eq!(dump(&a), dump(&c), "the population is deterministic");
    assert_eq!(dump(&a), dump(&d), "the population is deterministic");
    // Persons with a create in flight and a stage date it has not carried (the sweep puts the
    // date on the create).
    let creates: Vec<(String, String)> = {
        let conn = b.conn.lock().expect("lock");
        let mut stmt = conn
            .prepare(
                "SELECT lead_id, system FROM outbox WHERE remote_id = '' AND state = 'pending'",
            )
            .expect("sql");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    let contract = new.contract.as_deref().expect("contract");
    let undated_creates = creates
        .iter()
        .filter(|(id, system)| {
            let state = b.lifecycle(id).expect("read").unwrap_or_default();
            !unsent_dates(contract, &state, system).is_empty()
        })
        .count();
    assert!(undated_creates > 2, "{undated_creates} of {} creates", creates.len());
    let fast: &Batcher = &|l, r, s, after, n, now| l.reevaluate_batch(r, s, after, n, now);
    let slow: &Batcher = &reference_batch;
    let piped: &Batcher = &|l, r, s, after, n, now| pipelined_batch(l, r, s, after, n, now, false);
    let flipped: &Batcher = &|l, r, s, after, n, now| pipelined_batch(l, r, s, after, n, now, true);
    let mut moved = 0;
    // The rule change, the same rules again a day later (nobody moves, windows may close),
    // the periodic sweep of persons with events, and a change back.
    for (r, sweep, days) in
        [(&new, Sweep::Everyone, 0), (&new, Sweep::Everyone, 1), (&new, Sweep::WithEvents, 20)]
            .into_iter()
            .chain([(&old, Sweep::Everyone, 21)])
    {
        let now = t0() + Duration::days(days);
        let (ra, rb) = (run(&a, r, sweep, now, slow), run(&b, r, sweep, now, fast));
        let (rc, rd) = (run(&c, r, sweep, now, piped), run(&d, r, sweep, now, flipped));
        assert_eq!(ra, rb, "{sweep:?} at +{days} d");
        assert_eq!(ra, rc, "pipelined, {sweep:?} at +{days} d");
        assert_eq!(ra, rd, "hints turned over, {sweep:?} at +{days} d");
        moved += rb.iter().map(|b| b.moved).sum::<usize>();
        let (x, y, z, w) = (dump(&a), dump(&b), dump(&c), dump(&d));
        assert_eq!(x.len(), y.len(), "{sweep:?} at +{days} d");
        assert_eq!(x.len(), z.len(), "pipelined, {sweep:?} at +{days} d");
        assert_eq!(x.len(), w.len(), "hints turned over, {sweep:?} at +{days} d");
        for (((p, q), o), v) in x.iter().zip(&y).zip(&z).zip(&w) {
            assert_eq!(p, q, "{sweep:?} at +{days} d");
            assert_eq!(p, o, "pipelined, {sweep:?} at +{days} d");
            assert_eq!(p, v, "hints turned over, {sweep:?} at +{days} d");
        }
    }
    // The population exercises what the sweep can write.
    let conn = b.conn.lock().expect("lock");
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect("count") };
    assert!(moved > 5, "moved {moved}");
    assert!(count("SELECT COUNT(*) FROM outbox WHERE stage_dates IS NOT NULL") > 5);
    // Dates went onto creates and onto updates, onto rows written by the sweep and onto rows
    // that carried dates already, and beside dead letters.
    let dated = "SELECT COUNT(*) FROM outbox WHERE stage_dates IS NOT NULL AND state = 'pending'";
    assert!(count(&format!("{dated} AND remote_id = ''")) > 2);
    assert!(count(&format!("{dated} AND remote_id != ''")) > 2);
    assert!(count(&format!("{dated} AND version > 2")) > 2);
    assert!(count("SELECT COUNT(*) FROM outbox WHERE state = 'dead'") == 6);
    assert!(count("SELECT COUNT(*) FROM outbox WHERE remote_id = ''") > 5);
    assert!(count("SELECT COUNT(*) FROM outbox WHERE remote_id != ''") > 5);
    assert!(
        count("SELECT COUNT(*) FROM audit WHERE kind = 'stage' AND detail LIKE '%placed%'") > 3
    );
    assert!(count("SELECT COUNT(*) FROM audit WHERE kind = 'stage_refused'") > 0);
}

/// A change committed between the pipelined sweep's scan and its write is not lost: the
/// persons the scan named are read again in the write transaction, so the result is what
/// the sweep writes after the change (reference: the change, then the reference sweep); and
/// a person the scan found nothing to do for, changed in between, is left as the change left
/// them. (After a first sweep with the new rules, so that the change back to the old ones
/// leaves persons alone; the first sweep writes for nearly everyone.)
#[test]
fn a_change_between_scan_and_write_is_not_lost() {
    let (old, new) = (rules(OLD), rules(NEW));
    let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (a, b) = (population(da.path()), population(db.path()));
    let slow: &Batcher = &reference_batch;
    for l in [&a, &b] {
        run(l, &new, Sweep::Everyone, t0(), slow);
    }
    let now = t0() + Duration::days(1);
    let reader = LedgerReader::open(b.path()).expect("reader");
    let (scanned, ids) = reader.sweep_scan(&old, Sweep::Everyone, None, 1000, now).expect("scan");
    assert!(scanned.next.is_none() && ids.len() >= 3, "one batch: {} to write", ids.len());
    // Between scan and write: persons the scan named are recycled by hand, and so is a person
    // the scan left alone.
    let all: Vec<String> = {
        let conn = b.conn.lock().expect("lock");
        let mut stmt = conn.prepare("SELECT id FROM leads ORDER BY id").expect("sql");
        stmt.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect()
    };
    // Recycling is allowed from these stages.
    let recyclable = |id: &String| {
        matches!(
            b.lifecycle(id).expect("read").and_then(|s| s.stage),
            Some(LifecycleStage::Mql | LifecycleStage::Sal | LifecycleStage::Sql)
        )
    };
    let changed: Vec<&String> =
        ids.iter().map(|p| &p.id).filter(|id| recyclable(id)).take(3).collect();
    let untouched = all
        .iter()
        .find(|id| !ids.iter().any(|p| &p.id == *id) && recyclable(id))
        .expect("a person at mql, sal or sql the scan leaves alone");
    let later = now + Duration::minutes(1);
    let change = |l: &Ledger| {
        let mut applied = 0;
        for id in &changed {
            let out = l
                .named_transition(id, NamedMove::Recycle, "no_response", None, &old, later)
                .expect("recycle");
            applied += usize::from(matches!(out, NamedOutcome::Applied { .. }));
        }
        assert!(applied > 0, "a change to lose");
        let out = l
            .named_transition(untouched, NamedMove::Recycle, "no_response", None, &old, later)
            .expect("recycle");
        assert!(matches!(out, NamedOutcome::Applied { .. }), "{untouched}: {out:?}");
    };
    change(&b);
    let after_change = b.lifecycle(untouched).expect("read");
    let mut rest = &ids[..];
    while !rest.is_empty() {
        let budget = std::time::Duration::from_secs(60);
        let done = b.reevaluate_persons(&old, Sweep::Everyone, rest, budget, now).expect("write");
        rest = &rest[done.persons..];
    }
    assert_eq!(b.lifecycle(untouched).expect("read"), after_change, "left as the change left it");
    change(&a);
    reference_batch(&a, &old, Sweep::Everyone, None, 1000, now).expect("reference");
    let (x, y) = (dump(&a), dump(&b));
    assert_eq!(x.len(), y.len());
    for (p, q) in x.iter().zip(&y) {
        assert_eq!(p, q);
    }
}
