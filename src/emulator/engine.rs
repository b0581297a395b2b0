//! Runs a [`Plan`] over the indexed store and the synthetic generator.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use super::pattern::Pattern;
use super::plan::{Ctx, EventRef, Fields, Plan, SynthFields, SynthSel};
use super::spl::{Command, SORT_DEFAULT_LIMIT};
use super::store::Store;
use super::synthetic::Parts;
use super::timefmt::{Micros, splunk_time};

/// A materialised result row: ordered field/value pairs, plus `_time` for sorting.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub time: Option<Micros>,
    pub fields: Vec<(String, String)>,
}

impl Row {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: String) {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name.to_string(), value)),
        }
    }
}

impl EventRef {
    /// The event's `_time`.
    pub fn time(&self, ctx: &Ctx) -> Micros {
        match (self, &ctx.synthetic) {
            (EventRef::Stored(e), _) => e.time,
            (EventRef::Synth(i), Some(spec)) => super::synthetic::time_of(spec, *i),
            (EventRef::Synth(_), None) => 0,
        }
    }

    /// The event as a row, before any command.
    pub fn to_row(&self, ctx: &Ctx) -> Row {
        match self {
            EventRef::Stored(e) => {
                let mut fields = Vec::with_capacity(e.fields.len() + 4);
                fields.push(("_raw".to_string(), e.raw.clone()));
                fields.push(("_time".to_string(), splunk_time(e.time)));
                fields.push(("index".to_string(), e.index.clone()));
                fields.push(("sourcetype".to_string(), e.sourcetype.clone()));
                fields.extend(e.fields.iter().cloned());
                Row {
                    time: Some(e.time),
                    fields,
                }
            }
            EventRef::Synth(i) => {
                let Some(spec) = &ctx.synthetic else {
                    return Row::default();
                };
                let f = SynthFields {
                    parts: Parts::of(spec, *i),
                    ctx,
                };
                let mut fields = vec![
                    ("_raw".to_string(), f.raw().into_owned()),
                    ("_time".to_string(), splunk_time(f.parts.time)),
                    ("index".to_string(), ctx.index.clone()),
                    ("sourcetype".to_string(), ctx.sourcetype.clone()),
                ];
                for name in f.parts.field_names() {
                    if let Some(v) = f.parts.field(name) {
                        fields.push((name.to_string(), v.into_owned()));
                    }
                }
                Row {
                    time: Some(f.parts.time),
                    fields,
                }
            }
        }
    }

    fn field_value(&self, name: &str, ctx: &Ctx) -> Option<String> {
        match self {
            EventRef::Stored(e) => e.field(name).map(|c| c.into_owned()),
            EventRef::Synth(i) => {
                let spec = ctx.synthetic.as_ref()?;
                SynthFields {
                    parts: Parts::of(spec, *i),
                    ctx,
                }
                .get(name)
                .map(|c| c.into_owned())
            }
        }
    }
}

/// Applies a per-row command (`eval strftime` or `fields`).
pub fn apply_row_op(op: &Command, row: &mut Row) {
    match op {
        Command::Strftime {
            target,
            source,
            format,
        } => {
            let t = if source == "_time" {
                row.time
            } else {
                row.get(source)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .and_then(super::timefmt::micros_from_epoch_secs)
            };
            match t {
                Some(t) => row.set(target, format.format(t)),
                None => row.fields.retain(|(k, _)| k != target),
            }
        }
        Command::Fields { remove, fields } => {
            let pats: Vec<Pattern> = fields
                .iter()
                .map(|f| Pattern::new(f.as_str(), false))
                .collect();
            let listed = |k: &str| pats.iter().any(|p| p.matches(k));
            if *remove {
                row.fields.retain(|(k, _)| !listed(k));
            } else {
                // Splunk keeps internal fields such as `_raw` and `_time` unless removed explicitly.
                row.fields.retain(|(k, _)| listed(k) || k.starts_with('_'));
            }
        }
        _ => {}
    }
}

/// The matching events, in plan order, limited.
pub fn events<'a>(
    plan: &'a Plan,
    ctx: &'a Ctx,
    store: &Store,
) -> Box<dyn Iterator<Item = EventRef> + Send + 'a> {
    let filter = &plan.filter;
    let stored = store.select(filter.earliest, filter.latest, |e| filter.matches(e));
    let desc = plan.desc;
    let stored_iter: Box<dyn Iterator<Item = EventRef> + Send> = if desc {
        Box::new(stored.into_iter().rev().map(EventRef::Stored))
    } else {
        Box::new(stored.into_iter().map(EventRef::Stored))
    };
    let synth_iter = synth_stream(filter.synthetic(ctx), desc, ctx);
    let merged = Merge {
        a: stored_iter.peekable(),
        b: synth_iter.peekable(),
        desc,
        ctx,
    };
    match plan.limit {
        Some(n) => Box::new(merged.take(usize::try_from(n).unwrap_or(usize::MAX))),
        None => Box::new(merged),
    }
}

fn synth_stream<'a>(
    sel: Option<SynthSel>,
    desc: bool,
    ctx: &'a Ctx,
) -> Box<dyn Iterator<Item = EventRef> + Send + 'a> {
    match sel {
        Some(sel) => Box::new((0..sel.len).filter_map(move |k| {
            let i = sel.nth(k, desc);
            sel.keeps(i, ctx).then_some(EventRef::Synth(i))
        })),
        None => Box::new(std::iter::empty()),
    }
}

/// Merges two time-ordered streams into one.
struct Merge<'a, A: Iterator<Item = EventRef>, B: Iterator<Item = EventRef>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
    desc: bool,
    ctx: &'a Ctx,
}

impl<A: Iterator<Item = EventRef>, B: Iterator<Item = EventRef>> Iterator for Merge<'_, A, B> {
    type Item = EventRef;
    fn next(&mut self) -> Option<EventRef> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) => {
                let (tx, ty) = (x.time(self.ctx), y.time(self.ctx));
                if self.desc { tx >= ty } else { tx <= ty }
            }
            (Some(_), None) => true,
            (None, _) => false,
        };
        if take_a { self.a.next() } else { self.b.next() }
    }
}

/// A finished result set, as jobs keep it.
#[derive(Debug)]
pub enum ResultSet {
    /// Synthetic events only, no residual filter: row `k` is computed directly.
    Lazy { sel: SynthSel, desc: bool, len: u64 },
    /// The matching events, in order (per-row commands applied when rendered).
    Refs(Vec<EventRef>),
    /// Rows after materialising commands.
    Rows(Vec<Row>),
}

/// One result about to be rendered.
pub enum Item<'a> {
    Event(EventRef),
    Row(&'a Row),
}

impl ResultSet {
    /// Number of results.
    pub fn len(&self) -> u64 {
        match self {
            ResultSet::Lazy { len, .. } => *len,
            ResultSet::Refs(v) => v.len() as u64,
            ResultSet::Rows(v) => v.len() as u64,
        }
    }

    /// Results `offset .. offset+count` (`count == 0`: to the end).
    pub fn page(&self, offset: u64, count: u64) -> Vec<Item<'_>> {
        let end = if count == 0 {
            self.len()
        } else {
            offset.saturating_add(count).min(self.len())
        };
        let range = offset.min(end)..end;
        match self {
            ResultSet::Lazy { sel, desc, .. } => range
                .map(|k| Item::Event(EventRef::Synth(sel.nth(k, *desc))))
                .collect(),
            ResultSet::Refs(v) => v[range.start as usize..range.end as usize]
                .iter()
                .cloned()
                .map(Item::Event)
                .collect(),
            ResultSet::Rows(v) => v[range.start as usize..range.end as usize]
                .iter()
                .map(Item::Row)
                .collect(),
        }
    }
}

/// Runs a plan to completion (search jobs); `cancel` stops it early.
pub fn run(plan: &Plan, ctx: &Ctx, store: &Store, cancel: &AtomicBool) -> ResultSet {
    if plan.rest.is_empty() {
        let stored_none = store
            .select(plan.filter.earliest, plan.filter.latest, |e| {
                plan.filter.matches(e)
            })
            .is_empty();
        if stored_none
            && let Some(sel) = plan.filter.synthetic(ctx).filter(|s| s.residual.is_empty())
        {
            let len = plan.limit.map_or(sel.len, |l| l.min(sel.len));
            return ResultSet::Lazy {
                sel,
                desc: plan.desc,
                len,
            };
        }
        let mut refs = Vec::new();
        for (n, e) in events(plan, ctx, store).enumerate() {
            if n % 65_536 == 0 && cancel.load(AtomicOrdering::Relaxed) {
                break;
            }
            refs.push(e);
        }
        return ResultSet::Refs(refs);
    }
    ResultSet::Rows(materialise(plan, ctx, store))
}

/// For `stats count by` after row operations that are all `strftime(_time)`: per `by` field, the
/// format computing it, or `None` for a plain event field. `None` when another operation runs.
fn time_bucket_keys<'p>(
    plan: &'p Plan,
    by: &[String],
) -> Option<Vec<Option<&'p super::timefmt::StrftimeFormat>>> {
    let mut targets = Vec::new();
    for op in &plan.row_ops {
        match op {
            Command::Strftime {
                target,
                source,
                format,
            } if source == "_time" => targets.push((target.as_str(), format)),
            _ => return None,
        }
    }
    Some(
        by.iter()
            .map(|f| {
                targets
                    .iter()
                    .rev()
                    .find(|(t, _)| *t == f)
                    .map(|(_, fmt)| *fmt)
            })
            .collect(),
    )
}

/// Runs the plan's materialising commands and returns the final rows.
pub fn materialise(plan: &Plan, ctx: &Ctx, store: &Store) -> Vec<Row> {
    let mut rest = plan.rest.as_slice();
    let mut rows: Vec<Row> = match rest.first() {
        Some(Command::StatsCount { by }) => {
            rest = &rest[1..];
            // Hashed while counting (one lookup per event), sorted once at the end.
            let mut groups: HashMap<Vec<String>, u64> = HashMap::new();
            let time_keys = time_bucket_keys(plan, by);
            let mut memo: Vec<(Micros, String)> = vec![(Micros::MIN, String::new()); by.len()];
            for e in events(plan, ctx, store) {
                let key: Option<Vec<String>> = if plan.row_ops.is_empty() {
                    by.iter().map(|f| e.field_value(f, ctx)).collect()
                } else if let Some(formats) = &time_keys {
                    // `eval x=strftime(_time, …) | stats count by x, …`: format only the time,
                    // once per step the format can distinguish (events arrive in time order).
                    let t = e.time(ctx);
                    by.iter()
                        .zip(formats)
                        .zip(memo.iter_mut())
                        .map(|((f, format), slot)| match format {
                            Some(format) => {
                                let step = t.div_euclid(format.granularity());
                                if slot.0 != step {
                                    *slot = (step, format.format(t));
                                }
                                Some(slot.1.clone())
                            }
                            None => e.field_value(f, ctx),
                        })
                        .collect()
                } else {
                    let mut row = e.to_row(ctx);
                    plan.row_ops
                        .iter()
                        .for_each(|op| apply_row_op(op, &mut row));
                    by.iter().map(|f| row.get(f).map(str::to_string)).collect()
                };
                if let Some(key) = key {
                    *groups.entry(key).or_default() += 1;
                }
            }
            if by.is_empty() && groups.is_empty() {
                groups.insert(Vec::new(), 0);
            }
            let mut groups: Vec<(Vec<String>, u64)> = groups.into_iter().collect();
            groups.sort_unstable();
            groups
                .into_iter()
                .map(|(key, count)| {
                    let mut fields: Vec<(String, String)> = by.iter().cloned().zip(key).collect();
                    fields.push(("count".to_string(), count.to_string()));
                    Row { time: None, fields }
                })
                .collect()
        }
        _ => events(plan, ctx, store)
            .map(|e| {
                let mut row = e.to_row(ctx);
                plan.row_ops
                    .iter()
                    .for_each(|op| apply_row_op(op, &mut row));
                row
            })
            .collect(),
    };
    for cmd in rest {
        match cmd {
            Command::Sort { limit, keys } => {
                rows.sort_by(|a, b| {
                    for k in keys {
                        let ord = compare_field(a, b, &k.field);
                        let ord = if k.descending { ord.reverse() } else { ord };
                        if ord != Ordering::Equal {
                            return ord;
                        }
                    }
                    Ordering::Equal
                });
                let keep = match limit {
                    None => Some(SORT_DEFAULT_LIMIT),
                    Some(0) => None,
                    Some(n) => Some(*n),
                };
                if let Some(n) = keep {
                    rows.truncate(usize::try_from(n).unwrap_or(usize::MAX));
                }
            }
            Command::Head(n) => rows.truncate(usize::try_from(*n).unwrap_or(usize::MAX)),
            Command::Reverse => rows.reverse(),
            Command::StatsCount { .. } => {
                // A second stats over rows: count them by the requested fields.
                let tmp = std::mem::take(&mut rows);
                rows = stats_rows(cmd, tmp);
            }
            op => rows.iter_mut().for_each(|r| apply_row_op(op, r)),
        }
    }
    if let Some(m) = plan.max_results {
        rows.truncate(usize::try_from(m).unwrap_or(usize::MAX));
    }
    rows
}

fn stats_rows(cmd: &Command, rows: Vec<Row>) -> Vec<Row> {
    let Command::StatsCount { by } = cmd else {
        return rows;
    };
    let mut groups: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for r in &rows {
        if let Some(key) = by
            .iter()
            .map(|f| r.get(f).map(str::to_string))
            .collect::<Option<Vec<_>>>()
        {
            *groups.entry(key).or_default() += 1;
        }
    }
    groups
        .into_iter()
        .map(|(key, count)| {
            let mut fields: Vec<(String, String)> = by.iter().cloned().zip(key).collect();
            fields.push(("count".to_string(), count.to_string()));
            Row { time: None, fields }
        })
        .collect()
}

/// Splunk compares numerically when both values are numbers, else as text; missing values last.
fn compare_field(a: &Row, b: &Row, field: &str) -> Ordering {
    if field == "_time"
        && let (Some(x), Some(y)) = (a.time, b.time)
    {
        return x.cmp(&y);
    }
    match (a.get(field), b.get(field)) {
        (Some(x), Some(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(p), Ok(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
            _ => x.cmp(y),
        },
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}
