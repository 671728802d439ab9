//! Word lists the generator draws from: first names with their nicknames, surnames (with
//! diacritics, apostrophes, particles and hyphens), company words and legal suffixes, streets,
//! cities with postcodes, free-mail providers and fictional telephone ranges.
//!
//! Lists are `|`-separated strings rather than slices of literals so that a few hundred names
//! stay readable under rustfmt; `lists()` splits them once.

use std::sync::LazyLock;

/// Formal first names with the nicknames people use for them on forms, `Name=Nick,Nick`.
/// The common ones come first because the generator prefers the front of every list.
const NICKNAMED: &str = "\
Robert=Bob,Rob,Bobby|William=Bill,Will,Billy,Liam|James=Jim,Jimmy,Jamie|John=Jack,Johnny|\
Michael=Mike,Mikey|Elizabeth=Liz,Beth,Betty,Eliza|Jennifer=Jen,Jenny|Richard=Rick,Rich,Dick|\
Thomas=Tom,Tommy|Christopher=Chris,Topher|Margaret=Maggie,Peggy,Meg|Daniel=Dan,Danny|\
Katherine=Kate,Kathy,Katie|Matthew=Matt|Anthony=Tony|Joseph=Joe,Joey|Charles=Charlie,Chuck|\
Patricia=Pat,Patty,Trish|Edward=Ed,Eddie,Ted|Alexander=Alex,Sasha|Susan=Sue,Susie|\
Deborah=Debbie,Deb|Rebecca=Becky,Becca|Jonathan=Jon|Nicholas=Nick|Benjamin=Ben|\
Samuel=Sam|Andrew=Andy,Drew|Stephen=Steve|Steven=Steve|Timothy=Tim|Gregory=Greg|\
Jeffrey=Jeff|Kenneth=Ken,Kenny|Ronald=Ron|Donald=Don|Lawrence=Larry|Gerald=Jerry|\
Raymond=Ray|Frederick=Fred,Freddie|Theodore=Ted,Teddy,Theo|Victoria=Vicky,Tori|\
Alexandra=Alex,Lexi|Samantha=Sam,Sammy|Abigail=Abby|Jessica=Jess,Jessie|Catherine=Cathy,Kate|\
Christine=Chris,Tina|Pamela=Pam|Cynthia=Cindy|Judith=Judy|Dorothy=Dot,Dottie|\
Barbara=Barb|Johannes=Hans,Jo|Wolfgang=Wolf|Friedrich=Fritz|Josef=Sepp|Franziska=Franzi|\
Alejandro=Alex|Francisco=Paco|José=Pepe|Giuseppe=Beppe|Ekaterina=Katya|Dmitri=Dima|\
Patrick=Pat,Paddy|Zachary=Zach|Joshua=Josh|Nathaniel=Nate|Jacob=Jake|Harold=Harry,Hal|\
Henry=Hank,Harry|Peter=Pete|Philip=Phil|Douglas=Doug|Leonard=Leo,Len|Maximilian=Max|\
Eleanor=Ellie,Nora|Isabella=Bella,Izzy|Olivia=Liv|Sophia=Sophie|Gabriel=Gabe|\
Michelle=Shelly|Madeline=Maddie|Mary=Molly|Anne=Annie|Wilhelm=Willi|Heinrich=Heinz|\
Katharina=Kathi|Susanne=Susi|Albert=Al,Bert|Arthur=Art|Vincent=Vince|Sebastian=Seb|\
Dominic=Dom|Oliver=Ollie|Frances=Fran|Gwendolyn=Gwen|Josephine=Jo,Josie|Kimberly=Kim|\
Melissa=Mel|Amanda=Mandy|Caroline=Carrie|Valerie=Val|Jacqueline=Jackie|Penelope=Penny|\
Virginia=Ginny|Cristina=Cris|Manuel=Manolo|Roberto=Beto|Antonio=Toni|Jürgen=Jürg";

/// First names without a common nickname, from the countries the generator covers.
const FIRST_PLAIN: &str = "\
David|Mark|Paul|Brian|Kevin|Jason|Ryan|Gary|Eric|Scott|Justin|Brandon|Adam|Aaron|Kyle|\
Sarah|Karen|Lisa|Nancy|Sandra|Ashley|Emily|Donna|Carol|Amy|Laura|Sharon|Helen|Anna|\
Emma|Ruth|Nicole|Angela|Julie|Heather|Diane|Joyce|Megan|Rachel|Carolyn|Janet|Maria|Hannah|\
Noah|Lucas|Mateo|Levi|Elijah|Owen|Wyatt|Luke|Grayson|Isaac|Julian|Hudson|Ezra|Aiden|\
Ava|Mia|Amelia|Harper|Evelyn|Aria|Chloe|Layla|Nora|Zoey|Lily|Hazel|Violet|Aurora|Stella|\
Priya|Arjun|Mei|Hiroshi|Fatima|Omar|Zoë|Søren|Ingrid|Mateus|Chiara|Luca|Anaïs|Aoife|\
Siobhan|Kwame|Amara|Diego|Valentina|Yusuf|Leila|Nikolai|Tatiana|Björn|Łukasz|Agnieszka|\
Renée|Céline|François|Hélène|Zoltán|Dóra|Mónica|Inés|Raúl|Ramón|Núria|Jörg|Günter|Jörn|\
Uwe|Dirk|Sven|Kai|Lars|Birgit|Heike|Sabine|Ute|Anke|Silke|Jens|Tobias|Florian|Lukas|\
Leonie|Lena|Marie|Paula|Mila|Emilia|Finn|Jonas|Elias|Ben|Felix|Niamh|Ciarán|Seán|Pádraig|\
Oisín|Saoirse|Eóin|Ruairí|Declan|Fiona|Morag|Callum|Ewan|Isla|Rhys|Dylan|Cerys|Gareth|\
Ffion|Aled|Siân|Rowan|Harvey|Archie|Freddie|Poppy|Imogen|Matilda|Tilly|Jasmine|Ruby|\
Liam|Noor|Rania|Tariq|Samir|Aisha|Zainab|Hamza|Ravi|Anjali|Deepak|Sunita|Vikram|Kavya|\
Wei|Li|Jun|Xin|Yuki|Haruto|Sakura|Kenji|Min-jun|Seo-yeon|Ji-ho|Thanh|Minh|Linh|Bao|\
Chinedu|Ngozi|Oluwaseun|Adaeze|Kofi|Ama|Thabo|Lerato|Zanele|Sipho|Mariana|Camila|\
Gabriela|Santiago|Sofía|Martín|Joaquín|Lucía|Andrés|Tomás|Álvaro|Iñigo|Maëlle|Loïc|\
Noémie|Benoît|Jérôme|Aurélie|Stéphane|Rosalind|Quentin|Bernadette|Cornelius|Gustav|\
Astrid|Freya|Signe|Henrik|Magnus|Eirik|Tuva|Ole|Åsa|Göran|Britt|Kjell|Mats|Pernille";

/// Surnames, common ones first, with diacritics, apostrophes and particles as they appear.
const SURNAMES: &str = "\
Smith|Johnson|Williams|Brown|Jones|Garcia|Miller|Davis|Rodriguez|Martinez|Hernandez|Lopez|\
Gonzalez|Wilson|Anderson|Thomas|Taylor|Moore|Jackson|Martin|Lee|Perez|Thompson|White|\
Harris|Sanchez|Clark|Ramirez|Lewis|Robinson|Walker|Young|Allen|King|Wright|Scott|Torres|\
Nguyen|Hill|Flores|Green|Adams|Nelson|Baker|Hall|Rivera|Campbell|Mitchell|Carter|Roberts|\
Müller|Schmidt|Schneider|Fischer|Weber|Meyer|Wagner|Becker|Schulz|Hoffmann|Schäfer|Koch|\
Bauer|Richter|Klein|Wolf|Schröder|Neumann|Schwarz|Zimmermann|Braun|Krüger|Hofmann|\
Hartmann|Lange|Schmitt|Werner|Schmitz|Krause|Meier|Lehmann|Schmid|Schulze|Maier|Köhler|\
Herrmann|König|Walter|Mayer|Huber|Kaiser|Fuchs|Peters|Lang|Scholz|Möller|Weiß|Jung|Hahn|\
Vogel|Friedrich|Keller|Günther|Frank|Berger|Winkler|Roth|Beck|Lorenz|Baumann|Franke|\
Albrecht|Schuster|Simon|Ludwig|Böhm|Winter|Kraus|Martín|Jiménez|Ruiz|Díaz|Álvarez|Gómez|\
Fernández|González|Rodríguez|Pérez|Sánchez|Ramírez|Muñoz|Núñez|Ibáñez|Peña|Castaño|\
Gutiérrez|Vázquez|Domínguez|Suárez|Méndez|Ortíz|Chávez|Dubois|Lefèvre|Durand|Lefebvre|\
Girard|Bonnet|Lambert|Fontaine|Rousseau|Chevalier|Gauthier|Benoît|Mercier|Faure|Blanc|\
Guérin|Boyer|Garnier|Légaré|Côté|Bélanger|Gagné|Lévesque|Bérubé|O'Brien|O'Connor|\
O'Sullivan|O'Neill|O'Reilly|O'Donnell|O'Malley|O'Hara|D'Angelo|D'Souza|Murphy|Kelly|\
Walsh|Byrne|Ryan|McCarthy|Doyle|Gallagher|Doherty|Kennedy|Lynch|Murray|Quinn|Moore|\
MacDonald|McDonald|MacLeod|McKenzie|Campbell|Stewart|Robertson|Reid|Ross|Paterson|Fraser|\
Evans|Davies|Hughes|Price|Morgan|Griffiths|Lloyd|Llewellyn|Powell|Rees|Owen|Jenkins|\
Patel|Shah|Singh|Kumar|Sharma|Gupta|Mehta|Reddy|Iyer|Nair|Chatterjee|Banerjee|Khan|Ali|\
Hussain|Ahmed|Rahman|Chowdhury|Wang|Zhang|Liu|Chen|Yang|Huang|Zhao|Wu|Zhou|Xu|Sun|Ma|\
Kim|Park|Choi|Jeong|Kang|Cho|Yoon|Tanaka|Suzuki|Takahashi|Watanabe|Itō|Yamamoto|\
Nakamura|Kobayashi|Tran|Le|Pham|Hoang|Vu|Dang|Bui|Okafor|Adeyemi|Mensah|Nkosi|Dlamini|\
Van der Berg|van Dijk|de Vries|de Jong|Jansen|Bakker|Visser|Smit|Meijer|de Boer|\
Mulder|Bos|Vos|Dekker|de la Cruz|del Río|da Silva|dos Santos|Pereira|Costa|Ferreira|\
Oliveira|Souza|Carvalho|Gonçalves|Conceição|Rossi|Russo|Ferrari|Esposito|Bianchi|\
Romano|Colombo|Ricci|Marino|Greco|Bruno|Gallo|Conti|De Luca|Mancini|Costa|Giordano|\
Kowalski|Wiśniewski|Wójcik|Kowalczyk|Kamiński|Lewandowski|Zieliński|Szymański|Woźniak|\
Dąbrowski|Nowak|Novák|Dvořák|Černý|Procházka|Kučera|Horváth|Nagy|Szabó|Tóth|Kovács|\
Varga|Papadopoulos|Georgiou|Nikolaidis|Andersson|Johansson|Karlsson|Nilsson|Eriksson|\
Larsson|Olsson|Persson|Jørgensen|Sørensen|Hansen|Nielsen|Pedersen|Christensen|Rasmussen|\
Virtanen|Korhonen|Mäkinen|Nieminen|Hämäläinen|Ivanov|Smirnov|Kuznetsov|Popov|Sokolov|\
Yılmaz|Kaya|Demir|Şahin|Çelik|Öztürk|Cohen|Levi|Friedman|Goldberg|Rosenberg|Katz|\
Smith-Jones|Lloyd-Webber|García-López|Müller-Lüdenscheidt|Bowes-Lyon|Ortega-Ruiz|\
Fernández-Castro|Hughes-Hallett|Wright-Phillips|Schmidt-Rottluff|Saint-Pierre|Jean-Baptiste|\
Fitzgerald|Fitzpatrick|Whitaker|Blackwood|Ashworth|Pemberton|Hargreaves|Thornton|Sutcliffe|\
Holloway|Cartwright|Kingsley|Fairbanks|Underwood|Lockhart|Beaumont|Montgomery|Sinclair|\
Abernathy|Ellsworth|Prescott|Whitfield|Rutherford|Kensington|Ainsworth|Bannerman";

/// Common full names that many unrelated people share: the hard negatives every matcher
/// must not merge on name alone.
pub const COMMON_NAMES: &[(&str, &str)] = &[
    ("John", "Smith"),
    ("Michael", "Johnson"),
    ("David", "Brown"),
    ("James", "Williams"),
    ("Maria", "Garcia"),
    ("Mary", "Jones"),
    ("Robert", "Miller"),
    ("Jennifer", "Davis"),
    ("Thomas", "Müller"),
    ("Anna", "Schmidt"),
    ("Sarah", "Wilson"),
    ("Wei", "Wang"),
    ("Priya", "Patel"),
    ("David", "Jones"),
    ("Mark", "Taylor"),
    ("Linda", "Martinez"),
    ("Daniel", "Anderson"),
    ("Karen", "Thomas"),
    ("Paul", "Jackson"),
    ("Lisa", "White"),
    ("Jose", "Hernandez"),
    ("Juan", "Rodriguez"),
    ("Michael", "Schneider"),
    ("Stefan", "Fischer"),
    ("Andreas", "Weber"),
    ("Emma", "Evans"),
    ("Oliver", "Jones"),
    ("Mohammed", "Khan"),
    ("Jessica", "Williams"),
    ("Chris", "Lee"),
];

/// First words of company names.
const COMPANY_HEAD: &str = "\
Acme|Northwind|Contoso|Fabrikam|Globex|Initech|Umbrella|Stark|Wayne|Wonka|Soylent|Hooli|\
Pied Piper|Vandelay|Cyberdyne|Tyrell|Aperture|Black Mesa|Blue River|Red Oak|Silver Lake|\
Golden Gate|Iron Bridge|Summit|Pioneer|Frontier|Horizon|Meridian|Pinnacle|Keystone|Beacon|\
Harbor|Granite|Cedar|Maple|Willow|Aspen|Sequoia|Redwood|Evergreen|Lakeside|Riverside|\
Hillcrest|Brightwater|Clearwater|Stonegate|Oakridge|Westbrook|Eastgate|Northstar|Southport|\
Atlas|Titan|Apex|Vertex|Zenith|Quantum|Vector|Nimbus|Cirrus|Stratus|Polar|Solar|Lunar|\
Orbit|Nova|Stellar|Cosmic|Falcon|Eagle|Hawk|Raven|Fox|Wolf|Bear|Lion|Tiger|Panther|Cobalt|\
Crimson|Indigo|Scarlet|Amber|Jade|Onyx|Sapphire|Emerald|Ruby|Ivory|Ebony|Copper|Bronze|\
Sterling|Nordic|Alpine|Baltic|Atlantic|Pacific|Continental|Metro|Urban|Rural|Coastal|\
Highland|Lowland|Heritage|Legacy|Liberty|Patriot|Union|Federal|National|Royal|Imperial|\
Bayerische|Rheinische|Hanseatische|Münchner|Kölner|Berliner|Württemberger|Schwäbische|\
Thames|Pennine|Cotswold|Caledonian|Cambrian|Mercian|Wessex|Northumbrian|Sydney|Coral|\
Outback|Kookaburra|Wattle|Ibérica|Andina|Cántabra|Levante|Mediterránea";

/// Second words of company names: what the company does.
const COMPANY_TAIL: &str = "\
Logistics|Software|Analytics|Foods|Partners|Systems|Labs|Consulting|Holdings|Industries|\
Technologies|Solutions|Dynamics|Networks|Robotics|Energy|Capital|Ventures|Media|Health|\
Pharma|Biotech|Medical|Insurance|Financial|Advisors|Realty|Properties|Construction|\
Engineering|Manufacturing|Motors|Aerospace|Marine|Freight|Shipping|Airlines|Telecom|\
Security|Data|Cloud|Digital|Interactive|Studios|Design|Marketing|Research|Education|\
Learning|Retail|Outfitters|Apparel|Brewing|Coffee|Bakery|Farms|Organics|Textiles|\
Chemicals|Plastics|Metals|Mining|Paper|Printing|Publishing|Legal|Staffing|Recruiting|\
Maschinenbau|Elektrotechnik|Versicherungen|Immobilien|Beratung|Logistik|Werkzeuge";

/// Free-mail domains with their share of addresses, biggest first.
pub const FREEMAIL: &[&str] = &[
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "hotmail.com",
    "icloud.com",
    "aol.com",
    "protonmail.com",
    "googlemail.com",
];
/// Country-flavoured free-mail domains.
pub const FREEMAIL_DE: &[&str] = &["web.de", "gmx.de", "gmx.net", "t-online.de"];
pub const FREEMAIL_UK: &[&str] = &["btinternet.com", "yahoo.co.uk", "hotmail.co.uk"];
pub const FREEMAIL_AU: &[&str] = &["bigpond.com", "optusnet.com.au"];

/// Tags people put after `+` in an address.
pub const PLUS_TAGS: &[&str] =
    &["news", "crm", "work", "events", "webinar", "2024", "trial", "sales", "leads", "spam"];

const STREET_NAMES: &str = "\
Main|Oak|Pine|Maple|Cedar|Elm|Washington|Lake|Hill|Park|Sunset|Market|Mission|Broadway|\
Highland|River|Church|Mill|Spring|Union|Franklin|Lincoln|Jefferson|Madison|Jackson|Center|\
High|Station|Victoria|Kings|Queens|Albert|Manor|Grove|Chapel|Green|Bridge|Castle|Abbey|\
George|York|Wellington|Trafalgar|Marlborough|Baker|Fleet|Oxford|Regent|Cambridge";
const STREET_NAMES_DE: &str = "\
Haupt|Bahnhof|Schul|Garten|Dorf|Berg|Kirch|Wald|Ring|Linden|Birken|Goethe|Schiller|Mozart|\
Beethoven|Friedrich|Wilhelm|Kaiser|König|Post|Markt|Mühlen|Rosen|Sonnen|Feld|Wiesen|\
Eichen|Ahorn|Buchen|Tannen|Blumen|Kastanien|Brunnen";

/// Street type words per country: (long form, abbreviation).
pub const STREET_TYPES_US: &[(&str, &str)] = &[
    ("Street", "St"),
    ("Avenue", "Ave"),
    ("Boulevard", "Blvd"),
    ("Road", "Rd"),
    ("Drive", "Dr"),
    ("Lane", "Ln"),
    ("Court", "Ct"),
    ("Place", "Pl"),
];
pub const STREET_TYPES_UK: &[(&str, &str)] = &[
    ("Street", "St"),
    ("Road", "Rd"),
    ("Lane", "Ln"),
    ("Avenue", "Ave"),
    ("Close", "Cl"),
    ("Crescent", "Cres"),
    ("Gardens", "Gdns"),
    ("Terrace", "Terr"),
];
pub const STREET_TYPES_DE: &[(&str, &str)] =
    &[("straße", "str."), ("weg", "weg"), ("allee", "allee"), ("platz", "pl.")];

/// US cities with their state and the first three digits of their ZIP codes.
pub const US_CITIES: &[(&str, &str, &str)] = &[
    ("San Francisco", "CA", "941"),
    ("New York", "NY", "100"),
    ("Chicago", "IL", "606"),
    ("Austin", "TX", "787"),
    ("Seattle", "WA", "981"),
    ("Boston", "MA", "021"),
    ("Denver", "CO", "802"),
    ("Atlanta", "GA", "303"),
    ("Miami", "FL", "331"),
    ("Portland", "OR", "972"),
    ("Los Angeles", "CA", "900"),
    ("San Diego", "CA", "921"),
    ("Dallas", "TX", "752"),
    ("Houston", "TX", "770"),
    ("Phoenix", "AZ", "850"),
    ("Minneapolis", "MN", "554"),
    ("Detroit", "MI", "482"),
    ("Philadelphia", "PA", "191"),
    ("Nashville", "TN", "372"),
    ("Raleigh", "NC", "276"),
    ("Salt Lake City", "UT", "841"),
    ("Pittsburgh", "PA", "152"),
    ("Columbus", "OH", "432"),
    ("St. Louis", "MO", "631"),
    ("San José", "CA", "951"),
    ("Washington", "DC", "200"),
    ("Baltimore", "MD", "212"),
    ("Charlotte", "NC", "282"),
    ("Indianapolis", "IN", "462"),
    ("Albuquerque", "NM", "871"),
];

/// UK cities with an outward-code area, and the Ofcom drama range that city has
/// (national significant number prefix without the trunk 0, and how many digits follow).
pub const UK_CITIES: &[(&str, &str, &str)] = &[
    ("London", "EC", "20 7946 0"),
    ("London", "SW", "20 7946 0"),
    ("London", "N", "20 7946 0"),
    ("Leeds", "LS", "113 496 0"),
    ("Sheffield", "S", "114 496 0"),
    ("Nottingham", "NG", "115 496 0"),
    ("Leicester", "LE", "116 496 0"),
    ("Bristol", "BS", "117 496 0"),
    ("Reading", "RG", "118 496 0"),
    ("Birmingham", "B", "121 496 0"),
    ("Edinburgh", "EH", "131 496 0"),
    ("Glasgow", "G", "141 496 0"),
    ("Liverpool", "L", "151 496 0"),
    ("Manchester", "M", "161 496 0"),
    ("Newcastle upon Tyne", "NE", "191 498 0"),
    ("Cardiff", "CF", "29 2018 0"),
    ("Belfast", "BT", "28 9018 0"),
];

/// German cities with a postcode range start and the Bundesnetzagentur drama range
/// (area code without the trunk 0, subscriber prefix; three digits follow).
pub const DE_CITIES: &[(&str, u32, &str, &str)] = &[
    ("Berlin", 10115, "30", "23125"),
    ("Frankfurt am Main", 60306, "69", "90009"),
    ("Hamburg", 20095, "40", "66969"),
    ("Köln", 50667, "221", "4710"),
    ("München", 80331, "89", "99998"),
];

/// Australian cities with state, postcode start, and the ACMA fictitious landline range
/// (area digit, four-digit exchange; the generator uses the 0000-0999 block after it).
pub const AU_CITIES: &[(&str, &str, u32, &str, &str)] = &[
    ("Sydney", "NSW", 2000, "2", "5550"),
    ("Melbourne", "VIC", 3000, "3", "7010"),
    ("Brisbane", "QLD", 4000, "7", "5550"),
    ("Adelaide", "SA", 5000, "8", "7010"),
    ("Perth", "WA", 6000, "8", "7010"),
];

/// The split lists, built once.
pub struct Lists {
    /// (formal, nicknames); formal names come first in `first`.
    pub nicknames: Vec<(&'static str, Vec<&'static str>)>,
    /// All first names: the nicknamed formal ones interleaved with plain ones so both kinds
    /// sit at the front of the list the generator prefers.
    pub first: Vec<&'static str>,
    pub surnames: Vec<&'static str>,
    pub company_head: Vec<&'static str>,
    pub company_tail: Vec<&'static str>,
    pub streets: Vec<&'static str>,
    pub streets_de: Vec<&'static str>,
}

impl Lists {
    /// The nicknames of `first`, empty when it has none.
    pub fn nicknames_of(&self, first: &str) -> &[&'static str] {
        self.nicknames.iter().find(|(f, _)| *f == first).map_or(&[], |(_, n)| n.as_slice())
    }
}

fn split(s: &'static str) -> Vec<&'static str> {
    s.split('|').map(str::trim).filter(|x| !x.is_empty()).collect()
}

static LISTS: LazyLock<Lists> = LazyLock::new(|| {
    let nicknames: Vec<(&str, Vec<&str>)> = split(NICKNAMED)
        .into_iter()
        .filter_map(|entry| {
            let (formal, nicks) = entry.split_once('=')?;
            Some((formal, nicks.split(',').collect()))
        })
        .collect();
    let plain = split(FIRST_PLAIN);
    let mut first = Vec::with_capacity(nicknames.len() + plain.len());
    let mut formal = nicknames.iter().map(|(f, _)| *f);
    let mut plain_iter = plain.iter().copied();
    loop {
        let a = formal.next();
        let b = plain_iter.next();
        if a.is_none() && b.is_none() {
            break;
        }
        for name in a.into_iter().chain(b) {
            if !first.contains(&name) {
                first.push(name);
            }
        }
    }
    let mut surnames = Vec::new();
    for s in split(SURNAMES) {
        if !surnames.contains(&s) {
            surnames.push(s);
        }
    }
    Lists {
        nicknames,
        first,
        surnames,
        company_head: split(COMPANY_HEAD),
        company_tail: split(COMPANY_TAIL),
        streets: split(STREET_NAMES),
        streets_de: split(STREET_NAMES_DE),
    }
});

pub fn lists() -> &'static Lists {
    &LISTS
}
