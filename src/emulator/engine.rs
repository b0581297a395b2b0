//! Runs a [`Plan`] over the indexed store and the synthetic generator.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use super::pattern::Pattern;
use super::plan::{Ctx, EventRef, Fields, Plan, SynthFields, SynthSel};
use super::spl::{Command, SORT_DEFAULT_LIMIT};
use super::store::Store;
use super::synthetic::Parts;
use super::timefmt::{Micros, StrftimeFormat, splunk_time};

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

/// How many events a search had to read to produce `results`: its results, or for
/// materialising searches (`stats`, sorts) every event that matched its filter.
pub fn scanned(plan: &Plan, ctx: &Ctx, store: &Store, results: &ResultSet) -> u64 {
    match results {
        ResultSet::Lazy { .. } | ResultSet::Refs(_) => results.len(),
        ResultSet::Rows(_) => events(plan, ctx, store).count() as u64,
    }
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

/// The `stats count by` key of one event; `None` when a key field is missing.
fn group_key(
    plan: &Plan,
    ctx: &Ctx,
    by: &[String],
    time_keys: Option<&[Option<&StrftimeFormat>]>,
    memo: &mut [(Micros, String)],
    e: &EventRef,
) -> Option<Vec<String>> {
    if plan.row_ops.is_empty() {
        by.iter().map(|f| e.field_value(f, ctx)).collect()
    } else if let Some(formats) = time_keys {
        // `eval x=strftime(_time, …) | stats count by x, …`: format only the time, once per
        // step the format can distinguish (events mostly arrive in time order).
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
    }
}

/// Most `by` fields a [`SynthCounter`] handles.
const SYNTH_KEYS: usize = 4;

/// `eval … strftime(_time, …) | stats count by <time buckets>, <static fields>` over synthetic
/// events, computed from each event's decoded parts without building it. Events come in time
/// order, so the counts of one time bucket are kept in a small map keyed by the static fields
/// (no allocation per event) and folded into the groups when the bucket changes.
struct SynthCounter<'a> {
    by: &'a [String],
    formats: &'a [Option<&'a StrftimeFormat>],
    /// Per `by` field: the current bucket's step and text (time fields only).
    buckets: Vec<(Micros, String)>,
    /// The current bucket's counts: a handful of keys (the kinds), so a short list.
    current: Vec<([&'static str; SYNTH_KEYS], u64)>,
}

impl<'a> SynthCounter<'a> {
    /// Whether every `by` field is a time bucket or a field [`Parts::static_field`] knows.
    fn fits(by: &[String], formats: &[Option<&StrftimeFormat>]) -> bool {
        by.len() <= SYNTH_KEYS
            && by
                .iter()
                .zip(formats)
                .all(|(f, format)| format.is_some() || Parts::is_static_field(f))
    }

    fn new(by: &'a [String], formats: &'a [Option<&'a StrftimeFormat>]) -> Self {
        Self {
            by,
            formats,
            buckets: vec![(Micros::MIN, String::new()); by.len()],
            current: Vec::new(),
        }
    }

    fn run(mut self, sel: &SynthSel, ctx: &Ctx, groups: &mut HashMap<Vec<String>, u64>) {
        for k in 0..sel.len {
            let i = sel.nth(k, false);
            if !sel.keeps(i, ctx) {
                continue;
            }
            let parts = Parts::of(&sel.spec, i);
            let moved = self.buckets.iter().zip(self.formats).any(|(slot, format)| {
                format.is_some_and(|f| slot.0 != parts.time.div_euclid(f.granularity()))
            });
            if moved {
                // The finished bucket's counts go out under its own labels first.
                self.fold(groups);
                for (slot, format) in self.buckets.iter_mut().zip(self.formats) {
                    if let Some(format) = format {
                        let step = parts.time.div_euclid(format.granularity());
                        if slot.0 != step {
                            *slot = (step, format.format(parts.time));
                        }
                    }
                }
            }
            let mut key = [""; SYNTH_KEYS];
            for ((slot, f), format) in key.iter_mut().zip(self.by).zip(self.formats) {
                if format.is_none() {
                    *slot = parts.static_field(f).unwrap_or("");
                }
            }
            // The values come from fixed tables: the same text is the same pointer.
            let same = |a: &[&str; SYNTH_KEYS]| {
                a.iter()
                    .zip(&key)
                    .all(|(x, y)| std::ptr::eq(*x, *y) || x == y)
            };
            match self.current.iter_mut().find(|(k, _)| same(k)) {
                Some((_, n)) => *n += 1,
                None => self.current.push((key, 1)),
            }
        }
        self.fold(groups);
    }

    /// Adds the current bucket's counts to `groups`.
    fn fold(&mut self, groups: &mut HashMap<Vec<String>, u64>) {
        for (key, n) in self.current.drain(..) {
            let full: Vec<String> = self
                .formats
                .iter()
                .zip(&self.buckets)
                .zip(key)
                .map(|((format, bucket), value)| match format {
                    Some(_) => bucket.1.clone(),
                    None => value.to_owned(),
                })
                .collect();
            *groups.entry(full).or_default() += n;
        }
    }
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
            let mut count = |e: &EventRef| {
                if let Some(key) = group_key(plan, ctx, by, time_keys.as_deref(), &mut memo, e) {
                    *groups.entry(key).or_default() += 1;
                }
            };
            let synthetic = plan.filter.synthetic(ctx);
            match (&time_keys, &synthetic) {
                // Counts need no order: stored events one by one, synthetic ones by arithmetic.
                (Some(formats), Some(sel))
                    if plan.limit.is_none() && SynthCounter::fits(by, formats) =>
                {
                    let filter = &plan.filter;
                    for e in store.select(filter.earliest, filter.latest, |e| filter.matches(e)) {
                        count(&EventRef::Stored(e));
                    }
                    SynthCounter::new(by, formats).run(sel, ctx, &mut groups);
                }
                _ => events(plan, ctx, store).for_each(|e| count(&e)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::spl::parse;
    use crate::emulator::{StoredEvent, SyntheticSpec};

    fn counts(spl: &str, generic: bool) -> Vec<Vec<(String, String)>> {
        let ctx = Ctx::new(
            "quay_logs",
            "quay",
            Some(SyntheticSpec {
                count: 50_000,
                start: "2024-01-01T00:00:00Z".parse().unwrap(),
                end: "2024-01-20T00:00:00Z".parse().unwrap(),
                namespaces: 7,
                skew: 0.0,
            }),
        );
        let store = Store::default();
        store.insert(StoredEvent::new(
            r#"{"kind":"push_repo","account":"ns3","datetime":"2024-01-05T10:00:00Z"}"#.into(),
            "quay_logs",
            "quay",
            0,
        ));
        let mut plan = Plan::new(&parse(spl).unwrap(), None, None, None);
        if generic {
            // A row limit keeps the general path, which builds every event.
            plan.limit = Some(u64::MAX);
        }
        materialise(&plan, &ctx, &store)
            .into_iter()
            .map(|r| r.fields)
            .collect()
    }

    #[test]
    fn synthetic_counts_by_time_bucket_match_the_general_path() {
        for spl in [
            r#"search index="quay_logs" account="ns3" | eval day=strftime(_time, "%Y-%m-%d") | stats count by day, kind"#,
            r#"search account="ns3" repository="web" | eval h=strftime(_time, "%H") | stats count by kind, h, performer_kind"#,
            r#"search index="quay_logs" | eval day=strftime(_time, "%Y-%m-%d") | stats count by day"#,
        ] {
            let fast = counts(spl, false);
            assert!(fast.len() > 3, "{spl}: {fast:?}");
            assert_eq!(fast, counts(spl, true), "{spl}");
        }
    }
}
