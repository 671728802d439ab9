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

impl Person {
    /// The person as a Salesforce Lead, as an import would create it.
    pub fn salesforce_lead(&self, duplicate: bool) -> Map<String, Value> {
        let email = if duplicate { self.email.to_uppercase() } else { self.email.clone() };
        let mut m = Map::new();
        m.insert("FirstName".into(), Value::String(self.first.clone()));
        m.insert("LastName".into(), Value::String(self.last.clone()));
        m.insert("Email".into(), Value::String(email));
        m.insert("Company".into(), Value::String(self.company.clone()));
        m.insert("Title".into(), Value::String(self.title.clone()));
        m.insert("Phone".into(), Value::String(self.phone.clone()));
        m.insert("LeadSource".into(), Value::String(self.source.to_string()));
        m.insert("Status".into(), Value::String(self.sf_status.to_string()));
        m.insert("HasOptedOutOfEmail".into(), Value::Bool(self.sf_opt_out));
        m
    }

    /// The person as a HubSpot contact, as an import would create it. People in both systems
    /// sometimes differ (a newer title in one), as they do in real portals.
    pub fn hubspot_contact(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("email".into(), self.email.clone());
        m.insert("firstname".into(), self.first.clone());
        m.insert("lastname".into(), self.last.clone());
        m.insert("company".into(), self.company.clone());
        m.insert("jobtitle".into(), self.title.clone());
        m.insert("phone".into(), self.phone.clone());
        m.insert("leadsource".into(), self.source.to_string());
        m.insert("lifecyclestage".into(), self.hs_stage.to_string());
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
}
