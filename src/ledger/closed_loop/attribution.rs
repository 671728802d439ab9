//! The attribution report: won revenue and pipeline by first-touch and last-touch campaign,
//! computed from the ledger alone.
//!
//! Definitions (README "Reports" says the same for operators):
//! - **Won revenue**: opportunities closed and won whose close date (a calendar date, UTC) is
//!   within the window's dates, both ends included.
//! - **Pipeline**: opportunities still open (not closed, whatever the stage) that were created
//!   within the window (vendor creation time; the time leadsync first saw the record when the
//!   vendor gives none). Closed-lost and deleted opportunities count nowhere.
//! - **The person of an opportunity**: its primary contact's person; when the primary contact
//!   is not linked to a ledger person (or there is no primary), the next contact in the order
//!   the system gave them that is. Remote ids resolve through `links` (open or closed, so a
//!   converted lead still counts) and then through merges to the surviving person.
//! - **Touches**: that person's campaign touches from every system, not deleted, responded
//!   only unless asked otherwise, strictly before the opportunity's creation. The first
//!   touch is the earliest, the last touch the latest; touches at the same instant are
//!   ordered by (system, touch id), the first touch taking the smallest and the last touch
//!   the largest, so a rerun credits the same campaign.
//! - An opportunity with no linked person is credited to `no_person`, one whose person had no
//!   touch before it to `no_touch`: every opportunity in the window lands in exactly one row
//!   per model, so each model's rows add up to the same totals.
//! - Amounts are integer cents summed per currency (a missing amount counts as 0 but the
//!   opportunity still counts); rows never mix currencies.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde::Serialize;

use super::super::{Ledger, LedgerError, LedgerReader, Result, parse_ts, ts};

/// What to report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributionQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Count only touches where the person responded (a Salesforce membership with a
    /// responded status; every HubSpot conversion). `false` counts every membership.
    pub responded_only: bool,
    /// Count only the opportunities of these systems (touches still come from every
    /// system); `None`: every system. For orgs where HubSpot deals mirror Salesforce
    /// opportunities (the vendors' own integration), which would otherwise count twice.
    pub opportunity_systems: Option<BTreeSet<String>>,
}

/// An attribution model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchModel {
    FirstTouch,
    LastTouch,
}

impl TouchModel {
    pub const ALL: [TouchModel; 2] = [TouchModel::FirstTouch, TouchModel::LastTouch];

    pub fn as_str(self) -> &'static str {
        match self {
            TouchModel::FirstTouch => "first_touch",
            TouchModel::LastTouch => "last_touch",
        }
    }
}

/// What a row credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditSource {
    /// A campaign (`system` and `campaign_id` say which).
    Campaign,
    /// The person had no (counted) touch before the opportunity was created.
    NoTouch,
    /// No contact of the opportunity is linked to a ledger person.
    NoPerson,
}

impl CreditSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditSource::Campaign => "campaign",
            CreditSource::NoTouch => "no_touch",
            CreditSource::NoPerson => "no_person",
        }
    }
}

/// Won revenue and pipeline credited to one campaign (or bucket) under one model, in one
/// currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributionRow {
    pub model: TouchModel,
    pub source: CreditSource,
    /// The system the campaign belongs to (`None` for the `no_*` buckets).
    pub system: Option<String>,
    /// Salesforce Campaign id, or the HubSpot conversion event name.
    pub campaign_id: Option<String>,
    /// The newest name any touch reported for the campaign.
    pub campaign_name: Option<String>,
    /// ISO 4217 code, `None` for a system's single currency.
    pub currency: Option<String>,
    pub won_count: u64,
    pub won_cents: i64,
    pub pipeline_count: u64,
    pub pipeline_cents: i64,
}

/// Everything in the window, per currency (each model's rows add up to this).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttributionTotal {
    pub currency: Option<String>,
    pub won_count: u64,
    pub won_cents: i64,
    pub pipeline_count: u64,
    pub pipeline_cents: i64,
}

/// Whether an opportunity counts as won revenue or as pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpportunityOutcome {
    Won,
    Pipeline,
}

/// A touch credited with an opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditedTouch {
    pub system: String,
    pub touch_id: String,
    pub campaign_id: String,
    pub at: DateTime<Utc>,
}

/// How one opportunity was attributed (ids only: this goes into `--format json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributedOpportunity {
    pub system: String,
    pub remote_id: String,
    pub outcome: OpportunityOutcome,
    pub amount_cents: Option<i64>,
    pub currency: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The surviving ledger person it was attributed through.
    pub person: Option<String>,
    pub first_touch: Option<CreditedTouch>,
    pub last_touch: Option<CreditedTouch>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributionReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub responded_only: bool,
    /// The systems whose opportunities were counted; `None`: all.
    pub opportunity_systems: Option<BTreeSet<String>>,
    /// Sorted: by model (first touch, then last touch), won amount and pipeline amount
    /// descending, then source, system, campaign id and currency.
    pub rows: Vec<AttributionRow>,
    /// Per currency, sorted by currency (`None` first).
    pub totals: Vec<AttributionTotal>,
    /// Every opportunity counted, sorted by system and remote id.
    pub opportunities: Vec<AttributedOpportunity>,
}

impl Ledger {
    /// The attribution report over the ledger (see the module docs for the definitions).
    /// This holds the writer's connection while it runs: commands use
    /// [`LedgerReader::attribution`], which does not.
    ///
    /// # Errors
    /// SQLite failures or a corrupt timestamp.
    pub fn attribution(&self, q: &AttributionQuery) -> Result<AttributionReport> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        attribution(&conn, q)
    }
}

impl LedgerReader {
    /// The attribution report over the ledger (see [`Ledger::attribution`]).
    ///
    /// # Errors
    /// SQLite failures or a corrupt timestamp.
    pub fn attribution(&self, q: &AttributionQuery) -> Result<AttributionReport> {
        attribution(&self.conn, q)
    }
}

/// Ledger person ids, followed through merges to the survivor.
struct Persons {
    merged_into: HashMap<String, String>,
}

impl Persons {
    fn load(conn: &Connection) -> Result<Persons> {
        let mut stmt =
            conn.prepare("SELECT id, merged_into FROM leads WHERE merged_into IS NOT NULL")?;
        let merged_into = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(Persons { merged_into })
    }

    /// The surviving person of `id`; `None` for a chain longer than any merge history
    /// should be (a cycle), the same bound as `identity::surviving_lead`.
    fn surviving(&self, id: &str) -> Option<String> {
        let mut current = id;
        for _ in 0..32 {
            match self.merged_into.get(current) {
                Some(next) => current = next,
                None => return Some(current.to_string()),
            }
        }
        None
    }
}

struct Opp {
    system: String,
    remote_id: String,
    amount_cents: Option<i64>,
    currency: Option<String>,
    outcome: OpportunityOutcome,
    created_at: DateTime<Utc>,
}

#[derive(Clone)]
struct Touch {
    system: String,
    touch_id: String,
    campaign_id: String,
    at: DateTime<Utc>,
}

impl Touch {
    fn key(&self) -> (DateTime<Utc>, &str, &str) {
        (self.at, &self.system, &self.touch_id)
    }

    fn credited(&self) -> CreditedTouch {
        CreditedTouch {
            system: self.system.clone(),
            touch_id: self.touch_id.clone(),
            campaign_id: self.campaign_id.clone(),
            at: self.at,
        }
    }
}

fn opportunities_in_window(conn: &Connection, q: &AttributionQuery) -> Result<Vec<Opp>> {
    let date = |t: DateTime<Utc>| t.date_naive().format("%Y-%m-%d").to_string();
    let mut stmt = conn.prepare(
        "SELECT system, remote_id, amount_cents, currency, is_won,
                COALESCE(created_at, first_seen_at)
         FROM opportunities
         WHERE deleted = 0 AND (
            (is_closed = 1 AND is_won = 1 AND close_date >= ?1 AND close_date <= ?2)
            OR (is_closed = 0 AND COALESCE(created_at, first_seen_at) >= ?3
                AND COALESCE(created_at, first_seen_at) <= ?4))
         ORDER BY system, remote_id",
    )?;
    let rows = stmt.query_map(params![date(q.from), date(q.to), ts(q.from), ts(q.to)], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, i64>(4)? != 0,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (system, remote_id, amount_cents, currency, won, created) = row?;
        if q.opportunity_systems.as_ref().is_some_and(|only| !only.contains(&system)) {
            continue;
        }
        out.push(Opp {
            system,
            remote_id,
            amount_cents,
            currency,
            outcome: if won { OpportunityOutcome::Won } else { OpportunityOutcome::Pipeline },
            created_at: parse_ts(&created)?,
        });
    }
    Ok(out)
}

/// The person an opportunity is attributed through: the primary contact's, else the first
/// contact's that resolves.
fn person_of(conn: &Connection, persons: &Persons, opp: &Opp) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.lead_id FROM opportunity_contacts c
         LEFT JOIN links l ON l.system = c.system AND l.object_type = c.object_type
                          AND l.remote_id = c.remote_id
         WHERE c.system = ?1 AND c.opportunity_id = ?2
         ORDER BY c.is_primary DESC, c.position",
    )?;
    let leads =
        stmt.query_map(params![opp.system, opp.remote_id], |r| r.get::<_, Option<String>>(0))?;
    for lead in leads {
        if let Some(p) = lead?.and_then(|id| persons.surviving(&id)) {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// The counted touches of the given persons.
fn touches_of(
    conn: &Connection,
    persons: &Persons,
    wanted: &BTreeSet<String>,
    responded_only: bool,
) -> Result<HashMap<String, Vec<Touch>>> {
    let mut stmt = conn.prepare(
        "SELECT t.system, t.touch_id, t.campaign_id, t.at, lp.lead_id, ll.lead_id
         FROM campaign_touches t
         LEFT JOIN links lp ON lp.system = t.system AND lp.object_type = t.person_type
                           AND lp.remote_id = t.person_id
         LEFT JOIN links ll ON t.lead_id IS NOT NULL AND ll.system = t.system
                           AND ll.object_type = t.lead_type AND ll.remote_id = t.lead_id
         WHERE t.deleted = 0 AND (t.responded = 1 OR ?1 = 0)",
    )?;
    let rows = stmt.query_map([i64::from(responded_only)], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out: HashMap<String, Vec<Touch>> = HashMap::new();
    for row in rows {
        let (system, touch_id, campaign_id, at, by_person, by_lead) = row?;
        // The record the touch names first; the lead it came from when that one is unlinked.
        let person = by_person
            .and_then(|id| persons.surviving(&id))
            .or_else(|| by_lead.and_then(|id| persons.surviving(&id)));
        let Some(person) = person.filter(|p| wanted.contains(p)) else { continue };
        let at = parse_ts(&at)?;
        out.entry(person).or_default().push(Touch { system, touch_id, campaign_id, at });
    }
    Ok(out)
}

/// The newest name reported for each campaign.
fn campaign_names(conn: &Connection) -> Result<HashMap<(String, String), String>> {
    let mut stmt = conn.prepare(
        "SELECT system, campaign_id, campaign_name FROM campaign_touches
         WHERE campaign_name IS NOT NULL ORDER BY modified_at, system, touch_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get::<_, String>(2)?))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (k, v) = row?;
        out.insert(k, v);
    }
    Ok(out)
}

#[derive(Default)]
struct Acc {
    won_count: u64,
    won_cents: i64,
    pipeline_count: u64,
    pipeline_cents: i64,
}

impl Acc {
    fn add(&mut self, outcome: OpportunityOutcome, cents: i64) {
        // Saturating: a sum past 92 quadrillion cents is not a business we will meet, and a
        // report must not panic.
        match outcome {
            OpportunityOutcome::Won => {
                self.won_count += 1;
                self.won_cents = self.won_cents.saturating_add(cents);
            }
            OpportunityOutcome::Pipeline => {
                self.pipeline_count += 1;
                self.pipeline_cents = self.pipeline_cents.saturating_add(cents);
            }
        }
    }
}

type RowKey = (TouchModel, CreditSource, Option<String>, Option<String>, Option<String>);

pub(crate) fn attribution(conn: &Connection, q: &AttributionQuery) -> Result<AttributionReport> {
    let persons = Persons::load(conn)?;
    let opps = opportunities_in_window(conn, q)?;
    let mut person_by_opp = Vec::with_capacity(opps.len());
    for o in &opps {
        person_by_opp.push(person_of(conn, &persons, o)?);
    }
    let wanted: BTreeSet<String> = person_by_opp.iter().flatten().cloned().collect();
    let touches = touches_of(conn, &persons, &wanted, q.responded_only)?;
    let names = campaign_names(conn)?;

    let mut acc: BTreeMap<RowKey, Acc> = BTreeMap::new();
    let mut totals: BTreeMap<Option<String>, Acc> = BTreeMap::new();
    let mut detail = Vec::with_capacity(opps.len());
    for (o, person) in opps.into_iter().zip(person_by_opp) {
        let before: Vec<&Touch> = person
            .as_ref()
            .and_then(|p| touches.get(p))
            .map(|list| list.iter().filter(|t| t.at < o.created_at).collect())
            .unwrap_or_default();
        let first = before.iter().min_by(|a, b| a.key().cmp(&b.key())).copied();
        let last = before.iter().max_by(|a, b| a.key().cmp(&b.key())).copied();
        let cents = o.amount_cents.unwrap_or(0);
        for (model, touch) in [(TouchModel::FirstTouch, first), (TouchModel::LastTouch, last)] {
            let key: RowKey = match (touch, &person) {
                (Some(t), _) => (
                    model,
                    CreditSource::Campaign,
                    Some(t.system.clone()),
                    Some(t.campaign_id.clone()),
                    o.currency.clone(),
                ),
                (None, Some(_)) => (model, CreditSource::NoTouch, None, None, o.currency.clone()),
                (None, None) => (model, CreditSource::NoPerson, None, None, o.currency.clone()),
            };
            acc.entry(key).or_default().add(o.outcome, cents);
        }
        totals.entry(o.currency.clone()).or_default().add(o.outcome, cents);
        detail.push(AttributedOpportunity {
            system: o.system,
            remote_id: o.remote_id,
            outcome: o.outcome,
            amount_cents: o.amount_cents,
            currency: o.currency,
            created_at: o.created_at,
            person,
            first_touch: first.map(Touch::credited),
            last_touch: last.map(Touch::credited),
        });
    }

    let mut rows: Vec<AttributionRow> = acc
        .into_iter()
        .map(|((model, source, system, campaign_id, currency), a)| {
            let campaign_name = match (&system, &campaign_id) {
                (Some(s), Some(c)) => names.get(&(s.clone(), c.clone())).cloned(),
                _ => None,
            };
            AttributionRow {
                model,
                source,
                system,
                campaign_id,
                campaign_name,
                currency,
                won_count: a.won_count,
                won_cents: a.won_cents,
                pipeline_count: a.pipeline_count,
                pipeline_cents: a.pipeline_cents,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        a.model
            .cmp(&b.model)
            .then_with(|| b.won_cents.cmp(&a.won_cents))
            .then_with(|| b.pipeline_cents.cmp(&a.pipeline_cents))
            .then_with(|| a.source.cmp(&b.source))
            .then_with(|| a.system.cmp(&b.system))
            .then_with(|| a.campaign_id.cmp(&b.campaign_id))
            .then_with(|| a.currency.cmp(&b.currency))
    });
    let totals = totals
        .into_iter()
        .map(|(currency, a)| AttributionTotal {
            currency,
            won_count: a.won_count,
            won_cents: a.won_cents,
            pipeline_count: a.pipeline_count,
            pipeline_cents: a.pipeline_cents,
        })
        .collect();
    Ok(AttributionReport {
        from: q.from,
        to: q.to,
        responded_only: q.responded_only,
        opportunity_systems: q.opportunity_systems.clone(),
        rows,
        totals,
        opportunities: detail,
    })
}
