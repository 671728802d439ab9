//! Tests of the generator: determinism, rates, every variant kind and hard negative, that the
//! variant tags tell the truth about the data, bounded state, and the CSV output.

use std::collections::{HashMap, HashSet};

use super::*;

fn opts(people: usize, seed: u64) -> SynthOptions {
    SynthOptions { people, seed, ..SynthOptions::default() }
}

fn csv_of(o: &SynthOptions) -> Vec<u8> {
    let mut out = Vec::new();
    write_csv(generate(o), &mut out).unwrap();
    out
}

/// The clean record of each cluster (first record in system A, or B if only there).
fn clean_by_cluster(records: &[SynthRecord]) -> HashMap<u64, &SynthRecord> {
    let mut out = HashMap::new();
    for r in records.iter().filter(|r| r.variants.is_empty()) {
        out.entry(r.cluster).or_insert(r);
    }
    out
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transposition).
fn osa(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

#[test]
fn same_seed_same_output_other_seed_other_output() {
    let a = csv_of(&opts(3000, 7));
    assert_eq!(a, csv_of(&opts(3000, 7)));
    assert_ne!(a, csv_of(&opts(3000, 8)));
    let two = SynthOptions { systems: Systems::Two { overlap: 0.4 }, ..opts(2000, 7) };
    assert_eq!(generate(&two).collect::<Vec<_>>(), generate(&two).collect::<Vec<_>>());
}

#[test]
fn duplicate_rate_is_honoured() {
    for rate in [0.05, 0.2] {
        let o = SynthOptions { duplicate_rate: rate, ..opts(20_000, 3) };
        let mut per_cluster: HashMap<u64, usize> = HashMap::new();
        for r in generate(&o) {
            *per_cluster.entry(r.cluster).or_default() += 1;
        }
        assert_eq!(per_cluster.len(), 20_000, "every person has a record");
        let duplicated = per_cluster.values().filter(|n| **n > 1).count() as f64 / 20_000.0;
        assert!((duplicated - rate).abs() < 0.01, "rate {rate}: got {duplicated}");
        assert!(per_cluster.values().all(|n| *n <= 4), "at most three extra records");
        let extras: usize = per_cluster.values().map(|n| n - 1).sum();
        let mean_extra = extras as f64 / (duplicated * 20_000.0);
        assert!((mean_extra - 2.0).abs() < 0.15, "1..=3 extras average 2, got {mean_extra}");
    }
}

#[test]
fn zero_duplicate_rate_gives_one_record_per_person() {
    let o = SynthOptions { duplicate_rate: 0.0, ..opts(5000, 1) };
    let clusters: HashSet<u64> = generate(&o).map(|r| r.cluster).collect();
    assert_eq!(clusters.len(), 5000);
    assert_eq!(generate(&o).count(), 5000);
}

#[test]
fn every_variant_kind_occurs_in_ten_thousand_records() {
    let o = SynthOptions { duplicate_rate: 0.3, ..opts(7000, 11) };
    let records: Vec<SynthRecord> = generate(&o).collect();
    assert!((10_000..13_000).contains(&records.len()), "{} records", records.len());
    let mut seen: HashMap<VariantKind, usize> = HashMap::new();
    for r in &records {
        for k in r.variants.iter() {
            *seen.entry(k).or_default() += 1;
        }
    }
    for k in VariantKind::ALL {
        assert!(
            seen.get(&k).copied().unwrap_or(0) >= 5,
            "{} occurs {:?} times",
            k.as_str(),
            seen.get(&k)
        );
    }
    // Several kinds combine on one record.
    assert!(records.iter().any(|r| r.variants.iter().count() >= 3));
    // Every duplicate differs from its clean record in at least one tagged way.
    assert!(records.iter().filter(|r| r.variants.is_empty()).count() == 7000);
}

/// The tags describe what happened: check each kind, on records where it is the only name
/// (or only email, or only phone) change, against the clean record.
#[test]
fn variant_tags_match_the_data() {
    let o = SynthOptions { duplicate_rate: 0.5, missing_rate: 0.0, ..opts(12_000, 5) };
    let records: Vec<SynthRecord> = generate(&o).collect();
    let clean = clean_by_cluster(&records);
    let name_kinds = [
        VariantKind::Nickname,
        VariantKind::Typo,
        VariantKind::TransposedName,
        VariantKind::CaseWhitespace,
        VariantKind::Diacritics,
    ];
    let mut checked: HashMap<VariantKind, usize> = HashMap::new();
    for r in records.iter().filter(|r| !r.variants.is_empty()) {
        let c = clean[&r.cluster];
        let (f, l) = (r.first_name.clone().unwrap(), r.last_name.clone().unwrap());
        let (cf, cl) = (c.first_name.clone().unwrap(), c.last_name.clone().unwrap());
        let only_name: Vec<VariantKind> =
            name_kinds.iter().copied().filter(|k| r.variants.contains(*k)).collect();
        if only_name.is_empty() {
            assert_eq!((&f, &l), (&cf, &cl), "untagged name change in {}", r.id);
        }
        if only_name == [VariantKind::Nickname] {
            assert!(lists().nicknames_of(&cf).contains(&f.as_str()), "{f} is no nickname of {cf}");
            assert_eq!(l, cl);
        }
        if only_name == [VariantKind::Typo] {
            assert_eq!(osa(&f, &cf) + osa(&l, &cl), 1, "typo is one edit: {f} {l} / {cf} {cl}");
        }
        if only_name == [VariantKind::TransposedName] {
            assert_eq!((&f, &l), (&cl, &cf));
        }
        if only_name == [VariantKind::CaseWhitespace] {
            // Upper-case, because "Weiß" upper-cases to "WEISS".
            let norm = |s: &str| s.split_whitespace().collect::<String>().to_uppercase();
            assert_eq!(norm(&f), norm(&cf));
            assert_eq!(norm(&l).replace('-', ""), norm(&cl).replace('-', ""));
            assert!((f.as_str(), l.as_str()) != (cf.as_str(), cl.as_str()));
        }
        if only_name == [VariantKind::Diacritics] {
            let folded = [true, false]
                .iter()
                .any(|g| fold_diacritics(&cf, *g) == f && fold_diacritics(&cl, *g) == l);
            assert!(folded && f.is_ascii() && (f != cf || l != cl));
        }
        if only_name.len() == 1 {
            *checked.entry(only_name[0]).or_default() += 1;
        }

        let (email, clean_email) = (r.email.clone(), c.email.clone().unwrap());
        let lower = email.as_ref().map(|e| e.to_lowercase());
        let (cl_local, cl_domain) = clean_email.split_once('@').unwrap();
        if r.variants.contains(VariantKind::EmailMissing) {
            assert!(email.is_none());
        } else if r.variants.contains(VariantKind::EmailPlusTag) {
            let e = lower.unwrap();
            let (local, domain) = e.split_once('@').unwrap();
            assert_eq!((local.split('+').next().unwrap(), domain), (cl_local, cl_domain));
            assert!(local.contains('+'));
        } else if r.variants.contains(VariantKind::GmailDots) {
            let e = lower.unwrap();
            let (local, domain) = e.split_once('@').unwrap();
            assert_eq!(domain, cl_domain);
            assert!(domain == "gmail.com" || domain == "googlemail.com");
            assert_ne!(local, cl_local);
            assert_eq!(local.replace('.', ""), cl_local.replace('.', ""));
        } else if r.variants.contains(VariantKind::EmailOtherAddress) {
            let e = lower.unwrap();
            let (local, domain) = e.split_once('@').unwrap();
            assert_eq!(domain, cl_domain);
            assert_ne!(local, cl_local);
        } else if r.variants.contains(VariantKind::EmailFreemail) {
            let e = lower.unwrap();
            assert!(!e.ends_with(".example") && cl_domain.ends_with(".example"));
        } else if r.variants.contains(VariantKind::EmailCase) {
            let e = email.unwrap();
            assert_ne!(e, clean_email);
            assert_eq!(e.to_lowercase(), clean_email);
        } else {
            assert_eq!(email.as_ref(), Some(&clean_email), "untagged email change");
        }

        let clean_phone = c.phone.clone().unwrap();
        if r.variants.contains(VariantKind::PhoneMissing) {
            assert!(r.phone.is_none());
        } else if r.variants.contains(VariantKind::PhoneFormat) {
            let p = r.phone.clone().unwrap();
            assert_ne!(p, clean_phone);
            // Same subscriber number whatever the prefix.
            let (d, cd) = (digits(&p), digits(&clean_phone));
            assert_eq!(d[d.len() - 7..], cd[cd.len() - 7..], "{p} vs {clean_phone}");
        } else {
            assert_eq!(r.phone.as_ref(), Some(&clean_phone), "untagged phone change");
        }
        if r.variants.contains(VariantKind::CompanySuffix) && r.company.is_some() {
            let (co, cc) = (
                r.company.clone().unwrap().to_lowercase(),
                c.company.clone().unwrap().to_lowercase(),
            );
            assert_ne!(co, c.company.clone().unwrap());
            let core_len = co.len().min(cc.len()).min(6);
            assert_eq!(co[..core_len], cc[..core_len], "same core name: {co} / {cc}");
        } else if !r.variants.contains(VariantKind::FieldsMissing) {
            assert_eq!(r.company, c.company, "untagged company change");
        }
    }
    for k in name_kinds {
        assert!(
            checked.get(&k).copied().unwrap_or(0) >= 3,
            "{} checked {:?} times",
            k.as_str(),
            checked.get(&k)
        );
    }
}

#[test]
fn every_record_keeps_a_name_and_some_contact_point() {
    let o = SynthOptions { missing_rate: 0.5, duplicate_rate: 0.5, ..opts(5000, 9) };
    for r in generate(&o) {
        assert!(r.first_name.is_some() && r.last_name.is_some());
        assert!(
            r.email.is_some() || r.phone.is_some() || r.company.is_some(),
            "{} says nothing",
            r.id
        );
    }
}

#[test]
fn missing_rate_blanks_fields() {
    let o = SynthOptions { missing_rate: 0.2, duplicate_rate: 0.0, ..opts(10_000, 2) };
    let blank_city = generate(&o).filter(|r| r.city.is_none()).count() as f64 / 10_000.0;
    assert!((blank_city - 0.2).abs() < 0.02, "city blank {blank_city}");
    let o = SynthOptions { missing_rate: 0.0, duplicate_rate: 0.0, ..opts(2000, 2) };
    assert!(generate(&o).all(|r| r.email.is_some() && r.city.is_some() && r.postcode.is_some()));
}

#[test]
fn hard_negatives_exist_and_are_what_they_say() {
    let o = SynthOptions { duplicate_rate: 0.0, missing_rate: 0.0, ..opts(20_000, 4) };
    let records: Vec<SynthRecord> = generate(&o).collect();
    let mut by_name: HashMap<(String, String), Vec<&SynthRecord>> = HashMap::new();
    for r in &records {
        let name = (r.first_name.clone().unwrap(), r.last_name.clone().unwrap());
        by_name.entry(name).or_default().push(r);
    }
    let mut kinds: HashMap<HardNegative, usize> = HashMap::new();
    for r in &records {
        let Some(kind) = r.negative else { continue };
        *kinds.entry(kind).or_default() += 1;
        let name = (r.first_name.clone().unwrap(), r.last_name.clone().unwrap());
        match kind {
            HardNegative::Namesake => {
                // Another person with the same name at another company.
                assert!(
                    by_name[&name].iter().any(|o| o.cluster != r.cluster && o.company != r.company),
                    "namesake {} has no twin elsewhere",
                    r.id
                );
            }
            HardNegative::Family => {
                // Phones are rendered in each person's own style, so compare a household by
                // surname and street, then the phone's digits.
                let relatives: Vec<&SynthRecord> = records
                    .iter()
                    .filter(|o| {
                        o.cluster != r.cluster && o.last_name == r.last_name && o.street == r.street
                    })
                    .filter(|o| {
                        let (a, b) = (
                            digits(o.phone.as_deref().unwrap()),
                            digits(r.phone.as_deref().unwrap()),
                        );
                        a[a.len() - 7..] == b[b.len() - 7..]
                    })
                    .collect();
                assert!(!relatives.is_empty(), "family member {} has no relative", r.id);
                assert!(relatives.iter().all(|o| o.first_name != r.first_name));
                assert!(relatives.iter().all(|o| o.email != r.email));
            }
            HardNegative::CommonName => {
                let n = (name.0.as_str(), name.1.as_str());
                assert!(data::COMMON_NAMES.contains(&n));
            }
        }
    }
    for k in [HardNegative::Namesake, HardNegative::Family, HardNegative::CommonName] {
        assert!(kinds.get(&k).copied().unwrap_or(0) >= 100, "{k:?}: {:?}", kinds.get(&k));
    }
    // John Smith is many people.
    let john_smiths = by_name.get(&("John".to_owned(), "Smith".to_owned())).map_or(0, Vec::len);
    assert!(john_smiths >= 8, "{john_smiths} John Smiths");
}

#[test]
fn no_two_people_share_a_mailbox() {
    let o = SynthOptions { duplicate_rate: 0.3, ..opts(30_000, 6) };
    let mut owner: HashMap<u64, u64> = HashMap::new();
    for r in generate(&o) {
        let Some(e) = r.email else { continue };
        let (local, domain) = e.split_once('@').unwrap();
        let key = mailbox_fingerprint(local, domain);
        let first = *owner.entry(key).or_insert(r.cluster);
        assert_eq!(first, r.cluster, "mailbox shared by two people");
    }
}

#[test]
fn names_include_diacritics_apostrophes_hyphens_and_nicknames() {
    let l = lists();
    assert!(l.first.len() >= 300, "{} first names", l.first.len());
    assert!(l.surnames.len() >= 300, "{} surnames", l.surnames.len());
    for s in ["Müller", "O'Brien", "García-López", "Van der Berg"] {
        assert!(l.surnames.contains(&s), "{s}");
    }
    assert!(l.first.contains(&"José"));
    assert_eq!(l.nicknames_of("Robert"), &["Bob", "Rob", "Bobby"]);
    assert!(l.nicknames.len() >= 80);
    assert!(l.nicknames.iter().all(|(f, _)| l.first.contains(f)));
}

#[test]
fn phone_formats_write_the_same_number() {
    let mut rng = StdRng::seed_from_u64(1);
    for country in [Country::Us, Country::Uk, Country::De, Country::Au] {
        for _ in 0..50 {
            let p = Phone::random(&mut rng, country);
            let rendered: Vec<String> = (0..p.styles()).map(|s| p.render(s)).collect();
            let distinct: HashSet<&String> = rendered.iter().collect();
            assert_eq!(distinct.len(), rendered.len(), "styles differ: {rendered:?}");
            // National significant number: digits without country code or trunk prefix.
            let nsn = |s: &str| {
                let d = digits(s);
                let cc = match country {
                    Country::Us => "1",
                    Country::Uk => "44",
                    Country::De => "49",
                    Country::Au => "61",
                };
                if country == Country::Us {
                    // "+1 415…", "1-415…" and "415…" are the same ten digits.
                    return d[d.len() - 10..].to_owned();
                }
                let international = s.starts_with('+') || s.starts_with("00");
                let d = d.strip_prefix("00").unwrap_or(&d);
                let d = if international { d.strip_prefix(cc).unwrap_or(d) } else { d };
                // The trunk 0, national or written "(0)" inside an international number.
                d.strip_prefix('0').unwrap_or(d).to_owned()
            };
            let first = nsn(&rendered[0]);
            for r in &rendered {
                assert_eq!(nsn(r), first, "{r} vs {}", rendered[0]);
            }
        }
    }
    assert_eq!(Phone::Us { area: 415, line: 132 }.render(0), "(415) 555-0132");
    assert_eq!(Phone::Us { area: 415, line: 132 }.render(1), "+1 415 555 0132");
    assert_eq!(Phone::Us { area: 415, line: 132 }.render(2), "415.555.0132");
    let london = Phone::Uk { area: "20", local: "7946 0958".to_owned() };
    assert_eq!(london.render(1), "+44 20 7946 0958");
    assert_eq!(london.render(0), "020 7946 0958");
    let berlin = Phone::De { area: "30", subscriber: "23125123".to_owned() };
    assert_eq!(berlin.render(1), "+49 30 23125123");
    assert_eq!(berlin.render(2), "030/23125-123");
}

#[test]
fn typos_are_one_edit_after_the_first_letter() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut made = 0;
    for name in ["Müller", "Smith", "O'Brien", "Ng", "Robert", "García-López"] {
        for _ in 0..200 {
            if let Some(t) = typo(&mut rng, name) {
                assert_eq!(osa(&t, name), 1, "{t} from {name}");
                assert_eq!(t.chars().next(), name.chars().next());
                made += 1;
            }
        }
    }
    assert!(made > 900);
    assert_eq!(typo(&mut rng, "Ng"), None);
}

#[test]
fn company_names_are_unique_per_index_and_suffixes_vary() {
    let mut names = HashSet::new();
    for i in 0..20_000 {
        let c = Company::derive(42, i, 20_000);
        assert!(names.insert(c.core.clone()), "company {i} repeats {}", c.core);
        assert!(c.domain.ends_with(".example"));
    }
    let c = Company::derive(42, 3, 100);
    assert_eq!(
        c.render(c.suffix_spelling, false),
        Company::derive(42, 3, 100).render(c.suffix_spelling, false)
    );
}

#[test]
fn two_systems_overlap_and_ids() {
    let o = SynthOptions {
        systems: Systems::Two { overlap: 0.4 },
        duplicate_rate: 0.05,
        ..opts(20_000, 8)
    };
    let records: Vec<SynthRecord> = generate(&o).collect();
    let mut presence: HashMap<u64, (bool, bool)> = HashMap::new();
    for r in &records {
        let e = presence.entry(r.cluster).or_default();
        match r.system {
            System::A => {
                assert!(r.id.starts_with('a'));
                e.0 = true;
            }
            System::B => {
                assert!(r.id.starts_with('b'));
                e.1 = true;
            }
        }
    }
    assert_eq!(presence.len(), 20_000);
    let both = presence.values().filter(|(a, b)| *a && *b).count() as f64 / 20_000.0;
    assert!((both - 0.4).abs() < 0.015, "overlap {both}");
    let ids: HashSet<&String> = records.iter().map(|r| &r.id).collect();
    assert_eq!(ids.len(), records.len(), "ids are unique");

    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (na, nb) = write_csv_split(generate(&o), &mut a, &mut b).unwrap();
    assert_eq!(na + nb, records.len() as u64);
    let count = |v: &[u8]| v.iter().filter(|c| **c == b'\n').count() as u64 - 1;
    assert_eq!((count(&a), count(&b)), (na, nb));
    assert!(a.starts_with(
        b"id,email,first_name,last_name,company,phone,street,city,postcode,true_person\n"
    ));
    assert!(String::from_utf8(b).unwrap().lines().skip(1).all(|l| l.starts_with('b')));
}

#[test]
fn csv_has_the_header_blank_cells_and_truth() {
    let o = SynthOptions { missing_rate: 0.3, ..opts(500, 1) };
    let bytes = csv_of(&o);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert_eq!(text.lines().next().unwrap(), CSV_HEADER.join(","));
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let records: Vec<SynthRecord> = generate(&o).collect();
    assert_eq!(rows.len(), records.len());
    for (row, r) in rows.iter().zip(&records) {
        assert_eq!(&row[0], r.id);
        assert_eq!(&row[5], r.phone.as_deref().unwrap_or(""));
        assert_eq!(row[9].parse::<u64>().unwrap(), r.cluster);
    }
    assert!(rows.iter().any(|row| row[6].is_empty()), "some blank street");
    let truth = crate::identity::quality::read_truth_csv(bytes.as_slice()).unwrap();
    assert_eq!(truth.len(), records.len());
}

/// The state that lives as long as the generator is the window (bounded by `window` plus one
/// person's records) and the mailbox fingerprints (one or two per person); nothing else grows.
#[test]
fn state_stays_bounded_while_streaming() {
    let o = SynthOptions {
        window: 1000,
        duplicate_rate: 0.2,
        systems: Systems::Two { overlap: 0.5 },
        ..opts(60_000, 12)
    };
    let mut g = Generator::new(o);
    let mut n = 0u64;
    let mut max_window = 0;
    while g.next().is_some() {
        n += 1;
        max_window = max_window.max(g.window.len());
        assert!(g.recent.len() <= RECENT);
    }
    assert!(n > 60_000);
    // One person adds at most 2 systems x 4 records.
    assert!(max_window < 1000 + 8, "window grew to {max_window}");
    assert!(g.mailboxes.len() < 60_000 * 2, "{} fingerprints", g.mailboxes.len());
}

/// A person's records are spread out: most duplicates do not sit right after another record
/// of the same person.
#[test]
fn duplicates_are_not_adjacent() {
    let o = SynthOptions { duplicate_rate: 0.3, window: 4096, ..opts(30_000, 13) };
    let clusters: Vec<u64> = generate(&o).map(|r| r.cluster).collect();
    let adjacent = clusters.windows(2).filter(|w| w[0] == w[1]).count();
    let dup_records = clusters.len() - 30_000;
    assert!(dup_records > 10_000);
    assert!(adjacent * 100 < dup_records, "{adjacent} adjacent of {dup_records}");
    // And the window is bounded: a record leaves within a few windows of its person.
    let mut first_seen: HashMap<u64, usize> = HashMap::new();
    let mut max_spread = 0;
    for (i, c) in clusters.iter().enumerate() {
        let f = *first_seen.entry(*c).or_insert(i);
        max_spread = max_spread.max(i - f);
    }
    assert!(max_spread > 4096 / 2, "spread {max_spread}");
}

/// All pairs of ids that share a key, as predicted pairs with score 1.
fn pairs_by_key(
    records: &[SynthRecord],
    key: impl Fn(&SynthRecord) -> Option<String>,
) -> Vec<(String, String, f64)> {
    let mut groups: HashMap<String, Vec<&str>> = HashMap::new();
    for r in records {
        if let Some(k) = key(r) {
            groups.entry(k).or_default().push(&r.id);
        }
    }
    let mut out = Vec::new();
    for ids in groups.values() {
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                out.push(((*a).to_owned(), (*b).to_owned(), 1.0));
            }
        }
    }
    out
}

/// The generated data, scored by the evaluator against two naive matchers: exact email alone
/// never links two people (no shared mailboxes) but misses many duplicates; exact name alone
/// is fooled by the hard negatives. A matcher worth having must beat both.
#[test]
fn naive_matchers_show_the_data_is_neither_trivial_nor_impossible() {
    use crate::identity::quality::evaluate;
    let o = SynthOptions { duplicate_rate: 0.2, ..opts(20_000, 21) };
    let records: Vec<SynthRecord> = generate(&o).collect();
    let truth = || records.iter().map(|r| (r.id.clone(), r.cluster));

    let email = pairs_by_key(&records, |r| r.email.as_ref().map(|e| e.to_lowercase()));
    let q = evaluate(truth(), email.into_iter(), 0.5);
    assert!((q.precision - 1.0).abs() < 1e-12, "exact email precision {}", q.precision);
    assert!(q.recall > 0.5 && q.recall < 0.7, "exact email recall {}", q.recall);

    let name = pairs_by_key(&records, |r| {
        Some(format!("{}|{}", r.first_name.as_deref()?, r.last_name.as_deref()?).to_lowercase())
    });
    let q = evaluate(truth(), name.into_iter(), 0.5);
    assert!(q.precision < 0.7, "exact name precision {}", q.precision);
    assert!(q.recall < 0.6, "exact name recall {}", q.recall);
}
