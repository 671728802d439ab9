//! A seeded, deterministic generator of realistic people with known duplicates, for measuring
//! matching quality and for benchmarks.
//!
//! Every record carries `cluster`, the true person it belongs to. A share of people
//! (`duplicate_rate`) get one to three extra records that differ the way real duplicates do
//! (nicknames, one-character typos, transposed names, case and diacritics, email and phone
//! variants, company suffixes, missing fields), and a share of people (`hard_negative_rate`)
//! are *hard negatives*: different people who look alike (namesakes at other companies,
//! family members sharing a surname, an address and a phone, very common names).
//!
//! The generator streams. People are made one at a time and their records go into a shuffle
//! window of `window` records, from which a random one leaves whenever the window is full, so
//! memory does not grow with the number of records and a person's records are spread out
//! instead of adjacent. The only state that grows is a set of 64-bit fingerprints of the
//! mailboxes handed out (about 16 MB per million people), which keeps two different people from
//! ever sharing a mailbox by accident.
//!
//! Telephone numbers come from ranges reserved for fiction: NANP 555-0100..0199 (any area
//! code), Ofcom's drama ranges, the Bundesnetzagentur's "Drama Numbers" and ACMA's fictitious
//! landline blocks. Those ranges hold about 90,000 numbers in all, so with hundreds of
//! thousands of people unrelated people share a number (a few dozen per German number at a
//! million people); company switchboards are shared on purpose anyway. Company domains use the
//! reserved `.example` top-level domain; free-mail addresses use the real providers' domains
//! because provider rules (Gmail dots) key on them.

mod data;
#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use data::lists;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    /// Number of true people (clusters).
    pub people: usize,
    /// Share of people (per system they are in) who get 1..=3 extra variant records.
    pub duplicate_rate: f64,
    pub seed: u64,
    /// Chance that any one optional field (email, company, phone, street, city, postcode) is
    /// blank on any record, independently of the variants. Email is blanked at a quarter of it.
    pub missing_rate: f64,
    /// Share of people made as a hard negative of someone generated shortly before them.
    pub hard_negative_rate: f64,
    /// One system, or two with a share of people present in both.
    pub systems: Systems,
    /// Records held in the shuffle window (at least 1).
    pub window: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            people: 1000,
            duplicate_rate: 0.05,
            seed: 42,
            missing_rate: 0.05,
            hard_negative_rate: 0.08,
            systems: Systems::One,
            window: 8192,
        }
    }
}

/// Whether records go to one system or are split over two.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Systems {
    One,
    /// `overlap` is the share of people present in both systems; the others are in A or B
    /// with equal chance. A person present in both has one record in each (the copy in B is a
    /// variant drawn with the usual odds, possibly identical), plus duplicates in each system
    /// at `duplicate_rate`.
    Two {
        overlap: f64,
    },
}

/// The system a record belongs to. With [`Systems::One`] every record is in `A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    A,
    B,
}

/// One generated record.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthRecord {
    /// Unique over all systems: `r<n>` with one system, `a<n>` / `b<n>` with two.
    pub id: String,
    /// The true person.
    pub cluster: u64,
    pub system: System,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub phone: Option<String>,
    pub street: Option<String>,
    pub city: Option<String>,
    pub postcode: Option<String>,
    /// How this record was made to differ from the person's clean record. Empty for the clean
    /// record itself (the person's first record), and for a copy in the second system that
    /// came out unchanged; never empty for a duplicate within one system.
    pub variants: VariantSet,
    /// Set on every record of a person generated as a hard negative of an earlier person.
    pub negative: Option<HardNegative>,
}

/// Ways a duplicate differs from the clean record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VariantKind {
    /// First name replaced by a nickname (Robert → Bob).
    Nickname,
    /// One insertion, deletion, substitution or transposition in the first or last name.
    Typo,
    /// First and last name swapped.
    TransposedName,
    /// Names in another case, or with extra spaces.
    CaseWhitespace,
    /// Diacritics stripped or transliterated (Müller → Muller or Mueller).
    Diacritics,
    /// Email in mixed or upper case.
    EmailCase,
    /// Dots added to or removed from a Gmail local part.
    GmailDots,
    /// A `+tag` added to the local part.
    EmailPlusTag,
    /// Another address at the same company domain (jsmith@ for john.smith@).
    EmailOtherAddress,
    /// A personal free-mail address instead of the work one.
    EmailFreemail,
    EmailMissing,
    /// The same number written in another national or international format.
    PhoneFormat,
    PhoneMissing,
    /// Company legal suffix changed or dropped, or the name upper-cased (Acme Inc → ACME, Inc.).
    CompanySuffix,
    /// Street type abbreviated (Street → St, straße → str.).
    AddressFormat,
    /// Company, street, city or postcode blanked.
    FieldsMissing,
}

impl VariantKind {
    pub const ALL: [VariantKind; 16] = [
        VariantKind::Nickname,
        VariantKind::Typo,
        VariantKind::TransposedName,
        VariantKind::CaseWhitespace,
        VariantKind::Diacritics,
        VariantKind::EmailCase,
        VariantKind::GmailDots,
        VariantKind::EmailPlusTag,
        VariantKind::EmailOtherAddress,
        VariantKind::EmailFreemail,
        VariantKind::EmailMissing,
        VariantKind::PhoneFormat,
        VariantKind::PhoneMissing,
        VariantKind::CompanySuffix,
        VariantKind::AddressFormat,
        VariantKind::FieldsMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VariantKind::Nickname => "nickname",
            VariantKind::Typo => "typo",
            VariantKind::TransposedName => "transposed_name",
            VariantKind::CaseWhitespace => "case_whitespace",
            VariantKind::Diacritics => "diacritics",
            VariantKind::EmailCase => "email_case",
            VariantKind::GmailDots => "gmail_dots",
            VariantKind::EmailPlusTag => "email_plus_tag",
            VariantKind::EmailOtherAddress => "email_other_address",
            VariantKind::EmailFreemail => "email_freemail",
            VariantKind::EmailMissing => "email_missing",
            VariantKind::PhoneFormat => "phone_format",
            VariantKind::PhoneMissing => "phone_missing",
            VariantKind::CompanySuffix => "company_suffix",
            VariantKind::AddressFormat => "address_format",
            VariantKind::FieldsMissing => "fields_missing",
        }
    }

    fn bit(self) -> u32 {
        let index = VariantKind::ALL.iter().position(|k| *k == self).unwrap_or(0);
        1 << index
    }
}

/// A set of [`VariantKind`]s, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VariantSet(u32);

impl VariantSet {
    pub fn insert(&mut self, kind: VariantKind) {
        self.0 |= kind.bit();
    }

    pub fn contains(self, kind: VariantKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = VariantKind> {
        VariantKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

/// Why a person who is not a duplicate looks like one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HardNegative {
    /// Same first and last name as an earlier person, at another company.
    Namesake,
    /// Same surname, address and phone as an earlier person (half the time the same company
    /// too), different first name.
    Family,
    /// One of a handful of very common full names (John Smith).
    CommonName,
}

/// Generate records for `opts.people` people, lazily.
///
/// Rates outside 0..=1 are clamped, and a zero window is taken as 1. The same options give
/// the same records in the same order.
pub fn generate(opts: &SynthOptions) -> impl Iterator<Item = SynthRecord> + Send + use<> {
    Generator::new(opts.clone())
}

/// The CSV header [`write_csv`] writes.
pub const CSV_HEADER: [&str; 10] = [
    "id",
    "email",
    "first_name",
    "last_name",
    "company",
    "phone",
    "street",
    "city",
    "postcode",
    "true_person",
];

/// Write records as CSV with [`CSV_HEADER`]; blank fields are empty cells. Returns the number
/// of records written.
///
/// # Errors
/// When writing to `w` fails.
pub fn write_csv(records: impl IntoIterator<Item = SynthRecord>, w: impl Write) -> io::Result<u64> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(CSV_HEADER)?;
    let mut n = 0;
    for r in records {
        write_row(&mut out, &r)?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// Write records of system A to `a` and of system B to `b`, each with [`CSV_HEADER`], for
/// cross-file linking (generate with [`Systems::Two`]). Returns the records written to each.
///
/// # Errors
/// When writing to either writer fails.
pub fn write_csv_split(
    records: impl IntoIterator<Item = SynthRecord>,
    a: impl Write,
    b: impl Write,
) -> io::Result<(u64, u64)> {
    let mut out_a = csv::Writer::from_writer(a);
    let mut out_b = csv::Writer::from_writer(b);
    out_a.write_record(CSV_HEADER)?;
    out_b.write_record(CSV_HEADER)?;
    let (mut na, mut nb) = (0, 0);
    for r in records {
        match r.system {
            System::A => {
                write_row(&mut out_a, &r)?;
                na += 1;
            }
            System::B => {
                write_row(&mut out_b, &r)?;
                nb += 1;
            }
        }
    }
    out_a.flush()?;
    out_b.flush()?;
    Ok((na, nb))
}

fn write_row<W: Write>(out: &mut csv::Writer<W>, r: &SynthRecord) -> io::Result<()> {
    let cell = |v: &Option<String>| v.as_deref().unwrap_or("").to_owned();
    out.write_record([
        r.id.clone(),
        cell(&r.email),
        cell(&r.first_name),
        cell(&r.last_name),
        cell(&r.company),
        cell(&r.phone),
        cell(&r.street),
        cell(&r.city),
        cell(&r.postcode),
        r.cluster.to_string(),
    ])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The generator.

/// People remembered for making hard negatives of them.
const RECENT: usize = 64;

struct Generator {
    opts: SynthOptions,
    rng: StdRng,
    next_person: u64,
    companies: u64,
    recent: VecDeque<Person>,
    /// Fingerprints of canonical mailboxes already given to someone.
    mailboxes: HashSet<u64>,
    window: Vec<SynthRecord>,
    emitted: [u64; 2],
}

impl Iterator for Generator {
    type Item = SynthRecord;

    fn next(&mut self) -> Option<SynthRecord> {
        loop {
            let done = self.next_person >= self.opts.people as u64;
            if self.window.len() >= self.opts.window || (done && !self.window.is_empty()) {
                let i = self.rng.random_range(0..self.window.len());
                let mut r = self.window.swap_remove(i);
                let (slot, prefix) = match (self.opts.systems, r.system) {
                    (Systems::One, _) => (0, 'r'),
                    (Systems::Two { .. }, System::A) => (0, 'a'),
                    (Systems::Two { .. }, System::B) => (1, 'b'),
                };
                self.emitted[slot] += 1;
                r.id = format!("{prefix}{}", self.emitted[slot]);
                return Some(r);
            }
            if done {
                return None;
            }
            self.person();
        }
    }
}

impl Generator {
    fn new(mut opts: SynthOptions) -> Self {
        let unit = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        opts.duplicate_rate = unit(opts.duplicate_rate);
        opts.missing_rate = unit(opts.missing_rate);
        opts.hard_negative_rate = unit(opts.hard_negative_rate);
        if let Systems::Two { overlap } = opts.systems {
            opts.systems = Systems::Two { overlap: unit(overlap) };
        }
        opts.window = opts.window.max(1);
        // About eight people per company on average, skewed so a few companies are large.
        let companies = (opts.people as u64 / 8).max(10);
        Self {
            rng: StdRng::seed_from_u64(opts.seed),
            window: Vec::with_capacity(opts.window.min(1 << 16)),
            opts,
            next_person: 0,
            companies,
            recent: VecDeque::with_capacity(RECENT),
            mailboxes: HashSet::new(),
            emitted: [0, 0],
        }
    }

    /// Make the next person and put their records into the window.
    fn person(&mut self) {
        let cluster = self.next_person;
        self.next_person += 1;
        let person = self.new_person(cluster);
        let presence: &[System] = match self.opts.systems {
            Systems::One => &[System::A],
            Systems::Two { overlap } => {
                if chance(&mut self.rng, overlap) {
                    &[System::A, System::B]
                } else if self.rng.random_bool(0.5) {
                    &[System::A]
                } else {
                    &[System::B]
                }
            }
        };
        for (n, system) in presence.iter().enumerate() {
            let first = if n == 0 {
                self.clean_record(&person, *system)
            } else {
                // The copy in the second system: what a sync or a re-import left, which is
                // often identical and sometimes formatted or spelled differently.
                self.variant_record(&person, *system, false)
            };
            self.window.push(first);
            if chance(&mut self.rng, self.opts.duplicate_rate) {
                let extra = self.rng.random_range(1..=3);
                for _ in 0..extra {
                    let v = self.variant_record(&person, *system, true);
                    self.window.push(v);
                }
            }
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(person);
    }

    fn new_person(&mut self, cluster: u64) -> Person {
        let l = lists();
        let mut negative = None;
        let mut relative: Option<Person> = None;
        if chance(&mut self.rng, self.opts.hard_negative_rate) {
            // Common names are a small share: with 30 of them, each one already gathers a few
            // hundred people per million.
            let roll = self.rng.random_range(0..20);
            negative = Some(if roll < 9 && !self.recent.is_empty() {
                HardNegative::Namesake
            } else if roll < 17 && !self.recent.is_empty() {
                HardNegative::Family
            } else {
                HardNegative::CommonName
            });
            if negative != Some(HardNegative::CommonName) {
                let i = self.rng.random_range(0..self.recent.len());
                relative = self.recent.get(i).cloned();
            }
        }

        let mut company_index = self.pick_company();
        let (first, last) = match (negative, &relative) {
            (Some(HardNegative::Namesake), Some(r)) => {
                // Another company: a namesake at the same company is a harder case than the
                // one this kind stands for.
                while company_index == r.company.index {
                    company_index = (company_index + 1) % self.companies;
                }
                (r.first.clone(), r.last.clone())
            }
            (Some(HardNegative::Family), Some(r)) => {
                if self.rng.random_bool(0.5) {
                    company_index = r.company.index;
                }
                let mut first = (*skewed(&mut self.rng, &l.first)).to_owned();
                while same_given_name(&first, &r.first) {
                    first = (*skewed(&mut self.rng, &l.first)).to_owned();
                }
                (first, r.last.clone())
            }
            (Some(HardNegative::CommonName), _) => {
                let (f, s) =
                    *data::COMMON_NAMES.choose(&mut self.rng).unwrap_or(&("John", "Smith"));
                (f.to_owned(), s.to_owned())
            }
            _ => {
                let first = *skewed(&mut self.rng, &l.first);
                let last = if chance(&mut self.rng, 0.04) {
                    // Double-barrelled surnames made of two common ones.
                    let a = *skewed(&mut self.rng, &l.surnames);
                    let b = *skewed(&mut self.rng, &l.surnames);
                    if a == b || a.contains(' ') || b.contains(' ') {
                        a.to_owned()
                    } else {
                        format!("{a}-{b}")
                    }
                } else {
                    (*skewed(&mut self.rng, &l.surnames)).to_owned()
                };
                (first.to_owned(), last)
            }
        };
        let company = Company::derive(self.opts.seed, company_index, self.companies);
        let country = company.country;

        let (phone, address) = match (negative, &relative) {
            (Some(HardNegative::Family), Some(r)) => (r.phone.clone(), r.address.clone()),
            _ => {
                let phone = if chance(&mut self.rng, 0.15) {
                    company.switchboard.clone()
                } else {
                    Phone::random(&mut self.rng, country)
                };
                let address = if chance(&mut self.rng, 0.7) {
                    company.address.clone()
                } else {
                    Address::random(&mut self.rng, country)
                };
                (phone, address)
            }
        };
        let phone_style = self.rng.random_range(0..phone.styles());

        let work = chance(&mut self.rng, 0.7);
        let email = if work {
            let pattern = company.pattern;
            self.unique_mailbox(&work_local(&first, &last, pattern), &company.domain)
        } else {
            let domain = freemail_domain(&mut self.rng, country);
            let local = free_local(&mut self.rng, &first, &last);
            self.unique_mailbox(&local, domain)
        };
        Person { first, last, company, email, work, phone, phone_style, address, negative, cluster }
    }

    /// Company index, skewed so that low indices (big companies) get more people.
    fn pick_company(&mut self) -> u64 {
        let u: f64 = self.rng.random();
        ((u * u * self.companies as f64) as u64).min(self.companies - 1)
    }

    /// `local@domain`, with a number appended while the mailbox is someone else's.
    fn unique_mailbox(&mut self, local: &str, domain: &str) -> Email {
        let mut candidate = local.to_owned();
        let mut n = 1u32;
        loop {
            let key = mailbox_fingerprint(&candidate, domain);
            if self.mailboxes.insert(key) {
                return Email { local: candidate, domain: domain.to_owned() };
            }
            n += 1;
            candidate = if n < 10 {
                format!("{local}{n}")
            } else {
                format!("{local}{}", self.rng.random_range(10..100_000u32))
            };
        }
    }

    fn clean_record(&mut self, p: &Person, system: System) -> SynthRecord {
        let mut r = SynthRecord {
            id: String::new(),
            cluster: p.cluster,
            system,
            email: Some(p.email.render()),
            first_name: Some(p.first.clone()),
            last_name: Some(p.last.clone()),
            company: Some(p.company.render(p.company.suffix_spelling, false)),
            phone: Some(p.phone.render(p.phone_style)),
            street: Some(p.address.street(false)),
            city: Some(p.address.city.clone()),
            postcode: Some(p.address.postcode.clone()),
            variants: VariantSet::default(),
            negative: p.negative,
        };
        self.sparsify(&mut r);
        keep_a_contact_point(p, &mut r);
        r
    }

    /// Blank optional fields at `missing_rate`.
    fn sparsify(&mut self, r: &mut SynthRecord) {
        let m = self.opts.missing_rate;
        if chance(&mut self.rng, m / 4.0) {
            r.email = None;
        }
        for field in [&mut r.company, &mut r.phone, &mut r.street, &mut r.city, &mut r.postcode] {
            if chance(&mut self.rng, m) {
                *field = None;
            }
        }
    }

    /// A record of `p` with variants applied. With `force`, at least one variant is applied
    /// (an exact copy is not the fuzzy duplicate asked for).
    fn variant_record(&mut self, p: &Person, system: System, force: bool) -> SynthRecord {
        let mut r = self.clean_record(p, system);
        r.variants = VariantSet::default();
        for _ in 0..4 {
            self.apply_variants(p, &mut r);
            if !force || !r.variants.is_empty() {
                break;
            }
        }
        if force && r.variants.is_empty() {
            apply_case_whitespace(&mut self.rng, &mut r);
        }
        keep_a_contact_point(p, &mut r);
        r
    }

    #[allow(clippy::too_many_lines, reason = "one probability per variant kind, in one place")]
    fn apply_variants(&mut self, p: &Person, r: &mut SynthRecord) {
        let rng = &mut self.rng;
        let l = lists();
        let mut first = p.first.clone();
        let mut last = p.last.clone();

        let nicks = l.nicknames_of(&first);
        if !nicks.is_empty()
            && chance(rng, 0.25)
            && let Some(n) = nicks.choose(rng)
        {
            first = (*n).to_owned();
            r.variants.insert(VariantKind::Nickname);
        }
        if chance(rng, 0.5) {
            let german = rng.random_bool(0.5);
            let (f, s) = (fold_diacritics(&first, german), fold_diacritics(&last, german));
            if f != first || s != last {
                first = f;
                last = s;
                r.variants.insert(VariantKind::Diacritics);
            }
        }
        if chance(rng, 0.2) {
            let target = if rng.random_bool(0.6) { &mut last } else { &mut first };
            if let Some(t) = typo(rng, target) {
                *target = t;
                r.variants.insert(VariantKind::Typo);
            }
        }
        if chance(rng, 0.05) {
            std::mem::swap(&mut first, &mut last);
            r.variants.insert(VariantKind::TransposedName);
        }
        r.first_name = Some(first);
        r.last_name = Some(last);
        if chance(rng, 0.15) {
            apply_case_whitespace(rng, r);
        }

        // Email: at most one change of the mailbox, and a case change on top.
        if r.email.is_some() {
            let gmail = p.email.is_gmail();
            let roll: f64 = rng.random();
            let mut email = p.email.clone();
            let mut changed = None;
            if roll < 0.07 {
                changed = Some(VariantKind::EmailMissing);
            } else if roll < 0.13 {
                email.local = format!("{}+{}", email.local, PLUS_TAG.choose(rng).unwrap_or(&"x"));
                changed = Some(VariantKind::EmailPlusTag);
            } else if roll < 0.23 && p.work {
                let other = other_work_local(rng, &p.first, &p.last, &email.local);
                let key = mailbox_fingerprint(&other, &email.domain);
                // Only a mailbox nobody has yet. A second duplicate of the same person that
                // draws the same other address is left without an email change: rare, and
                // telling "mine" from "someone else's" would need per-person memory.
                if self.mailboxes.insert(key) {
                    email.local = other;
                    changed = Some(VariantKind::EmailOtherAddress);
                }
            } else if roll < 0.28 && p.work {
                let domain = freemail_domain(rng, p.company.country);
                let local = free_local(rng, &p.first, &p.last);
                let key = mailbox_fingerprint(&local, domain);
                if self.mailboxes.insert(key) {
                    email = Email { local, domain: domain.to_owned() };
                    changed = Some(VariantKind::EmailFreemail);
                }
            } else if gmail && roll < 0.6 {
                let toggled = toggle_dots(rng, &email.local);
                if toggled != email.local {
                    email.local = toggled;
                    changed = Some(VariantKind::GmailDots);
                }
            }
            let rng = &mut self.rng;
            if changed == Some(VariantKind::EmailMissing) {
                r.email = None;
            } else {
                let mut rendered = email.render();
                if chance(rng, 0.15) {
                    rendered = recase_email(rng, &rendered);
                    if rendered != email.render() {
                        r.variants.insert(VariantKind::EmailCase);
                    }
                }
                r.email = Some(rendered);
            }
            if let Some(kind) = changed {
                r.variants.insert(kind);
            }
        }
        let rng = &mut self.rng;

        if r.phone.is_some() {
            let roll: f64 = rng.random();
            if roll < 0.08 {
                r.phone = None;
                r.variants.insert(VariantKind::PhoneMissing);
            } else if roll < 0.45 && p.phone.styles() > 1 {
                let mut style = rng.random_range(0..p.phone.styles() - 1);
                if style >= p.phone_style {
                    style += 1;
                }
                r.phone = Some(p.phone.render(style));
                r.variants.insert(VariantKind::PhoneFormat);
            }
        }
        if r.company.is_some() && chance(rng, 0.3) {
            let c = &p.company;
            let spellings = c.spellings();
            let roll = rng.random_range(0..4);
            let rendered = if roll == 0 || spellings.len() <= 1 {
                // Dropped suffix ("Acme Logistics").
                c.core.clone()
            } else if roll == 1 {
                c.render(c.suffix_spelling, true)
            } else {
                let mut s = rng.random_range(0..spellings.len() - 1);
                if s >= c.suffix_spelling {
                    s += 1;
                }
                c.render(s, rng.random_bool(0.2))
            };
            if Some(&rendered) != r.company.as_ref() {
                r.company = Some(rendered);
                r.variants.insert(VariantKind::CompanySuffix);
            }
        }
        if r.street.is_some() && chance(rng, 0.2) {
            let short = p.address.street(true);
            if Some(&short) != r.street.as_ref() {
                r.street = Some(short);
                r.variants.insert(VariantKind::AddressFormat);
            }
        }
        if chance(rng, 0.12) {
            let before = (r.company.is_some(), r.street.is_some(), r.city.is_some());
            match rng.random_range(0..4) {
                0 => r.company = None,
                1 => r.street = None,
                2 => {
                    r.street = None;
                    r.city = None;
                    r.postcode = None;
                }
                _ => r.postcode = None,
            }
            let after = (r.company.is_some(), r.street.is_some(), r.city.is_some());
            if before != after || r.postcode.is_none() {
                r.variants.insert(VariantKind::FieldsMissing);
            }
        }
    }
}

/// Keep at least one of email, phone and company, so a record says something beyond a name
/// (a CRM rejects or a sales team deletes a lead that is a bare name).
fn keep_a_contact_point(p: &Person, r: &mut SynthRecord) {
    if r.email.is_none() && r.phone.is_none() && r.company.is_none() {
        r.company = Some(p.company.render(p.company.suffix_spelling, false));
    }
}

const PLUS_TAG: &[&str] = data::PLUS_TAGS;

fn chance<R: Rng>(rng: &mut R, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// An element skewed towards the front of the list, the way name frequencies are: index
/// u^1.5 of a uniform u, so the first tenth of the list gets about a fifth of the draws and the
/// chance that two people share a name is only about a third above uniform.
fn skewed<'a, T, R: Rng>(rng: &mut R, items: &'a [T]) -> &'a T {
    let u: f64 = rng.random();
    let i = ((u * u.sqrt() * items.len() as f64) as usize).min(items.len() - 1);
    &items[i]
}

/// True when two first names stand for the same given name (equal, or one a nickname of the
/// other), so a family member does not accidentally look like a nickname duplicate.
fn same_given_name(a: &str, b: &str) -> bool {
    let l = lists();
    a == b || l.nicknames_of(a).contains(&b) || l.nicknames_of(b).contains(&a) || {
        let na = l.nicknames_of(a);
        let nb = l.nicknames_of(b);
        na.iter().any(|n| nb.contains(n))
    }
}

#[derive(Debug, Clone)]
struct Person {
    cluster: u64,
    first: String,
    last: String,
    company: Company,
    email: Email,
    /// Whether the email is at the company's domain.
    work: bool,
    phone: Phone,
    phone_style: usize,
    address: Address,
    negative: Option<HardNegative>,
}

#[derive(Debug, Clone, PartialEq)]
struct Email {
    local: String,
    domain: String,
}

impl Email {
    fn render(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    fn is_gmail(&self) -> bool {
        self.domain == "gmail.com" || self.domain == "googlemail.com"
    }
}

/// A 64-bit FNV-1a fingerprint of the mailbox an address delivers to: lower-cased, without a
/// `+tag`, and for Gmail without dots, so two people never get addresses that are the same
/// mailbox in disguise.
fn mailbox_fingerprint(local: &str, domain: &str) -> u64 {
    let domain = domain.to_lowercase();
    let gmail = domain == "gmail.com" || domain == "googlemail.com";
    let local = local.split('+').next().unwrap_or(local).to_lowercase();
    let local: String = if gmail { local.chars().filter(|c| *c != '.').collect() } else { local };
    let domain = if gmail { "gmail.com".to_owned() } else { domain };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in local.bytes().chain([b'@']).chain(domain.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Lower-case ASCII letters and digits of a name, diacritics folded, for email local parts.
fn email_word(s: &str, german: bool) -> String {
    fold_diacritics(s, german)
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn initial(s: &str) -> String {
    email_word(s, false).chars().take(1).collect()
}

/// The local part a company's address pattern gives.
fn work_local(first: &str, last: &str, pattern: u8) -> String {
    let (f, l) = (email_word(first, true), email_word(last, true));
    match pattern {
        0 => format!("{f}.{l}"),
        1 => format!("{}{l}", initial(first)),
        2 => f,
        3 => format!("{f}{}", initial(last)),
        4 => format!("{f}_{l}"),
        5 => format!("{f}{l}"),
        _ => format!("{}.{l}", initial(first)),
    }
}

/// Another local part at the same company for the same person, different from `current`.
fn other_work_local(rng: &mut StdRng, first: &str, last: &str, current: &str) -> String {
    let mut candidates: Vec<String> =
        (0..7).map(|p| work_local(first, last, p)).filter(|c| c != current).collect();
    candidates.dedup();
    candidates.choose(rng).cloned().unwrap_or_else(|| format!("{current}.{}", initial(last)))
}

/// A free-mail local part: people add numbers because the plain names are taken.
fn free_local(rng: &mut StdRng, first: &str, last: &str) -> String {
    let (f, l) = (email_word(first, false), email_word(last, false));
    let year = rng.random_range(55..=99u32);
    let n = rng.random_range(1..1000u32);
    match rng.random_range(0..7) {
        0 => format!("{f}.{l}"),
        1 => format!("{f}{l}{year}"),
        2 => format!("{f}.{l}{n}"),
        3 => format!("{}{l}{n}", initial(first)),
        4 => format!("{l}.{f}"),
        5 => format!("{f}_{l}{year}"),
        _ => format!("{f}{}{n}", initial(last)),
    }
}

fn freemail_domain<R: Rng>(rng: &mut R, country: Country) -> &'static str {
    let local: &[&'static str] = match country {
        Country::Us => &[],
        Country::Uk => data::FREEMAIL_UK,
        Country::De => data::FREEMAIL_DE,
        Country::Au => data::FREEMAIL_AU,
    };
    if !local.is_empty() && chance(rng, 0.4) {
        local.choose(rng).copied().unwrap_or("gmail.com")
    } else {
        data::FREEMAIL.choose(rng).copied().unwrap_or("gmail.com")
    }
}

/// Add a dot between two letters of a Gmail local part, or remove one.
fn toggle_dots(rng: &mut StdRng, local: &str) -> String {
    let chars: Vec<char> = local.chars().collect();
    let dots: Vec<usize> = (0..chars.len()).filter(|i| chars[*i] == '.').collect();
    if !dots.is_empty() && rng.random_bool(0.5) {
        let remove = dots[rng.random_range(0..dots.len())];
        return chars.iter().enumerate().filter(|(i, _)| *i != remove).map(|(_, c)| c).collect();
    }
    let spots: Vec<usize> = (1..chars.len())
        .filter(|i| chars[*i - 1].is_ascii_alphabetic() && chars[*i].is_ascii_alphabetic())
        .collect();
    let Some(at) = spots.choose(rng) else { return local.to_owned() };
    let mut out: String = chars[..*at].iter().collect();
    out.push('.');
    out.extend(&chars[*at..]);
    out
}

fn recase_email(rng: &mut StdRng, email: &str) -> String {
    match rng.random_range(0..3) {
        0 => email.to_uppercase(),
        1 => {
            // Capitalise each dotted part of the local part and the domain's first label.
            let mut out = String::with_capacity(email.len());
            let mut up = true;
            for c in email.chars() {
                out.extend(if up { c.to_uppercase().collect::<Vec<_>>() } else { vec![c] });
                up = matches!(c, '.' | '@' | '_');
            }
            out
        }
        _ => match email.split_once('@') {
            Some((l, d)) => format!("{l}@{}", d.to_uppercase()),
            None => email.to_uppercase(),
        },
    }
}

fn apply_case_whitespace(rng: &mut StdRng, r: &mut SynthRecord) {
    let (Some(first), Some(last)) = (r.first_name.clone(), r.last_name.clone()) else {
        return;
    };
    let (f, l) = match rng.random_range(0..5) {
        0 => (first.to_uppercase(), last.to_uppercase()),
        1 => (first.to_lowercase(), last.to_lowercase()),
        2 => (format!(" {first}"), format!("{last} ")),
        3 => (first.clone(), format!("{}  ", last.to_uppercase())),
        _ => (format!("{first}  "), last.replacen('-', " - ", 1).to_lowercase()),
    };
    if f != first || l != last {
        r.first_name = Some(f);
        r.last_name = Some(l);
        r.variants.insert(VariantKind::CaseWhitespace);
    }
}

/// Fold diacritics to ASCII; `german` writes umlauts as ae/oe/ue as German speakers do.
fn fold_diacritics(s: &str, german: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let rep: &str = match c {
            'ä' if german => "ae",
            'ö' if german => "oe",
            'ü' if german => "ue",
            'Ä' if german => "Ae",
            'Ö' if german => "Oe",
            'Ü' if german => "Ue",
            'ß' => "ss",
            'á' | 'à' | 'â' | 'ã' | 'å' | 'ä' | 'ą' => "a",
            'Á' | 'À' | 'Â' | 'Ã' | 'Å' | 'Ä' => "A",
            'é' | 'è' | 'ê' | 'ë' | 'ę' | 'ė' => "e",
            'É' | 'È' | 'Ê' | 'Ë' => "E",
            'í' | 'ì' | 'î' | 'ï' | 'ı' => "i",
            'Í' | 'Ì' | 'Î' | 'Ï' | 'İ' => "I",
            'ó' | 'ò' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => "o",
            'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => "O",
            'ú' | 'ù' | 'û' | 'ü' | 'ů' => "u",
            'Ú' | 'Ù' | 'Û' | 'Ü' => "U",
            'ñ' | 'ń' => "n",
            'Ñ' => "N",
            'ç' | 'č' => "c",
            'Ç' | 'Č' => "C",
            'ł' => "l",
            'Ł' => "L",
            'ś' | 'š' | 'ş' => "s",
            'Ś' | 'Š' | 'Ş' => "S",
            'ź' | 'ż' | 'ž' => "z",
            'Ž' => "Z",
            'ř' => "r",
            'ý' => "y",
            'ğ' => "g",
            'æ' => "ae",
            'Æ' => "Ae",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(rep);
    }
    out
}

/// Letters next to each key on a QWERTY keyboard, for substitution typos.
fn neighbours(c: char) -> &'static str {
    match c.to_ascii_lowercase() {
        'q' => "wa",
        'w' => "qes",
        'e' => "wrd",
        'r' => "etf",
        't' => "ryg",
        'y' => "tuh",
        'u' => "yij",
        'i' => "uok",
        'o' => "ipl",
        'p' => "ol",
        'a' => "qsz",
        's' => "adwx",
        'd' => "sfe",
        'f' => "dgr",
        'g' => "fht",
        'h' => "gjy",
        'j' => "hku",
        'k' => "jli",
        'l' => "ko",
        'z' => "xa",
        'x' => "zcs",
        'c' => "xvd",
        'v' => "cbf",
        'b' => "vng",
        'n' => "bmh",
        'm' => "nj",
        _ => "aeiou",
    }
}

/// One insertion, deletion, substitution or adjacent transposition after the first letter;
/// `None` when the name is too short or the edit changed nothing.
fn typo(rng: &mut StdRng, s: &str) -> Option<String> {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 3 {
        return None;
    }
    match rng.random_range(0..4) {
        0 => {
            let at = rng.random_range(1..=c.len());
            let n = neighbours(c[at - 1]);
            let pick = n.chars().nth(rng.random_range(0..n.len())).unwrap_or('e');
            c.insert(at, pick);
        }
        1 => {
            let at = rng.random_range(1..c.len());
            c.remove(at);
        }
        2 => {
            let at = rng.random_range(1..c.len());
            let n = neighbours(c[at]);
            let mut pick = n.chars().nth(rng.random_range(0..n.len())).unwrap_or('e');
            if c[at].is_uppercase() {
                pick = pick.to_ascii_uppercase();
            }
            c[at] = pick;
        }
        _ => {
            let at = rng.random_range(1..c.len() - 1);
            c.swap(at, at + 1);
        }
    }
    let out: String = c.into_iter().collect();
    (out != s).then_some(out)
}

// ---------------------------------------------------------------------------------------------
// Companies, phones, addresses.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Country {
    Us,
    Uk,
    De,
    Au,
}

/// Legal-suffix families and their spellings; a company keeps its family and records vary
/// the spelling. A leading comma means "no space before".
const SUFFIX_US: &[&[&str]] = &[
    &["Inc", "Inc.", ", Inc.", "Incorporated"],
    &["LLC", "L.L.C.", ", LLC"],
    &["Corp", "Corp.", "Corporation"],
    &["Co.", "Company"],
];
const SUFFIX_UK: &[&[&str]] = &[&["Ltd", "Ltd.", "Limited"], &["PLC", "plc"], &["LLP"]];
const SUFFIX_DE: &[&[&str]] = &[&["GmbH"], &["AG"], &["GmbH & Co. KG", "GmbH & Co KG"]];
const SUFFIX_AU: &[&[&str]] = &[&["Pty Ltd", "Pty. Ltd.", "Proprietary Limited", "Pty Limited"]];
const SUFFIX_INTL: &[&[&str]] = &[&["S.A.", "SA"], &["N.V.", "NV"], &["S.L.", "SL"]];
const MODIFIERS: &[&str] =
    &["", "Group", "International", "Global", "Services", "Worldwide", "Associates", "Partners"];

#[derive(Debug, Clone)]
struct Company {
    index: u64,
    /// The name without the legal suffix.
    core: String,
    suffix_family: &'static [&'static str],
    /// The spelling of the suffix the company uses itself.
    suffix_spelling: usize,
    domain: String,
    country: Country,
    switchboard: Phone,
    address: Address,
    /// How the company forms addresses, see [`work_local`].
    pattern: u8,
}

impl Company {
    /// Company `index` of `count`, the same every time for the same seed, so companies need
    /// no memory.
    fn derive(seed: u64, index: u64, count: u64) -> Company {
        let l = lists();
        // SplitMix64 rather than StdRng: a ChaCha generator costs a block refill to seed, and
        // this runs once per record.
        let mut rng =
            SplitMix64(seed ^ 0x5EED_C0DE ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Spread consecutive indices over the name space with a multiplication that is a
        // bijection modulo its size, so names are unique and big companies are not all
        // "... Logistics".
        let (h, t, m) =
            (l.company_head.len() as u64, l.company_tail.len() as u64, MODIFIERS.len() as u64);
        let space = h * t * m;
        let offset = seed % space;
        let mut mult = 1_000_003u64;
        while gcd(mult, space) != 1 {
            mult += 2;
        }
        let k = (index % space).wrapping_mul(mult).wrapping_add(offset) % space;
        let head = l.company_head[(k % h) as usize];
        let tail = l.company_tail[((k / h) % t) as usize];
        let modifier = MODIFIERS[((k / (h * t)) % m) as usize];
        let mut core = format!("{head} {tail}");
        if !modifier.is_empty() {
            core = format!("{core} {modifier}");
        }
        if index >= space {
            core = format!("{core} {}", index / space + 1);
        }
        let country = match rng.random_range(0..100) {
            0..60 => Country::Us,
            60..80 => Country::Uk,
            80..92 => Country::De,
            _ => Country::Au,
        };
        let families = if chance(&mut rng, 0.05) {
            SUFFIX_INTL
        } else {
            match country {
                Country::Us => SUFFIX_US,
                Country::Uk => SUFFIX_UK,
                Country::De => SUFFIX_DE,
                Country::Au => SUFFIX_AU,
            }
        };
        let suffix_family = families.choose(&mut rng).copied().unwrap_or(&["Inc"]);
        let suffix_spelling = rng.random_range(0..suffix_family.len());
        let domain = format!("{}.example", email_word(&core, country == Country::De));
        // Big companies (low indices) use first.last or f.last; small ones anything.
        let pattern = if index < count / 100 + 5 {
            [0u8, 6][rng.random_range(0..2)]
        } else {
            rng.random_range(0..7)
        };
        Company {
            index,
            core,
            suffix_family,
            suffix_spelling,
            domain,
            country,
            switchboard: Phone::random(&mut rng, country),
            address: Address::random(&mut rng, country),
            pattern,
        }
    }

    fn spellings(&self) -> &'static [&'static str] {
        self.suffix_family
    }

    fn render(&self, spelling: usize, upper: bool) -> String {
        let suffix = self.suffix_family.get(spelling).copied().unwrap_or("");
        let core = if upper { self.core.to_uppercase() } else { self.core.clone() };
        let suffix = if upper { suffix.to_uppercase() } else { suffix.to_owned() };
        if suffix.starts_with(',') { format!("{core}{suffix}") } else { format!("{core} {suffix}") }
    }
}

/// SplitMix64 (Steele, Lea and Flood), enough for deriving a company's attributes from its
/// index; portable and deterministic.
struct SplitMix64(u64);

impl rand::RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A number in a range reserved for fiction, kept as parts so it can be written in each of
/// the formats people use.
#[derive(Debug, Clone, PartialEq)]
enum Phone {
    /// NANP: area code and the line number 0100..=0199 after the 555 exchange.
    Us {
        area: u16,
        line: u16,
    },
    /// National significant number as an area code and a local part ("20", "7946 0958").
    Uk {
        area: &'static str,
        local: String,
    },
    De {
        area: &'static str,
        subscriber: String,
    },
    Au {
        area: &'static str,
        exchange: &'static str,
        line: u16,
    },
}

impl Phone {
    fn random<R: Rng>(rng: &mut R, country: Country) -> Phone {
        match country {
            Country::Us => {
                // Any NPA of the form [2-9][0-8][0-9] except N11 service codes.
                let mut area;
                loop {
                    area = rng.random_range(200..1000u16);
                    if (area / 10) % 10 != 9 && area % 100 != 11 {
                        break;
                    }
                }
                Phone::Us { area, line: rng.random_range(100..200) }
            }
            Country::Uk => {
                if chance(rng, 0.2) {
                    // Ofcom's drama mobile range 07700 900000..900999.
                    let n = rng.random_range(0..1000);
                    Phone::Uk { area: "7700", local: format!("900{n:03}") }
                } else {
                    let (_, _, range) =
                        data::UK_CITIES.choose(rng).copied().unwrap_or(("", "", "20 7946 0"));
                    let (area, rest) = range.split_once(' ').unwrap_or(("20", "7946 0"));
                    let n = rng.random_range(0..1000);
                    Phone::Uk { area, local: format!("{rest}{n:03}") }
                }
            }
            Country::De => {
                let (_, _, area, prefix) =
                    data::DE_CITIES.choose(rng).copied().unwrap_or(("", 0, "30", "23125"));
                let n = rng.random_range(0..1000);
                Phone::De { area, subscriber: format!("{prefix}{n:03}") }
            }
            Country::Au => {
                let (_, _, _, area, exchange) =
                    data::AU_CITIES.choose(rng).copied().unwrap_or(("", "", 0, "2", "5550"));
                Phone::Au { area, exchange, line: rng.random_range(0..1000) }
            }
        }
    }

    fn styles(&self) -> usize {
        match self {
            Phone::Us { .. } => 7,
            Phone::Uk { .. } => 6,
            Phone::De { .. } => 7,
            Phone::Au { .. } => 4,
        }
    }

    fn render(&self, style: usize) -> String {
        match self {
            Phone::Us { area, line } => {
                let line = format!("{line:04}");
                match style {
                    0 => format!("({area}) 555-{line}"),
                    1 => format!("+1 {area} 555 {line}"),
                    2 => format!("{area}.555.{line}"),
                    3 => format!("{area}-555-{line}"),
                    4 => format!("+1 ({area}) 555-{line}"),
                    5 => format!("{area}555{line}"),
                    _ => format!("1-{area}-555-{line}"),
                }
            }
            Phone::Uk { area, local } => {
                let compact: String = local.chars().filter(|c| !c.is_whitespace()).collect();
                // Mobile numbers are written 07700 900123, landlines 020 7946 0958.
                let spaced = if local.contains(' ') { local.clone() } else { compact.clone() };
                match style {
                    0 => format!("0{area} {spaced}"),
                    1 => format!("+44 {area} {spaced}"),
                    2 => format!("+44{area}{compact}"),
                    3 => format!("(0{area}) {spaced}"),
                    4 => format!("+44 (0){area} {spaced}"),
                    _ => format!("0{area}{compact}"),
                }
            }
            Phone::De { area, subscriber } => {
                let (main, ext) = subscriber.split_at(subscriber.len() - 3);
                match style {
                    0 => format!("0{area} {subscriber}"),
                    1 => format!("+49 {area} {subscriber}"),
                    2 => format!("0{area}/{main}-{ext}"),
                    3 => format!("+49 (0){area} {subscriber}"),
                    4 => format!("+49{area}{subscriber}"),
                    5 => format!("0049 {area} {subscriber}"),
                    _ => format!("(0{area}) {main} {ext}"),
                }
            }
            Phone::Au { area, exchange, line } => {
                let line = format!("{line:04}");
                match style {
                    0 => format!("(0{area}) {exchange} {line}"),
                    1 => format!("0{area} {exchange} {line}"),
                    2 => format!("+61 {area} {exchange} {line}"),
                    _ => format!("+61{area}{exchange}{line}"),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Address {
    country: Country,
    number: u32,
    name: &'static str,
    kind: (&'static str, &'static str),
    city: String,
    postcode: String,
}

impl Address {
    fn random<R: Rng>(rng: &mut R, country: Country) -> Address {
        let l = lists();
        let number = rng.random_range(1..2000);
        match country {
            Country::De => {
                let (city, start, _, _) =
                    data::DE_CITIES.choose(rng).copied().unwrap_or(("Berlin", 10115, "", ""));
                Address {
                    country,
                    number: number % 200 + 1,
                    name: l.streets_de.choose(rng).copied().unwrap_or("Haupt"),
                    kind: data::STREET_TYPES_DE.choose(rng).copied().unwrap_or(("straße", "str.")),
                    city: city.to_owned(),
                    postcode: format!("{:05}", start + rng.random_range(0..300)),
                }
            }
            Country::Us => {
                let (city, _, zip3) =
                    data::US_CITIES.choose(rng).copied().unwrap_or(("Austin", "", "787"));
                Address {
                    country,
                    number,
                    name: l.streets.choose(rng).copied().unwrap_or("Main"),
                    kind: data::STREET_TYPES_US.choose(rng).copied().unwrap_or(("Street", "St")),
                    city: city.to_owned(),
                    postcode: format!("{zip3}{:02}", rng.random_range(1..100)),
                }
            }
            Country::Uk => {
                let (city, area, _) =
                    data::UK_CITIES.choose(rng).copied().unwrap_or(("London", "N", ""));
                let letters = b"ABDEFGHJLNPQRSTUWXYZ";
                let pick = |rng: &mut R| char::from(letters[rng.random_range(0..letters.len())]);
                let postcode = format!(
                    "{area}{} {}{}{}",
                    rng.random_range(1..20),
                    rng.random_range(1..10),
                    pick(rng),
                    pick(rng)
                );
                Address {
                    country,
                    number: number % 300 + 1,
                    name: l.streets.choose(rng).copied().unwrap_or("High"),
                    kind: data::STREET_TYPES_UK.choose(rng).copied().unwrap_or(("Road", "Rd")),
                    city: city.to_owned(),
                    postcode,
                }
            }
            Country::Au => {
                let (city, _, start, _, _) =
                    data::AU_CITIES.choose(rng).copied().unwrap_or(("Sydney", "", 2000, "", ""));
                Address {
                    country,
                    number: number % 500 + 1,
                    name: l.streets.choose(rng).copied().unwrap_or("George"),
                    kind: data::STREET_TYPES_US.choose(rng).copied().unwrap_or(("Street", "St")),
                    city: city.to_owned(),
                    postcode: format!("{}", start + rng.random_range(0..200)),
                }
            }
        }
    }

    fn street(&self, short: bool) -> String {
        let kind = if short { self.kind.1 } else { self.kind.0 };
        match self.country {
            Country::De => format!("{}{kind} {}", self.name, self.number),
            _ => format!("{} {} {kind}", self.number, self.name),
        }
    }
}
