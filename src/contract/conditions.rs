//! Shared qualification rules: when a person becomes MQL, SQL, and so on, written in config so
//! that marketing and sales read (and sign) the same text, and evaluated by leadsync rather
//! than by each tool.
//!
//! # Shape
//! One table per stage, each holding lists of one-line conditions:
//! ```toml
//! [contract.qualification.mql]
//! all = ["score >= 50", "title is set", "country in [US, CA, GB]"]
//! none = ["email_opt_out is true"]
//! [contract.qualification.sql]
//! all = ["stage is sal"]
//! any = ["event callback_requested", "event meeting_booked within 14 days"]
//! ```
//! A rule holds when every `all` condition holds, at least one `any` condition holds (when
//! there are any), and no `none` condition holds. Why this shape: a list of short sentences is
//! what a sales and marketing agreement looks like on paper, TOML arrays need no quoting
//! rules beyond the string itself, and three fixed lists cover "and", "or" and "unless"
//! without nesting, which is where rules stop being readable. It is structured, not code:
//! each sentence is parsed once into a [`Condition`] (a small enum), so evaluation does no
//! string parsing and no allocation.
//!
//! # Conditions
//! - `<field> is set`, `<field> is not set` (set = present and not blank)
//! - `<field> is <value>`, `<field> is not <value>`
//! - `<field> in [a, b, "two words"]`, `<field> not in [...]`
//! - `<number field> >= 50` (also `>`, `<=`, `<`, `=`, `!=`)
//! - `stage is sal`, `stage is not mql`, `stage in [mql, sal]`, `stage not in [...]`
//! - `event <name>`, `event <name> within 14 days` (or hours, minutes), `no event <name> ...`
//!
//! Text comparisons ignore surrounding blanks of the person's value and ASCII case (`us`
//! matches `US`). A value with spaces, brackets, commas, quotes or one of the words `set`,
//! `not`, `in` is written in double quotes (`\"` and `\\` escape inside). Keywords may be in
//! any case; field, event and stage names are lowercase.
//!
//! A missing value never satisfies a positive condition, and always satisfies a negated one
//! (`title is not CEO` holds for a person with no title); numeric comparisons need a number.
//!
//! # Fields
//! Canonical fields (`domain::Field`: `email`, `title`, `company`, ...) are always known and
//! hold text. Any other field (a score, a country) must be declared in `[contract.fields]` with
//! its type, `number` or `text`, and events must be declared in `contract.events`: a typo in a
//! rule is then a config error at startup instead of a rule that silently never matches.
//! Where the caller gets declared fields and events from (a mapping of extra vendor properties,
//! activity feeds) is outside this module.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

use crate::contract::lifecycle::LifecycleStage;
use crate::domain::{Field, Fields};

/// The type of a declared custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomKind {
    Number,
    Text,
}

impl CustomKind {
    pub fn parse(s: &str) -> Option<CustomKind> {
        match s {
            "number" => Some(CustomKind::Number),
            "text" => Some(CustomKind::Text),
            _ => None,
        }
    }
}

/// A declared custom field, by position in the [`Vocabulary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomId(u16);

/// A declared event, by position in the [`Vocabulary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(u16);

/// Words a condition gives meaning to, which no field or event may be called.
const RESERVED: [&str; 3] = ["stage", "event", "no"];

/// The declared custom fields and events rules may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vocabulary {
    custom: Vec<(Box<str>, CustomKind)>,
    events: Vec<Box<str>>,
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err("names use lowercase letters, digits and '_', starting with a letter".into());
    }
    if RESERVED.contains(&name) {
        return Err(format!("{name:?} is a reserved word"));
    }
    Ok(())
}

impl Vocabulary {
    pub fn new() -> Vocabulary {
        Vocabulary::default()
    }

    /// Declare a custom field.
    ///
    /// # Errors
    /// The problem, when the name is malformed, reserved, a canonical field, or declared twice.
    pub fn declare_field(&mut self, name: &str, kind: CustomKind) -> Result<CustomId, String> {
        check_name(name)?;
        if Field::parse(name).is_some() {
            return Err(format!("{name:?} is a canonical field; declare only other fields"));
        }
        if self.field(name).is_some() {
            return Err(format!("{name:?} is declared twice"));
        }
        let id = u16::try_from(self.custom.len()).map_err(|_| "too many custom fields")?;
        self.custom.push((name.into(), kind));
        Ok(CustomId(id))
    }

    /// Declare an event.
    ///
    /// # Errors
    /// The problem, when the name is malformed, reserved or declared twice.
    pub fn declare_event(&mut self, name: &str) -> Result<EventId, String> {
        check_name(name)?;
        if self.event(name).is_some() {
            return Err(format!("{name:?} is declared twice"));
        }
        let id = u16::try_from(self.events.len()).map_err(|_| "too many events")?;
        self.events.push(name.into());
        Ok(EventId(id))
    }

    pub fn field(&self, name: &str) -> Option<(CustomId, CustomKind)> {
        self.custom
            .iter()
            .position(|(n, _)| &**n == name)
            .map(|i| (CustomId(i as u16), self.custom[i].1))
    }

    pub fn event(&self, name: &str) -> Option<EventId> {
        self.events.iter().position(|n| &**n == name).map(|i| EventId(i as u16))
    }

    /// Declared custom fields in declaration order.
    pub fn fields(&self) -> impl Iterator<Item = (CustomId, &str, CustomKind)> {
        self.custom.iter().enumerate().map(|(i, (n, k))| (CustomId(i as u16), &**n, *k))
    }

    /// Declared events in declaration order.
    pub fn events(&self) -> impl Iterator<Item = (EventId, &str)> {
        self.events.iter().enumerate().map(|(i, n)| (EventId(i as u16), &**n))
    }
}

/// A custom field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomValue {
    Number(f64),
    Text(String),
}

/// What rules are evaluated over: one person's stage, canonical fields, custom field values
/// and the latest time of each declared event.
///
/// Built by the caller, ideally once per worker and [`Facts::clear`]ed between persons so the
/// buffers are reused.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub stage: LifecycleStage,
    pub fields: Fields,
    custom: Vec<Option<CustomValue>>,
    events: Vec<Option<DateTime<Utc>>>,
}

impl Facts {
    /// Empty facts sized for `vocabulary`.
    pub fn new(vocabulary: &Vocabulary, stage: LifecycleStage) -> Facts {
        Facts {
            stage,
            fields: Fields::new(),
            custom: vec![None; vocabulary.custom.len()],
            events: vec![None; vocabulary.events.len()],
        }
    }

    /// Forget every value, keeping the buffers.
    pub fn clear(&mut self, stage: LifecycleStage) {
        self.stage = stage;
        self.fields.clear();
        self.custom.iter_mut().for_each(|v| *v = None);
        self.events.iter_mut().for_each(|v| *v = None);
    }

    /// Set a custom field (ignored for an id from another vocabulary).
    pub fn set(&mut self, id: CustomId, value: CustomValue) {
        if let Some(slot) = self.custom.get_mut(id.0 as usize) {
            *slot = Some(value);
        }
    }

    /// Set a custom field by name from its text, parsing numbers for number fields once here
    /// rather than at every evaluation. Returns false, setting nothing, for an undeclared name
    /// or a number field whose text is not a finite number.
    pub fn set_text(&mut self, vocabulary: &Vocabulary, name: &str, raw: &str) -> bool {
        let Some((id, kind)) = vocabulary.field(name) else { return false };
        let value = match kind {
            CustomKind::Text => CustomValue::Text(raw.to_string()),
            CustomKind::Number => match raw.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => CustomValue::Number(n),
                _ => return false,
            },
        };
        self.set(id, value);
        true
    }

    /// Record that an event happened at `at`; only the latest time is kept.
    pub fn record_event(&mut self, id: EventId, at: DateTime<Utc>) {
        if let Some(slot) = self.events.get_mut(id.0 as usize) {
            *slot = Some(slot.map_or(at, |t| t.max(at)));
        }
    }

    pub fn custom(&self, id: CustomId) -> Option<&CustomValue> {
        self.custom.get(id.0 as usize).and_then(Option::as_ref)
    }

    pub fn event(&self, id: EventId) -> Option<DateTime<Utc>> {
        self.events.get(id.0 as usize).copied().flatten()
    }
}

/// What a text condition looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Field(Field),
    Custom { id: CustomId, name: Box<str> },
}

impl Subject {
    fn name(&self) -> &str {
        match self {
            Subject::Field(f) => f.as_str(),
            Subject::Custom { name, .. } => name,
        }
    }

    fn text<'f>(&self, facts: &'f Facts) -> Option<&'f str> {
        match self {
            Subject::Field(f) => facts.fields.get(f).map(String::as_str),
            Subject::Custom { id, .. } => match facts.custom(*id) {
                Some(CustomValue::Text(s)) => Some(s),
                _ => None,
            },
        }
    }

    fn is_set(&self, facts: &Facts) -> bool {
        match self {
            Subject::Field(f) => facts.fields.get(f).is_some_and(|v| !v.trim().is_empty()),
            Subject::Custom { id, .. } => match facts.custom(*id) {
                Some(CustomValue::Text(s)) => !s.trim().is_empty(),
                Some(CustomValue::Number(_)) => true,
                None => false,
            },
        }
    }
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Ge => ">=",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Lt => "<",
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
        }
    }

    fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Ge => a >= b,
            CmpOp::Gt => a > b,
            CmpOp::Le => a <= b,
            CmpOp::Lt => a < b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }
}

/// The unit of an event window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Minutes,
    Hours,
    Days,
}

/// `within N <unit>`: how recent an event must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub amount: u32,
    pub unit: Unit,
}

impl Window {
    pub fn delta(self) -> TimeDelta {
        let n = i64::from(self.amount);
        match self.unit {
            Unit::Minutes => TimeDelta::minutes(n),
            Unit::Hours => TimeDelta::hours(n),
            Unit::Days => TimeDelta::days(n),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match (self.unit, self.amount == 1) {
            (Unit::Minutes, true) => "minute",
            (Unit::Minutes, false) => "minutes",
            (Unit::Hours, true) => "hour",
            (Unit::Hours, false) => "hours",
            (Unit::Days, true) => "day",
            (Unit::Days, false) => "days",
        };
        write!(f, "within {} {unit}", self.amount)
    }
}

/// One compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    IsSet { subject: Subject, negated: bool },
    TextIs { subject: Subject, value: Box<str>, negated: bool },
    TextIn { subject: Subject, values: Box<[Box<str>]>, negated: bool },
    StageIs { stage: LifecycleStage, negated: bool },
    StageIn { stages: Box<[LifecycleStage]>, negated: bool },
    Compare { id: CustomId, name: Box<str>, op: CmpOp, value: f64 },
    Event { id: EventId, name: Box<str>, within: Option<Window>, negated: bool },
}

/// A condition that does not parse; the message says why (the caller adds the key and text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConditionError(pub String);

impl Condition {
    /// Parse one condition, resolving field and event names against `vocabulary`.
    ///
    /// # Errors
    /// A [`ConditionError`] naming the problem: an unknown or undeclared name, a comparison
    /// that does not fit the field's type, or text that is not a condition.
    pub fn parse(text: &str, vocabulary: &Vocabulary) -> Result<Condition, ConditionError> {
        let toks = tokenize(text)?;
        Parser { toks: &toks, pos: 0, vocabulary }.condition()
    }

    /// Whether the condition holds for `facts` at `now`. No allocation, no parsing.
    pub fn holds(&self, facts: &Facts, now: DateTime<Utc>) -> bool {
        match self {
            Condition::IsSet { subject, negated } => subject.is_set(facts) != *negated,
            Condition::TextIs { subject, value, negated } => {
                let hit = subject.text(facts).is_some_and(|v| v.trim().eq_ignore_ascii_case(value));
                hit != *negated
            }
            Condition::TextIn { subject, values, negated } => {
                let hit = subject.text(facts).is_some_and(|v| {
                    let v = v.trim();
                    values.iter().any(|x| v.eq_ignore_ascii_case(x))
                });
                hit != *negated
            }
            Condition::StageIs { stage, negated } => (facts.stage == *stage) != *negated,
            Condition::StageIn { stages, negated } => stages.contains(&facts.stage) != *negated,
            Condition::Compare { id, op, value, .. } => match facts.custom(*id) {
                Some(CustomValue::Number(n)) => op.apply(*n, *value),
                _ => false,
            },
            Condition::Event { id, within, negated, .. } => {
                // An event stamped after `now` (clock skew between systems) still happened.
                let hit = facts.event(*id).is_some_and(|t| {
                    within.is_none_or(|w| now.signed_duration_since(t) <= w.delta())
                });
                hit != *negated
            }
        }
    }
}

/// Characters that end an unquoted word.
fn is_special(c: char) -> bool {
    matches!(c, '[' | ']' | ',' | '"' | '<' | '>' | '=' | '!')
}

const KEYWORDS: [&str; 3] = ["set", "not", "in"];

fn write_value(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    let plain = !v.is_empty()
        && !v.chars().any(|c| c.is_whitespace() || is_special(c) || c == '\\')
        && !KEYWORDS.iter().any(|k| v.eq_ignore_ascii_case(k));
    if plain {
        return f.write_str(v);
    }
    f.write_str("\"")?;
    for c in v.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    mut one: impl FnMut(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    f.write_str("[")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        one(f, item)?;
    }
    f.write_str("]")
}

/// The canonical text of a condition; parsing it gives the same condition back.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::IsSet { subject, negated } => {
                write!(f, "{} is {}set", subject.name(), if *negated { "not " } else { "" })
            }
            Condition::TextIs { subject, value, negated } => {
                write!(f, "{} is {}", subject.name(), if *negated { "not " } else { "" })?;
                write_value(f, value)
            }
            Condition::TextIn { subject, values, negated } => {
                write!(f, "{} {}in ", subject.name(), if *negated { "not " } else { "" })?;
                write_list(f, values, |f, v| write_value(f, v))
            }
            Condition::StageIs { stage, negated } => {
                write!(f, "stage is {}{stage}", if *negated { "not " } else { "" })
            }
            Condition::StageIn { stages, negated } => {
                write!(f, "stage {}in ", if *negated { "not " } else { "" })?;
                write_list(f, stages, |f, s| f.write_str(s.as_str()))
            }
            Condition::Compare { name, op, value, .. } => {
                write!(f, "{name} {} {value}", op.as_str())
            }
            Condition::Event { name, within, negated, .. } => {
                write!(f, "{}event {name}", if *negated { "no " } else { "" })?;
                match within {
                    Some(w) => write!(f, " {w}"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    Quoted(String),
    Open,
    Close,
    Comma,
    Op(CmpOp),
}

fn tokenize(text: &str) -> Result<Vec<Tok<'_>>, ConditionError> {
    let mut toks = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else { break };
        let (tok, len) = match c {
            '[' => (Tok::Open, 1),
            ']' => (Tok::Close, 1),
            ',' => (Tok::Comma, 1),
            '>' | '<' | '=' | '!' => {
                let two = rest.get(..2).unwrap_or("");
                match two {
                    ">=" => (Tok::Op(CmpOp::Ge), 2),
                    "<=" => (Tok::Op(CmpOp::Le), 2),
                    "!=" => (Tok::Op(CmpOp::Ne), 2),
                    "==" => (Tok::Op(CmpOp::Eq), 2),
                    _ => match c {
                        '>' => (Tok::Op(CmpOp::Gt), 1),
                        '<' => (Tok::Op(CmpOp::Lt), 1),
                        '=' => (Tok::Op(CmpOp::Eq), 1),
                        _ => return Err(ConditionError("'!' must be followed by '='".into())),
                    },
                }
            }
            '"' => {
                let mut value = String::new();
                let mut chars = rest.char_indices().skip(1);
                let mut end = None;
                while let Some((i, ch)) = chars.next() {
                    match ch {
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, e @ ('"' | '\\'))) => value.push(e),
                            _ => {
                                return Err(ConditionError(
                                    "inside quotes, '\\' escapes only '\"' and '\\'".into(),
                                ));
                            }
                        },
                        other => value.push(other),
                    }
                }
                let Some(end) = end else {
                    return Err(ConditionError("a quoted value is not closed".into()));
                };
                (Tok::Quoted(value), end)
            }
            _ => {
                let len = rest
                    .char_indices()
                    .find(|(_, ch)| ch.is_whitespace() || is_special(*ch))
                    .map_or(rest.len(), |(i, _)| i);
                (Tok::Word(&rest[..len]), len)
            }
        };
        toks.push(tok);
        rest = &rest[len..];
    }
    Ok(toks)
}

struct Parser<'t, 'a> {
    toks: &'t [Tok<'a>],
    pos: usize,
    vocabulary: &'t Vocabulary,
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConditionError> {
    Err(ConditionError(msg.into()))
}

const TEXT_FORMS: &str = "use `is set`, `is <value>`, `in [...]` or their `not` forms";

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<&Tok<'a>> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }

    /// Consume the keyword `kw` (any case) if it comes next.
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn end(&self) -> Result<(), ConditionError> {
        if self.pos < self.toks.len() {
            return err("unexpected text after the condition");
        }
        Ok(())
    }

    fn word(&mut self, what: &str) -> Result<&'a str, ConditionError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => err(format!("expected {what}")),
        }
    }

    fn value(&mut self) -> Result<Box<str>, ConditionError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok((*w).into()),
            Some(Tok::Quoted(q)) => Ok(q.as_str().into()),
            _ => err("expected a value"),
        }
    }

    fn list(&mut self) -> Result<Vec<Box<str>>, ConditionError> {
        if self.next() != Some(&Tok::Open) {
            return err("expected a list in brackets, like [US, CA]");
        }
        let mut items = Vec::new();
        if self.peek() == Some(&Tok::Close) {
            return err("the list is empty");
        }
        loop {
            items.push(self.value()?);
            match self.next() {
                Some(Tok::Comma) => {}
                Some(Tok::Close) => return Ok(items),
                _ => return err("expected ',' or ']' in the list"),
            }
        }
    }

    fn condition(mut self) -> Result<Condition, ConditionError> {
        if self.toks.is_empty() {
            return err("the condition is empty");
        }
        let negated_event = self.keyword("no");
        if negated_event || self.keyword("event") {
            if negated_event && !self.keyword("event") {
                return err("expected `no event <name>`");
            }
            return self.event(negated_event);
        }
        let name = self.word("a field name, `stage` or `event`")?;
        if name.eq_ignore_ascii_case("stage") {
            return self.stage();
        }
        let (subject, number) = if let Some(field) = Field::parse(name) {
            (Subject::Field(field), false)
        } else if let Some((id, kind)) = self.vocabulary.field(name) {
            (Subject::Custom { id, name: name.into() }, kind == CustomKind::Number)
        } else {
            return err(format!(
                "unknown field {name:?}: use a canonical field or declare it under \
                 [contract.fields]"
            ));
        };
        if let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            self.pos += 1;
            let Subject::Custom { id, name } = subject else {
                return err(format!("{name} is text: {TEXT_FORMS}"));
            };
            if !number {
                return err(format!("{name} is text: {TEXT_FORMS}"));
            }
            let raw = match self.next() {
                Some(Tok::Word(w)) => *w,
                _ => return err("expected a number after the comparison"),
            };
            let value = match raw.parse::<f64>() {
                Ok(v) if v.is_finite() => v,
                _ => return err(format!("{raw:?} is not a number")),
            };
            self.end()?;
            return Ok(Condition::Compare { id, name, op, value });
        }
        let number_misuse = || {
            err(format!(
                "{name} is a number: compare it with >=, >, <=, <, = or !=, or use `is set`"
            ))
        };
        let cond = if self.keyword("is") {
            let negated = self.keyword("not");
            if self.keyword("set") {
                Condition::IsSet { subject, negated }
            } else {
                if number {
                    return number_misuse();
                }
                Condition::TextIs { subject, value: self.value()?, negated }
            }
        } else {
            let negated = self.keyword("not");
            if !self.keyword("in") {
                return err(format!("expected `is`, `in` or a comparison after {name}"));
            }
            if number {
                return number_misuse();
            }
            Condition::TextIn { subject, values: self.list()?.into(), negated }
        };
        self.end()?;
        Ok(cond)
    }

    fn stage(&mut self) -> Result<Condition, ConditionError> {
        let stage_of = |v: &str| {
            LifecycleStage::parse(v).ok_or_else(|| ConditionError(format!("unknown stage {v:?}")))
        };
        let cond = if self.keyword("is") {
            let negated = self.keyword("not");
            if matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("set")) {
                return err("every person has a stage: use `stage is <stage>` or `stage in [...]`");
            }
            Condition::StageIs { stage: stage_of(&self.value()?)?, negated }
        } else {
            let negated = self.keyword("not");
            if !self.keyword("in") {
                return err("the stage is compared with `is`, `is not`, `in` or `not in`");
            }
            let stages = self.list()?.iter().map(|v| stage_of(v)).collect::<Result<Vec<_>, _>>()?;
            Condition::StageIn { stages: stages.into(), negated }
        };
        self.end()?;
        Ok(cond)
    }

    fn event(&mut self, negated: bool) -> Result<Condition, ConditionError> {
        let name = self.word("an event name")?;
        let Some(id) = self.vocabulary.event(name) else {
            return err(format!("unknown event {name:?}: declare it in contract.events"));
        };
        let within = if self.keyword("within") {
            let n = self.word("a number of minutes, hours or days")?;
            let amount = match n.parse::<u32>() {
                Ok(a) if a > 0 => a,
                _ => return err(format!("{n:?} is not a whole number above 0")),
            };
            let unit = match self.word("minutes, hours or days")? {
                u if u.eq_ignore_ascii_case("minute") || u.eq_ignore_ascii_case("minutes") => {
                    Unit::Minutes
                }
                u if u.eq_ignore_ascii_case("hour") || u.eq_ignore_ascii_case("hours") => {
                    Unit::Hours
                }
                u if u.eq_ignore_ascii_case("day") || u.eq_ignore_ascii_case("days") => Unit::Days,
                other => return err(format!("unknown unit {other:?}: minutes, hours or days")),
            };
            Some(Window { amount, unit })
        } else {
            None
        };
        self.end()?;
        Ok(Condition::Event { id, name: name.into(), within, negated })
    }
}

/// A stage's qualification rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    /// Every one must hold.
    pub all: Vec<Condition>,
    /// At least one must hold (ignored when empty).
    pub any: Vec<Condition>,
    /// None may hold.
    pub none: Vec<Condition>,
}

/// The first reason a rule does not hold, for `trace` and `plan`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unmet<'r> {
    /// An `all` condition fails.
    All(&'r Condition),
    /// No `any` condition holds.
    Any,
    /// A `none` condition holds.
    None(&'r Condition),
}

impl fmt::Display for Unmet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmet::All(c) => write!(f, "not met: {c}"),
            Unmet::Any => f.write_str("none of the `any` conditions holds"),
            Unmet::None(c) => write!(f, "excluded by: {c}"),
        }
    }
}

impl Rule {
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.any.is_empty() && self.none.is_empty()
    }

    pub fn holds(&self, facts: &Facts, now: DateTime<Utc>) -> bool {
        self.unmet(facts, now).is_none()
    }

    /// Why the rule does not hold, or `None` when it does.
    pub fn unmet(&self, facts: &Facts, now: DateTime<Utc>) -> Option<Unmet<'_>> {
        if let Some(c) = self.all.iter().find(|c| !c.holds(facts, now)) {
            return Some(Unmet::All(c));
        }
        if !self.any.is_empty() && !self.any.iter().any(|c| c.holds(facts, now)) {
            return Some(Unmet::Any);
        }
        self.none.iter().find(|c| c.holds(facts, now)).map(Unmet::None)
    }
}

/// The qualification rules of every stage that has one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualificationRules {
    /// Ordered down the funnel.
    rules: Vec<(LifecycleStage, Rule)>,
}

impl QualificationRules {
    /// Rules per stage.
    ///
    /// # Errors
    /// The problem, naming the stage: a stage rules cannot move people into (subscriber,
    /// recycled, disqualified are reached otherwise), a stage given twice, or an empty rule.
    pub fn new(
        rules: impl IntoIterator<Item = (LifecycleStage, Rule)>,
    ) -> Result<QualificationRules, (LifecycleStage, String)> {
        let mut out: Vec<(LifecycleStage, Rule)> = Vec::new();
        for (stage, rule) in rules {
            if stage.funnel_rank().is_none_or(|r| r < 1) {
                return Err((
                    stage,
                    "rules move people into lead, mql, sal, sql, opportunity or customer".into(),
                ));
            }
            if out.iter().any(|(s, _)| *s == stage) {
                return Err((stage, "has two rules".into()));
            }
            if rule.is_empty() {
                return Err((stage, "needs at least one condition in all, any or none".into()));
            }
            out.push((stage, rule));
        }
        out.sort_by_key(|(s, _)| *s);
        Ok(QualificationRules { rules: out })
    }

    pub fn rule(&self, stage: LifecycleStage) -> Option<&Rule> {
        self.rules.iter().find(|(s, _)| *s == stage).map(|(_, r)| r)
    }

    /// Stages with a rule, down the funnel.
    pub fn iter(&self) -> impl Iterator<Item = (LifecycleStage, &Rule)> {
        self.rules.iter().map(|(s, r)| (*s, r))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The furthest stage whose rule holds, whatever the person's stage.
    pub fn target(&self, facts: &Facts, now: DateTime<Utc>) -> Option<LifecycleStage> {
        self.rules.iter().rev().find(|(_, r)| r.holds(facts, now)).map(|(s, _)| *s)
    }

    /// The furthest stage whose rule holds and which is a forward move from `facts.stage`:
    /// the move to ask the transition table for, as [`How::Rule`]. One step per call: a rule
    /// that needs the new stage (`stage is sal`) is met on the next evaluation.
    ///
    /// [`How::Rule`]: crate::contract::lifecycle::How::Rule
    pub fn advance(&self, facts: &Facts, now: DateTime<Utc>) -> Option<LifecycleStage> {
        self.rules
            .iter()
            .rev()
            .filter(|(s, _)| LifecycleStage::is_forward_move(facts.stage, *s))
            .find(|(_, r)| r.holds(facts, now))
            .map(|(s, _)| *s)
    }
}

#[cfg(test)]
mod tests;
