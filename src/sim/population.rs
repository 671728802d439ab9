//! A realistic, deterministic population of people spread over a simulated CRM and marketing
//! platform: some in both, some in one, a few duplicated inside Salesforce with the same email
//! in different case, with names, companies, titles, phones, lead sources, lifecycle stages,
//! lead statuses and opt-outs.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

const FIRST: &[&str] = &[
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Elijah",
    "Sophia",
    "James",
    "Isabella",
    "Lucas",
    "Mia",
    "Mateo",
    "Amelia",
    "Benjamin",
    "Harper",
    "Levi",
    "Evelyn",
    "Henry",
    "Aria",
    "Sebastian",
    "Chloe",
    "Jack",
    "Priya",
    "Arjun",
    "Mei",
    "Hiroshi",
    "Fatima",
    "Omar",
    "Zoë",
    "Søren",
    "Ingrid",
    "Mateus",
    "Chiara",
    "Luca",
    "Anaïs",
    "Jürgen",
    "Aoife",
    "Siobhan",
    "Kwame",
    "Amara",
    "Diego",
    "Valentina",
    "Yusuf",
    "Leila",
    "Nikolai",
    "Tatiana",
    "Hannah",
    "Daniel",
    "Grace",
    "Samuel",
    "Ruth",
    "David",
    "Esther",
    "Wei",
    "Lin",
    "Ana",
    "João",
    "Marta",
    "Pierre",
    "Camille",
];
const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Müller",
    "Schmidt",
    "Rossi",
    "Bianchi",
    "Dubois",
    "Lefèvre",
    "O'Brien",
    "Murphy",
    "Kowalski",
    "Nowak",
    "Svensson",
    "Johansson",
    "Tanaka",
    "Suzuki",
    "Sato",
    "Kim",
    "Park",
    "Chen",
    "Wang",
    "Singh",
    "Patel",
    "Okafor",
    "Mensah",
    "da Silva",
];
const COMPANIES: &[(&str, &str)] = &[
    ("Acme Corporation", "acme.example"),
    ("Globex Inc.", "globex.example"),
    ("Initech LLC", "initech.example"),
    ("Umbrella Group", "umbrella.example"),
    ("Stark Industries", "stark.example"),
    ("Wayne Enterprises", "wayne.example"),
    ("Hooli", "hooli.example"),
    ("Pied Piper", "piedpiper.example"),
    ("Vandelay Industries", "vandelay.example"),
    ("Soylent Ltd", "soylent.example"),
    ("Tyrell Corporation", "tyrell.example"),
    ("Cyberdyne Systems", "cyberdyne.example"),
    ("Wonka Industries GmbH", "wonka.example"),
    ("Oceanic Airlines", "oceanic.example"),
    ("Massive Dynamic", "massive.example"),
    ("Nakatomi Trading", "nakatomi.example"),
    ("Blue Sun Pty Ltd", "bluesun.example"),
    ("Gringotts S.A.", "gringotts.example"),
    ("Dunder Mifflin", "dundermifflin.example"),
    ("Sterling Cooper", "sterlingcooper.example"),
    ("Prestige Worldwide", "prestige.example"),
    ("Bluth Company", "bluth.example"),
    ("Monsters Inc.", "monsters.example"),
    ("Aperture Science", "aperture.example"),
    ("Black Mesa", "blackmesa.example"),
    ("Virtucon", "virtucon.example"),
    ("Gekko & Co", "gekko.example"),
    ("Krusty Krab", "krustykrab.example"),
    ("Los Pollos Hermanos", "lospollos.example"),
    ("North Central Positronics", "positronics.example"),
];
const TITLES: &[&str] = &[
    "VP Marketing",
    "Marketing Manager",
    "Head of Growth",
    "CTO",
    "CEO",
    "Sales Director",
    "Account Executive",
    "Operations Manager",
    "IT Director",
    "Software Engineer",
    "Procurement Lead",
    "CFO",
    "Product Manager",
    "Data Analyst",
    "Office Manager",
    "Director of Demand Generation",
    "RevOps Lead",
    "Customer Success Manager",
];
const SOURCES: &[&str] = &["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"];

/// Where a person lives at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Both,
    CrmOnly,
    MarketingOnly,
}

/// One generated person.
#[derive(Debug, Clone)]
pub struct Person {
    pub first: String,
    pub last: String,
    pub email: String,
    pub company: String,
    pub title: String,
    pub phone: String,
    pub source: &'static str,
    pub presence: Presence,
    /// HubSpot lifecycle stage value.
    pub hs_stage: &'static str,
    /// Salesforce lead status value.
    pub sf_status: &'static str,
    pub hs_opt_out: bool,
    pub sf_opt_out: bool,
    /// Also present a second time in Salesforce, email in different case.
    pub sf_duplicate: bool,
}

fn pick<'a, T>(rng: &mut StdRng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

fn ascii_local(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'ä' | 'à' | 'á' | 'â' => Some('a'),
            'ë' | 'è' | 'é' | 'ê' => Some('e'),
            'ï' | 'í' => Some('i'),
            'ö' | 'ø' | 'ó' | 'ô' => Some('o'),
            'ü' | 'ú' => Some('u'),
            'ã' => Some('a'),
            'ç' => Some('c'),
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// `n` people from `seed`. The same seed gives the same people.
pub fn generate(n: usize, seed: u64) -> Vec<Person> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let first = (*pick(&mut rng, FIRST)).to_string();
            let last = (*pick(&mut rng, LAST)).to_string();
            let (company, domain) = *pick(&mut rng, COMPANIES);
            // The index keeps emails unique across a large population.
            let email = format!("{}.{}{}@{}", ascii_local(&first), ascii_local(&last), i, domain);
            let presence = match rng.random_range(0..100) {
                0..40 => Presence::Both,
                40..75 => Presence::MarketingOnly,
                _ => Presence::CrmOnly,
            };
            let hs_stage = match rng.random_range(0..100) {
                0..30 => "subscriber",
                30..75 => "lead",
                75..90 => "marketingqualifiedlead",
                90..97 => "salesqualifiedlead",
                _ => "opportunity",
            };
            let sf_status = match rng.random_range(0..100) {
                0..55 => "Open - Not Contacted",
                55..88 => "Working - Contacted",
                _ => "Closed - Not Converted",
            };
            let phone = format!(
                "+1 ({}) {}-{:04}",
                rng.random_range(201..990),
                rng.random_range(200..999),
                rng.random_range(0..10000)
            );
            Person {
                first,
                last,
                email,
                company: company.to_string(),
                title: (*pick(&mut rng, TITLES)).to_string(),
                phone,
                source: SOURCES[rng.random_range(0..SOURCES.len())],
                presence,
                hs_stage,
                sf_status,
                hs_opt_out: rng.random_range(0..100) < 4,
                sf_opt_out: rng.random_range(0..100) < 3,
                sf_duplicate: presence != Presence::MarketingOnly && rng.random_range(0..100) < 3,
            }
        })
        .collect()
}

/// A fuzzy duplicate: another record of `people[of]` whose values differ the way real
/// duplicates do (from [`crate::identity::synth`]).
#[derive(Debug, Clone)]
pub struct Duplicate {
    /// Index of the person in [`FuzzyPopulation::people`].
    pub of: usize,
    /// The duplicate's values; `email`, `phone` or `company` may be blank (an empty string).
    pub record: Person,
}

/// People plus fuzzy duplicates of some of them. Presence is left to the caller (every person
/// is [`Presence::Both`] here), and so is where each duplicate goes.
#[derive(Debug, Clone, Default)]
pub struct FuzzyPopulation {
    pub people: Vec<Person>,
    pub duplicates: Vec<Duplicate>,
}

/// `n` people drawn by the synthetic-people generator (names with diacritics and nicknames,
/// namesakes and family members as hard negatives, company and phone formats of several
/// countries), of whom a share `duplicate_rate` get one to three fuzzy duplicates (nicknames,
/// typos, transposed names, email and phone variants, company suffixes, dropped fields).
/// Titles, sources, stages and opt-outs are drawn as in [`generate`]. The same arguments give
/// the same population. Duplicates carry no opt-out (an unsubscribe is made on the person).
pub fn with_fuzzy_duplicates(n: usize, duplicate_rate: f64, seed: u64) -> FuzzyPopulation {
    use crate::identity::synth::{self, SynthOptions, SynthRecord, Systems};
    let opts = SynthOptions {
        people: n,
        duplicate_rate,
        seed,
        // The clean record keeps every field (a Salesforce lead needs a company); the
        // duplicates still drop fields as their variants say.
        missing_rate: 0.0,
        systems: Systems::One,
        // One person's records leave the generator together, so they can be grouped.
        window: 1,
        ..SynthOptions::default()
    };
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_f00d);
    let mut out = FuzzyPopulation { people: Vec::with_capacity(n), duplicates: Vec::new() };
    let to_person = |rng: &mut StdRng, r: &SynthRecord| -> Person {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        Person {
            first: s(&r.first_name),
            last: s(&r.last_name),
            email: s(&r.email),
            company: s(&r.company),
            title: (*pick(rng, TITLES)).to_string(),
            phone: s(&r.phone),
            source: SOURCES[rng.random_range(0..SOURCES.len())],
            presence: Presence::Both,
            hs_stage: ["subscriber", "lead", "marketingqualifiedlead"][rng.random_range(0..3)],
            sf_status: ["Open - Not Contacted", "Working - Contacted"][rng.random_range(0..2)],
            hs_opt_out: false,
            sf_opt_out: false,
            sf_duplicate: false,
        }
    };
    let mut group: Vec<SynthRecord> = Vec::new();
    let flush = |group: &mut Vec<SynthRecord>, out: &mut FuzzyPopulation, rng: &mut StdRng| {
        let Some(clean) = group.iter().position(|r| r.variants.is_empty()) else {
            group.clear();
            return;
        };
        let mut person = to_person(rng, &group[clean]);
        person.hs_opt_out = rng.random_range(0..100) < 4;
        person.sf_opt_out = rng.random_range(0..100) < 3;
        let of = out.people.len();
        for (i, r) in group.iter().enumerate() {
            if i != clean {
                let mut record = to_person(rng, r);
                record.title.clone_from(&person.title);
                out.duplicates.push(Duplicate { of, record });
            }
        }
        out.people.push(person);
        group.clear();
    };
    for r in synth::generate(&opts) {
        if group.first().is_some_and(|g| g.cluster != r.cluster) {
            flush(&mut group, &mut out, &mut rng);
        }
        group.push(r);
    }
    flush(&mut group, &mut out, &mut rng);
    out
}

impl Person {
    /// The person as a Salesforce Lead, as an import would create it.
    pub fn salesforce_lead(&self, duplicate: bool) -> Map<String, Value> {
        let email = if duplicate { self.email.to_uppercase() } else { self.email.clone() };
        let mut m = Map::new();
        // Blank values are left out, as an import leaves the field empty.
        let mut put = |k: &str, v: String| {
            if !v.is_empty() {
                m.insert(k.into(), Value::String(v));
            }
        };
        put("FirstName", self.first.clone());
        put("LastName", self.last.clone());
        put("Email", email);
        put("Company", self.company.clone());
        put("Title", self.title.clone());
        put("Phone", self.phone.clone());
        put("LeadSource", self.source.to_string());
        put("Status", self.sf_status.to_string());
        m.insert("HasOptedOutOfEmail".into(), Value::Bool(self.sf_opt_out));
        m
    }

    /// The person as a HubSpot contact, as an import would create it. People in both systems
    /// sometimes differ (a newer title in one), as they do in real portals.
    pub fn hubspot_contact(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            if !v.is_empty() {
                m.insert(k.into(), v);
            }
        };
        put("email", self.email.clone());
        put("firstname", self.first.clone());
        put("lastname", self.last.clone());
        put("company", self.company.clone());
        put("jobtitle", self.title.clone());
        put("phone", self.phone.clone());
        put("leadsource", self.source.to_string());
        put("lifecyclestage", self.hs_stage.to_string());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_mixed() {
        let a = generate(500, 7);
        let b = generate(500, 7);
        assert_eq!(
            a.iter().map(|p| &p.email).collect::<Vec<_>>(),
            b.iter().map(|p| &p.email).collect::<Vec<_>>()
        );
        for presence in [Presence::Both, Presence::CrmOnly, Presence::MarketingOnly] {
            assert!(a.iter().any(|p| p.presence == presence));
        }
        assert!(a.iter().any(|p| p.sf_duplicate));
        let emails: std::collections::HashSet<_> =
            a.iter().map(|p| p.email.to_lowercase()).collect();
        assert_eq!(emails.len(), 500, "emails are unique");
        assert!(a.iter().all(|p| p.email.is_ascii()));
    }

    #[test]
    fn fuzzy_population_has_duplicates_that_differ_from_their_person() {
        let pop = with_fuzzy_duplicates(2_000, 0.1, 3);
        assert_eq!(pop.people.len(), 2_000);
        // 10% of people with 1..=3 duplicates each: about 400 records.
        assert!((250..600).contains(&pop.duplicates.len()), "{}", pop.duplicates.len());
        // Most differ in a field the vendors hold (the rest only in the address, which the
        // simulated records do not carry).
        let key = |p: &Person| {
            (p.first.clone(), p.last.clone(), p.email.clone(), p.company.clone(), p.phone.clone())
        };
        let differ =
            pop.duplicates.iter().filter(|d| key(&d.record) != key(&pop.people[d.of])).count();
        assert!(differ * 10 >= pop.duplicates.len() * 8, "{differ} of {}", pop.duplicates.len());
        let email_differs = pop
            .duplicates
            .iter()
            .filter(|d| d.record.email.to_lowercase() != pop.people[d.of].email.to_lowercase())
            .count();
        assert!(email_differs > 0 && email_differs < pop.duplicates.len(), "{email_differs}");
        assert!(pop.people.iter().all(|p| !p.email.is_empty() && !p.company.is_empty()));
        // Some duplicates lost their email; blanks are left out of the vendor records.
        let blank = pop.duplicates.iter().find(|d| d.record.email.is_empty()).expect("some");
        assert!(!blank.record.hubspot_contact().contains_key("email"));
        assert!(!blank.record.salesforce_lead(false).contains_key("Email"));
        let again = with_fuzzy_duplicates(2_000, 0.1, 3);
        assert_eq!(again.duplicates.len(), pop.duplicates.len());
    }
}
