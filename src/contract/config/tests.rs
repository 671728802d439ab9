//! The contract configuration: the shipped example parses into what it says, defaults match
//! the issue, errors name the key; and one person walks the whole contract built from it.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use super::*;
use crate::contract::conditions::Facts;
use crate::contract::lifecycle::{How, Source, StageDates, Via};
use crate::contract::sla::{SlaAction, SlaClock, TouchKind};
use crate::domain::Field;

const EXAMPLE: &str = include_str!("../../../config/contract.example.toml");

#[derive(Deserialize)]
struct Wrapper {
    contract: ContractRaw,
}

/// Read TOML the way `Settings::load` does (the `config` crate).
fn raw(toml: &str) -> Result<ContractRaw, String> {
    config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Wrapper>())
        .map(|w| w.contract)
        .map_err(|e| e.to_string())
}

fn contract(toml: &str) -> Result<Contract, KeyError> {
    raw(toml).expect("parses as TOML").validate("contract")
}

fn key_err(toml: &str) -> KeyError {
    match contract(toml) {
        Ok(_) => panic!("accepted: {toml}"),
        Err(e) => e,
    }
}

#[test]
fn the_example_parses_into_what_it_says() {
    let c = contract(EXAMPLE).expect("example is valid");
    assert_eq!(c.vocabulary.field("score").map(|f| f.1), Some(CustomKind::Number));
    assert!(c.vocabulary.event("meeting_booked").is_some());
    let stages: Vec<LifecycleStage> = c.rules.iter().map(|(s, _)| s).collect();
    assert_eq!(stages, vec![LifecycleStage::Mql, LifecycleStage::Sql]);
    let mql = c.rules.rule(LifecycleStage::Mql).expect("mql rule");
    let texts: Vec<String> = mql.all.iter().map(ToString::to_string).collect();
    assert_eq!(texts, ["score >= 50", "title is set", "country in [US, CA, GB]"]);
    assert!(!c.table.forward().allows(LifecycleStage::Sal, Source::Rule));
    assert!(c.table.forward().allows(LifecycleStage::Sal, Source::Reported));
    assert!(c.table.has_reason(NamedMove::Recycle, "sla_expired"));
    assert_eq!(c.calendar.time_zone(), chrono_tz::Europe::Berlin);
    assert!(!c.calendar.is_working_day(NaiveDate::from_ymd_opt(2025, 12, 25).expect("date")));
    let sla = c.sla.expect("sla configured");
    assert_eq!(sla.first_touch, TimeDelta::hours(4));
    assert_eq!(sla.grace, TimeDelta::hours(2));
    assert_eq!(sla.recycle_after, Some(TimeDelta::hours(16)));
    assert_eq!(sla.reassign_to, None);
    assert_eq!((sla.disqualify_min_attempts, sla.disqualify_min_days), (3, 7));
}

#[test]
fn an_empty_section_is_the_default_contract_without_clocks() {
    let c = contract("[contract]\n").expect("empty is valid");
    assert_eq!(c.table, TransitionTable::default());
    assert!(c.rules.is_empty());
    assert_eq!(c.calendar, BusinessCalendar::default());
    assert!(c.sla.is_none());
    // The example's named transitions are the defaults written out.
    let example = contract(EXAMPLE).expect("valid");
    for name in NamedMove::ALL {
        assert_eq!(example.table.named(name), c.table.named(name), "{name}");
    }
}

#[test]
fn errors_name_the_key_and_the_condition() {
    let cases = [
        (
            "[contract]\nfields = { score = \"number\" }\n[contract.qualification.mql]\nall = [\"score >= 50\", \"countri in [US]\"]",
            "contract.qualification.mql.all[1]",
            "countri in [US]",
        ),
        (
            "[contract.qualification.sql]\nany = [\"event demo\"]",
            "contract.qualification.sql.any[0]",
            "unknown event \"demo\"",
        ),
        (
            "[contract.qualification.mqll]\nall = [\"title is set\"]",
            "contract.qualification.mqll",
            "unknown stage",
        ),
        (
            "[contract.qualification.recycled]\nall = [\"title is set\"]",
            "contract.qualification.recycled",
            "rules move people",
        ),
        ("[contract.qualification.mql]\n", "contract.qualification.mql", "at least one condition"),
        ("[contract]\nfields = { score = \"int\" }", "contract.fields.score", "unknown type"),
        ("[contract]\nfields = { title = \"text\" }", "contract.fields.title", "canonical"),
        ("[contract]\nevents = [\"ok\", \"Bad Name\"]", "contract.events[1]", "lowercase"),
        (
            "[contract.lifecycle]\nforward = { mql = [\"magic\"] }",
            "contract.lifecycle.forward.mql",
            "unknown source",
        ),
        (
            "[contract.lifecycle]\nforward = { recycled = [\"rule\"] }",
            "contract.lifecycle.forward.recycled",
            "named transitions",
        ),
        (
            "[contract.lifecycle.recycle]\nmoves = [\"mql to recycled\"]\nreasons = [\"x\"]",
            "contract.lifecycle.recycle.moves[0]",
            "not like",
        ),
        (
            "[contract.lifecycle.recycle]\nmoves = [\"mql -> lead\"]\nreasons = [\"x\"]",
            "contract.lifecycle.recycle",
            "does not fit",
        ),
        (
            "[contract.lifecycle.disqualify]\nmoves = [\"mql -> disqualified\"]\nreasons = [\"No Budget\"]",
            "contract.lifecycle.disqualify.reasons[0]",
            "lowercase",
        ),
        (
            "[contract.lifecycle.reopen]\nmoves = [\"disqualified -> lead\"]\nreasons = []",
            "contract.lifecycle.reopen",
            "reason code",
        ),
        (
            "[contract.calendar]\ntime_zone = \"Europe/Berlim\"",
            "contract.calendar.time_zone",
            "unknown time zone",
        ),
        (
            "[contract.calendar]\nworking_days = [\"mon\", \"funday\"]",
            "contract.calendar.working_days[1]",
            "unknown day",
        ),
        (
            "[contract.calendar]\nworking_days = []",
            "contract.calendar.working_days",
            "at least one",
        ),
        (
            "[contract.calendar]\nworking_hours = \"17:30-09:00\"",
            "contract.calendar.working_hours",
            "open before close",
        ),
        (
            "[contract.calendar]\nholidays = [\"25/12/2025\"]",
            "contract.calendar.holidays[0]",
            "not a date",
        ),
        (
            "[contract.sla]\nfirst_touch_business_hours = 0",
            "contract.sla.first_touch_business_hours",
            "above 0",
        ),
        (
            "[contract.sla]\nfirst_touch_business_hours = 0.0001",
            "contract.sla.first_touch_business_hours",
            "at least one second",
        ),
        (
            "[contract.sla]\nfirst_touch_business_hours = 4\ngrace_business_hours = -1",
            "contract.sla.grace_business_hours",
            "0 or more",
        ),
        (
            "[contract.sla]\nfirst_touch_business_hours = 4\nrecycle_reason = \"bored\"",
            "contract.sla.recycle_reason",
            "not one of",
        ),
        (
            "[contract.lifecycle.recycle]\nmoves = [\"sql -> recycled\"]\nreasons = [\"sla_expired\"]\n[contract.sla]\nfirst_touch_business_hours = 4\nrecycle_after_business_hours = 8",
            "contract.sla.recycle_after_business_hours",
            "mql -> recycled",
        ),
    ];
    for (toml, key, problem) in cases {
        let e = key_err(toml);
        assert_eq!(e.key, key, "{toml}: {e}");
        assert!(e.problem.contains(problem), "{toml}: {e}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let e = raw("[contract.sla]\nfirst_touch_hours = 4").expect_err("unknown key");
    assert!(e.contains("first_touch_hours"), "{e}");
    let e = raw("[contract]\nstages = []").expect_err("unknown key");
    assert!(e.contains("stages"), "{e}");
}

fn utc(m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, m, d, h, 0, 0).single().expect("valid")
}

/// One person through the contract the example builds: qualifies as MQL by rule, is handed
/// over, is not touched in time, escalates, and is recycled with the SLA reason.
#[test]
fn a_person_walks_the_example_contract() {
    let c = contract(EXAMPLE).expect("valid");
    let sla = c.sla.clone().expect("sla");
    let mut facts = Facts::new(&c.vocabulary, LifecycleStage::Lead);
    facts.fields.insert(Field::Title, "CTO".into());
    assert!(facts.set_text(&c.vocabulary, "score", "80"));
    assert!(facts.set_text(&c.vocabulary, "country", "gb"));
    // Monday 1 December 2025 10:00 UTC (11:00 in Berlin).
    let now = utc(12, 1, 10);
    let target = c.rules.advance(&facts, now).expect("qualifies");
    assert_eq!(target, LifecycleStage::Mql);
    let t = c.table.check(facts.stage, target, How::Rule).expect("forward by rule");
    assert_eq!(t.via, Via::Rule);
    let mut dates = StageDates::default();
    dates.enter(LifecycleStage::Lead, utc(11, 1, 9));
    assert!(dates.apply(&t, now));
    facts.stage = t.to;
    assert_eq!(c.rules.advance(&facts, now), None, "no SQL without sales accepting");
    // A rule may not make the person SAL in this contract; sales reporting it may.
    assert!(c.table.check(LifecycleStage::Mql, LifecycleStage::Sal, How::Rule).is_err());

    let mut clock = SlaClock::start(now, &sla, &c.calendar);
    // 4 business hours from 11:00 Berlin: 15:00 Berlin = 14:00 UTC.
    assert_eq!(clock.due_at, utc(12, 1, 14));
    let mut actions = Vec::new();
    for hour in 10..=23 {
        actions.extend(clock.evaluate(utc(12, 1, hour), &sla));
    }
    for day in 2..=5 {
        for hour in 0..24 {
            actions.extend(clock.evaluate(utc(12, day, hour), &sla));
        }
    }
    let reason = match actions.as_slice() {
        [SlaAction::Breached { .. }, SlaAction::Escalate { .. }, SlaAction::Recycle { reason }] => {
            reason.clone()
        }
        other => panic!("{other:?}"),
    };
    let recycle = c
        .table
        .check(
            facts.stage,
            LifecycleStage::Recycled,
            How::Named { name: NamedMove::Recycle, reason: reason.as_str() },
        )
        .expect("the SLA's reason is a recycle reason");
    assert!(recycle.needs_stage_cleared(), "HubSpot's lifecyclestage must be cleared first");
    // A disqualification instead would have been refused: no attempts were made.
    assert!(
        clock.may_disqualify(utc(12, 5, 12), &sla).is_ok(),
        "a recycled clock no longer governs"
    );
    let fresh = SlaClock::start(now, &sla, &c.calendar);
    assert!(fresh.may_disqualify(utc(12, 5, 12), &sla).is_err());
    let mut late = SlaClock::start(now, &sla, &c.calendar);
    late.touch(TouchKind::Activity, utc(12, 1, 16));
    assert_eq!(late.evaluate(utc(12, 1, 17), &sla).len(), 2, "breached, then touched late");
}
