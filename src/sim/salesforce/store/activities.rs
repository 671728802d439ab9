//! The `Task` sObject and what Salesforce keeps up to date from it: `LastActivityDate` on the
//! Lead or Contact a task names in `WhoId`.
//!
//! Facts (Object Reference, Task; Salesforce Help "Differences between Last Activity and Last
//! Modified Dates" and "Difference between SystemModStamp and LastModifiedDate"):
//! - `LastActivityDate` (a date, read-only) is the latest due date (`ActivityDate`) of the
//!   record's *closed* tasks (or the latest event date), not the creation or modification
//!   time of any task; an open task does not move it, and a closed task with a due date in the
//!   future does.
//! - A change of `LastActivityDate` moves the record's `SystemModstamp` but not its
//!   `LastModifiedDate`, and is no user edit (no outbound message).
//! - Converting a lead moves its tasks to the new Contact (`WhoId` changes).
//!
//! Choices where the references leave room, written down as decisions:
//! - `TaskSubtype` is a restricted picklist of the six standard subtypes, settable on create
//!   only; a task created without one gets `Task` (what the UI's "New Task" sets).
//! - `Status` is restricted to the default `TaskStatus` values and defaults to `Not Started`;
//!   `Completed` is the only closed status and `IsClosed` follows it on every save. `Priority`
//!   is restricted to `High`, `Normal`, `Low` and defaults to `Normal`.
//! - `WhoId` takes a Lead or Contact id (`MALFORMED_ID` otherwise), must name a live record
//!   (`INVALID_CROSS_REFERENCE_KEY`), and not a converted lead (`CANNOT_UPDATE_CONVERTED_LEAD`,
//!   "cannot reference converted lead", as Salesforce answers). No other lookup (`WhatId`,
//!   `AccountId`) and no `Event` object are modelled; shared activities (several `WhoId`s)
//!   neither.
//! - A closed task without a due date does not count for `LastActivityDate`. A converted
//!   lead keeps the `LastActivityDate` it had (it is read-only from then on).
//! - Archiving (`IsArchived`, tasks older than a year) is not modelled.
//! - Each task write recomputes the date from the whole Task table: O(tasks) per write, which
//!   is fine for the few tasks a test logs, unlike the O(1) writes of the other objects.

use super::{FieldDef, Kind, Obj, RecError, Record, Schema, Store, Undo, Val, normalize_id};

/// `Task.TaskSubtype` values (restricted picklist), the UI default first.
pub(crate) const TASK_SUBTYPES: [&str; 6] =
    ["Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"];

/// Default `TaskStatus` values of a new org, default first.
const TASK_STATUSES: [&str; 5] =
    ["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"];

/// The one closed task status (`TaskStatus.IsClosed`).
const CLOSED_STATUS: &str = "Completed";

const TASK_PRIORITIES: [&str; 3] = ["High", "Normal", "Low"];

/// Task fields beyond `Id` and `IsDeleted` (the system dates are added by the caller).
pub(super) fn task_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new("WhoId", Kind::Reference(&["00Q", "003"])),
        FieldDef::new("Subject", Kind::Text).len(255),
        FieldDef::new("TaskSubtype", Kind::Text).restricted(&TASK_SUBTYPES).create_only(),
        FieldDef::new("Status", Kind::Text).restricted(&TASK_STATUSES).required(),
        FieldDef::new("Priority", Kind::Text).restricted(&TASK_PRIORITIES).required(),
        FieldDef::new("ActivityDate", Kind::Date),
        FieldDef::new("IsClosed", Kind::Bool).ro(),
        FieldDef::new("Description", Kind::Text).len(32_000),
        FieldDef::new("OwnerId", Kind::Reference(&["005", "00G"])),
    ]
}

/// Picklist defaults of a new task, before the sent fields are applied.
pub(super) fn task_defaults(schema: &Schema, vals: &mut [Val]) {
    for (name, value) in
        [("TaskSubtype", TASK_SUBTYPES[0]), ("Status", TASK_STATUSES[0]), ("Priority", "Normal")]
    {
        if let Some(i) = schema.field(name) {
            vals[i] = Val::Str(value.to_owned());
        }
    }
}

/// `IsClosed` follows `Status` on every save.
pub(super) fn derive_task(schema: &Schema, vals: &mut [Val]) {
    if let (Some(st), Some(c)) = (schema.field("Status"), schema.field("IsClosed")) {
        vals[c] = Val::Bool(vals[st].as_str() == Some(CLOSED_STATUS));
    }
}

fn who_of(schema: &Schema, rec: &Record) -> Option<String> {
    schema.field("WhoId").and_then(|i| rec.vals[i].as_str()).map(str::to_owned)
}

impl Store {
    /// A task may not name a converted lead.
    pub(super) fn check_who(&self, obj: Obj, inc: &super::Incoming) -> Result<(), RecError> {
        if obj != Obj::Task {
            return Ok(());
        }
        let Some(i) = self.task.schema.field("WhoId") else { return Ok(()) };
        let Some(Val::Str(who)) = inc.get(i) else { return Ok(()) };
        let Some(id) = normalize_id(who) else { return Ok(()) };
        let lead = &self.lead;
        let converted = lead.row_of(&id).is_some_and(|r| {
            lead.schema.is_converted.is_some_and(|c| lead.rows[r].vals[c] == Val::Bool(true))
        });
        if converted {
            return Err(RecError::new(
                "CANNOT_UPDATE_CONVERTED_LEAD",
                "cannot reference converted lead",
                &["WhoId"],
            ));
        }
        Ok(())
    }

    /// After a task row was created, edited or deleted (`old`: its previous state): refresh
    /// the `LastActivityDate` of the people it named before and after.
    pub(super) fn task_written(&mut self, old: Option<&Record>, row: usize) {
        let schema = &self.task.schema;
        let mut whos: Vec<String> = old.and_then(|r| who_of(schema, r)).into_iter().collect();
        if let Some(w) = who_of(schema, &self.task.rows[row])
            && !whos.contains(&w)
        {
            whos.push(w);
        }
        for w in whos {
            self.refresh_last_activity(&w);
        }
    }

    /// The people named by the tasks an all-or-none rollback is about to undo, before and
    /// after (created rows are the last rows of the table, in order).
    pub(super) fn whos_of_undo(&self, undo: &[Undo]) -> Vec<String> {
        let schema = &self.task.schema;
        let mut out: Vec<String> = Vec::new();
        let created = undo.iter().filter(|u| matches!(u, Undo::Created(Obj::Task))).count();
        let first_created = self.task.rows.len().saturating_sub(created);
        for rec in &self.task.rows[first_created..] {
            out.extend(who_of(schema, rec));
        }
        for u in undo {
            if let Undo::Replaced(Obj::Task, row, old) = u {
                out.extend(who_of(schema, old));
                out.extend(who_of(schema, &self.task.rows[*row]));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Conversion moves the lead's tasks, open and closed, to the new Contact; their dates
    /// move, and the Contact's `LastActivityDate` follows.
    pub(super) fn reparent_tasks(&mut self, lead_id: &str, contact_id: &str) {
        let Some(who) = self.task.schema.field("WhoId") else { return };
        let rows: Vec<usize> = (0..self.task.rows.len())
            .filter(|r| {
                let rec = &self.task.rows[*r];
                !rec.is_deleted() && rec.vals[who].as_str() == Some(lead_id)
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        for row in rows {
            let stamp = self.next_stamp();
            let table = &mut self.task;
            let mut rec = table.rows[row].clone();
            rec.vals[who] = Val::Str(contact_id.to_owned());
            rec.vals[table.schema.last_modified] = Val::Dt(stamp);
            rec.vals[table.schema.modstamp] = Val::Dt(stamp);
            table.replace(row, rec);
        }
        self.refresh_last_activity(contact_id);
    }

    /// Set a Lead's or Contact's `LastActivityDate` to the latest due date of its live closed
    /// tasks; when it changes, only `SystemModstamp` moves. Converted leads are left alone.
    pub(super) fn refresh_last_activity(&mut self, who_id: &str) {
        let obj = match Obj::of_id(who_id) {
            Some(o @ (Obj::Lead | Obj::Contact)) => o,
            _ => return,
        };
        let Some(row) = self.table(obj).row_of(who_id) else { return };
        let table = self.table(obj);
        let rec = &table.rows[row];
        let converted = table.schema.is_converted.is_some_and(|c| rec.vals[c] == Val::Bool(true));
        let Some(field) = table.schema.last_activity else { return };
        if rec.is_deleted() || converted {
            return;
        }
        let ts = &self.task.schema;
        let (Some(who_f), Some(closed_f), Some(date_f)) =
            (ts.field("WhoId"), ts.field("IsClosed"), ts.field("ActivityDate"))
        else {
            return;
        };
        // `YYYY-MM-DD` strings order like the dates they are.
        let latest = self
            .task
            .rows
            .iter()
            .filter(|t| {
                !t.is_deleted()
                    && t.vals[who_f].as_str() == Some(who_id)
                    && t.vals[closed_f] == Val::Bool(true)
            })
            .filter_map(|t| t.vals[date_f].as_str())
            .max()
            .map_or(Val::Null, |d| Val::Str(d.to_owned()));
        if self.table(obj).rows[row].vals[field] == latest {
            return;
        }
        let stamp = self.next_stamp();
        let table = self.table_mut(obj);
        let mut rec = table.rows[row].clone();
        rec.vals[field] = latest;
        rec.vals[table.schema.modstamp] = Val::Dt(stamp);
        table.replace(row, rec);
    }
}
