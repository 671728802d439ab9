//! A small, real SOQL parser and evaluator: enough for what an incremental sync sends.
//!
//! Grammar: `SELECT f1, f2 | COUNT() FROM obj [WHERE cond] [ORDER BY f [ASC|DESC]
//! [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]`, where `cond` combines comparisons
//! (`= != <> < <= > >= LIKE IN NOT IN`) with `AND`/`OR`/`NOT` and parentheses.
//!
//! Quirks kept from Salesforce: keywords, field and object names are case-insensitive; `AND` and
//! `OR` may not be mixed at one level without parentheses; datetime literals are unquoted and a
//! quoted one (or a number for a text field) is an `INVALID_FIELD` type error; text compares
//! ignore case; `!=` matches nulls; an id literal that is not an id fails with
//! `INVALID_QUERY_FILTER_OPERATOR`. The query is parsed and type-checked once, then evaluated
//! per record against field positions. A LIMIT query ordered by SystemModstamp first (the
//! keyset page) walks the table's modstamp index from the filter's lower bound instead of
//! scanning; other queries scan and put only the first OFFSET + LIMIT rows in order.

use std::cmp::Ordering;

use super::store::{Kind, Obj, Schema, Store, Table, Val, normalize_id, parse_datetime};

/// A failed query: the top-level `errorCode` and its message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueryError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    DateTime(i64),
    Date(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
    text: String,
}

/// A literal after type-checking against the field it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Null,
    /// Lower-cased already when the field compares case-insensitively.
    Str(String),
    Bool(bool),
    Dt(i64),
    Num(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
pub(crate) enum Like {
    Any,
    One,
    Char(char),
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp { field: usize, op: Op, lit: Lit, ci: bool },
    In { field: usize, negated: bool, lits: Vec<Lit>, ci: bool },
    Like { field: usize, pattern: Vec<Like> },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct OrderKey {
    field: usize,
    desc: bool,
    nulls_first: bool,
    ci: bool,
}

/// A parsed, type-checked query.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) obj: Obj,
    /// Selected field positions, in SELECT order; empty for `COUNT()`.
    pub(crate) select: Vec<usize>,
    pub(crate) count: bool,
    pub(crate) filter: Option<Expr>,
    pub(crate) order: Vec<OrderKey>,
    pub(crate) limit: Option<usize>,
    pub(crate) offset: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).map(|c| c.1);
    while i < chars.len() {
        let (pos, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '=' => {
                i += 1;
                Tok::Op("=")
            }
            '!' if at(i + 1) == Some('=') => {
                i += 2;
                Tok::Op("!=")
            }
            '<' => match at(i + 1) {
                Some('=') => {
                    i += 2;
                    Tok::Op("<=")
                }
                Some('>') => {
                    i += 2;
                    Tok::Op("!=")
                }
                _ => {
                    i += 1;
                    Tok::Op("<")
                }
            },
            '>' => {
                if at(i + 1) == Some('=') {
                    i += 2;
                    Tok::Op(">=")
                } else {
                    i += 1;
                    Tok::Op(">")
                }
            }
            '\'' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match at(i) {
                        None => {
                            return Err(malformed(src, pos, "unterminated string literal"));
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let decoded = match at(i + 1) {
                                Some('n') => "\n",
                                Some('r') => "\r",
                                Some('t') => "\t",
                                Some('b') => "\u{8}",
                                Some('f') => "\u{c}",
                                Some('"') => "\"",
                                Some('\'') => "'",
                                Some('\\') => "\\\\",
                                // Kept escaped: only LIKE gives them meaning.
                                Some('_') => "\\_",
                                Some('%') => "\\%",
                                _ => {
                                    return Err(malformed(
                                        src,
                                        chars[i].0,
                                        "Invalid string literal: Illegal escape sequence",
                                    ));
                                }
                            };
                            s.push_str(decoded);
                            i += 2;
                        }
                        Some(ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                Tok::Str(s)
            }
            c if c.is_ascii_digit()
                || (c == '-' && at(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let looks_dated = c.is_ascii_digit()
                    && (0..10).all(|k| {
                        at(i + k).is_some_and(|d| {
                            if k == 4 || k == 7 { d == '-' } else { d.is_ascii_digit() }
                        })
                    });
                if looks_dated {
                    let mut j = i;
                    while at(j).is_some_and(|d| d.is_ascii_alphanumeric() || ":.+-".contains(d)) {
                        j += 1;
                    }
                    let text: String = chars[i..j].iter().map(|c| c.1).collect();
                    i = j;
                    if text.len() == 10 {
                        Tok::Date(text)
                    } else {
                        match parse_datetime(&text) {
                            Some(ms) => Tok::DateTime(ms),
                            None => {
                                return Err(malformed(
                                    src,
                                    pos,
                                    &format!(
                                        "line 1:{pos} no viable alternative at character '{text}'"
                                    ),
                                ));
                            }
                        }
                    }
                } else {
                    let mut j = i + 1;
                    while at(j).is_some_and(|d| d.is_ascii_digit() || d == '.') {
                        j += 1;
                    }
                    let text: String = chars[i..j].iter().map(|c| c.1).collect();
                    i = j;
                    match text.parse::<f64>() {
                        Ok(n) => Tok::Num(n),
                        Err(_) => {
                            return Err(malformed(src, pos, &format!("unexpected token: {text}")));
                        }
                    }
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                while at(j).is_some_and(|d| d.is_alphanumeric() || d == '_' || d == '.') {
                    j += 1;
                }
                let text: String = chars[i..j].iter().map(|c| c.1).collect();
                i = j;
                Tok::Ident(text)
            }
            other => {
                return Err(malformed(src, pos, &format!("unexpected token: '{other}'")));
            }
        };
        let end = chars.get(i).map_or(src.len(), |c| c.0);
        out.push(Token { tok, pos: chars[start].0, text: src[pos..end].to_owned() });
    }
    Ok(out)
}

/// Salesforce prefixes query errors with the query and a caret under the offending column.
fn located(src: &str, pos: usize, msg: &str) -> String {
    let col = src[..pos.min(src.len())].chars().count() + 1;
    format!("\n{src}\n{}^\nERROR at Row:1:Column:{col}\n{msg}", " ".repeat(col - 1))
}

fn malformed(src: &str, pos: usize, msg: &str) -> QueryError {
    QueryError { code: "MALFORMED_QUERY", message: located(src, pos, msg) }
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.i)
    }

    fn pos(&self) -> usize {
        self.peek().map_or(self.src.len(), |t| t.pos)
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Ident(s), .. }) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.is_kw(kw);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn unexpected(&self) -> QueryError {
        match self.peek() {
            Some(t) => malformed(self.src, t.pos, &format!("unexpected token: {}", t.text)),
            None => malformed(self.src, self.src.len(), "unexpected token: <EOF>"),
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.eat_kw(kw) { Ok(()) } else { Err(self.unexpected()) }
    }

    fn expect(&mut self, want: &Tok) -> Result<(), QueryError> {
        if self.peek().map(|t| &t.tok) == Some(want) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn ident(&mut self) -> Result<(String, usize), QueryError> {
        match self.peek() {
            Some(Token { tok: Tok::Ident(s), pos, .. }) => {
                let out = (s.clone(), *pos);
                self.i += 1;
                Ok(out)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn number(&mut self) -> Result<usize, QueryError> {
        match self.peek() {
            Some(Token { tok: Tok::Num(n), .. }) if *n >= 0.0 && n.fract() == 0.0 => {
                let out = *n as usize;
                self.i += 1;
                Ok(out)
            }
            _ => Err(self.unexpected()),
        }
    }
}

fn no_such_column(src: &str, pos: usize, name: &str, obj: Obj) -> QueryError {
    QueryError {
        code: "INVALID_FIELD",
        message: located(
            src,
            pos,
            &format!(
                "No such column '{name}' on entity '{}'. If you are attempting to use a custom \
                 field, be sure to append the '__c' after the custom field name. Please reference \
                 your WSDL or the describe call for the appropriate names.",
                obj.name()
            ),
        ),
    }
}

/// Parse and type-check one SOQL statement against the org's schemas.
///
/// # Errors
/// `MALFORMED_QUERY` for syntax, `INVALID_TYPE` for an unknown object, `INVALID_FIELD` for an
/// unknown field or a literal of the wrong type, `INVALID_QUERY_FILTER_OPERATOR` for a bad id.
pub(crate) fn parse(src: &str, store: &Store) -> Result<Query, QueryError> {
    let mut p = Parser { src, toks: lex(src)?, i: 0 };
    p.expect_kw("SELECT")?;
    let mut count = false;
    let mut names = Vec::new();
    if p.is_kw("COUNT") && p.toks.get(p.i + 1).map(|t| &t.tok) == Some(&Tok::LParen) {
        p.i += 1;
        p.expect(&Tok::LParen)?;
        p.expect(&Tok::RParen)?;
        count = true;
    } else {
        loop {
            names.push(p.ident()?);
            if p.peek().map(|t| &t.tok) == Some(&Tok::Comma) {
                p.i += 1;
            } else {
                break;
            }
        }
    }
    p.expect_kw("FROM")?;
    let (obj_name, obj_pos) = p.ident()?;
    let Some(obj) = Obj::parse(&obj_name) else {
        return Err(QueryError {
            code: "INVALID_TYPE",
            message: located(
                src,
                obj_pos,
                &format!(
                    "sObject type '{obj_name}' is not supported. If you are attempting to use a \
                     custom object, be sure to append the '__c' after the entity name. Please \
                     reference your WSDL or the describe call for the appropriate names."
                ),
            ),
        });
    };
    let schema = &store.table(obj).schema;
    let mut select = Vec::new();
    for (name, pos) in &names {
        let Some(f) = schema.field(name) else {
            return Err(no_such_column(src, *pos, name, obj));
        };
        if select.contains(&f) {
            return Err(malformed(src, *pos, &format!("duplicate field selected: {name}")));
        }
        select.push(f);
    }
    let filter = if p.eat_kw("WHERE") { Some(cond(&mut p, schema)?) } else { None };
    let mut order = Vec::new();
    if p.eat_kw("ORDER") {
        p.expect_kw("BY")?;
        loop {
            let (name, pos) = p.ident()?;
            let field = schema.field(&name).ok_or_else(|| no_such_column(src, pos, &name, obj))?;
            let desc = if p.eat_kw("DESC") {
                true
            } else {
                p.eat_kw("ASC");
                false
            };
            let mut nulls_first = !desc;
            if p.eat_kw("NULLS") {
                if p.eat_kw("FIRST") {
                    nulls_first = true;
                } else {
                    p.expect_kw("LAST")?;
                    nulls_first = false;
                }
            }
            order.push(OrderKey {
                field,
                desc,
                nulls_first,
                ci: schema.fields[field].kind.is_text(),
            });
            if p.peek().map(|t| &t.tok) == Some(&Tok::Comma) {
                p.i += 1;
            } else {
                break;
            }
        }
    }
    let limit = if p.eat_kw("LIMIT") { Some(p.number()?) } else { None };
    let offset = if p.eat_kw("OFFSET") {
        let pos = p.pos();
        let n = p.number()?;
        if n > 2000 {
            return Err(QueryError {
                code: "NUMBER_OUTSIDE_VALID_RANGE",
                message: located(src, pos, "Maximum SOQL offset allowed is 2000"),
            });
        }
        n
    } else {
        0
    };
    if p.peek().is_some() {
        return Err(p.unexpected());
    }
    Ok(Query { obj, select, count, filter, order, limit, offset })
}

/// `term ((AND term)* | (OR term)*)`: SOQL rejects mixing AND and OR without parentheses.
fn cond(p: &mut Parser<'_>, schema: &Schema) -> Result<Expr, QueryError> {
    let first = term(p, schema)?;
    let joiner = if p.is_kw("AND") {
        "AND"
    } else if p.is_kw("OR") {
        "OR"
    } else {
        return Ok(first);
    };
    let mut parts = vec![first];
    while p.eat_kw(joiner) {
        parts.push(term(p, schema)?);
    }
    if p.is_kw("AND") || p.is_kw("OR") {
        return Err(p.unexpected());
    }
    Ok(if joiner == "AND" { Expr::And(parts) } else { Expr::Or(parts) })
}

fn term(p: &mut Parser<'_>, schema: &Schema) -> Result<Expr, QueryError> {
    if p.eat_kw("NOT") {
        return Ok(Expr::Not(Box::new(term(p, schema)?)));
    }
    if p.peek().map(|t| &t.tok) == Some(&Tok::LParen) {
        p.i += 1;
        let inner = cond(p, schema)?;
        p.expect(&Tok::RParen)?;
        return Ok(inner);
    }
    let (name, pos) = p.ident()?;
    let field = schema.field(&name).ok_or_else(|| no_such_column(p.src, pos, &name, schema.obj))?;
    let def = &schema.fields[field];
    let ci = def.kind.is_text();
    if p.eat_kw("LIKE") {
        let lit_pos = p.pos();
        let Some(Token { tok: Tok::Str(s), .. }) = p.peek().cloned() else {
            return Err(p.unexpected());
        };
        p.i += 1;
        if !ci {
            return Err(QueryError {
                code: "INVALID_FIELD",
                message: located(
                    p.src,
                    lit_pos,
                    &format!("invalid operator on field: {}", def.name),
                ),
            });
        }
        return Ok(Expr::Like { field, pattern: like_pattern(&s) });
    }
    let negated_in = if p.is_kw("NOT")
        && matches!(p.toks.get(p.i + 1), Some(Token { tok: Tok::Ident(s), .. }) if s.eq_ignore_ascii_case("IN"))
    {
        p.i += 1;
        true
    } else {
        false
    };
    if p.eat_kw("IN") {
        p.expect(&Tok::LParen)?;
        let mut lits = Vec::new();
        loop {
            lits.push(literal(p, schema, field)?);
            if p.peek().map(|t| &t.tok) == Some(&Tok::Comma) {
                p.i += 1;
            } else {
                break;
            }
        }
        p.expect(&Tok::RParen)?;
        return Ok(Expr::In { field, negated: negated_in, lits, ci });
    }
    if negated_in {
        return Err(p.unexpected());
    }
    let op = match p.peek().map(|t| &t.tok) {
        Some(Tok::Op("=")) => Op::Eq,
        Some(Tok::Op("!=")) => Op::Ne,
        Some(Tok::Op("<")) => Op::Lt,
        Some(Tok::Op("<=")) => Op::Le,
        Some(Tok::Op(">")) => Op::Gt,
        Some(Tok::Op(">=")) => Op::Ge,
        _ => return Err(p.unexpected()),
    };
    p.i += 1;
    let lit = literal(p, schema, field)?;
    Ok(Expr::Cmp { field, op, lit, ci })
}

/// Read one literal and check it against the field's type, as Salesforce does at parse time.
fn literal(p: &mut Parser<'_>, schema: &Schema, field: usize) -> Result<Lit, QueryError> {
    let Some(tok) = p.peek().cloned() else {
        return Err(p.unexpected());
    };
    let def = &schema.fields[field];
    let wrong = |want: &str, quoted: &str| QueryError {
        code: "INVALID_FIELD",
        message: located(
            p.src,
            tok.pos,
            &format!(
                "value of filter criterion for field '{}' must be of type {want} and {quoted} be \
                 enclosed in quotes",
                def.name
            ),
        ),
    };
    let lit = match (&tok.tok, def.kind) {
        (Tok::Ident(s), _) if s.eq_ignore_ascii_case("null") => Lit::Null,
        (Tok::Ident(s), Kind::Bool) if s.eq_ignore_ascii_case("true") => Lit::Bool(true),
        (Tok::Ident(s), Kind::Bool) if s.eq_ignore_ascii_case("false") => Lit::Bool(false),
        (Tok::DateTime(ms), Kind::DateTime) => Lit::Dt(*ms),
        (Tok::Num(n), Kind::Number) => Lit::Num(*n),
        // Date literals are unquoted `YYYY-MM-DD`; stored dates use the same form, so text
        // order is date order.
        (Tok::Date(d), Kind::Date) => Lit::Str(d.clone()),
        (_, Kind::Date) => return Err(wrong("date", "should not")),
        (_, Kind::Number) => return Err(wrong("double", "should not")),
        (Tok::Str(s), k) if k.is_id() => match normalize_id(s) {
            Some(id) => Lit::Str(id),
            None => {
                return Err(QueryError {
                    code: "INVALID_QUERY_FILTER_OPERATOR",
                    message: located(p.src, tok.pos, &format!("invalid ID field: {s}")),
                });
            }
        },
        (Tok::Str(s), k) if k.is_text() => Lit::Str(unescape_plain(s).to_lowercase()),
        (Tok::Ident(_) | Tok::Op(_) | Tok::LParen | Tok::RParen | Tok::Comma, _) => {
            return Err(p.unexpected());
        }
        (_, Kind::DateTime) => return Err(wrong("dateTime", "should not")),
        (_, Kind::Bool) => return Err(wrong("boolean", "should not")),
        (_, _) => return Err(wrong("string", "should")),
    };
    p.i += 1;
    Ok(lit)
}

/// Outside LIKE only `\\` means one backslash; `\_` and `\%` stay as written.
fn unescape_plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'\\') {
            chars.next();
        }
        out.push(c);
    }
    out
}

fn like_pattern(s: &str) -> Vec<Like> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => out.push(Like::Any),
            '_' => out.push(Like::One),
            '\\' => match chars.next() {
                Some(e) => out.extend(e.to_lowercase().map(Like::Char)),
                None => out.push(Like::Char('\\')),
            },
            c => out.extend(c.to_lowercase().map(Like::Char)),
        }
    }
    out
}

fn like_match(pattern: &[Like], text: &str) -> bool {
    let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    // Classic wildcard matching with one backtrack point for the last `%`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Like::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Like::One) => {
                p += 1;
                t += 1;
            }
            Some(Like::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|l| matches!(l, Like::Any))
}

/// Compare a stored value with a literal of the same type; `None` when either is null or the
/// types differ.
fn cmp_lit(v: &Val, lit: &Lit, ci: bool) -> Option<Ordering> {
    match (v, lit) {
        (Val::Str(a), Lit::Str(b)) if ci => {
            Some(a.chars().flat_map(char::to_lowercase).cmp(b.chars()))
        }
        (Val::Str(a), Lit::Str(b)) => Some(a.as_str().cmp(b.as_str())),
        (Val::Dt(a), Lit::Dt(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Val::Num(a), Lit::Num(b)) => a.partial_cmp(b),
        _ => None,
    }
}

fn eq_lit(v: &Val, lit: &Lit, ci: bool) -> bool {
    match (v, lit) {
        (Val::Null, Lit::Null) => true,
        (_, Lit::Null) | (Val::Null, _) => false,
        _ => cmp_lit(v, lit, ci) == Some(Ordering::Equal),
    }
}

impl Expr {
    pub(crate) fn eval(&self, vals: &[Val]) -> bool {
        match self {
            Expr::And(parts) => parts.iter().all(|e| e.eval(vals)),
            Expr::Or(parts) => parts.iter().any(|e| e.eval(vals)),
            Expr::Not(inner) => !inner.eval(vals),
            Expr::Cmp { field, op, lit, ci } => {
                let v = &vals[*field];
                match op {
                    Op::Eq => eq_lit(v, lit, *ci),
                    Op::Ne => !eq_lit(v, lit, *ci),
                    Op::Lt => cmp_lit(v, lit, *ci) == Some(Ordering::Less),
                    Op::Le => cmp_lit(v, lit, *ci).is_some_and(|o| o != Ordering::Greater),
                    Op::Gt => cmp_lit(v, lit, *ci) == Some(Ordering::Greater),
                    Op::Ge => cmp_lit(v, lit, *ci).is_some_and(|o| o != Ordering::Less),
                }
            }
            Expr::In { field, negated, lits, ci } => {
                let hit = lits.iter().any(|l| eq_lit(&vals[*field], l, *ci));
                hit != *negated
            }
            Expr::Like { field, pattern } => {
                vals[*field].as_str().is_some_and(|s| like_match(pattern, s))
            }
        }
    }
}

fn cmp_vals(a: &Val, b: &Val, ci: bool) -> Ordering {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) if ci => {
            x.chars().flat_map(char::to_lowercase).cmp(y.chars().flat_map(char::to_lowercase))
        }
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        (Val::Dt(x), Val::Dt(y)) => x.cmp(y),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        (Val::Num(x), Val::Num(y)) => x.total_cmp(y),
        _ => Ordering::Equal,
    }
}

/// How two rows compare under ORDER BY (without the Id-order tie-break).
fn order_cmp(order: &[OrderKey], a: &[Val], b: &[Val]) -> Ordering {
    for k in order {
        let ord = match (&a[k.field], &b[k.field]) {
            (Val::Null, Val::Null) => Ordering::Equal,
            (Val::Null, _) => {
                if k.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (_, Val::Null) => {
                if k.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (va, vb) => {
                let o = cmp_vals(va, vb, k.ci);
                if k.desc { o.reverse() } else { o }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// A lower bound on `field` implied by a filter (every selected row's value is at least it),
/// when the filter gives one.
fn lower_bound(expr: &Expr, field: usize) -> Option<i64> {
    match expr {
        Expr::Cmp { field: f, op: Op::Gt | Op::Ge | Op::Eq, lit: Lit::Dt(ms), .. }
            if *f == field =>
        {
            Some(*ms)
        }
        Expr::And(parts) => parts.iter().filter_map(|p| lower_bound(p, field)).max(),
        Expr::Or(parts) => parts
            .iter()
            .map(|p| lower_bound(p, field))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min(),
        _ => None,
    }
}

/// [`matching_rows`] for a LIMIT query whose ORDER BY starts with `SystemModstamp` ascending
/// (the keyset page): walk the modstamp index from the filter's lower bound and stop once
/// `OFFSET + LIMIT` rows match and their last modstamp is complete. Only those rows are then
/// sorted by the whole ORDER BY, with the same row tie-break, so the answer is the same.
fn by_stamp_rows(q: &Query, table: &Table, include_deleted: bool) -> Option<Vec<usize>> {
    let limit = q.limit?;
    let first = q.order.first()?;
    if first.field != table.schema.modstamp || first.desc || !first.nulls_first {
        return None;
    }
    let end = q.offset.saturating_add(limit);
    if end == 0 {
        return Some(Vec::new());
    }
    let lo = q.filter.as_ref().and_then(|f| lower_bound(f, table.schema.modstamp));
    let mut rows = Vec::new();
    let mut boundary: Option<i64> = None;
    for &(stamp, row) in table.by_stamp().range((lo.unwrap_or(i64::MIN), 0)..) {
        if boundary.is_some_and(|b| b != stamp) {
            break;
        }
        let rec = &table.rows[row];
        if (include_deleted || !rec.is_deleted())
            && q.filter.as_ref().is_none_or(|f| f.eval(&rec.vals))
        {
            rows.push(row);
            if rows.len() >= end && boundary.is_none() {
                boundary = Some(stamp);
            }
        }
    }
    rows.sort_unstable_by(|x, y| {
        order_cmp(&q.order, &table.rows[*x].vals, &table.rows[*y].vals).then(x.cmp(y))
    });
    rows.truncate(end);
    rows.drain(..q.offset.min(rows.len()));
    Some(rows)
}

/// The rows a query selects, filtered, sorted and cut by OFFSET/LIMIT, as row positions.
/// Without ORDER BY the order is by Id, which is storage order.
///
/// With a LIMIT only the first `OFFSET + LIMIT` rows are put in order (a selection, then a
/// sort of those), so a keyset page over a large table costs one pass, not a full sort. Ties
/// break on row position, which is exactly the order a stable sort of the storage-ordered
/// matches gives.
pub(crate) fn matching_rows(q: &Query, table: &Table, include_deleted: bool) -> Vec<usize> {
    if let Some(rows) = by_stamp_rows(q, table, include_deleted) {
        return rows;
    }
    let mut rows: Vec<usize> = table
        .rows
        .iter()
        .enumerate()
        .filter(|(_, r)| include_deleted || !r.is_deleted())
        .filter(|(_, r)| q.filter.as_ref().is_none_or(|f| f.eval(&r.vals)))
        .map(|(i, _)| i)
        .collect();
    let end = q.limit.map_or(rows.len(), |l| q.offset.saturating_add(l).min(rows.len()));
    if !q.order.is_empty() {
        let cmp = |x: &usize, y: &usize| {
            order_cmp(&q.order, &table.rows[*x].vals, &table.rows[*y].vals).then(x.cmp(y))
        };
        if end < rows.len() {
            rows.select_nth_unstable_by(end, cmp);
            rows.truncate(end);
        }
        rows.sort_unstable_by(cmp);
    }
    let start = q.offset.min(rows.len());
    rows.truncate(end);
    rows.drain(..start.min(end));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::salesforce::store::{Incoming, decode};
    use serde_json::json;

    fn store_with(leads: &[serde_json::Value]) -> Store {
        let mut s = Store::new(&["Leadsync_Id__c".to_owned()], false);
        for l in leads {
            let schema = &s.table(Obj::Lead).schema;
            let inc: Incoming = decode(schema, l.as_object().unwrap()).unwrap();
            s.create(Obj::Lead, &inc).unwrap();
        }
        s
    }

    fn run(s: &Store, soql: &str) -> Vec<String> {
        let q = parse(soql, s).unwrap_or_else(|e| panic!("{soql}: {e:?}"));
        let t = s.table(q.obj);
        let last = t.schema.field("LastName").unwrap();
        matching_rows(&q, t, false)
            .into_iter()
            .map(|r| t.rows[r].vals[last].as_str().unwrap().to_owned())
            .collect()
    }

    fn err(s: &Store, soql: &str) -> &'static str {
        parse(soql, s).map(|_| ()).expect_err(soql).code
    }

    fn sample() -> Store {
        store_with(&[
            json!({"LastName":"A","Company":"X","Email":"a@x.test","Status":"Working - Contacted"}),
            json!({"LastName":"B","Company":"Y","Email":"B@Y.test","HasOptedOutOfEmail":true}),
            json!({"LastName":"C","Company":"X"}),
        ])
    }

    #[test]
    fn where_and_or_not_in_like() {
        let s = sample();
        assert_eq!(run(&s, "SELECT Id FROM Lead"), ["A", "B", "C"]);
        assert_eq!(run(&s, "select id from lead where Company = 'x'"), ["A", "C"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead WHERE Email = 'b@y.TEST'"), ["B"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead WHERE Email != 'a@x.test'"), ["B", "C"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead WHERE Email = null"), ["C"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead WHERE HasOptedOutOfEmail = true"), ["B"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead WHERE LastName IN ('A','C')"), ["A", "C"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead WHERE LastName NOT IN ('A')"), ["B", "C"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead WHERE Email LIKE '%@x.%'"), ["A"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead WHERE NOT (Company = 'X')"), ["B"]);
        assert_eq!(
            run(
                &s,
                "SELECT Id FROM Lead WHERE Company = 'X' AND (LastName = 'C' OR Status = 'Working - Contacted')"
            ),
            ["A", "C"]
        );
        assert_eq!(run(&s, "SELECT Id FROM Lead ORDER BY LastName DESC LIMIT 2"), ["C", "B"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead ORDER BY Email NULLS LAST"), ["A", "B", "C"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead ORDER BY Email"), ["C", "A", "B"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead ORDER BY LastName LIMIT 5 OFFSET 1"), ["B", "C"]);
        assert_eq!(run(&s, "SELECT Id FROM Lead WHERE LastName = 'it\\'s'"), Vec::<String>::new());
        assert_eq!(unescape_plain("a\\\\b"), "a\\b");
    }

    #[test]
    fn datetime_literals_compare_instants() {
        let s = sample();
        assert_eq!(
            run(&s, "SELECT Id FROM Lead WHERE SystemModstamp > 2000-01-01T00:00:00Z").len(),
            3
        );
        assert_eq!(
            run(&s, "SELECT Id FROM Lead WHERE CreatedDate > 2000-01-01T00:00:00.000+0000").len(),
            3
        );
        assert_eq!(
            run(&s, "SELECT Id FROM Lead WHERE CreatedDate < 2000-01-01T02:00:00+02:00").len(),
            0
        );
        // The same instant written three ways selects the same rows.
        let t = s.table(Obj::Lead);
        let ms = match &t.rows[1].vals[t.schema.modstamp] {
            Val::Dt(ms) => *ms,
            other => panic!("{other:?}"),
        };
        let z = chrono::DateTime::from_timestamp_millis(ms).unwrap();
        let forms = [
            z.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            z.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
            (z.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap()))
                .format("%Y-%m-%dT%H:%M:%S%.3f+01:00")
                .to_string(),
        ];
        for f in forms {
            assert_eq!(
                run(&s, &format!("SELECT Id FROM Lead WHERE SystemModstamp = {f}")),
                ["B"],
                "{f}"
            );
        }
    }

    #[test]
    fn keyset_page_query() {
        let s = sample();
        let t = s.table(Obj::Lead);
        let a = &t.rows[0];
        let x = crate::sim::salesforce::store::format_datetime(match a.vals[t.schema.modstamp] {
            Val::Dt(ms) => ms,
            _ => unreachable!(),
        });
        let id = a.id(&t.schema);
        let q = format!(
            "SELECT Id, LastName FROM Lead WHERE SystemModstamp > {x} OR (SystemModstamp = {x} AND Id > '{id}') ORDER BY SystemModstamp, Id LIMIT 1"
        );
        assert_eq!(run(&s, &q), ["B"]);
        // A 15-character id literal works like its 18-character form.
        let q15 = q.replace(id, &id[..15]);
        assert_eq!(run(&s, &q15), ["B"]);
    }

    #[test]
    fn errors_carry_salesforce_codes() {
        let s = sample();
        assert_eq!(err(&s, "SELECT Nope FROM Lead"), "INVALID_FIELD");
        assert_eq!(err(&s, "SELECT Id FROM Lead WHERE Nope = 'x'"), "INVALID_FIELD");
        assert_eq!(err(&s, "SELECT Id FROM Lead ORDER BY Nope"), "INVALID_FIELD");
        assert_eq!(err(&s, "SELECT Id FROM Account"), "INVALID_TYPE");
        assert_eq!(err(&s, "SELECT Id FROM"), "MALFORMED_QUERY");
        assert_eq!(err(&s, "SELECT Id FRM Lead"), "MALFORMED_QUERY");
        assert_eq!(err(&s, "SELECT Id, Id FROM Lead"), "MALFORMED_QUERY");
        assert_eq!(err(&s, "SELECT Id FROM Lead WHERE LastName = 'x"), "MALFORMED_QUERY");
        assert_eq!(
            err(&s, "SELECT Id FROM Lead WHERE A = 'x' AND B = 'y' OR C = 'z'"),
            "INVALID_FIELD"
        );
        assert_eq!(
            err(&s, "SELECT Id FROM Lead WHERE LastName = 'x' AND Email = 'y' OR Title = 'z'"),
            "MALFORMED_QUERY"
        );
        // A `+` that was not URL-encoded arrives as a space.
        assert_eq!(
            err(&s, "SELECT Id FROM Lead WHERE SystemModstamp > 2024-05-01T10:00:00 00:00"),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            err(&s, "SELECT Id FROM Lead WHERE SystemModstamp > '2024-05-01T10:00:00Z'"),
            "INVALID_FIELD"
        );
        assert_eq!(
            err(&s, "SELECT Id FROM Lead WHERE SystemModstamp > 2024-05-01"),
            "INVALID_FIELD"
        );
        assert_eq!(err(&s, "SELECT Id FROM Lead WHERE LastName = 5"), "INVALID_FIELD");
        assert_eq!(
            err(&s, "SELECT Id FROM Lead WHERE HasOptedOutOfEmail = 'true'"),
            "INVALID_FIELD"
        );
        assert_eq!(
            err(&s, "SELECT Id FROM Lead WHERE Id = 'abc'"),
            "INVALID_QUERY_FILTER_OPERATOR"
        );
        assert_eq!(err(&s, "SELECT Id FROM Lead WHERE LastName IN ()"), "MALFORMED_QUERY");
        assert_eq!(err(&s, "SELECT Id FROM Lead LIMIT x"), "MALFORMED_QUERY");
        let msg = parse("SELECT Id FRM Lead", &s).unwrap_err().message;
        assert!(msg.contains("ERROR at Row:1:Column:11"), "{msg}");
    }

    #[test]
    fn like_wildcards() {
        let p = like_pattern("a%b_c");
        assert!(like_match(&p, "AxxbYc"));
        assert!(like_match(&p, "abzc"));
        assert!(!like_match(&p, "abc"));
        assert!(like_match(&like_pattern("%"), ""));
        assert!(like_match(&like_pattern("50\\%"), "50%"));
        assert!(!like_match(&like_pattern("50\\%"), "500"));
    }

    /// The connector's keyset walk over a large org, 2000 rows a query. Prints the wall time;
    /// the bound is loose enough for a debug build on a busy machine.
    #[test]
    fn keyset_walk_of_many_leads_is_fast() {
        let mut s = Store::new(&["Leadsync_Id__c".to_owned()], false);
        let n = 100_000;
        for i in 0..n {
            let schema = &s.table(Obj::Lead).schema;
            let lead = json!({"LastName": format!("L{i}"), "Company": "X", "Email": format!("p{i}@x.test")});
            let inc: Incoming = decode(schema, lead.as_object().unwrap()).unwrap();
            s.create(Obj::Lead, &inc).unwrap();
        }
        let started = std::time::Instant::now();
        let t = s.table(Obj::Lead);
        let (mut seen, mut calls) = (0, 0);
        let mut cursor: Option<(String, String)> = None;
        loop {
            let filter = match &cursor {
                None => String::new(),
                Some((x, id)) => {
                    format!("WHERE SystemModstamp > {x} OR (SystemModstamp = {x} AND Id > '{id}') ")
                }
            };
            let q = format!(
                "SELECT Id, SystemModstamp, Email, LastName FROM Lead {filter}ORDER BY SystemModstamp, Id LIMIT 2000"
            );
            let q = parse(&q, &s).unwrap();
            let rows = matching_rows(&q, t, false);
            calls += 1;
            let Some(last) = rows.last() else { break };
            seen += rows.len();
            let rec = &t.rows[*last];
            let Val::Dt(ms) = rec.vals[t.schema.modstamp] else { unreachable!() };
            cursor = Some((
                crate::sim::salesforce::store::format_datetime(ms),
                rec.id(&t.schema).to_owned(),
            ));
        }
        let elapsed = started.elapsed();
        eprintln!("salesforce keyset walk: {calls} queries over {n} leads in {elapsed:?}");
        assert_eq!(seen, n);
        assert!(elapsed < std::time::Duration::from_secs(120), "{elapsed:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]
        /// The partial selection and the modstamp-index walk answer exactly what a stable sort
        /// of every match does.
        #[test]
        fn limited_order_agrees_with_full_sort(
            leads in proptest::collection::vec((0_u8..4, proptest::option::of(0_u8..3)), 0..40),
            touches in proptest::collection::vec(0_usize..40, 0..8),
            whole_seconds in proptest::bool::ANY,
            order in 0_usize..8,
            cut in 0_usize..40,
            keyset in proptest::bool::ANY,
            limit in 0_usize..15,
            offset in 0_usize..10,
        ) {
            let mut s = Store::new(&["Leadsync_Id__c".to_owned()], whole_seconds);
            for (n, e) in &leads {
                let lead = match e {
                    Some(e) => json!({"LastName": format!("n{n}"), "Company": "X", "Email": format!("E{e}@x.test")}),
                    None => json!({"LastName": format!("N{n}"), "Company": "X"}),
                };
                let inc: Incoming = decode(&s.table(Obj::Lead).schema, lead.as_object().unwrap()).unwrap();
                s.create(Obj::Lead, &inc).unwrap();
            }
            for t in touches.iter().filter(|t| **t < leads.len()) {
                s.touch_system(Obj::Lead, *t);
            }
            let order = [
                "LastName",
                "LastName DESC, Email",
                "Email NULLS LAST, LastName DESC",
                "Email DESC NULLS FIRST",
                "SystemModstamp DESC, Id",
                "SystemModstamp, Id",
                "SystemModstamp, LastName DESC",
                "SystemModstamp NULLS LAST, Id DESC",
            ][order];
            let t = s.table(Obj::Lead);
            let filter = match t.rows.get(cut) {
                Some(rec) if keyset => {
                    let Val::Dt(ms) = rec.vals[t.schema.modstamp] else { unreachable!() };
                    let x = crate::sim::salesforce::store::format_datetime(ms);
                    let id = rec.id(&t.schema);
                    format!("WHERE SystemModstamp > {x} OR (SystemModstamp = {x} AND Id > '{id}') ")
                }
                _ => String::new(),
            };
            let q = parse(&format!("SELECT Id FROM Lead {filter}ORDER BY {order} LIMIT {limit} OFFSET {offset}"), &s).unwrap();
            let mut all: Vec<usize> = (0..t.rows.len())
                .filter(|r| q.filter.as_ref().is_none_or(|f| f.eval(&t.rows[*r].vals)))
                .collect();
            all.sort_by(|x, y| order_cmp(&q.order, &t.rows[*x].vals, &t.rows[*y].vals));
            let want: Vec<usize> = all.into_iter().skip(offset).take(limit).collect();
            proptest::prop_assert_eq!(matching_rows(&q, t, false), want);
        }
    }
}
