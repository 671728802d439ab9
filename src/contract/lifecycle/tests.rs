//! The transition table against an independent statement of the default contract: every
//! allowed move works, every other one is refused with the right reason; stage dates are
//! stamped once per entry.

use chrono::TimeZone;

use super::*;
use LifecycleStage as S;

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, day, hour, 0, 0).single().expect("valid date")
}

/// The funnel in order, written out here rather than derived from `funnel_rank`.
const FUNNEL: [S; 7] =
    [S::Subscriber, S::Lead, S::Mql, S::Sal, S::Sql, S::Opportunity, S::Customer];

/// The default table's forward moves, stated independently: any funnel stage to a later one,
/// and recycled to MQL or later.
fn expected_forward(from: S, to: S) -> bool {
    let pos = |s: S| FUNNEL.iter().position(|f| *f == s);
    match (from, pos(to)) {
        (S::Recycled, Some(t)) => t >= 2,
        (_, Some(t)) => pos(from).is_some_and(|f| t > f),
        (_, None) => false,
    }
}

/// The default named moves, written out.
fn expected_named(name: NamedMove) -> Vec<(S, S)> {
    match name {
        NamedMove::Recycle => vec![
            (S::Mql, S::Recycled),
            (S::Sal, S::Recycled),
            (S::Sql, S::Recycled),
            (S::Opportunity, S::Recycled),
        ],
        NamedMove::Disqualify => vec![
            (S::Lead, S::Disqualified),
            (S::Mql, S::Disqualified),
            (S::Sal, S::Disqualified),
            (S::Sql, S::Disqualified),
            (S::Recycled, S::Disqualified),
        ],
        NamedMove::Reopen => vec![(S::Disqualified, S::Lead), (S::Disqualified, S::Recycled)],
    }
}

fn a_reason(name: NamedMove) -> &'static str {
    match name {
        NamedMove::Recycle => "no_response",
        NamedMove::Disqualify => "bad_data",
        NamedMove::Reopen => "re_engaged",
    }
}

#[test]
fn forward_move_count_matches_the_contract() {
    // 7 funnel stages: 21 ordered pairs forward, plus recycled to 5 stages.
    let n = S::ALL
        .iter()
        .flat_map(|f| S::ALL.iter().map(move |t| (*f, *t)))
        .filter(|(f, t)| S::is_forward_move(*f, *t))
        .count();
    assert_eq!(n, 26);
}

#[test]
fn every_rule_or_reported_move_is_allowed_exactly_when_forward() {
    let table = TransitionTable::default();
    for from in S::ALL {
        for to in S::ALL {
            for how in [How::Rule, How::Reported] {
                let got = table.check(from, to, how);
                if from == to {
                    assert_eq!(got, Err(Refusal::SameStage { stage: from }));
                } else if expected_forward(from, to) {
                    let t = got.unwrap_or_else(|r| panic!("{from} -> {to} refused: {r}"));
                    assert_eq!((t.from, t.to, t.reason), (from, to, None));
                    let via = if how == How::Rule { Via::Rule } else { Via::Reported };
                    assert_eq!(t.via, via);
                } else {
                    match got {
                        Err(Refusal::NeedsNamedTransition { from: f, to: t, allowed_by }) => {
                            assert_eq!((f, t), (from, to));
                            let expected: Vec<NamedMove> = NamedMove::ALL
                                .into_iter()
                                .filter(|n| expected_named(*n).contains(&(from, to)))
                                .collect();
                            assert_eq!(allowed_by, expected, "{from} -> {to}");
                        }
                        other => panic!("{from} -> {to} by {how:?}: {other:?}"),
                    }
                }
            }
        }
    }
}

#[test]
fn named_moves_work_only_for_their_pairs_and_reasons() {
    let table = TransitionTable::default();
    for name in NamedMove::ALL {
        let allowed = expected_named(name);
        for from in S::ALL {
            for to in S::ALL {
                let got = table.check(from, to, How::Named { name, reason: a_reason(name) });
                if from == to {
                    assert_eq!(got, Err(Refusal::SameStage { stage: from }));
                } else if allowed.contains(&(from, to)) {
                    let t = got.unwrap_or_else(|r| panic!("{name} {from} -> {to}: {r}"));
                    assert_eq!(t.via, Via::Named(name));
                    assert_eq!(t.reason.as_ref().map(ReasonCode::as_str), Some(a_reason(name)));
                    // The same move with a reason from another list is refused.
                    let other = NamedMove::ALL.into_iter().find(|n| *n != name).expect("3");
                    let bad = table.check(from, to, How::Named { name, reason: a_reason(other) });
                    assert!(
                        matches!(bad, Err(Refusal::UnknownReason { name: n, .. }) if n == name),
                        "{bad:?}"
                    );
                    let empty = table.check(from, to, How::Named { name, reason: "" });
                    assert!(matches!(empty, Err(Refusal::UnknownReason { .. })));
                } else {
                    assert_eq!(got, Err(Refusal::NamedNotAllowed { name, from, to }));
                }
            }
        }
    }
}

#[test]
fn backward_moves_need_a_named_transition() {
    let table = TransitionTable::default();
    let err = table.check(S::Sql, S::Mql, How::Reported).expect_err("backward");
    assert_eq!(
        err.to_string(),
        "sql -> mql is not a forward move: it needs a named transition, and no named \
         transition allows it"
    );
    let err = table.check(S::Sql, S::Recycled, How::Rule).expect_err("off funnel");
    assert_eq!(
        err.to_string(),
        "sql -> recycled is not a forward move: it needs a named transition (recycle) with a \
         reason code"
    );
    let err = table.check(S::Disqualified, S::Customer, How::Reported).expect_err("disq");
    assert!(err.to_string().starts_with("disqualified -> customer is not a forward move"));
    let ok = table
        .check(S::Sql, S::Recycled, How::Named { name: NamedMove::Recycle, reason: "not_ready" })
        .expect("named recycle");
    assert_eq!(ok.reason, ReasonCode::new("not_ready"));
}

#[test]
fn refusal_texts_name_the_rule_not_the_person() {
    let table = TransitionTable::default();
    let err = table
        .check(
            S::Mql,
            S::Recycled,
            How::Named { name: NamedMove::Recycle, reason: "jane@example.com" },
        )
        .expect_err("unknown reason");
    let text = err.to_string();
    assert!(!text.contains("jane"), "{text}");
    assert_eq!(
        text,
        "the recycle transition needs a reason code from its configured list (no_response, \
         not_ready, bad_timing, sla_expired, lost_deal, disqualify_refused)"
    );
    assert!(!format!("{err:?}").contains("jane"));
    let err = table
        .check(S::Customer, S::Recycled, How::Named { name: NamedMove::Recycle, reason: "x" })
        .expect_err("pair");
    assert_eq!(err.to_string(), "the recycle transition does not allow customer -> recycled");
}

#[test]
fn forward_sources_are_configurable_per_stage() {
    let mut forward = ForwardSources::default();
    forward.set(S::Sal, false, true);
    let table = TransitionTable::new(forward, vec![]).expect("valid");
    let err = table.check(S::Mql, S::Sal, How::Rule).expect_err("rules may not accept");
    assert_eq!(err, Refusal::SourceNotAllowed { to: S::Sal, by: Source::Rule });
    assert_eq!(
        err.to_string(),
        "sal may not be entered by a rule move (see contract.lifecycle.forward)"
    );
    assert!(table.check(S::Mql, S::Sal, How::Reported).is_ok());
    assert!(table.check(S::Mql, S::Sql, How::Rule).is_ok());
    // Named transitions keep their defaults when not given.
    assert_eq!(
        table.named(NamedMove::Recycle),
        TransitionTable::default().named(NamedMove::Recycle)
    );
}

#[test]
fn named_rules_are_validated() {
    let codes = vec![ReasonCode::new("why").expect("code")];
    let rule =
        |name, moves: Vec<(S, S)>, reasons: Vec<ReasonCode>| NamedRule { name, moves, reasons };
    let cases = [
        (rule(NamedMove::Recycle, vec![(S::Mql, S::Lead)], codes.clone()), "does not fit"),
        (rule(NamedMove::Disqualify, vec![(S::Mql, S::Recycled)], codes.clone()), "does not fit"),
        (rule(NamedMove::Reopen, vec![(S::Mql, S::Recycled)], codes.clone()), "does not fit"),
        (rule(NamedMove::Reopen, vec![(S::Lead, S::Lead)], codes.clone()), "does not move"),
        (rule(NamedMove::Recycle, vec![(S::Mql, S::Recycled)], vec![]), "reason code"),
    ];
    for (r, problem) in cases {
        let name = r.name;
        let err = TransitionTable::new(ForwardSources::default(), vec![r]).expect_err(problem);
        assert_eq!(err.name, name);
        assert!(err.problem.contains(problem), "{err}");
    }
    let twice = vec![
        rule(NamedMove::Recycle, vec![(S::Mql, S::Recycled)], codes.clone()),
        rule(NamedMove::Recycle, vec![(S::Sql, S::Recycled)], codes.clone()),
    ];
    assert!(TransitionTable::new(ForwardSources::default(), twice).is_err());
    // A valid replacement is used as given.
    let custom = TransitionTable::new(
        ForwardSources::default(),
        vec![rule(NamedMove::Reopen, vec![(S::Customer, S::Opportunity)], codes.clone())],
    )
    .expect("valid");
    assert!(
        custom
            .check(
                S::Customer,
                S::Opportunity,
                How::Named { name: NamedMove::Reopen, reason: "why" }
            )
            .is_ok()
    );
    assert!(
        custom
            .check(S::Disqualified, S::Lead, How::Named { name: NamedMove::Reopen, reason: "why" })
            .is_err()
    );
}

#[test]
fn domain_conversion_round_trips_where_a_stage_exists() {
    for s in Stage::ALL {
        assert_eq!(LifecycleStage::from(s).to_domain(), Some(s));
    }
    assert_eq!(S::Sal.to_domain(), Some(Stage::Mql));
    assert_eq!(S::Recycled.to_domain(), None);
    assert_eq!(S::Disqualified.to_domain(), None);
    for s in S::ALL {
        assert_eq!(S::parse(s.as_str()), Some(s));
        let json = serde_json::to_string(&s).expect("serialize");
        assert_eq!(json, format!("\"{}\"", s.as_str()));
    }
}

#[test]
fn hubspot_stage_is_cleared_only_before_a_backward_push() {
    let table = TransitionTable::default();
    let recycle = How::Named { name: NamedMove::Recycle, reason: "no_response" };
    assert!(table.check(S::Sql, S::Recycled, recycle).expect("ok").needs_stage_cleared());
    assert!(!table.check(S::Lead, S::Mql, How::Rule).expect("ok").needs_stage_cleared());
    // SAL is MQL to the domain: no clearing when sales accepts.
    assert!(!table.check(S::Mql, S::Sal, How::Reported).expect("ok").needs_stage_cleared());
    // Out of recycled there is nothing to clear.
    assert!(!table.check(S::Recycled, S::Mql, How::Rule).expect("ok").needs_stage_cleared());
    let reopen = How::Named { name: NamedMove::Reopen, reason: "re_engaged" };
    assert!(!table.check(S::Disqualified, S::Lead, reopen).expect("ok").needs_stage_cleared());
}

#[test]
fn stage_dates_are_stamped_once_per_entry() {
    let mut d = StageDates::default();
    assert!(d.enter(S::Lead, at(3, 9)));
    assert!(d.enter(S::Mql, at(4, 9)));
    // Entering the stage the person is in is not an entry: nothing moves.
    assert!(!d.enter(S::Mql, at(5, 9)));
    assert_eq!(d.get(S::Mql), Some(&StageEntry { first: at(4, 9), last: at(4, 9), times: 1 }));
    // Recycled, then MQL again: a second entry, first date kept.
    assert!(d.enter(S::Recycled, at(10, 9)));
    assert!(d.enter(S::Mql, at(20, 9)));
    assert_eq!(d.get(S::Mql), Some(&StageEntry { first: at(4, 9), last: at(20, 9), times: 2 }));
    assert_eq!(d.current(), Some(S::Mql));
    // A forward jump stamps only the stage entered.
    assert!(d.enter(S::Opportunity, at(21, 9)));
    assert_eq!(d.get(S::Sal), None);
    assert_eq!(d.get(S::Sql), None);
    let stamped: Vec<S> = d.iter().map(|(s, _)| s).collect();
    assert_eq!(stamped, vec![S::Lead, S::Mql, S::Opportunity, S::Recycled]);
}

#[test]
fn stage_dates_apply_transitions_and_survive_serde() {
    let table = TransitionTable::default();
    let mut d = StageDates::default();
    let t = table.check(S::Lead, S::Mql, How::Rule).expect("forward");
    assert!(d.apply(&t, at(4, 9)));
    assert!(!d.apply(&t, at(4, 10)), "applying the same transition twice stamps once");
    let json = serde_json::to_string(&d).expect("serialize");
    assert!(json.contains("\"mql\""), "{json}");
    let back: StageDates = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, d);
}

#[test]
fn reason_codes_are_plain_identifiers() {
    assert!(ReasonCode::new("no_response").is_some());
    assert!(ReasonCode::new("r2").is_some());
    for bad in ["", "No", "2x", "a b", "a-b", &"x".repeat(65)] {
        assert!(ReasonCode::new(bad).is_none(), "{bad}");
    }
}
