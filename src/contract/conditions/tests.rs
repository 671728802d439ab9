//! Conditions: parsing, errors that say what is wrong, evaluation over facts, and the
//! round trip `parse(display(c)) == c`.

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use LifecycleStage as S;

fn vocab() -> Vocabulary {
    let mut v = Vocabulary::new();
    v.declare_field("score", CustomKind::Number).expect("score");
    v.declare_field("country", CustomKind::Text).expect("country");
    v.declare_event("callback_requested").expect("event");
    v.declare_event("meeting_booked").expect("event");
    v
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).single().expect("valid")
}

fn parse(text: &str) -> Condition {
    Condition::parse(text, &vocab()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn parse_err(text: &str) -> String {
    match Condition::parse(text, &vocab()) {
        Ok(c) => panic!("{text:?} parsed as {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// A person who meets the issue's MQL example.
fn mql_facts() -> Facts {
    let v = vocab();
    let mut f = Facts::new(&v, S::Lead);
    f.fields.insert(Field::Title, "Head of Ops".into());
    assert!(f.set_text(&v, "score", "72"));
    assert!(f.set_text(&v, "country", " ca "));
    f
}

#[test]
fn the_issue_examples_parse_and_print_canonically() {
    for (text, canonical) in [
        ("score >= 50", "score >= 50"),
        ("score>=50", "score >= 50"),
        ("title is set", "title is set"),
        ("title IS NOT SET", "title is not set"),
        ("country in [US, CA, GB]", "country in [US, CA, GB]"),
        ("country not in [\"United States\",CA]", "country not in [\"United States\", CA]"),
        ("stage is sal", "stage is sal"),
        ("stage not in [recycled, disqualified]", "stage not in [recycled, disqualified]"),
        ("event callback_requested", "event callback_requested"),
        ("no event meeting_booked within 1 Day", "no event meeting_booked within 1 day"),
        ("event meeting_booked within 14 days", "event meeting_booked within 14 days"),
        ("lead_source is \"Web form\"", "lead_source is \"Web form\""),
        ("title is \"set\"", "title is \"set\""),
        ("score != -2.5", "score != -2.5"),
        ("score == 3", "score = 3"),
    ] {
        let c = parse(text);
        assert_eq!(c.to_string(), canonical, "{text}");
        assert_eq!(parse(canonical), c, "{canonical}");
    }
    assert!(matches!(parse("title is \"set\""), Condition::TextIs { .. }));
    assert!(matches!(parse("title is set"), Condition::IsSet { negated: false, .. }));
}

#[test]
fn parse_errors_say_what_is_wrong() {
    for (text, expected) in [
        ("", "the condition is empty"),
        ("countri in [US]", "unknown field \"countri\""),
        ("title >= 5", "title is text"),
        ("country > 5", "country is text"),
        ("score is 50", "score is a number"),
        ("score in [1, 2]", "score is a number"),
        ("score >= fifty", "\"fifty\" is not a number"),
        ("score >= inf", "is not a number"),
        ("stage is sales", "unknown stage \"sales\""),
        ("stage is set", "every person has a stage"),
        ("event webinar", "unknown event \"webinar\""),
        ("event meeting_booked within 3 weeks", "unknown unit \"weeks\""),
        ("event meeting_booked within 0 days", "not a whole number above 0"),
        ("no meeting_booked", "expected `no event <name>`"),
        ("title is \"open", "not closed"),
        ("title is \"a\\n\"", "escapes only"),
        ("country in []", "the list is empty"),
        ("country in [US CA]", "expected ',' or ']'"),
        ("country in US", "expected a list"),
        ("title is set please", "unexpected text"),
        ("title equals CEO", "expected `is`, `in` or a comparison"),
        ("score ! 5", "'!' must be followed by '='"),
    ] {
        let got = parse_err(text);
        assert!(got.contains(expected), "{text:?}: {got:?} does not contain {expected:?}");
    }
}

#[test]
fn conditions_evaluate_over_facts() {
    let v = vocab();
    let f = mql_facts();
    let holds = |text: &str| parse(text).holds(&f, now());
    assert!(holds("score >= 50"));
    assert!(holds("score > 71.5"));
    assert!(!holds("score < 72"));
    assert!(holds("score = 72"));
    assert!(holds("title is set"));
    assert!(!holds("phone is set"));
    assert!(holds("phone is not set"));
    assert!(holds("country in [US, CA, GB]"), "trimmed and case-insensitive");
    assert!(!holds("country not in [US, CA, GB]"));
    assert!(holds("country is Ca"));
    assert!(holds("title is \"head of ops\""));
    assert!(!holds("title is not \"HEAD OF OPS\""));
    // A missing value satisfies negations only.
    assert!(!holds("company is Acme"));
    assert!(holds("company is not Acme"));
    assert!(holds("company not in [Acme]"));
    assert!(!holds("company in [Acme]"));
    assert!(holds("stage is lead"));
    assert!(holds("stage is not mql"));
    assert!(holds("stage in [subscriber, lead]"));
    assert!(!holds("event callback_requested"));
    assert!(holds("no event callback_requested"));
    // Blank values are not set; a number field without a number fails comparisons.
    let mut g = Facts::new(&v, S::Lead);
    g.fields.insert(Field::Title, "   ".into());
    assert!(!parse("title is set").holds(&g, now()));
    assert!(!parse("score >= 0").holds(&g, now()));
    assert!(!parse("score != 0").holds(&g, now()));
    assert!(!g.set_text(&v, "score", "lots"), "a number field refuses text");
    assert!(!g.set_text(&v, "nope", "1"), "undeclared names are refused");
    assert!(!parse("score is set").holds(&g, now()));
}

#[test]
fn event_windows_count_back_from_now() {
    let v = vocab();
    let mut f = Facts::new(&v, S::Sal);
    let booked = v.event("meeting_booked").expect("declared");
    f.record_event(booked, now() - TimeDelta::days(20));
    let recent = parse("event meeting_booked within 14 days");
    assert!(!recent.holds(&f, now()));
    assert!(parse("event meeting_booked").holds(&f, now()));
    assert!(parse("no event meeting_booked within 14 days").holds(&f, now()));
    // The latest occurrence counts; an older one recorded later does not replace it.
    f.record_event(booked, now() - TimeDelta::days(14));
    f.record_event(booked, now() - TimeDelta::days(30));
    assert_eq!(f.event(booked), Some(now() - TimeDelta::days(14)));
    assert!(recent.holds(&f, now()), "exactly at the window's edge");
    assert!(!recent.holds(&f, now() + TimeDelta::seconds(1)));
    let hours = parse("event meeting_booked within 336 hours");
    assert!(hours.holds(&f, now()));
    let minutes = parse("event meeting_booked within 20159 minutes");
    assert!(!minutes.holds(&f, now()));
}

#[test]
fn rules_combine_all_any_and_none() {
    let v = vocab();
    let rule = Rule {
        all: vec![parse("stage is sal")],
        any: vec![parse("event callback_requested"), parse("event meeting_booked")],
        none: vec![parse("country is XX")],
    };
    let mut f = Facts::new(&v, S::Sal);
    assert_eq!(rule.unmet(&f, now()), Some(Unmet::Any));
    assert_eq!(
        rule.unmet(&f, now()).map(|u| u.to_string()).as_deref(),
        Some("none of the `any` conditions holds")
    );
    f.record_event(v.event("meeting_booked").expect("declared"), now());
    assert!(rule.holds(&f, now()));
    f.set_text(&v, "country", "xx");
    assert_eq!(
        rule.unmet(&f, now()).map(|u| u.to_string()).as_deref(),
        Some("excluded by: country is XX")
    );
    f.clear(S::Mql);
    assert_eq!(
        rule.unmet(&f, now()).map(|u| u.to_string()).as_deref(),
        Some("not met: stage is sal")
    );
    assert_eq!(f.event(v.event("meeting_booked").expect("declared")), None, "clear forgets");
}

fn issue_rules() -> QualificationRules {
    let mql = Rule {
        all: vec![parse("score >= 50"), parse("title is set"), parse("country in [US, CA, GB]")],
        ..Rule::default()
    };
    let sql = Rule {
        all: vec![parse("stage is sal")],
        any: vec![parse("event callback_requested"), parse("event meeting_booked")],
        ..Rule::default()
    };
    QualificationRules::new([(S::Sql, sql), (S::Mql, mql)]).expect("valid")
}

#[test]
fn advance_picks_the_furthest_forward_stage_whose_rule_holds() {
    let v = vocab();
    let rules = issue_rules();
    let stages: Vec<S> = rules.iter().map(|(s, _)| s).collect();
    assert_eq!(stages, vec![S::Mql, S::Sql], "kept in funnel order");
    let mut f = mql_facts();
    assert_eq!(rules.advance(&f, now()), Some(S::Mql));
    f.stage = S::Subscriber;
    assert_eq!(rules.advance(&f, now()), Some(S::Mql));
    f.stage = S::Recycled;
    assert_eq!(rules.advance(&f, now()), Some(S::Mql), "nurture re-qualifies");
    f.stage = S::Mql;
    assert_eq!(rules.advance(&f, now()), None, "already there");
    f.stage = S::Customer;
    assert_eq!(rules.advance(&f, now()), None, "never backwards");
    assert_eq!(rules.target(&f, now()), Some(S::Mql));
    f.stage = S::Disqualified;
    assert_eq!(rules.advance(&f, now()), None, "disqualified leaves only by reopen");
    f.stage = S::Sal;
    f.record_event(v.event("callback_requested").expect("declared"), now());
    assert_eq!(rules.advance(&f, now()), Some(S::Sql));
    // A lead with the callback but below the score threshold does not move.
    f.stage = S::Lead;
    f.set_text(&v, "score", "10");
    assert_eq!(rules.advance(&f, now()), None);
}

#[test]
fn qualification_rules_are_validated() {
    let one = || Rule { all: vec![parse("title is set")], ..Rule::default() };
    for stage in [S::Subscriber, S::Recycled, S::Disqualified] {
        assert_eq!(
            QualificationRules::new([(stage, one())]).map(|_| ()).map_err(|e| e.0),
            Err(stage)
        );
    }
    assert!(QualificationRules::new([(S::Mql, one()), (S::Mql, one())]).is_err());
    assert!(QualificationRules::new([(S::Mql, Rule::default())]).is_err());
    assert!(QualificationRules::new([(S::Lead, one()), (S::Customer, one())]).is_ok());
}

#[test]
fn vocabulary_names_are_checked() {
    let mut v = Vocabulary::new();
    assert!(
        v.declare_field("title", CustomKind::Text).expect_err("canonical").contains("canonical")
    );
    assert!(v.declare_field("stage", CustomKind::Text).expect_err("reserved").contains("reserved"));
    assert!(v.declare_event("no").is_err());
    assert!(v.declare_field("Score", CustomKind::Number).is_err());
    assert!(v.declare_field("has space", CustomKind::Number).is_err());
    let id = v.declare_field("score", CustomKind::Number).expect("ok");
    assert_eq!(v.field("score"), Some((id, CustomKind::Number)));
    assert!(v.declare_field("score", CustomKind::Text).expect_err("twice").contains("twice"));
    assert!(v.declare_event("demo").is_ok());
    assert!(v.declare_event("demo").is_err());
    assert_eq!(v.fields().count(), 1);
    assert_eq!(v.events().map(|(_, n)| n).collect::<Vec<_>>(), vec!["demo"]);
}

fn text_subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        proptest::sample::select(Field::ALL.to_vec()).prop_map(Subject::Field),
        Just(Subject::Custom {
            id: vocab().field("country").expect("declared").0,
            name: "country".into()
        }),
    ]
}

fn any_subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        text_subject(),
        Just(Subject::Custom {
            id: vocab().field("score").expect("declared").0,
            name: "score".into()
        }),
    ]
}

fn value() -> impl Strategy<Value = Box<str>> {
    prop_oneof![
        "[a-zA-Z0-9_.-]{1,8}",
        "[ -~]{0,8}",
        "\\PC{0,5}",
        proptest::sample::select(vec!["set", "NOT", "in", "is", "stage", "event", "no"])
            .prop_map(str::to_string),
    ]
    .prop_map(|s| s.into_boxed_str())
}

fn condition() -> impl Strategy<Value = Condition> {
    let score = vocab().field("score").expect("declared").0;
    let events = vec![
        ("callback_requested", vocab().event("callback_requested").expect("declared")),
        ("meeting_booked", vocab().event("meeting_booked").expect("declared")),
    ];
    let op = proptest::sample::select(vec![
        CmpOp::Ge,
        CmpOp::Gt,
        CmpOp::Le,
        CmpOp::Lt,
        CmpOp::Eq,
        CmpOp::Ne,
    ]);
    let unit = proptest::sample::select(vec![Unit::Minutes, Unit::Hours, Unit::Days]);
    let stage = proptest::sample::select(LifecycleStage::ALL.to_vec());
    prop_oneof![
        (any_subject(), any::<bool>())
            .prop_map(|(subject, negated)| Condition::IsSet { subject, negated }),
        (text_subject(), value(), any::<bool>())
            .prop_map(|(subject, value, negated)| Condition::TextIs { subject, value, negated }),
        (text_subject(), proptest::collection::vec(value(), 1..4), any::<bool>()).prop_map(
            |(subject, values, negated)| Condition::TextIn {
                subject,
                values: values.into(),
                negated
            }
        ),
        (stage.clone(), any::<bool>())
            .prop_map(|(stage, negated)| Condition::StageIs { stage, negated }),
        (proptest::collection::vec(stage, 1..4), any::<bool>())
            .prop_map(|(s, negated)| Condition::StageIn { stages: s.into(), negated }),
        (op, prop_oneof![-1e12f64..1e12f64, (-1000i32..1000).prop_map(f64::from)]).prop_map(
            move |(op, value)| Condition::Compare { id: score, name: "score".into(), op, value }
        ),
        (
            proptest::sample::select(events),
            proptest::option::of((1u32..100_000, unit)),
            any::<bool>()
        )
            .prop_map(|((name, id), within, negated)| Condition::Event {
                id,
                name: name.into(),
                within: within.map(|(amount, unit)| Window { amount, unit }),
                negated,
            }),
    ]
}

proptest! {
    #[test]
    fn parse_of_display_is_identity(c in condition()) {
        let text = c.to_string();
        let back = Condition::parse(&text, &vocab());
        prop_assert_eq!(back.as_ref(), Ok(&c), "text: {}", text);
    }

    /// Whatever the text, parsing never panics, and what parses prints to a fixed point.
    #[test]
    fn parse_never_panics_and_display_is_a_fixed_point(text in "[ -~]{0,40}") {
        if let Ok(c) = Condition::parse(&text, &vocab()) {
            let canonical = c.to_string();
            prop_assert_eq!(Condition::parse(&canonical, &vocab()), Ok(c));
        }
    }
}
