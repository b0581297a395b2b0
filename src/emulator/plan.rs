//! Turns a parsed pipeline plus request parameters into a plan: which events match (with the
//! arithmetic shortcuts for synthetic data), in which order, and what happens to the rows after.

use std::borrow::Cow;
use std::sync::Arc;

use super::SyntheticSpec;
use super::pattern::Pattern;
use super::spl::{CmpOp, Command, Pipeline, SORT_DEFAULT_LIMIT, SearchTerm};
use super::store::StoredEvent;
use super::synthetic::{self, Parts};
use super::timefmt::{Micros, micros_from_epoch_secs};

/// What the data sources need to know about the emulator's own index.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub index: String,
    pub sourcetype: String,
    pub index_json: Vec<u8>,
    pub sourcetype_json: Vec<u8>,
    pub synthetic: Option<SyntheticSpec>,
}

impl Ctx {
    /// A context for the given index, sourcetype and generator.
    pub fn new(index: &str, sourcetype: &str, synthetic: Option<SyntheticSpec>) -> Self {
        let json = |s: &str| serde_json::Value::String(s.into()).to_string().into_bytes();
        Self {
            index: index.into(),
            sourcetype: sourcetype.into(),
            index_json: json(index),
            sourcetype_json: json(sourcetype),
            synthetic: synthetic.filter(|s| s.count > 0),
        }
    }
}

/// A field or text term (time terms are folded into the bounds).
#[derive(Debug, Clone)]
pub enum Term {
    Field {
        field: String,
        op: CmpOp,
        value: Pattern,
    },
    Text(Pattern),
}

/// Something terms can be checked against.
pub trait Fields {
    fn get(&self, name: &str) -> Option<Cow<'_, str>>;
    fn raw(&self) -> Cow<'_, str>;
}

impl Fields for StoredEvent {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.field(name)
    }
    fn raw(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.raw)
    }
}

/// A synthetic event seen through its decoded parts.
pub struct SynthFields<'a> {
    pub parts: Parts,
    pub ctx: &'a Ctx,
}

impl Fields for SynthFields<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "index" => Some(Cow::Borrowed(&self.ctx.index)),
            "sourcetype" => Some(Cow::Borrowed(&self.ctx.sourcetype)),
            "_raw" => Some(self.raw()),
            _ => self.parts.field(name),
        }
    }
    fn raw(&self) -> Cow<'_, str> {
        let mut b = Vec::with_capacity(384);
        self.parts.write_raw(&mut b, b"\"");
        Cow::Owned(String::from_utf8(b).unwrap_or_default())
    }
}

impl Term {
    /// Whether an event satisfies the term (`!=` needs the field to exist, as in Splunk).
    pub fn matches(&self, ev: &dyn Fields) -> bool {
        match self {
            Term::Field { field, op, value } => match (ev.get(field), op) {
                (Some(v), CmpOp::Eq) => value.matches(&v),
                (Some(v), CmpOp::Ne) => !value.matches(&v),
                (None, _) => false,
            },
            Term::Text(p) => p.text() == "*" || p.matches_within(&ev.raw()),
        }
    }
}

/// The event filter: ANDed terms and a half-open time range.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub terms: Vec<Term>,
    pub earliest: Option<Micros>,
    pub latest: Option<Micros>,
}

impl Filter {
    /// Builds the filter from the search terms and the request's `earliest_time`/`latest_time`.
    pub fn new(terms: &[SearchTerm], earliest: Option<Micros>, latest: Option<Micros>) -> Self {
        let mut f = Filter {
            terms: Vec::new(),
            earliest,
            latest,
        };
        for t in terms {
            match t {
                SearchTerm::Field { field, op, value } => f.terms.push(Term::Field {
                    field: field.clone(),
                    op: *op,
                    value: value.clone(),
                }),
                SearchTerm::Text(p) => f.terms.push(Term::Text(p.clone())),
                SearchTerm::Earliest(s) => {
                    let t = micros_from_epoch_secs(*s);
                    f.earliest = f.earliest.max(t);
                }
                SearchTerm::Latest(s) => {
                    if let Some(t) = micros_from_epoch_secs(*s) {
                        f.latest = Some(f.latest.map_or(t, |l| l.min(t)));
                    }
                }
            }
        }
        f
    }

    /// Whether an event satisfies every term (time is checked by the sources).
    pub fn matches(&self, ev: &dyn Fields) -> bool {
        self.terms.iter().all(|t| t.matches(ev))
    }

    /// Selects the synthetic events arithmetically; `None` when none can match.
    pub fn synthetic(&self, ctx: &Ctx) -> Option<SynthSel> {
        let spec = ctx.synthetic.as_ref()?;
        let k = u64::from(spec.namespaces.max(1));
        let mut residue: Option<u64> = None;
        let mut residual = Vec::new();
        for t in &self.terms {
            match t {
                Term::Field { field, op, value } if field == "index" || field == "sourcetype" => {
                    let actual = if field == "index" {
                        &ctx.index
                    } else {
                        &ctx.sourcetype
                    };
                    if value.matches(actual) != (*op == CmpOp::Eq) {
                        return None;
                    }
                }
                Term::Field {
                    field,
                    op: CmpOp::Eq,
                    value,
                } if field == "account" && value.literal().is_some() => {
                    let lit = value.text().to_ascii_lowercase();
                    let n = lit
                        .strip_prefix("ns")
                        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                        .filter(|d| d.len() == 1 || !d.starts_with('0'))
                        .and_then(|d| d.parse::<u64>().ok())
                        .filter(|n| *n < k)?;
                    if residue.is_some_and(|r| r != n) {
                        return None;
                    }
                    residue = Some(n);
                }
                other => residual.push(other.clone()),
            }
        }
        let first_at_or_after = |t: Micros| {
            // Smallest i with time_of(i) >= t; time_of is non-decreasing.
            let (mut lo, mut hi) = (0u64, spec.count);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if synthetic::time_of(spec, mid) < t {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        let lo = self.earliest.map_or(0, first_at_or_after);
        let hi = self.latest.map_or(spec.count, first_at_or_after);
        let (step, res) = residue.map_or((1, 0), |r| (k, r));
        let first = lo + (res + step - lo % step) % step;
        let len = if first >= hi {
            0
        } else {
            (hi - 1 - first) / step + 1
        };
        Some(SynthSel {
            spec: spec.clone(),
            first,
            step,
            len,
            residual,
        })
    }
}

/// Synthetic candidates: `first + k*step` for `k < len`, then the residual terms per event.
#[derive(Debug, Clone)]
pub struct SynthSel {
    pub spec: SyntheticSpec,
    pub first: u64,
    pub step: u64,
    pub len: u64,
    pub residual: Vec<Term>,
}

impl SynthSel {
    /// The `k`-th candidate in ascending (`desc == false`) or descending order.
    pub fn nth(&self, k: u64, desc: bool) -> u64 {
        let k = if desc { self.len - 1 - k } else { k };
        self.first + k * self.step
    }

    /// Whether candidate `i` passes the residual terms.
    pub fn keeps(&self, i: u64, ctx: &Ctx) -> bool {
        self.residual.is_empty() || {
            let f = SynthFields {
                parts: Parts::of(&self.spec, i),
                ctx,
            };
            self.residual.iter().all(|t| t.matches(&f))
        }
    }
}

/// A matching event: indexed or synthetic.
#[derive(Debug, Clone)]
pub enum EventRef {
    Stored(Arc<StoredEvent>),
    Synth(u64),
}

/// How a search runs: filter, order, row limit, per-row commands, then commands over all rows.
#[derive(Debug, Clone)]
pub struct Plan {
    pub filter: Filter,
    /// Newest first, Splunk's default order for event searches.
    pub desc: bool,
    pub limit: Option<u64>,
    /// `eval`/`fields` applied to each event as it is written.
    pub row_ops: Vec<Command>,
    /// Commands that need the rows materialised (sorts other than by `_time`, `stats`, ...).
    pub rest: Vec<Command>,
    /// The request's `max_count`/`count` cap on results.
    pub max_results: Option<u64>,
}

fn min_limit(a: Option<u64>, b: u64) -> Option<u64> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Plan {
    /// Plans a pipeline; streamable prefixes (`sort` on `_time`, `head`, `reverse`, `eval`,
    /// `fields`) become order and limit so no events need to be held.
    pub fn new(
        p: &Pipeline,
        earliest: Option<Micros>,
        latest: Option<Micros>,
        max_results: Option<u64>,
    ) -> Self {
        let mut plan = Plan {
            filter: Filter::new(&p.terms, earliest, latest),
            desc: true,
            limit: None,
            row_ops: Vec::new(),
            rest: Vec::new(),
            max_results: max_results.filter(|m| *m > 0),
        };
        for (n, cmd) in p.commands.iter().enumerate() {
            let streamable = match cmd {
                Command::Sort { limit, keys }
                    if plan.limit.is_none()
                        && plan.row_ops.is_empty()
                        && keys.len() == 1
                        && keys[0].field == "_time" =>
                {
                    plan.desc = keys[0].descending;
                    plan.limit = match limit {
                        None => Some(SORT_DEFAULT_LIMIT),
                        Some(0) => None,
                        Some(n) => Some(*n),
                    };
                    true
                }
                Command::Head(n) => {
                    plan.limit = min_limit(plan.limit, *n);
                    true
                }
                Command::Reverse if plan.limit.is_none() && plan.row_ops.is_empty() => {
                    plan.desc = !plan.desc;
                    true
                }
                Command::Strftime { .. } | Command::Fields { .. } => {
                    plan.row_ops.push(cmd.clone());
                    true
                }
                _ => false,
            };
            if !streamable {
                plan.rest = p.commands[n..].to_vec();
                break;
            }
        }
        if plan.rest.is_empty()
            && let Some(m) = plan.max_results
        {
            plan.limit = min_limit(plan.limit, m);
        }
        plan
    }
}
