//! Normalisation of the values people are matched on: emails, phones, names, companies and the
//! email's domain compared with the company.
//!
//! Every function here is pure, never panics on any input, and is idempotent on its own
//! output (`f(f(x)) == f(x)`), so normalised values can be stored and normalised again without
//! drifting. `None` means "nothing usable": a blank, or a value that is not what it claims.

use std::str::FromStr;

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Provider-specific email rules. Both are off by default because they are only true for some
/// providers and some organisations: Gmail ignores dots, many providers deliver `+tag` mail
/// to the untagged box, but a company's own mail server may treat either as a different person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailRules {
    /// Remove dots from the local part at gmail.com and googlemail.com (and read googlemail.com
    /// as gmail.com).
    pub gmail_dots: bool,
    /// Drop a `+tag` suffix from the local part, at every provider.
    pub plus_tags: bool,
}

/// Longest input any normaliser looks at. Real values are far shorter; the cap keeps one
/// pathological cell from costing much time, and phone parsing from seeing absurd input.
const MAX_INPUT: usize = 512;

fn capped(raw: &str) -> &str {
    if raw.len() <= MAX_INPUT {
        return raw;
    }
    let cut = (0..=MAX_INPUT).rev().find(|i| raw.is_char_boundary(*i)).unwrap_or(0);
    &raw[..cut]
}

/// NFKC then lower-case, repeated until stable: lower-casing can (rarely) produce text that
/// NFKC would change again, and idempotence must hold for every string.
fn nfkc_lower(s: &str) -> String {
    let mut cur: String = s.nfkc().collect::<String>().to_lowercase();
    for _ in 0..4 {
        let next: String = cur.nfkc().collect::<String>().to_lowercase();
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}

/// Normalise an email: trim, Unicode NFKC, lower-case, then the optional provider rules.
/// `None` unless there is exactly one `@` with a non-empty local part and domain, and no
/// whitespace or control character inside.
///
/// ```
/// use leadsync::identity::normalize::{email, EmailRules};
/// let off = EmailRules::default();
/// assert_eq!(email(" Jane.Doe@Example.COM ", &off).as_deref(), Some("jane.doe@example.com"));
/// let on = EmailRules { gmail_dots: true, plus_tags: true };
/// assert_eq!(email("j.doe+news@googlemail.com", &on).as_deref(), Some("jdoe@gmail.com"));
/// assert_eq!(email("a@b@c", &off), None);
/// ```
pub fn email(raw: &str, rules: &EmailRules) -> Option<String> {
    let s = nfkc_lower(capped(raw).trim());
    let s = s.trim();
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = s.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    let is_gmail = matches!(domain, "gmail.com" | "googlemail.com");
    let domain = if rules.gmail_dots && is_gmail { "gmail.com" } else { domain };
    let mut out_local = local.to_string();
    if rules.plus_tags
        && let Some((base, _tag)) = out_local.split_once('+')
    {
        out_local = base.to_string();
    }
    if rules.gmail_dots && is_gmail {
        out_local.retain(|c| c != '.');
    }
    // A local part that the rules would empty ("+x", ".") is kept as it was: it is odd but
    // it is what the person typed, and an empty local part would not be an address.
    if out_local.is_empty() {
        out_local = local.to_string();
    }
    Some(format!("{out_local}@{domain}"))
}

/// The domain of a normalised email.
pub fn email_domain(email_norm: &str) -> Option<&str> {
    email_norm.rsplit_once('@').map(|(_, d)| d).filter(|d| !d.is_empty())
}

/// Normalise a phone number to E.164 (`+14155550123`) with the `phonenumber` crate. Numbers
/// without a country code are read in `default_region`; `00` is accepted as the international
/// prefix. `None` unless the number is valid for its region.
///
/// ```
/// use leadsync::identity::normalize::phone;
/// use phonenumber::country::Id;
/// assert_eq!(phone("(415) 555-2671", Some(Id::US)).as_deref(), Some("+14155552671"));
/// assert_eq!(phone("0044 20 7946 0958", None).as_deref(), Some("+442079460958"));
/// assert_eq!(phone("12", Some(Id::US)), None);
/// ```
pub fn phone(raw: &str, default_region: Option<phonenumber::country::Id>) -> Option<String> {
    let s = capped(raw).trim();
    // Cheap checks first: most bad cells (blanks, "n/a", emails pasted in the wrong column)
    // are turned away without the parser's regular expressions.
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if !(4..=20).contains(&digits) || s.len() > 64 {
        return None;
    }
    let mut s: String = s.nfkc().collect();
    // "+44 (0)20 ...": the national trunk prefix written inside an international number.
    if s.contains("(0)") {
        s = s.replace("(0)", "");
    }
    let s = s.trim_start();
    let owned;
    let s = match s.strip_prefix("00") {
        Some(rest) if !rest.starts_with('0') => {
            owned = format!("+{rest}");
            owned.as_str()
        }
        _ => s,
    };
    widen_phone_regex_cache();
    let n = phonenumber::parse(default_region, s).ok()?;
    if !phonenumber::is_valid(&n) {
        return None;
    }
    Some(n.format().mode(phonenumber::Mode::E164).to_string())
}

/// How many compiled regular expressions `phonenumber` keeps. Its database compiles its
/// patterns lazily into one shared LRU cache of 100, which parsing and validating numbers of a
/// few countries overflows: the evicted patterns were compiled again and again (regex
/// compilation was about a tenth of `leadsync dedupe`'s CPU on 100,000 rows). The patterns
/// any one region needs are a few dozen, so this holds every region's in practice; a
/// compiled pattern is a few KiB.
const PHONE_REGEX_CACHE: usize = 4_096;

/// Widen `phonenumber`'s regex cache once per process (see [`PHONE_REGEX_CACHE`]).
fn widen_phone_regex_cache() {
    static WIDEN: std::sync::Once = std::sync::Once::new();
    WIDEN.call_once(|| {
        let cache = phonenumber::metadata::DATABASE.cache();
        // A poisoned lock only means another thread panicked while parsing: the cache itself
        // is still a valid LRU map, so widen it anyway.
        let mut cache = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.capacity() < PHONE_REGEX_CACHE {
            cache.set_capacity(PHONE_REGEX_CACHE);
        }
    });
}

/// Parse a CLDR region code (`US`, `GB`, `de`) for [`phone`].
pub fn region(code: &str) -> Option<phonenumber::country::Id> {
    phonenumber::country::Id::from_str(&code.trim().to_ascii_uppercase()).ok()
}

/// Letters that Unicode does not decompose into a base letter plus a mark, but that people
/// write without the accent anyway (Ø as O, ß as ss).
fn fold(c: char, out: &mut String) {
    match c {
        'ø' => out.push('o'),
        'ł' => out.push('l'),
        'đ' | 'ð' => out.push('d'),
        'ħ' => out.push('h'),
        'ı' => out.push('i'),
        'ŧ' => out.push('t'),
        'æ' => out.push_str("ae"),
        'œ' => out.push_str("oe"),
        'ß' => out.push_str("ss"),
        'þ' => out.push_str("th"),
        _ => out.push(c),
    }
}

/// Normalise a person's name: diacritics removed (NFKD, combining marks dropped), lower-case,
/// apostrophes removed (`O'Brien` = `obrien`), any other punctuation a space (`Smith-Jones` =
/// `smith jones`), whitespace collapsed. Letters and digits of every script are kept.
///
/// ```
/// use leadsync::identity::normalize::name;
/// assert_eq!(name("  José  O'Brien-Núñez ").as_deref(), Some("jose obrien nunez"));
/// assert_eq!(name(" -- "), None);
/// ```
pub fn name(raw: &str) -> Option<String> {
    let lowered = capped(raw).to_lowercase();
    let mut folded = String::with_capacity(lowered.len());
    for c in lowered.nfkd().filter(|c| !is_combining_mark(*c)) {
        // Lower-case again: NFKD can turn a lower-case compatibility letter into upper case.
        for l in c.to_lowercase() {
            fold(l, &mut folded);
        }
    }
    let mut out = String::with_capacity(folded.len());
    let mut pending_space = false;
    for c in folded.chars() {
        if matches!(c, '\'' | '’' | '‘' | '`' | 'ʼ' | '´') {
            continue;
        }
        if c.is_alphanumeric() && !is_combining_mark(c) {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else {
            pending_space = true;
        }
    }
    if out.is_empty() { None } else { Some(out) }
}

/// Legal-form suffixes, as token sequences after [`name`] (so "S.A." is `s a`, "Pty. Ltd." is
/// `pty ltd`). Longer sequences come first so `pty ltd` wins over `ltd`.
const LEGAL_SUFFIXES: &[&[&str]] = &[
    &["limited", "liability", "company"],
    &["s", "a", "r", "l"],
    &["s", "p", "a"],
    &["s", "r", "l"],
    &["l", "l", "c"],
    &["l", "l", "p"],
    &["pty", "ltd"],
    &["pty", "limited"],
    &["pvt", "ltd"],
    &["private", "limited"],
    &["co", "ltd"],
    &["co", "inc"],
    &["gmbh", "co", "kg"],
    &["ag", "co", "kg"],
    &["s", "a"],
    &["b", "v"],
    &["n", "v"],
    &["a", "g"],
    &["k", "k"],
    &["inc"],
    &["incorporated"],
    &["llc"],
    &["llp"],
    &["lp"],
    &["ltd"],
    &["limited"],
    &["gmbh"],
    &["mbh"],
    &["kg"],
    &["ug"],
    &["sa"],
    &["sas"],
    &["sarl"],
    &["ag"],
    &["plc"],
    &["corp"],
    &["corporation"],
    &["co"],
    &["company"],
    &["bv"],
    &["nv"],
    &["srl"],
    &["spa"],
    &["oy"],
    &["oyj"],
    &["ab"],
    &["as"],
    &["asa"],
    &["aps"],
    &["kk"],
    &["pty"],
    &["pte"],
    &["sl"],
    &["se"],
];

/// Normalise a company name: as [`name`], then legal-form suffixes ("Inc", "GmbH", "Pty Ltd",
/// "S.A.", "& Co.") and a leading "the" removed. A name that is nothing but a suffix is kept.
///
/// ```
/// use leadsync::identity::normalize::company;
/// assert_eq!(company("The Acme Widget Co., Inc.").as_deref(), Some("acme widget"));
/// assert_eq!(company("Müller & Co. GmbH").as_deref(), Some("muller"));
/// assert_eq!(company("Globex Pty. Ltd.").as_deref(), Some("globex"));
/// ```
pub fn company(raw: &str) -> Option<String> {
    let n = name(raw)?;
    let mut tokens: Vec<&str> = n.split(' ').collect();
    loop {
        let before = tokens.len();
        if tokens.len() > 1 && tokens[0] == "the" {
            tokens.remove(0);
        }
        for suffix in LEGAL_SUFFIXES {
            if tokens.len() > suffix.len() && tokens.ends_with(suffix) {
                tokens.truncate(tokens.len() - suffix.len());
                break;
            }
        }
        // "Smith and Co" leaves a dangling "and" once "co" is gone.
        if tokens.len() > 1 && tokens.last() == Some(&"and") {
            tokens.pop();
        }
        if tokens.len() == before {
            break;
        }
    }
    Some(tokens.join(" "))
}

/// Full domains of consumer mail providers, whose domain says nothing about an employer.
const FREE_MAIL_DOMAINS: &[&str] = &[
    "163.com",
    "126.com",
    "aim.com",
    "bigpond.com",
    "btinternet.com",
    "comcast.net",
    "fastmail.com",
    "free.fr",
    "freenet.de",
    "gmail.com",
    "googlemail.com",
    "hey.com",
    "hushmail.com",
    "icloud.com",
    "inbox.com",
    "laposte.net",
    "libero.it",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "naver.com",
    "orange.fr",
    "pm.me",
    "proton.me",
    "protonmail.ch",
    "protonmail.com",
    "qq.com",
    "rediffmail.com",
    "rocketmail.com",
    "sbcglobal.net",
    "seznam.cz",
    "t-online.de",
    "tutanota.com",
    "verizon.net",
    "wanadoo.fr",
    "web.de",
    "ymail.com",
    "zoho.com",
];

/// Providers that run the same free service under many country domains (yahoo.co.uk,
/// hotmail.fr, gmx.at): matched on the registrable label.
const FREE_MAIL_LABELS: &[&str] =
    &["aol", "gmx", "hotmail", "live", "msn", "outlook", "yahoo", "yandex", "windowslive"];

/// Whether `domain` (lower-case) belongs to a consumer mail provider.
pub fn is_free_mail(domain: &str) -> bool {
    let d = domain.trim_end_matches('.');
    FREE_MAIL_DOMAINS.contains(&d)
        || registrable_label(d).is_some_and(|l| FREE_MAIL_LABELS.contains(&l))
}

/// Second-level labels under which country domains register names (`acme.co.uk`).
const SECOND_LEVEL: &[&str] =
    &["ac", "co", "com", "edu", "gov", "gv", "ltd", "ne", "net", "or", "org", "plc"];

/// The label an organisation registered: `acme` in `mail.acme.co.uk` or `acme.com`. A small
/// heuristic in place of the public suffix list: a two-letter country code preceded by a
/// generic second level (`co`, `com`, `org`, ...) counts as one suffix.
pub fn registrable_label(domain: &str) -> Option<&str> {
    let labels: Vec<&str> = domain.trim_end_matches('.').split('.').collect();
    let n = labels.len();
    if n < 2 || labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let tld = labels[n - 1];
    if n >= 3 && tld.len() == 2 && SECOND_LEVEL.contains(&labels[n - 2]) {
        return Some(labels[n - 3]);
    }
    Some(labels[n - 2])
}

/// Whether an email domain looks like the company's own: its registrable label (hyphens
/// ignored) equals the normalised company with spaces removed, or the company's acronym, or its
/// first token (when that is at least three characters). Never true for free-mail domains.
///
/// ```
/// use leadsync::identity::normalize::domain_matches_company;
/// assert!(domain_matches_company("mail.acme.co.uk", "acme"));
/// assert!(domain_matches_company("ibm.com", "international business machines"));
/// assert!(!domain_matches_company("gmail.com", "gmail"));
/// ```
pub fn domain_matches_company(domain: &str, company_norm: &str) -> bool {
    if company_norm.is_empty() || is_free_mail(domain) {
        return false;
    }
    let Some(label) = registrable_label(domain) else { return false };
    let label: String = label.chars().filter(|c| *c != '-').collect();
    if label.is_empty() {
        return false;
    }
    let joined: String = company_norm.chars().filter(|c| *c != ' ').collect();
    if label == joined {
        return true;
    }
    let tokens: Vec<&str> = company_norm.split(' ').collect();
    if tokens.len() >= 2 {
        let acronym: String = tokens.iter().filter_map(|t| t.chars().next()).collect();
        if label == acronym {
            return true;
        }
    }
    tokens.first().is_some_and(|t| t.chars().count() >= 3 && label == *t)
}

/// Nicknames and short forms → the given name they usually stand for. Sorted by nickname
/// (a test checks) for binary search. Where a short form serves several names ("chris"), the
/// most common is chosen; Jaro-Winkler still scores the others.
const NICKNAMES: &[(&str, &str)] = &[
    ("abby", "abigail"),
    ("abe", "abraham"),
    ("al", "albert"),
    ("alex", "alexander"),
    ("alf", "alfred"),
    ("andy", "andrew"),
    ("angie", "angela"),
    ("annie", "ann"),
    ("art", "arthur"),
    ("barb", "barbara"),
    ("bart", "bartholomew"),
    ("becky", "rebecca"),
    ("ben", "benjamin"),
    ("benji", "benjamin"),
    ("benny", "benjamin"),
    ("bernie", "bernard"),
    ("bert", "albert"),
    ("beth", "elizabeth"),
    ("betsy", "elizabeth"),
    ("betty", "elizabeth"),
    ("bill", "william"),
    ("billy", "william"),
    ("bob", "robert"),
    ("bobbie", "robert"),
    ("bobby", "robert"),
    ("brad", "bradley"),
    ("cathy", "catherine"),
    ("charlie", "charles"),
    ("chris", "christopher"),
    ("chuck", "charles"),
    ("cindy", "cynthia"),
    ("cliff", "clifford"),
    ("dan", "daniel"),
    ("danny", "daniel"),
    ("dave", "david"),
    ("davey", "david"),
    ("deb", "deborah"),
    ("debbie", "deborah"),
    ("debby", "deborah"),
    ("dick", "richard"),
    ("don", "donald"),
    ("donnie", "donald"),
    ("doug", "douglas"),
    ("ed", "edward"),
    ("eddie", "edward"),
    ("eddy", "edward"),
    ("ellie", "eleanor"),
    ("fred", "frederick"),
    ("freddie", "frederick"),
    ("freddy", "frederick"),
    ("gabe", "gabriel"),
    ("gene", "eugene"),
    ("geoff", "geoffrey"),
    ("gerry", "gerald"),
    ("greg", "gregory"),
    ("hank", "henry"),
    ("harry", "henry"),
    ("jack", "john"),
    ("jackie", "jacqueline"),
    ("jake", "jacob"),
    ("jamie", "james"),
    ("jan", "janet"),
    ("jeff", "jeffrey"),
    ("jen", "jennifer"),
    ("jenn", "jennifer"),
    ("jenny", "jennifer"),
    ("jerry", "gerald"),
    ("jess", "jessica"),
    ("jessie", "jessica"),
    ("jim", "james"),
    ("jimmy", "james"),
    ("joe", "joseph"),
    ("joey", "joseph"),
    ("johnny", "john"),
    ("jonny", "jonathan"),
    ("josh", "joshua"),
    ("judy", "judith"),
    ("kate", "katherine"),
    ("kathryn", "katherine"),
    ("kathy", "katherine"),
    ("katie", "katherine"),
    ("katy", "katherine"),
    ("ken", "kenneth"),
    ("kenny", "kenneth"),
    ("kim", "kimberly"),
    ("kit", "christopher"),
    ("larry", "lawrence"),
    ("len", "leonard"),
    ("lenny", "leonard"),
    ("leo", "leonard"),
    ("liz", "elizabeth"),
    ("lizzie", "elizabeth"),
    ("lou", "louis"),
    ("maggie", "margaret"),
    ("mandy", "amanda"),
    ("marge", "margaret"),
    ("margie", "margaret"),
    ("matt", "matthew"),
    ("mick", "michael"),
    ("mickey", "michael"),
    ("mike", "michael"),
    ("mikey", "michael"),
    ("mitch", "mitchell"),
    ("molly", "mary"),
    ("nancy", "ann"),
    ("nat", "nathan"),
    ("nate", "nathan"),
    ("ned", "edward"),
    ("nick", "nicholas"),
    ("nicky", "nicholas"),
    ("pam", "pamela"),
    ("pat", "patrick"),
    ("patsy", "patricia"),
    ("patty", "patricia"),
    ("peggy", "margaret"),
    ("pete", "peter"),
    ("phil", "philip"),
    ("polly", "mary"),
    ("ray", "raymond"),
    ("rich", "richard"),
    ("richie", "richard"),
    ("rick", "richard"),
    ("ricky", "richard"),
    ("rob", "robert"),
    ("robbie", "robert"),
    ("ron", "ronald"),
    ("ronnie", "ronald"),
    ("rosie", "rose"),
    ("russ", "russell"),
    ("sally", "sarah"),
    ("sam", "samuel"),
    ("sammy", "samuel"),
    ("sandy", "sandra"),
    ("steph", "stephanie"),
    ("steve", "steven"),
    ("stevie", "steven"),
    ("sue", "susan"),
    ("susie", "susan"),
    ("suzy", "susan"),
    ("ted", "edward"),
    ("teddy", "edward"),
    ("terry", "terence"),
    ("tim", "timothy"),
    ("timmy", "timothy"),
    ("tom", "thomas"),
    ("tommy", "thomas"),
    ("tony", "anthony"),
    ("trish", "patricia"),
    ("val", "valerie"),
    ("vic", "victor"),
    ("vicky", "victoria"),
    ("vince", "vincent"),
    ("walt", "walter"),
    ("wendy", "gwendolyn"),
    ("will", "william"),
    ("willie", "william"),
    ("willy", "william"),
    ("zach", "zachary"),
    ("zack", "zachary"),
];

/// Common given names (English-speaking and Hispanic), sorted. Two different names that are
/// both on this list ("Maria" and "Mario", "Daniel" and "Daniela") are two people, however
/// close their spelling; a name off the list may be a typo of one on it.
const GIVEN_NAMES: &[&str] = &[
    "aaron",
    "abigail",
    "adam",
    "adrian",
    "adriana",
    "adrienne",
    "aiden",
    "alan",
    "albert",
    "alberto",
    "alejandro",
    "alex",
    "alexa",
    "alexander",
    "alexandra",
    "alexis",
    "alfred",
    "alice",
    "alicia",
    "allison",
    "alyssa",
    "amanda",
    "amber",
    "amelia",
    "amy",
    "ana",
    "andre",
    "andrea",
    "andres",
    "andrew",
    "angel",
    "angela",
    "angelica",
    "angelina",
    "anita",
    "ann",
    "anna",
    "anne",
    "annette",
    "anthony",
    "antonio",
    "april",
    "ariana",
    "arthur",
    "ashley",
    "audrey",
    "austin",
    "ava",
    "barbara",
    "barry",
    "beatrice",
    "becky",
    "ben",
    "benjamin",
    "bernard",
    "beth",
    "betty",
    "beverly",
    "bianca",
    "billy",
    "blake",
    "bonnie",
    "bradley",
    "brandon",
    "brenda",
    "brendan",
    "brent",
    "brett",
    "brian",
    "briana",
    "brittany",
    "brooke",
    "bruce",
    "bryan",
    "caitlin",
    "caleb",
    "cameron",
    "camila",
    "carl",
    "carla",
    "carlos",
    "carmen",
    "carol",
    "carole",
    "caroline",
    "carolyn",
    "carrie",
    "casey",
    "catherine",
    "cecilia",
    "charlene",
    "charles",
    "charlie",
    "charlotte",
    "chelsea",
    "cheryl",
    "chloe",
    "christian",
    "christina",
    "christine",
    "christopher",
    "cindy",
    "claire",
    "clara",
    "clarence",
    "claudia",
    "clifford",
    "cody",
    "colin",
    "connie",
    "connor",
    "craig",
    "crystal",
    "cynthia",
    "daisy",
    "dale",
    "dana",
    "daniel",
    "daniela",
    "danielle",
    "darlene",
    "darren",
    "david",
    "dean",
    "deborah",
    "debra",
    "denise",
    "dennis",
    "derek",
    "diana",
    "diane",
    "dominic",
    "donald",
    "donna",
    "dora",
    "doris",
    "dorothy",
    "douglas",
    "dylan",
    "earl",
    "edgar",
    "edith",
    "edward",
    "eileen",
    "elaine",
    "eleanor",
    "elena",
    "eli",
    "elijah",
    "elisa",
    "elizabeth",
    "ella",
    "ellen",
    "emily",
    "emma",
    "eric",
    "erica",
    "erik",
    "erin",
    "ernest",
    "esther",
    "ethan",
    "eugene",
    "eva",
    "evan",
    "evelyn",
    "faith",
    "felix",
    "fernando",
    "frances",
    "francesca",
    "francis",
    "francisco",
    "frank",
    "franklin",
    "fred",
    "frederick",
    "gabriel",
    "gabriela",
    "gabriella",
    "gail",
    "gary",
    "gavin",
    "gene",
    "george",
    "georgia",
    "gerald",
    "gina",
    "gladys",
    "gloria",
    "grace",
    "grant",
    "greg",
    "gregory",
    "hailey",
    "hannah",
    "harold",
    "harry",
    "hazel",
    "heather",
    "helen",
    "henry",
    "holly",
    "howard",
    "hunter",
    "ian",
    "irene",
    "isaac",
    "isabel",
    "isabella",
    "isaiah",
    "jack",
    "jackson",
    "jacob",
    "jacqueline",
    "jaime",
    "jake",
    "james",
    "jamie",
    "jane",
    "janet",
    "janice",
    "jared",
    "jasmine",
    "jason",
    "javier",
    "jean",
    "jeanette",
    "jeffrey",
    "jenna",
    "jennifer",
    "jeremy",
    "jerome",
    "jesse",
    "jessica",
    "jesus",
    "jill",
    "jimmy",
    "joan",
    "joann",
    "joanna",
    "joanne",
    "joel",
    "johanna",
    "john",
    "johnny",
    "jonathan",
    "jordan",
    "jorge",
    "jose",
    "josefina",
    "joseph",
    "josephine",
    "joshua",
    "joy",
    "joyce",
    "juan",
    "juana",
    "judith",
    "judy",
    "julia",
    "julian",
    "juliana",
    "julie",
    "julio",
    "justin",
    "karen",
    "karl",
    "kate",
    "katherine",
    "kathleen",
    "kathy",
    "katie",
    "kayla",
    "keith",
    "kelly",
    "kendra",
    "kenneth",
    "kevin",
    "kim",
    "kimberly",
    "kristen",
    "kristin",
    "kyle",
    "laura",
    "lauren",
    "lawrence",
    "leah",
    "lee",
    "leon",
    "leonard",
    "leslie",
    "lillian",
    "lily",
    "linda",
    "lisa",
    "logan",
    "lois",
    "lori",
    "louis",
    "louise",
    "lucas",
    "lucia",
    "lucy",
    "luis",
    "luke",
    "lydia",
    "madeline",
    "madison",
    "manuel",
    "marc",
    "marcia",
    "marco",
    "marcus",
    "margaret",
    "maria",
    "marian",
    "mariana",
    "marie",
    "marilyn",
    "mario",
    "marion",
    "marisa",
    "marissa",
    "mark",
    "marlene",
    "martha",
    "martin",
    "marvin",
    "mary",
    "mason",
    "matthew",
    "maureen",
    "max",
    "maxine",
    "megan",
    "melanie",
    "melissa",
    "mia",
    "michael",
    "michaela",
    "michele",
    "michelle",
    "miguel",
    "mildred",
    "miranda",
    "molly",
    "monica",
    "morgan",
    "nancy",
    "naomi",
    "natalie",
    "nathan",
    "nathaniel",
    "nicholas",
    "nicole",
    "noah",
    "nora",
    "norma",
    "norman",
    "olivia",
    "oscar",
    "owen",
    "pamela",
    "patricia",
    "patrick",
    "paul",
    "paula",
    "pauline",
    "pedro",
    "peggy",
    "penelope",
    "peter",
    "philip",
    "phillip",
    "phyllis",
    "rachel",
    "ralph",
    "ramon",
    "randy",
    "raymond",
    "rebecca",
    "regina",
    "renee",
    "rhonda",
    "ricardo",
    "richard",
    "rita",
    "robert",
    "roberta",
    "roberto",
    "robin",
    "rodney",
    "roger",
    "ronald",
    "rosa",
    "rose",
    "rosemary",
    "roy",
    "ruby",
    "russell",
    "ruth",
    "ryan",
    "samantha",
    "samuel",
    "sandra",
    "sara",
    "sarah",
    "scott",
    "sean",
    "sebastian",
    "seth",
    "shane",
    "shannon",
    "sharon",
    "shawn",
    "sheila",
    "shirley",
    "sofia",
    "sophia",
    "stacy",
    "stanley",
    "stephanie",
    "stephen",
    "steven",
    "sue",
    "susan",
    "sydney",
    "sylvia",
    "tammy",
    "tanya",
    "tara",
    "taylor",
    "teresa",
    "terry",
    "theodore",
    "theresa",
    "thomas",
    "tiffany",
    "timothy",
    "tina",
    "todd",
    "tony",
    "tracy",
    "travis",
    "tyler",
    "valerie",
    "vanessa",
    "vera",
    "veronica",
    "victor",
    "victoria",
    "vincent",
    "virginia",
    "walter",
    "wanda",
    "wayne",
    "wendy",
    "william",
    "willie",
    "yolanda",
    "yvonne",
    "zachary",
    "zoe",
];

/// Whether a normalised first name is a common given name (or a known nickname), as opposed
/// to a possible typo.
pub fn is_known_first_name(name_norm: &str) -> bool {
    GIVEN_NAMES.binary_search(&name_norm).is_ok()
        || NICKNAMES.binary_search_by(|(k, _)| (*k).cmp(name_norm)).is_ok()
}

/// Full given names that have a second common spelling, mapped to one of them so that both
/// canonicalise alike (Stephen and Steven, Catherine and Katherine).
const SPELLINGS: &[(&str, &str)] = &[
    ("anne", "ann"),
    ("bryan", "brian"),
    ("carole", "carol"),
    ("catherine", "katherine"),
    ("erik", "eric"),
    ("gabriella", "gabriela"),
    ("geoffrey", "jeffrey"),
    ("joanne", "joann"),
    ("kathryn", "katherine"),
    ("kristen", "kristin"),
    ("marc", "mark"),
    ("marissa", "marisa"),
    ("michele", "michelle"),
    ("phillip", "philip"),
    ("sara", "sarah"),
    ("sophia", "sofia"),
    ("stephen", "steven"),
    ("teresa", "theresa"),
];

/// The given name a (normalised) first name stands for: `bob` → `robert`, `liz` →
/// `elizabeth`; unknown names are returned unchanged.
///
/// ```
/// use leadsync::identity::normalize::canonical_first_name;
/// assert_eq!(canonical_first_name("bob"), "robert");
/// assert_eq!(canonical_first_name("robert"), "robert");
/// assert_eq!(canonical_first_name("zebulon"), "zebulon");
/// ```
pub fn canonical_first_name(name_norm: &str) -> &str {
    let base = match NICKNAMES.binary_search_by(|(k, _)| (*k).cmp(name_norm)) {
        Ok(i) => NICKNAMES[i].1,
        Err(_) => name_norm,
    };
    match SPELLINGS.binary_search_by(|(k, _)| (*k).cmp(base)) {
        Ok(i) => SPELLINGS[i].1,
        Err(_) => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonenumber::country::Id;
    use proptest::prelude::*;

    #[test]
    fn nickname_tables_are_sorted_for_binary_search() {
        assert!(NICKNAMES.windows(2).all(|w| w[0].0 < w[1].0), "NICKNAMES not sorted");
        assert!(SPELLINGS.windows(2).all(|w| w[0].0 < w[1].0), "SPELLINGS not sorted");
        assert!(GIVEN_NAMES.windows(2).all(|w| w[0] < w[1]), "GIVEN_NAMES not sorted");
        assert!(NICKNAMES.len() >= 150);
        assert!(is_known_first_name("maria") && is_known_first_name("bob"));
        assert!(!is_known_first_name("jonathon") && !is_known_first_name(""));
    }

    #[test]
    fn nicknames_canonicalise() {
        for (nick, full) in [
            ("bob", "robert"),
            ("rob", "robert"),
            ("robbie", "robert"),
            ("bill", "william"),
            ("will", "william"),
            ("liz", "elizabeth"),
            ("beth", "elizabeth"),
            ("kathy", "katherine"),
            ("catherine", "katherine"),
            ("steve", "steven"),
            ("stephen", "steven"),
        ] {
            assert_eq!(canonical_first_name(nick), full, "{nick}");
        }
        assert_eq!(canonical_first_name("robert"), "robert");
        assert_eq!(canonical_first_name(""), "");
    }

    #[test]
    fn email_trims_folds_and_lowercases() {
        let off = EmailRules::default();
        assert_eq!(email("  JANE@EXAMPLE.com\t", &off).as_deref(), Some("jane@example.com"));
        // Fullwidth letters fold to ASCII under NFKC.
        assert_eq!(email("ｊａｎｅ@example.com", &off).as_deref(), Some("jane@example.com"));
        assert_eq!(email("", &off), None);
        assert_eq!(email("@example.com", &off), None);
        assert_eq!(email("jane@", &off), None);
        assert_eq!(email("jane@@example.com", &off), None);
        assert_eq!(email("ja ne@example.com", &off), None);
        assert_eq!(email("jane.example.com", &off), None);
    }

    #[test]
    fn email_provider_rules_apply_only_when_on() {
        let off = EmailRules::default();
        let dots = EmailRules { gmail_dots: true, plus_tags: false };
        let plus = EmailRules { gmail_dots: false, plus_tags: true };
        assert_eq!(email("J.Doe+x@gmail.com", &off).as_deref(), Some("j.doe+x@gmail.com"));
        assert_eq!(email("J.Doe+x@gmail.com", &dots).as_deref(), Some("jdoe+x@gmail.com"));
        assert_eq!(email("j.doe@googlemail.com", &dots).as_deref(), Some("jdoe@gmail.com"));
        assert_eq!(email("j.doe@googlemail.com", &off).as_deref(), Some("j.doe@googlemail.com"));
        // Dots matter at other providers.
        assert_eq!(email("j.doe@acme.com", &dots).as_deref(), Some("j.doe@acme.com"));
        assert_eq!(email("j.doe+news@acme.com", &plus).as_deref(), Some("j.doe@acme.com"));
        // Rules never empty the local part.
        assert_eq!(email("+news@acme.com", &plus).as_deref(), Some("+news@acme.com"));
        assert_eq!(email("...@gmail.com", &dots).as_deref(), Some("...@gmail.com"));
    }

    #[test]
    fn phones_become_e164() {
        let us = Some(Id::US);
        for raw in [
            "+1 415 555 2671",
            "(415) 555-2671",
            "415.555.2671",
            "001 415 555 2671",
            "1-415-555-2671",
        ] {
            assert_eq!(phone(raw, us).as_deref(), Some("+14155552671"), "{raw}");
        }
        assert_eq!(phone("020 7946 0958", Some(Id::GB)).as_deref(), Some("+442079460958"));
        assert_eq!(phone("+44 (0)20 7946 0958", us).as_deref(), Some("+442079460958"));
        assert_eq!(phone("030 123456", Some(Id::DE)).as_deref(), Some("+4930123456"));
        // Without a region a national number cannot be placed.
        assert_eq!(phone("415 555 2671", None), None);
        assert_eq!(phone("555-0000", us), None);
        assert_eq!(phone("not a phone", us), None);
        assert_eq!(phone("", us), None);
        assert_eq!(phone("+1 000 000 0000", us), None);
    }

    #[test]
    fn region_codes_parse() {
        assert_eq!(region("us"), Some(Id::US));
        assert_eq!(region(" GB "), Some(Id::GB));
        assert_eq!(region("XX"), None);
    }

    #[test]
    fn names_lose_case_accents_and_punctuation() {
        assert_eq!(name("O'Brien").as_deref(), Some("obrien"));
        assert_eq!(name("O’Brien").as_deref(), Some("obrien"));
        assert_eq!(name("Smith-Jones").as_deref(), Some("smith jones"));
        assert_eq!(name("  Zoë   Ångström ").as_deref(), Some("zoe angstrom"));
        assert_eq!(name("Søren Łukasz Straße").as_deref(), Some("soren lukasz strasse"));
        assert_eq!(name("J.R.R. Tolkien").as_deref(), Some("j r r tolkien"));
        assert_eq!(name("李 小龍").as_deref(), Some("李 小龍"));
        assert_eq!(name("  "), None);
        assert_eq!(name("'"), None);
    }

    #[test]
    fn companies_lose_legal_suffixes() {
        for (raw, want) in [
            ("Acme Inc.", "acme"),
            ("Acme, Incorporated", "acme"),
            ("ACME LLC", "acme"),
            ("Acme L.L.C.", "acme"),
            ("Acme Ltd", "acme"),
            ("Acme Limited", "acme"),
            ("Acme GmbH", "acme"),
            ("Acme GmbH & Co. KG", "acme"),
            ("Acme Pty. Ltd.", "acme"),
            ("Acme S.A.", "acme"),
            ("Acme SA", "acme"),
            ("Acme SARL", "acme"),
            ("Acme S.à r.l.", "acme"),
            ("Acme AG", "acme"),
            ("Acme plc", "acme"),
            ("Acme Corp.", "acme"),
            ("Acme Corporation", "acme"),
            ("Acme B.V.", "acme"),
            ("Acme N.V.", "acme"),
            ("Acme S.p.A.", "acme"),
            ("Acme Oy", "acme"),
            ("Acme AB", "acme"),
            ("Acme AS", "acme"),
            ("Acme K.K.", "acme"),
            ("Acme KK", "acme"),
            ("Smith & Co.", "smith"),
            ("Smith and Co", "smith"),
            ("The Acme Company", "acme"),
            ("The Co", "co"),
            ("Inc", "inc"),
        ] {
            assert_eq!(company(raw).as_deref(), Some(want), "{raw}");
        }
        assert_eq!(company(" & "), None);
    }

    #[test]
    fn free_mail_and_company_domains() {
        for d in [
            "gmail.com",
            "yahoo.co.uk",
            "hotmail.fr",
            "web.de",
            "gmx.at",
            "icloud.com",
            "proton.me",
        ] {
            assert!(is_free_mail(d), "{d}");
        }
        assert!(!is_free_mail("acme.com"));
        assert_eq!(registrable_label("mail.acme.co.uk"), Some("acme"));
        assert_eq!(registrable_label("acme.com"), Some("acme"));
        assert_eq!(registrable_label("eu.acme.com"), Some("acme"));
        assert_eq!(registrable_label("localhost"), None);
        assert_eq!(email_domain("a@acme.com"), Some("acme.com"));
        assert_eq!(email_domain("nodomain"), None);
        assert!(domain_matches_company("acme.com", "acme"));
        assert!(domain_matches_company("acme-widgets.com", "acme widgets"));
        assert!(domain_matches_company("acme.io", "acme widgets"));
        assert!(domain_matches_company("ibm.com", "international business machines"));
        assert!(!domain_matches_company("globex.com", "acme"));
        assert!(!domain_matches_company("yahoo.com", "yahoo"));
        assert!(!domain_matches_company("ab.com", "ab testing"));
        assert!(!domain_matches_company("acme.com", ""));
    }

    proptest! {
        #[test]
        fn email_is_idempotent(raw in "\\PC{0,40}", dots: bool, plus: bool) {
            let rules = EmailRules { gmail_dots: dots, plus_tags: plus };
            if let Some(once) = email(&raw, &rules) {
                prop_assert_eq!(email(&once, &rules), Some(once.clone()));
            }
        }

        #[test]
        fn email_like_inputs_are_idempotent(
            local in "[a-zA-Z0-9.+_Ä-ÿ]{1,12}", domain in "(gmail|googlemail|acme)\\.com",
            dots: bool, plus: bool,
        ) {
            let rules = EmailRules { gmail_dots: dots, plus_tags: plus };
            let once = email(&format!("{local}@{domain}"), &rules);
            prop_assert!(once.is_some());
            let once = once.unwrap();
            prop_assert_eq!(email(&once, &rules), Some(once.clone()));
        }

        #[test]
        fn name_and_company_are_idempotent(raw in "\\PC{0,40}") {
            if let Some(once) = name(&raw) {
                prop_assert_eq!(name(&once), Some(once.clone()));
            }
            if let Some(once) = company(&raw) {
                prop_assert_eq!(company(&once), Some(once.clone()));
            }
        }

        #[test]
        fn any_unicode_never_panics(raw in any::<String>()) {
            let _ = email(&raw, &EmailRules { gmail_dots: true, plus_tags: true });
            let _ = name(&raw);
            let _ = company(&raw);
            let _ = phone(&raw, Some(Id::US));
            let _ = is_free_mail(&raw);
            let _ = registrable_label(&raw);
            let _ = domain_matches_company(&raw, &raw);
            let _ = canonical_first_name(&raw);
        }

        #[test]
        fn phone_is_idempotent(raw in "[+0-9 ()./-]{0,24}") {
            if let Some(once) = phone(&raw, Some(Id::US)) {
                prop_assert_eq!(phone(&once, Some(Id::US)), Some(once.clone()));
                prop_assert_eq!(phone(&once, None), Some(once.clone()));
            }
        }

        #[test]
        fn us_numbers_in_any_format_agree(area in 201u32..989, ex in 200u32..999, line in 0u32..9999) {
            let plain = format!("{area}{ex}{line:04}");
            if let Some(e164) = phone(&plain, Some(Id::US)) {
                let dashed = format!("({area}) {ex}-{line:04}");
                let intl = format!("+1 {area} {ex} {line:04}");
                prop_assert_eq!(phone(&dashed, Some(Id::US)), Some(e164.clone()));
                prop_assert_eq!(phone(&intl, None), Some(e164.clone()));
            }
        }
    }
}
