//! Closed-loop vocabulary: opportunities (Salesforce Opportunity, HubSpot deal) linked to the
//! people on them, campaign touches (Salesforce CampaignMember, HubSpot form conversions) per
//! person, and sales activities (Salesforce Task) that count as contact attempts on the SLA
//! clock, as read from a system. No IO; serde only so the ledger can keep its own JSON.
//!
//! Money is an integer count of cents (`amount_cents`), never a float: reports sum it, and a
//! sum of floats is not reproducible. Vendors send amounts as decimals (Salesforce a JSON
//! number with scale 2, HubSpot a string); [`parse_amount_cents`] reads both exactly and
//! rounds a third decimal half away from zero.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::RemoteId;

/// One opportunity or deal as a system holds it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opportunity {
    /// `Opportunity/006…` or `deal/123`; the system is the one that was polled.
    pub remote: RemoteId,
    pub name: Option<String>,
    /// In cents of `currency` (or of the system's single currency when `None`).
    pub amount_cents: Option<i64>,
    /// ISO 4217 code when the system says (HubSpot `deal_currency_code`); Salesforce orgs
    /// without multi-currency send none.
    pub currency: Option<String>,
    /// The vendor's stage value as stored (Salesforce `StageName`, HubSpot `dealstage` id).
    pub stage: String,
    /// HubSpot pipeline id; `None` for Salesforce.
    pub pipeline: Option<String>,
    pub is_closed: bool,
    pub is_won: bool,
    pub close_date: Option<NaiveDate>,
    /// Primary campaign source (Salesforce `CampaignId`); HubSpot deals carry none.
    pub primary_campaign: Option<String>,
    /// The people on the opportunity, primary first. Always the complete current list.
    pub contacts: Vec<OpportunityContact>,
    pub created_at: Option<DateTime<Utc>>,
    /// The vendor's modification stamp of the opportunity or of its newest contact link,
    /// whichever made it part of this page.
    pub modified_at: DateTime<Utc>,
    /// In the recycle bin (Salesforce) or archived (HubSpot): no longer counts.
    pub deleted: bool,
}

/// A person on an opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpportunityContact {
    /// `Contact/003…` or `contact/51`.
    pub person: RemoteId,
    pub primary: bool,
    /// Salesforce `OpportunityContactRole.Role`; HubSpot association label when one is set.
    pub role: Option<String>,
}

/// How a touch came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchKind {
    /// Salesforce CampaignMember: the person is in a campaign (responded or not).
    CampaignMember,
    /// HubSpot: a form submission or other conversion event recorded on the contact.
    FormSubmission,
}

impl TouchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TouchKind::CampaignMember => "campaign_member",
            TouchKind::FormSubmission => "form_submission",
        }
    }
}

/// One campaign touch of one person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignTouch {
    /// Stable id of this touch in its system, for idempotent storage: the CampaignMember id,
    /// or `<contact id>:<event>:<epoch ms>` for a HubSpot conversion.
    pub touch_id: String,
    /// The person touched: the Contact when the membership names one, else the Lead.
    pub person: RemoteId,
    /// The Lead too, when a converted lead's membership names both.
    pub lead: Option<RemoteId>,
    /// Salesforce Campaign id; for HubSpot the conversion event name.
    pub campaign_id: String,
    pub campaign_name: Option<String>,
    pub kind: TouchKind,
    /// When the touch happened: membership created, or conversion time.
    pub at: DateTime<Utc>,
    /// Responded to the campaign (a HubSpot conversion always is one).
    pub responded: bool,
    /// Salesforce `FirstRespondedDate`.
    pub responded_on: Option<NaiveDate>,
    pub modified_at: DateTime<Utc>,
    /// The membership was deleted: the touch no longer counts.
    pub deleted: bool,
}

/// What kind of contact attempt an activity was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// Salesforce `TaskSubtype = Call` (a logged call).
    Call,
    /// Salesforce `TaskSubtype` `Email` or `ListEmail`.
    Email,
    /// A meeting (Salesforce Event; not read yet, so never produced today).
    Meeting,
    /// Any other task (`Task`, `Cadence`, `LinkedIn`, or none).
    Other,
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Call => "call",
            ActivityKind::Email => "email",
            ActivityKind::Meeting => "meeting",
            ActivityKind::Other => "other",
        }
    }
}

/// One sales activity logged on a person's record (the system is the one that was polled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Stable id in its system (the Task id), for idempotent storage.
    pub activity_id: String,
    /// The Lead or Contact the activity names (`Lead/00Q…`, `Contact/003…`). After a lead
    /// conversion Salesforce moves the activity to the Contact: the same `activity_id` then
    /// comes back with the Contact here.
    pub who_remote_id: RemoteId,
    pub kind: ActivityKind,
    /// When it was logged (the Task's creation time). Salesforce's own due date is a date
    /// only, and its midnight would date the attempt too early.
    pub at: DateTime<Utc>,
    /// Done (a closed task): only a done activity is a contact attempt, not a to-do.
    pub completed: bool,
    pub modified_at: DateTime<Utc>,
    /// In the recycle bin: stored as deleted; an attempt already counted stays counted.
    pub deleted: bool,
}

/// Read a decimal amount (`"1234.5"`, `"-3"`, `"1.5E3"`) as cents, rounding a third decimal
/// half away from zero. `None` for anything that is not a finite number.
pub fn parse_amount_cents(raw: &str) -> Option<i64> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    if s.contains(['e', 'E']) {
        // Exponent forms only come from float serialisers; precision is already gone there.
        let x: f64 = s.parse().ok()?;
        let cents = (x * 100.0).round();
        return (cents.is_finite() && cents.abs() < 9.0e18).then_some(cents as i64);
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let f = frac.as_bytes();
    let digit = |i: usize| f.get(i).map_or(0, |b| i64::from(b - b'0'));
    let mut cents = whole.checked_mul(100)?.checked_add(digit(0) * 10 + digit(1))?;
    if digit(2) >= 5 {
        cents = cents.checked_add(1)?;
    }
    Some(if neg { -cents } else { cents })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly_to_cents() {
        assert_eq!(parse_amount_cents("1234.5"), Some(123_450));
        assert_eq!(parse_amount_cents("15000"), Some(1_500_000));
        assert_eq!(parse_amount_cents("15000.0"), Some(1_500_000));
        assert_eq!(parse_amount_cents("0.105"), Some(11));
        assert_eq!(parse_amount_cents("0.104"), Some(10));
        assert_eq!(parse_amount_cents("-2.5"), Some(-250));
        assert_eq!(parse_amount_cents(".5"), Some(50));
        assert_eq!(parse_amount_cents("1.5E3"), Some(150_000));
        assert_eq!(parse_amount_cents(""), None);
        assert_eq!(parse_amount_cents("12,50"), None);
        assert_eq!(parse_amount_cents("abc"), None);
        assert_eq!(parse_amount_cents("."), None);
    }
}
