//! Tests of the matching engine: rules, scores, blocking and batch pairs.

use super::*;

fn m() -> Matcher {
    Matcher::default()
}

#[derive(Default, Clone, Copy)]
struct P {
    email: Option<&'static str>,
    first: Option<&'static str>,
    last: Option<&'static str>,
    company: Option<&'static str>,
    phone: Option<&'static str>,
    street: Option<&'static str>,
    city: Option<&'static str>,
    postcode: Option<&'static str>,
}

fn prof(p: P) -> Profile {
    m().profile(&Parts {
        email: p.email,
        first_name: p.first,
        last_name: p.last,
        company: p.company,
        phone: p.phone,
        street: p.street,
        city: p.city,
        postcode: p.postcode,
    })
}

fn person(first: &'static str, last: &'static str) -> P {
    P { first: Some(first), last: Some(last), ..P::default() }
}

/// Score, and check that blocking would have put the two together.
fn scored(a: P, b: P) -> Option<Score> {
    let (pa, pb) = (prof(a), prof(b));
    let s = m().score(&pa, &pb);
    assert_eq!(s, m().score(&pb, &pa), "score must be symmetric");
    s
}

fn shares_block(a: P, b: P) -> bool {
    let (ka, kb) = (m().blocking_keys(&prof(a)), m().blocking_keys(&prof(b)));
    ka.iter().any(|k| kb.contains(k))
}

fn verdict(a: P, b: P) -> Verdict {
    scored(a, b).map_or(Verdict::NoMatch, |s| m().verdict(s.value))
}

#[test]
fn builtin_config_is_valid_and_names_its_rules() {
    let m = Matcher::from_raw(&MatchingRaw::default(), "matching").unwrap();
    assert_eq!(m.rule_name(0), "exact_email");
    assert_eq!(m.rule_name(1), "name_email");
    assert_eq!(m.rule_name(999), "unknown");
    assert_eq!(m.auto_link_threshold(), 0.92);
    assert_eq!(m.review_threshold(), 0.75);
    assert_eq!(m.default_region(), Some(phonenumber::country::Id::US));
    assert_eq!(m.verdict(0.95), Verdict::AutoLink);
    assert_eq!(m.verdict(0.92), Verdict::AutoLink);
    assert_eq!(m.verdict(0.8), Verdict::Review);
    assert_eq!(m.verdict(0.5), Verdict::NoMatch);
}

#[test]
fn config_parses_from_toml_and_errors_name_the_key() {
    let text = r#"
        auto_link_threshold = 0.9
        review_threshold = 0.7
        default_region = "GB"
        max_block_size = 50
        oversized_window = 8
        [email]
        gmail_dots = true
        [[rules]]
        name = "name_company"
        fields = [{ field = "first_name", method = "fuzzy" }, { field = "last_name", method = "fuzzy", threshold = 0.95 }, { field = "company", method = "fuzzy" }]
        [[rules]]
        name = "name_phone"
        fields = [{ field = "first_name", method = "fuzzy" }, { field = "last_name", method = "exact" }, { field = "phone", method = "exact" }]
    "#;
    let raw: MatchingRaw = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    assert_eq!(raw.rules.len(), 2);
    assert!(raw.email.gmail_dots && !raw.email.plus_tags);
    let m = Matcher::from_raw(&raw, "matching").unwrap();
    assert_eq!(m.rule_name(2), "name_phone");
    assert_eq!(m.default_region(), Some(phonenumber::country::Id::GB));
    assert_eq!(m.max_block_size(), 50);
    assert_eq!(m.oversized_window(), 8);

    let err = |f: &dyn Fn(&mut MatchingRaw)| {
        let mut r = raw.clone();
        f(&mut r);
        Matcher::from_raw(&r, "matching").unwrap_err().key
    };
    assert_eq!(
        err(&|r| r.rules[1].fields[0].method = "sloppy".into()),
        "matching.rules[1].fields[0].method"
    );
    assert_eq!(
        err(&|r| r.rules[0].fields[2].field = "title".into()),
        "matching.rules[0].fields[2].field"
    );
    assert_eq!(
        err(&|r| r.rules[0].fields[1].threshold = Some(1.5)),
        "matching.rules[0].fields[1].threshold"
    );
    assert_eq!(
        err(&|r| r.rules[1].fields[2].threshold = Some(0.5)),
        "matching.rules[1].fields[2].threshold"
    );
    assert_eq!(err(&|r| r.rules[1].name = "name_company".into()), "matching.rules[1].name");
    assert_eq!(err(&|r| r.rules[1].name = "exact_email".into()), "matching.rules[1].name");
    assert_eq!(err(&|r| r.rules[0].fields.clear()), "matching.rules[0].fields");
    assert_eq!(
        err(&|r| r.rules[0].fields[1].field = "first_name".into()),
        "matching.rules[0].fields[1].field"
    );
    assert_eq!(err(&|r| r.review_threshold = 0.95), "matching.review_threshold");
    assert_eq!(err(&|r| r.auto_link_threshold = 0.0), "matching.auto_link_threshold");
    assert_eq!(err(&|r| r.auto_link_threshold = 1.01), "matching.auto_link_threshold");
    assert_eq!(err(&|r| r.default_region = "ZZ".into()), "matching.default_region");
    assert_eq!(err(&|r| r.max_block_size = 1), "matching.max_block_size");
    assert_eq!(err(&|r| r.rules[0].max_score = Some(0.0)), "matching.rules[0].max_score");
    let none = {
        let mut r = raw.clone();
        r.default_region = String::new();
        r
    };
    assert_eq!(Matcher::from_raw(&none, "m").unwrap().default_region(), None);

    let unknown = "[email]\ngmail_dot = true\n";
    let bad: Result<MatchingRaw, _> = config::Config::builder()
        .add_source(config::File::from_str(unknown, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize();
    assert!(bad.is_err(), "unknown keys are refused");
}

#[test]
fn profiles_normalise_and_never_debug_print_values() {
    let p = prof(P {
        email: Some(" Bob.Smith@ACME.com "),
        first: Some("Bob"),
        last: Some("Smith"),
        company: Some("Acme, Inc."),
        phone: Some("(415) 555-2671"),
        street: Some("1 Main Street"),
        city: Some("San Francisco"),
        postcode: Some("94105-1234"),
    });
    assert_eq!(p.email(), Some("bob.smith@acme.com"));
    assert_eq!(p.email_domain(), Some("acme.com"));
    assert_eq!(p.first(), Some("bob"));
    assert_eq!(p.first_canonical(), Some("robert"));
    assert_eq!(p.last(), Some("smith"));
    assert_eq!(p.company(), Some("acme"));
    assert_eq!(p.phone(), Some("+14155552671"));
    assert_eq!(p.street(), Some("1 main st"));
    assert_eq!(p.city(), Some("san francisco"));
    assert_eq!(p.postcode(), Some("94105"));
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("smith") && !dbg.contains("415") && dbg.contains("email"), "{dbg}");
    let parts = Parts { email: Some("secret@acme.com"), ..Parts::default() };
    assert_eq!(format!("{parts:?}"), "Parts { present: [\"email\"] }");
    let q = prof(person("Robert", "Smith"));
    assert_eq!(q.first_canonical(), Some("robert"));
    assert_eq!(q.company(), None);
    assert!(prof(P::default()).is_empty());
    let huge = "x".repeat(5000);
    let h =
        m().profile(&Parts { first_name: Some(&huge), last_name: Some(&huge), ..Parts::default() });
    assert_eq!(h.first().map(str::len), Some(255));
    assert_eq!(h.last().map(str::len), Some(255));
}

#[test]
fn profile_of_reads_canonical_fields() {
    let mut f = Fields::new();
    f.insert(Field::Email, "Jane@Example.com".into());
    f.insert(Field::FirstName, "Jane".into());
    f.insert(Field::Phone, "+44 20 7946 0958".into());
    f.insert(Field::Title, "CTO".into());
    let p = m().profile_of(&f);
    assert_eq!(p.email(), Some("jane@example.com"));
    assert_eq!(p.first(), Some("jane"));
    assert_eq!(p.last(), None);
    assert_eq!(p.phone(), Some("+442079460958"));
}

#[test]
fn exact_email_links_whatever_the_names() {
    let a = P { email: Some("jane@acme.com"), ..person("Jane", "Doe") };
    let b = P { email: Some(" JANE@acme.com"), ..P::default() };
    let s = scored(a, b).unwrap();
    assert_eq!((s.value, s.rule.as_str()), (1.0, "exact_email"));
    assert!(shares_block(a, b));
}

#[test]
fn email_variants_match_with_the_names() {
    let a = P { email: Some("jane.doe@gmail.com"), ..person("Jane", "Doe") };
    for e in ["janedoe@gmail.com", "jane.doe+news@gmail.com", "jane.doe@googlemail.com"] {
        let b = P { email: Some(e), ..person("Jane", "Doe") };
        let s = scored(a, b).unwrap();
        assert_eq!(s.rule, "name_email", "{e}");
        assert_eq!(m().verdict(s.value), Verdict::AutoLink, "{e}: {}", s.value);
        assert!(shares_block(a, b), "{e}");
    }
    // The same variant without matching names is not enough.
    let b = P { email: Some("janedoe@gmail.com"), ..person("Mark", "Doe") };
    assert_eq!(verdict(a, b), Verdict::NoMatch);
}

#[test]
fn nicknames_match() {
    let co = |p: P| P { company: Some("Acme Inc"), ..p };
    for (x, y) in [
        ("Robert", "Bob"),
        ("William", "Bill"),
        ("Elizabeth", "Liz"),
        ("Katherine", "Kathy"),
        ("Stephen", "Steve"),
    ] {
        let (a, b) = (co(person(x, "Smith")), co(person(y, "Smith")));
        let s = scored(a, b).unwrap();
        assert_eq!(s.rule, "name_company");
        assert_eq!(m().verdict(s.value), Verdict::AutoLink, "{x}/{y}: {}", s.value);
        assert!(shares_block(a, b), "{x}/{y}");
    }
}

#[test]
fn typos_in_names_still_match() {
    let co = |p: P| P { company: Some("Globex Corporation"), phone: Some("415-555-2671"), ..p };
    for (a, b) in [
        (person("Jonathan", "Smith"), person("Jonathon", "Smith")),
        (person("Katherine", "Smith"), person("Katherine", "Smyth")),
        (person("Michael", "Anderson"), person("Micheal", "Andersen")),
        (person("Thomas", "Kowalski"), person("Thomas", "Kowalsky")),
        (person("Sarah", "Johnson"), person("Sarah", "Jonhson")),
    ] {
        let (a, b) = (co(a), co(b));
        let s = scored(a, b).unwrap();
        assert!(m().verdict(s.value) != Verdict::NoMatch, "{:?}", s);
        assert!(shares_block(a, b));
    }
}

#[test]
fn typo_in_first_letter_of_last_name_blocks_through_other_keys() {
    let a =
        P { company: Some("Initech"), phone: Some("212 555 0143"), ..person("Peter", "Gibbons") };
    let b = P {
        company: Some("Initech LLC"),
        phone: Some("+1 (212) 555-0143"),
        ..person("Peter", "Hibbons")
    };
    assert!(shares_block(a, b));
    // Jaro-Winkler forgives a wrong first letter in a long name, but not enough to auto-link.
    assert_eq!(verdict(a, b), Verdict::Review);
}

#[test]
fn transposed_names_score() {
    let a = P { company: Some("Acme"), ..person("John", "Fitzgerald") };
    let b = P { company: Some("ACME Ltd"), ..person("Fitzgerald", "John") };
    let s = scored(a, b).unwrap();
    assert_eq!(s.rule, "name_company");
    assert!(s.value >= 0.9 && s.value < 1.0, "{s:?}");
    assert!(shares_block(a, b));
}

#[test]
fn phone_formats_match() {
    let a = P { phone: Some("(415) 555-2671"), ..person("Ana", "Lopez") };
    for ph in ["+1 415 555 2671", "415.555.2671", "001-415-555-2671", "1 (415) 555 2671"] {
        let b = P { phone: Some(ph), ..person("Ana", "López") };
        let s = scored(a, b).unwrap();
        assert_eq!(
            (s.rule.as_str(), m().verdict(s.value)),
            ("name_phone", Verdict::AutoLink),
            "{ph}"
        );
        assert!(shares_block(a, b));
    }
}

#[test]
fn company_suffixes_and_acronyms_match() {
    let a =
        P { company: Some("International Business Machines Corp."), ..person("Grace", "Hopper") };
    let b = P { company: Some("IBM"), ..person("Grace", "Hopper") };
    assert_eq!(verdict(a, b), Verdict::AutoLink);
    let a = P { company: Some("The Müller Group GmbH"), ..person("Jürgen", "Müller") };
    let b = P { company: Some("Muller Group"), ..person("Jurgen", "Muller") };
    assert_eq!(scored(a, b).unwrap().value, 1.0);
    assert!(shares_block(a, b));
}

#[test]
fn address_rules_match() {
    let a = P {
        street: Some("12 North Oak Avenue"),
        postcode: Some("10001"),
        city: Some("New York"),
        ..person("Liam", "Nguyen")
    };
    let b = P {
        street: Some("12 N Oak Ave."),
        postcode: Some("10001-0001"),
        city: Some("NEW YORK"),
        ..person("Liam", "Nguyen")
    };
    let s = scored(a, b).unwrap();
    assert_eq!((s.value, s.rule.as_str()), (1.0, "name_street_postcode"));
}

#[test]
fn same_domain_different_mailbox_stays_below_auto_link() {
    // name_domain needs both names and the same employer domain.
    let a = P { email: Some("john.smith@initech.com"), ..person("John", "Smith") };
    let b = P { email: Some("jsmith@initech.com"), ..person("John", "Smith") };
    let s = scored(a, b).unwrap();
    assert!(m().verdict(s.value) == Verdict::Review, "{s:?}");
    // Free mail says nothing about an employer.
    let a = P { email: Some("john.smith@gmail.com"), ..person("John", "Smith") };
    let b = P { email: Some("jsmith1970@gmail.com"), ..person("John", "Smith") };
    assert_eq!(verdict(a, b), Verdict::NoMatch);
}

#[test]
fn common_name_with_different_company_and_phone_does_not_match() {
    let a = P { company: Some("Acme"), phone: Some("415 555 2671"), ..person("John", "Smith") };
    let b = P { company: Some("Globex"), phone: Some("212 555 0143"), ..person("John", "Smith") };
    assert!(shares_block(a, b), "they do meet in a block");
    assert_eq!(verdict(a, b), Verdict::NoMatch);
    // Names alone never match.
    assert_eq!(scored(person("John", "Smith"), person("John", "Smith")), None);
}

#[test]
fn conflicting_identifiers_lower_the_score() {
    let base = P { company: Some("Acme"), ..person("John", "Smith") };
    let plain = scored(base, base).unwrap().value;
    let two_phones = scored(
        P { phone: Some("415 555 2671"), ..base },
        P { phone: Some("212 555 0143"), ..base },
    )
    .unwrap()
    .value;
    let two_mailboxes = scored(
        P { email: Some("john.smith@acme.com"), ..base },
        P { email: Some("jane.doe@acme.com"), ..base },
    )
    .unwrap()
    .value;
    assert!(two_phones < plain, "{two_phones} {plain}");
    assert!(two_mailboxes < two_phones, "{two_mailboxes}");
    assert_eq!(m().verdict(two_mailboxes), Verdict::Review);
}

#[test]
fn different_people_with_similar_names_do_not_auto_link() {
    let co = |p: P| P { company: Some("Acme"), ..p };
    for (a, b) in [
        (person("John", "Smith"), person("Jane", "Smith")),
        (person("Maria", "Garcia"), person("Mario", "Garcia")),
        (person("Chris", "Lee"), person("Christina", "Lee")),
        (person("Daniel", "Brown"), person("Daniela", "Brown")),
    ] {
        assert!(verdict(co(a), co(b)) != Verdict::AutoLink, "{:?}", scored(co(a), co(b)));
    }
}

#[test]
fn missing_fields_do_not_fire_rules() {
    let a = P { company: Some("Acme"), ..P { first: Some("John"), ..P::default() } };
    let b = P { company: Some("Acme"), ..person("John", "Smith") };
    assert_eq!(scored(a, b), None);
    assert_eq!(scored(P::default(), P::default()), None);
}

#[test]
fn initials_and_middle_names_go_to_review_or_better() {
    let co = |p: P| P { company: Some("Acme"), ..p };
    assert!(verdict(co(person("J.", "Smith")), co(person("John", "Smith"))) != Verdict::NoMatch);
    assert!(
        verdict(co(person("Mary Ann", "Jones")), co(person("Mary", "Jones"))) != Verdict::NoMatch
    );
}

#[test]
fn soundex_codes() {
    for (n, c) in [
        ("robert", "R163"),
        ("rupert", "R163"),
        ("tymczak", "T522"),
        ("pfister", "P236"),
        ("ashcraft", "A261"),
        ("lee", "L000"),
    ] {
        assert_eq!(soundex(n), c, "{n}");
    }
    assert_eq!(soundex("李小龍"), "李小龍");
    assert_eq!(soundex(""), "");
}

#[test]
fn blocking_keys_are_small_and_transposition_proof() {
    let p = prof(P {
        email: Some("j.smith+x@acme.com"),
        phone: Some("415 555 2671"),
        company: Some("Acme Widgets"),
        ..person("Bob", "Smith")
    });
    let keys = m().blocking_keys(&p);
    assert_eq!(
        keys,
        [
            "e:jsmith@acme.com",
            "p:+14155552671",
            "n:R163|S530",
            "m:R163|smi",
            "l:smith|r",
            "c:acme|s",
            "d:acme.com|s"
        ]
    );
    let t = prof(person("Smith", "Robert"));
    assert!(m().blocking_keys(&t).contains(&"n:R163|S530".to_string()));
    assert!(m().blocking_keys(&prof(P::default())).is_empty());
}

fn batch(rows: &[P]) -> Vec<Profile> {
    rows.iter().map(|p| prof(*p)).collect()
}

#[test]
fn candidate_pairs_find_duplicates_once_each() {
    let rows = batch(&[
        P {
            email: Some("ann@acme.com"),
            company: Some("Acme"),
            phone: Some("415 555 2671"),
            ..person("Ann", "Lee")
        },
        P {
            email: Some("ANN@acme.com"),
            company: Some("Acme Inc"),
            phone: Some("4155552671"),
            ..person("Ann", "Lee")
        },
        P { company: Some("Globex"), ..person("Bob", "Stone") },
        P { company: Some("Globex LLC"), ..person("Robert", "Stone") },
        P { company: Some("Initech"), ..person("Carl", "Young") },
    ]);
    let out = m().candidate_pairs(&rows);
    let got: Vec<(u32, u32, u16)> = out.pairs.iter().map(|p| (p.a, p.b, p.rule)).collect();
    assert_eq!(got, vec![(0, 1, 0), (2, 3, 3)]);
    assert_eq!(out.stats.rows, 5);
    // Rows 0 and 1 share e:, p:, n:, m:, t:, c:, d: but are compared once.
    assert_eq!(out.stats.comparisons, 2);
    assert_eq!(out.stats.oversized_blocks, 0);
    assert!(out.stats.blocks >= 8);
}

#[test]
fn oversized_blocks_are_skipped_and_counted() {
    let raw = MatchingRaw { max_block_size: 3, ..MatchingRaw::default() };
    let m = Matcher::from_raw(&raw, "matching").unwrap();
    assert_eq!(m.oversized_window(), 0, "skipping is the default");
    let all_same_email: Vec<Profile> = (0..5)
        .map(|_| m.profile(&Parts { email: Some("info@acme.com"), ..Parts::default() }))
        .collect();
    let out = m.candidate_pairs(&all_same_email);
    assert_eq!(out.stats.oversized_blocks, 1);
    assert_eq!(out.stats.oversized_rows, 5);
    assert_eq!(out.stats.comparisons, 0);
    assert!(out.pairs.is_empty(), "an oversized block is skipped, not compared");
}

#[test]
fn oversized_blocks_are_compared_in_a_window_when_asked() {
    let raw = MatchingRaw { max_block_size: 3, oversized_window: 10, ..MatchingRaw::default() };
    let m = Matcher::from_raw(&raw, "matching").unwrap();
    // Five records with one shared company and last names from a to s: the `c:acme|a.s`
    // block (5 rows) is too big and is windowed; the names differ, so no pair scores.
    let names =
        [("Ann", "Adams"), ("Ben", "Abbots"), ("Cat", "Akins"), ("Dan", "Ayres"), ("Eve", "Ames")];
    let rows: Vec<Profile> = names
        .iter()
        .map(|(f, l)| {
            m.profile(&Parts {
                first_name: Some(f),
                last_name: Some(l),
                company: Some("Acme"),
                ..Parts::default()
            })
        })
        .collect();
    let out = m.candidate_pairs(&rows);
    assert!(out.stats.oversized_blocks >= 1, "{:?}", out.stats);
    assert_eq!(out.stats.comparisons, out.stats.window_comparisons);
    assert!(out.pairs.is_empty());

    // Thirty records with one email: one oversized block of 30 rows. Each row meets the next
    // 10 rows only: 10 * 20 + (9 + 8 + ... + 0) = 245 of the 435 pairs.
    let all_same_email: Vec<Profile> = (0..30)
        .map(|_| m.profile(&Parts { email: Some("info@acme.com"), ..Parts::default() }))
        .collect();
    let out = m.candidate_pairs(&all_same_email);
    assert_eq!(out.stats.oversized_blocks, 1);
    assert_eq!(out.stats.oversized_rows, 30);
    assert_eq!(out.stats.comparisons, 245);
    assert_eq!(out.pairs.len(), 245, "every windowed pair is scored, once");
    assert!(out.pairs.windows(2).all(|w| (w[0].a, w[0].b) < (w[1].a, w[1].b)));
    assert!(out.pairs.iter().all(|p| p.a < p.b && p.score == 1.0));
}

/// Two rows that share two oversized blocks, and meet in both windows, come out once.
#[test]
fn a_pair_in_two_windows_is_reported_once() {
    let raw = MatchingRaw { max_block_size: 2, oversized_window: 10, ..MatchingRaw::default() };
    let m = Matcher::from_raw(&raw, "matching").unwrap();
    // Same email and same phone, three rows each: the e: and p: blocks are both oversized.
    let rows: Vec<Profile> = (0..3)
        .map(|_| {
            m.profile(&Parts {
                email: Some("info@acme.com"),
                phone: Some("+1 415 555 2671"),
                ..Parts::default()
            })
        })
        .collect();
    let out = m.candidate_pairs(&rows);
    assert_eq!(out.stats.oversized_blocks, 2);
    assert_eq!(out.stats.comparisons, 6, "three pairs, met in two windows");
    let got: Vec<(u32, u32)> = out.pairs.iter().map(|p| (p.a, p.b)).collect();
    assert_eq!(got, vec![(0, 1), (0, 2), (1, 2)]);
}

/// Batch matching splits `l:` and `c:` by two letters of a name; a typo after the first
/// letter keeps one of the two codes, and the daemon's keys stay as they were.
#[test]
fn batch_keys_split_coarse_blocks_and_survive_one_typo() {
    assert_eq!(letter_pairs("smith"), ["sm".to_string(), "s.h".to_string()]);
    assert_eq!(letter_pairs("van dijk"), ["va".to_string(), "v.k".to_string()]);
    assert_eq!(letter_pairs("j"), ["j".to_string(), "j.".to_string()]);
    assert_eq!(first_two_tokens("silver lake marketing group"), "silver lake");
    assert_eq!(
        (first_two_tokens("acme widgets"), first_two_tokens("acme")),
        ("acme widgets", "acme")
    );
    let keys = |p: &Profile| {
        let mut v = Vec::new();
        let mut buf = String::new();
        for_each_batch_key(p, &mut buf, |k| v.push(k.to_string()));
        v
    };
    let bob = prof(P {
        email: Some("j.smith+x@acme.com"),
        phone: Some("415 555 2671"),
        company: Some("Acme Widgets"),
        ..person("Bob", "Smith")
    });
    assert_eq!(
        keys(&bob),
        [
            "e:jsmith@acme.com",
            "p:+14155552671",
            "n:R163|S530",
            "m:R163|smi",
            "d:acme.com|s",
            "l:smith|bo",
            "l:smith|b.b",
            "l:smith|ro",
            "l:smith|r.t",
            "c:acme widgets|sm",
            "c:acme widgets|s.h"
        ]
    );
    // A typo in the first name's second letter keeps `x.y`; in its last letter, `xy`.
    let shared = |a: &Profile, b: &Profile, kind: &str| {
        let kb = keys(b);
        keys(a).into_iter().any(|k| k.starts_with(kind) && kb.contains(&k))
    };
    let nancy = prof(P { company: Some("Ivory"), ..person("Nancy", "Martin") });
    for typo in ["Nzncy", "Nancu", "Nanct"] {
        assert!(shared(&nancy, &prof(person(typo, "Martin")), "l:"), "{typo}");
    }
    // A nickname the table does not know still meets its full name through `c:`.
    let drew = prof(P { company: Some("Coastal Organics"), ..person("Drew", "Jansen") });
    let andrew = prof(P { company: Some("Coastal Organics Inc"), ..person("Andrew", "Jansen") });
    assert!(shared(&drew, &andrew, "c:"));
    for typo in ["Jamsen", "Jansem"] {
        let t = prof(P { company: Some("Coastal Organics"), ..person("Drew", typo) });
        assert!(shared(&drew, &t, "c:"), "{typo}");
    }
    // No first name: the last name alone.
    assert!(keys(&prof(P { last: Some("Lee"), ..P::default() })).contains(&"l:lee|".into()));
    // The daemon's keys are unchanged (the ledger stores them).
    assert!(m().blocking_keys(&bob).contains(&"l:smith|r".to_string()));
    assert!(m().blocking_keys(&bob).contains(&"c:acme|s".to_string()));
}

#[test]
fn cross_pairs_split_by_set() {
    let a = batch(&[
        P { email: Some("ann@acme.com"), ..person("Ann", "Lee") },
        P { email: Some("zed@acme.com"), ..person("Zed", "Zulu") },
        P { email: Some("zed@acme.com"), ..P::default() },
    ]);
    let b = batch(&[
        P { email: Some("x@y.com"), ..P::default() },
        P { email: Some("Ann@Acme.com"), ..P::default() },
        P { phone: Some("415 555 2671"), ..person("Kim", "Ode") },
        P { phone: Some("+14155552671"), ..person("Kim", "Ode") },
    ]);
    let mut calls = 0;
    let out = m().candidate_pairs_between(&a, &b, &mut |_, _| calls += 1);
    let pairs = |v: &[Pair]| v.iter().map(|p| (p.a, p.b)).collect::<Vec<_>>();
    assert_eq!(pairs(&out.across), vec![(0, 1)]);
    assert_eq!(pairs(&out.within_a), vec![(1, 2)]);
    assert_eq!(pairs(&out.within_b), vec![(2, 3)]);
    assert_eq!(out.stats.rows, 7);
    assert!(calls >= 1);
}

#[test]
fn batch_of_empty_profiles_is_empty() {
    let out = m().candidate_pairs(&[]);
    assert!(out.pairs.is_empty());
    assert_eq!(out.stats, BlockStats::default());
}

#[test]
fn large_batches_split_over_threads_find_every_planted_pair_once() {
    // Enough rows that the index exceeds the single-thread cut-off (50,000 entries).
    let syll = ["ka", "lo", "mi", "nu", "pe", "ri", "so", "tu", "va", "ze"];
    let word = |mut n: usize| -> String {
        let mut s = String::new();
        for _ in 0..4 {
            s.push_str(syll[n % 10]);
            n /= 10;
        }
        s
    };
    let m = m();
    let mut rows = Vec::new();
    for i in 0..9_000usize {
        let (first, last, co) = (word(i), word(i * 7 + 3), word(i * 13 + 5));
        let email = format!("{first}.{last}@{co}.com");
        rows.push(m.profile(&Parts {
            email: Some(&email),
            first_name: Some(&first),
            last_name: Some(&last),
            company: Some(&co),
            ..Parts::default()
        }));
    }
    let planted: Vec<usize> = (0..9_000).step_by(90).collect();
    for &i in &planted {
        let twin = rows[i].clone();
        rows.push(twin);
    }
    let out = m.candidate_pairs(&rows);
    assert!(out.stats.keys >= 50_000, "{:?}", out.stats);
    let want: Vec<(u32, u32)> =
        planted.iter().enumerate().map(|(k, &i)| (i as u32, (9_000 + k) as u32)).collect();
    let got: Vec<(u32, u32)> = out.pairs.iter().map(|p| (p.a, p.b)).collect();
    assert_eq!(got, want);
    assert!(out.pairs.iter().all(|p| p.score == 1.0 && p.rule == 0));
}

/// The profile memo keys values unambiguously: values that concatenate alike, and an absent
/// value beside an empty one, are different keys.
#[test]
fn profile_memo_keys_tell_values_apart() {
    let k = ProfileMemo::key;
    assert_ne!(k(&[Some("ab"), Some("c")]), k(&[Some("a"), Some("bc")]));
    assert_ne!(k(&[None, Some("x")]), k(&[Some(""), Some("x")]));
    assert_ne!(k(&[Some("1:a"), None]), k(&[Some("1"), Some("a")]));
    assert_eq!(k(&[Some("ab"), None]), k(&[Some("ab"), None]));
}

/// `profile_of` answers from its memo exactly what a fresh profile is, for values seen before
/// and for values that differ only where a naive key would join them; and the memo empties
/// itself instead of growing past its bound.
#[test]
fn remembered_profiles_equal_fresh_ones() {
    let matcher = m();
    let fields = |pairs: &[(Field, &str)]| -> Fields {
        pairs.iter().map(|(f, v)| (*f, (*v).to_string())).collect()
    };
    let sets = [
        fields(&[
            (Field::Email, "Ann.Lee+news@Example.com"),
            (Field::FirstName, "Ann"),
            (Field::LastName, "Lee"),
            (Field::Company, "Acme Inc."),
            (Field::Phone, "(415) 555-2671"),
        ]),
        fields(&[(Field::FirstName, "Annl"), (Field::LastName, "ee")]),
        fields(&[(Field::FirstName, "Ann"), (Field::LastName, "Lee")]),
        fields(&[(Field::LastName, "Lee"), (Field::Phone, "+44 20 7946 0958")]),
    ];
    for round in 0..2 {
        for f in &sets {
            let get = |x: Field| f.get(&x).map(String::as_str);
            let fresh = matcher.profile(&Parts {
                email: get(Field::Email),
                first_name: get(Field::FirstName),
                last_name: get(Field::LastName),
                company: get(Field::Company),
                phone: get(Field::Phone),
                ..Parts::default()
            });
            assert_eq!(matcher.profile_of(f), fresh, "round {round}");
        }
    }
    let memo = ProfileMemo::default();
    for i in 0..=PROFILE_MEMO_MAX {
        memo.put(i.to_string(), &Profile::default());
    }
    assert!(memo.0.lock().expect("memo lock").len() <= PROFILE_MEMO_MAX);
}

#[test]
fn namesakes_with_name_made_mailboxes_at_two_employers_do_not_match() {
    // What any two John Smiths get: the local part says nothing beyond the names.
    let a = P {
        email: Some("j.smith@legacytech.example"),
        company: Some("Legacy Technologies Partners Inc."),
        phone: Some("842 555 0127"),
        ..person("John", "Smith")
    };
    let b = P {
        email: Some("JSMITH@KEYSTONEFOODS.EXAMPLE"),
        company: Some("Keystone Foods Services Corp"),
        phone: Some("987 555 0187"),
        ..person("John", "Smith")
    };
    assert!(shares_block(a, b));
    assert_eq!(verdict(a, b), Verdict::NoMatch, "{:?}", scored(a, b));
    // German transliteration is still made of the names.
    let a = P { email: Some("thomas.mueller@gmail.com"), ..person("Thomas", "Müller") };
    let b = P { email: Some("thomas.mueller@web.de"), ..person("Thomas", "Müller") };
    assert_eq!(verdict(a, b), Verdict::NoMatch, "{:?}", scored(a, b));
    // Squashed as a whole: `emmaevans` is Emma Evans, not a German `ä`.
    let a = P { email: Some("emmaevans@meridian.example"), ..person("Emma", "Evans") };
    let b = P { email: Some("emma.evans@lunar.example"), ..person("Emma", "Evans") };
    assert_eq!(verdict(a, b), Verdict::NoMatch, "{:?}", scored(a, b));
    // A local part with more than the names in it still counts across providers.
    let a = P { email: Some("jsmith1984@gmail.com"), ..person("John", "Smith") };
    let b = P { email: Some("jsmith1984@yahoo.com"), ..person("John", "Smith") };
    assert_eq!(verdict(a, b), Verdict::Review, "{:?}", scored(a, b));
}

#[test]
fn numbered_mailboxes_are_two_people() {
    let a = P { email: Some("priya.patel@googlemail.com"), ..person("Priya", "Patel") };
    let b = P { email: Some("priya.patel2@gmail.com"), ..person("Priya", "Patel") };
    assert_eq!(verdict(a, b), Verdict::NoMatch, "{:?}", scored(a, b));
    let a = P { email: Some("stella.smith269@gmail.com"), ..person("Stella", "Smith") };
    let b = P { email: Some("stella.smith589@gmail.com"), ..person("Stella", "Smith") };
    assert_eq!(verdict(a, b), Verdict::NoMatch, "{:?}", scored(a, b));
    let a = P { email: Some("donna.dabrowski@gmail.com"), ..person("Donna", "Dąbrowski") };
    let b = P { email: Some("donna_dabrowski65@gmail.com"), ..person("Donna", "Dabrowski") };
    assert_eq!(verdict(a, b), Verdict::NoMatch, "{:?}", scored(a, b));
    // A typo in a mailbox is still close.
    let a = P { email: Some("priya.patel@acme.example"), ..person("Priya", "Patel") };
    let b = P { email: Some("priya.patle@acme.example"), ..person("Priya", "Patel") };
    assert!(verdict(a, b) != Verdict::NoMatch, "{:?}", scored(a, b));
}

#[test]
fn companies_that_share_only_generic_words_are_two_companies() {
    for (x, y) in [
        ("Ruby Construction Associates", "Hawk Construction Associates"),
        ("Riverside Telecom Partners", "Riverside Software Services"),
        ("Stark Solutions Partners", "Stark Logistics"),
        ("Acme Brewing Associates", "Scarlet Media Associates AG"),
    ] {
        let a = P { company: Some(x), ..person("James", "Williams") };
        let b = P { company: Some(y), ..person("James", "Williams") };
        assert_eq!(verdict(a, b), Verdict::NoMatch, "{x} / {y}: {:?}", scored(a, b));
    }
    // Suffixes, a dropped word and a typo still match.
    for (x, y) in [
        ("Riverside Telecom Partners LLP", "RIVERSIDE TELECOM PARTNERS"),
        ("Riverside Telecom Partners", "Riverside Telecom"),
        ("Riverside Telecom Partners", "Riverside Telecomm Partners"),
    ] {
        let a = P { company: Some(x), ..person("James", "Williams") };
        let b = P { company: Some(y), ..person("James", "Williams") };
        assert_eq!(verdict(a, b), Verdict::AutoLink, "{x} / {y}: {:?}", scored(a, b));
    }
}

#[test]
fn streets_with_different_house_numbers_are_two_addresses() {
    let a =
        P { street: Some("86 Kings Cl"), city: Some("London"), ..person("Jessica", "Williams") };
    let b =
        P { street: Some("62 Kings Close"), city: Some("London"), ..person("Jessica", "Williams") };
    assert_eq!(verdict(a, b), Verdict::NoMatch, "{:?}", scored(a, b));
    let b =
        P { street: Some("86 Kings Close"), city: Some("London"), ..person("Jessica", "Williams") };
    assert!(verdict(a, b) != Verdict::NoMatch, "{:?}", scored(a, b));
}
