//! Closed-loop objects on the simulated org: Campaign, CampaignMember, Opportunity,
//! OpportunityContactRole and Task (activities; fields and `LastActivityDate` upkeep in
//! `store/activities.rs`), as a person in the UI creates them, and a seeded generator that
//! adds them to an org that already holds people.
//!
//! The objects themselves live in `store.rs` like Lead and Contact, so the whole REST surface
//! (SOQL `query`/`queryAll` with cursors, sObject rows and collections, `updated`/`deleted`)
//! serves them with the same auth, limits and error shapes. Field lists follow the Salesforce
//! Object Reference (Opportunity, OpportunityContactRole, Campaign, CampaignMember, and
//! CampaignMemberStatus for the responded flag). Choices where the references leave room:
//! - `Opportunity.IsClosed`/`IsWon` are read-only and derived from `StageName` on every save:
//!   `Closed Won` is closed and won, `Closed Lost` closed and lost, the other default stages
//!   open (the default `OpportunityStage` metadata). `StageName` is a restricted picklist of the
//!   ten default stages; `Amount` a currency field sent as a JSON number; `CloseDate` a date
//!   (`YYYY-MM-DD`). The org is single-currency: no `CurrencyIsoCode`.
//! - `CampaignMember.Status` defaults to `Sent`; `Responded` is the only responded status, as
//!   on a new campaign. `HasResponded` follows the status on every save and
//!   `FirstRespondedDate` is set (simulated clock, UTC date) the first time it becomes true and
//!   then kept. `CampaignId`, `LeadId` and `ContactId` are create-only; one membership per
//!   person and campaign (`DUPLICATE_VALUE` "Already a campaign member.").
//! - Converting a lead fills `ContactId` on its memberships (keeping `LeadId`), which moves
//!   their modstamps, so a poller sees the touch move to the contact.
//! - `OpportunityContactRole.OpportunityId` is create-only, `ContactId` must be a live Contact.
//!   Adding or removing a role does not move the opportunity's `SystemModstamp` (it is a
//!   separate record); a client polls roles by their own `SystemModstamp`. Not modelled: at
//!   most one primary role per opportunity (Salesforce clears the old primary), merges moving
//!   roles and memberships to the surviving record.
//! - Lookups to objects the simulator holds must name a live record
//!   (`INVALID_CROSS_REFERENCE_KEY`); Account and User ids are only checked for their prefix.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::SalesforceSim;
use super::store::{CAMPAIGN_MEMBER_STATUSES, CONTACT_ROLES, OPPORTUNITY_STAGES};

/// Knobs of [`SalesforceSim::seed_closed_loop`]. Shares are of the live Leads and Contacts
/// present when it runs.
#[derive(Debug, Clone)]
pub struct ClosedLoopSeed {
    pub seed: u64,
    pub campaigns: usize,
    /// Share of people who are members of 1 to 3 campaigns.
    pub member_share: f64,
    /// Share of members who responded.
    pub responded_share: f64,
    /// Share of people with an opportunity (a Lead is converted first, as in the UI).
    pub opportunity_share: f64,
}

impl Default for ClosedLoopSeed {
    fn default() -> ClosedLoopSeed {
        ClosedLoopSeed {
            seed: 7,
            campaigns: 8,
            member_share: 0.4,
            responded_share: 0.5,
            opportunity_share: 0.1,
        }
    }
}

/// What [`SalesforceSim::seed_closed_loop`] created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosedLoopSeeded {
    pub campaigns: Vec<String>,
    pub members: usize,
    pub opportunities: Vec<String>,
    pub converted_leads: usize,
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl SalesforceSim {
    /// Create a Campaign as in the UI; returns its id.
    ///
    /// # Errors
    /// `"<CODE>: <message>"` when Salesforce would refuse it.
    pub fn create_campaign(&self, name: &str) -> Result<String, String> {
        self.insert(
            "Campaign",
            fields(json!({"Name": name, "IsActive": true, "Status": "In Progress"})),
        )
    }

    /// Add a Lead or Contact (`person_id`, by prefix) to a campaign with `status` (`Sent` or
    /// `Responded`); returns the CampaignMember id.
    ///
    /// # Errors
    /// Unknown campaign or person, or an existing membership.
    pub fn add_campaign_member(
        &self,
        campaign_id: &str,
        person_id: &str,
        status: &str,
    ) -> Result<String, String> {
        let key = if person_id.starts_with("00Q") { "LeadId" } else { "ContactId" };
        self.insert(
            "CampaignMember",
            fields(json!({"CampaignId": campaign_id, key: person_id, "Status": status})),
        )
    }

    /// Create an Opportunity; `amount` in the org currency, `close_date` as `YYYY-MM-DD`,
    /// `campaign_id` the primary campaign source. Returns its id.
    ///
    /// # Errors
    /// An unknown stage or campaign, or a malformed date.
    pub fn create_opportunity(
        &self,
        name: &str,
        amount: Option<f64>,
        stage: &str,
        close_date: &str,
        campaign_id: Option<&str>,
    ) -> Result<String, String> {
        self.insert(
            "Opportunity",
            fields(json!({
                "Name": name,
                "Amount": amount,
                "StageName": stage,
                "CloseDate": close_date,
                "CampaignId": campaign_id,
            })),
        )
    }

    /// Link a Contact to an Opportunity; returns the OpportunityContactRole id.
    ///
    /// # Errors
    /// Unknown opportunity or contact.
    pub fn add_contact_role(
        &self,
        opportunity_id: &str,
        contact_id: &str,
        primary: bool,
        role: Option<&str>,
    ) -> Result<String, String> {
        self.insert(
            "OpportunityContactRole",
            fields(json!({
                "OpportunityId": opportunity_id,
                "ContactId": contact_id,
                "IsPrimary": primary,
                "Role": role,
            })),
        )
    }

    /// Move an opportunity to `stage` (and `amount`, when given), as a person in the UI.
    ///
    /// # Errors
    /// Unknown opportunity or stage.
    pub fn set_opportunity_stage(
        &self,
        opportunity_id: &str,
        stage: &str,
        amount: Option<f64>,
    ) -> Result<(), String> {
        let mut m = fields(json!({"StageName": stage}));
        if let Some(a) = amount {
            m.insert("Amount".into(), json!(a));
        }
        self.ui_update("Opportunity", opportunity_id, m)
    }

    /// Log a completed activity on a Lead or Contact, as a rep's "Log a Call" (subtype
    /// `Call`), a sent email (`Email`) or a closed to-do (`Task`) does: a Task with `WhoId`,
    /// `Subject` = the subtype, `Status = Completed` and due date `date` (the date the rep
    /// picks; the UI defaults it to today). `CreatedDate` is the simulated clock. The
    /// person's `LastActivityDate` moves when `date` is their latest. Returns the Task id.
    ///
    /// # Errors
    /// An unknown or converted person, or a subtype that is not one of
    /// `Task, Email, ListEmail, Cadence, Call, LinkedIn`.
    pub fn log_task(
        &self,
        who_id: &str,
        subtype: &str,
        date: chrono::NaiveDate,
    ) -> Result<String, String> {
        self.insert(
            "Task",
            fields(json!({
                "WhoId": who_id,
                "Subject": subtype,
                "TaskSubtype": subtype,
                "Status": "Completed",
                "ActivityDate": date.format("%Y-%m-%d").to_string(),
            })),
        )
    }

    /// Add closed-loop objects to the people already in the org, deterministically from
    /// `opts.seed`: campaigns, memberships (some responded), and for a share of people an
    /// opportunity with a primary contact role, its primary campaign source one of the
    /// person's campaigns. A Lead that gets an opportunity is converted first, as the UI's
    /// Convert button would (the opportunity then belongs to the new Contact). Stages, amounts
    /// and close dates vary; about a third are closed, most of those won.
    ///
    /// # Errors
    /// A record the simulator refused (a bug in the generator).
    pub fn seed_closed_loop(&self, opts: &ClosedLoopSeed) -> Result<ClosedLoopSeeded, String> {
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let mut out = ClosedLoopSeeded::default();
        for i in 0..opts.campaigns.max(1) {
            out.campaigns.push(self.create_campaign(&format!("Campaign {:02}", i + 1))?);
        }
        let mut people: Vec<String> = Vec::new();
        for object in ["Lead", "Contact"] {
            for rec in self.all(object) {
                let converted = rec.get("IsConverted").and_then(Value::as_bool).unwrap_or(false);
                if let (false, Some(id)) = (converted, rec.get("Id").and_then(Value::as_str)) {
                    people.push(id.to_owned());
                }
            }
        }
        for person in people {
            let mut joined: Vec<String> = Vec::new();
            if rng.random_bool(opts.member_share.clamp(0.0, 1.0)) {
                let n = rng.random_range(1..=3usize).min(out.campaigns.len());
                while joined.len() < n {
                    let c = out.campaigns[rng.random_range(0..out.campaigns.len())].clone();
                    if joined.contains(&c) {
                        continue;
                    }
                    let responded = rng.random_bool(opts.responded_share.clamp(0.0, 1.0));
                    let status = CAMPAIGN_MEMBER_STATUSES[usize::from(responded)];
                    self.add_campaign_member(&c, &person, status)?;
                    out.members += 1;
                    joined.push(c);
                }
            }
            if !rng.random_bool(opts.opportunity_share.clamp(0.0, 1.0)) {
                continue;
            }
            let contact = if person.starts_with("00Q") {
                out.converted_leads += 1;
                self.convert_lead(&person)?
            } else {
                person.clone()
            };
            let stage = if rng.random_bool(0.35) {
                if rng.random_bool(0.7) { "Closed Won" } else { "Closed Lost" }
            } else {
                OPPORTUNITY_STAGES[rng.random_range(0..8usize)]
            };
            let amount = f64::from(rng.random_range(10u32..=500)) * 100.0;
            let close = format!(
                "2026-{:02}-{:02}",
                rng.random_range(1..=12u32),
                rng.random_range(1..=28u32)
            );
            let campaign = joined.first().map(String::as_str);
            let opp = self.create_opportunity(
                &format!("Deal {}", out.opportunities.len() + 1),
                Some(amount),
                stage,
                &close,
                campaign,
            )?;
            let role = CONTACT_ROLES[rng.random_range(0..CONTACT_ROLES.len())];
            self.add_contact_role(&opp, &contact, true, Some(role))?;
            out.opportunities.push(opp);
        }
        Ok(out)
    }
}
