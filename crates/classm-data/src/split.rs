//! Deterministic, group-aware, class-stratified splits, their file format and count table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::io::write_atomic;
use crate::rng::{Stream, derive, permutation};

/// First line of a split file.
pub const SPLIT_FORMAT: &str = "# classm-split/1";
/// Header line listing the split names in order (so that reading keeps the order).
const SPLITS_LINE: &str = "# splits: ";

/// How much of the dataset a split gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// A fraction of all samples, in (0, 1].
    Fraction(f64),
    /// A number of samples.
    Count(usize),
    /// Whatever the other splits leave (at most one split).
    Rest,
}

/// Named splits and their amounts, for example `labelled=10%,validation=20%,unlabelled=rest`.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSpec {
    /// (name, amount) in order.
    pub parts: Vec<(String, Amount)>,
}

impl std::str::FromStr for SplitSpec {
    type Err = DataError;

    /// `name=10%`, `name=0.1`, `name=300` or `name=rest`, comma-separated.
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = Vec::new();
        for item in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, amount) = item.split_once('=').ok_or_else(|| {
                DataError::Config(format!("split `{item}`: expected NAME=AMOUNT"))
            })?;
            let bad = || {
                DataError::Config(format!(
                    "split `{item}`: amount must be a percentage (10%), a fraction (0.1), a count (300) or `rest`"
                ))
            };
            let amount = amount.trim();
            let a = if amount == "rest" {
                Amount::Rest
            } else if let Some(p) = amount.strip_suffix('%') {
                Amount::Fraction(p.trim().parse::<f64>().map_err(|_| bad())? / 100.0)
            } else if amount.contains('.') {
                Amount::Fraction(amount.parse().map_err(|_| bad())?)
            } else {
                Amount::Count(amount.parse().map_err(|_| bad())?)
            };
            parts.push((name.trim().to_string(), a));
        }
        let spec = SplitSpec { parts };
        spec.validate()?;
        Ok(spec)
    }
}

impl fmt::Display for SplitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, a)) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match a {
                Amount::Fraction(x) => write!(f, "{name}={}%", percent(*x))?,
                Amount::Count(n) => write!(f, "{name}={n}")?,
                Amount::Rest => write!(f, "{name}=rest")?,
            }
        }
        Ok(())
    }
}

/// `x` as a percentage without float noise: 0.07 → "7", 0.125 → "12.5".
fn percent(x: f64) -> String {
    let s = format!("{:.6}", x * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl SplitSpec {
    fn validate(&self) -> Result<()> {
        if self.parts.is_empty() {
            return Err(DataError::Config("no splits given".into()));
        }
        let mut names = BTreeSet::new();
        for (name, a) in &self.parts {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(DataError::Config(format!(
                    "split name `{name}` is empty or has spaces"
                )));
            }
            if !names.insert(name.as_str()) {
                return Err(DataError::Config(format!("split `{name}` appears twice")));
            }
            if let Amount::Fraction(x) = a
                && !(x.is_finite() && *x > 0.0 && *x <= 1.0)
            {
                return Err(DataError::Config(format!(
                    "split `{name}`: fraction {x} not in (0, 1]"
                )));
            }
        }
        let rests = self.parts.iter().filter(|p| p.1 == Amount::Rest).count();
        if rests > 1 {
            return Err(DataError::Config("only one split can be `rest`".into()));
        }
        let frac: f64 = self
            .parts
            .iter()
            .filter_map(|p| match p.1 {
                Amount::Fraction(x) => Some(x),
                _ => None,
            })
            .sum();
        if frac > 1.0 + 1e-9 {
            return Err(DataError::Config(format!(
                "split fractions add up to {frac} > 1"
            )));
        }
        Ok(())
    }

    /// Sample targets per split for `n` samples.
    fn targets(&self, n: usize, root: &Path) -> Result<Vec<f64>> {
        let mut t: Vec<f64> = self
            .parts
            .iter()
            .map(|p| match p.1 {
                Amount::Fraction(x) => x * n as f64,
                Amount::Count(c) => c as f64,
                Amount::Rest => 0.0,
            })
            .collect();
        let given: f64 = t.iter().sum();
        if given > n as f64 + 1e-6 {
            return Err(DataError::dataset(
                root,
                format!("the splits ask for {given:.0} samples but the dataset has {n}"),
            ));
        }
        match self.parts.iter().position(|p| p.1 == Amount::Rest) {
            Some(r) => t[r] = n as f64 - given,
            None if (given - n as f64).abs() > 0.5 => {
                return Err(DataError::Config(format!(
                    "the splits cover {given:.0} of {n} samples: add a `rest` split"
                )));
            }
            None => {}
        }
        Ok(t)
    }
}

/// A group's name, member indices and per-stratum counts.
type GroupStat<'a> = (&'a str, (Vec<usize>, Vec<f64>));

/// Which split every sample of a dataset is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Split names.
    pub names: Vec<String>,
    /// For each sample of the dataset, an index into `names`.
    pub of_sample: Vec<usize>,
}

/// Assigns whole groups to splits, deterministically for a seed: groups are taken largest
/// first (ties in a seeded random order), each into the split whose per-class and total
/// targets it fits best, so classes are stratified as far as the groups allow.
pub fn split(dataset: &Dataset, spec: &SplitSpec, seed: u64) -> Result<Assignment> {
    spec.validate()?;
    let n = dataset.samples.len();
    let strata = dataset.classes.len() + 1; // the last stratum is "unlabelled"
    let stratum = |label: Option<usize>| label.unwrap_or(strata - 1);

    let mut groups: BTreeMap<&str, (Vec<usize>, Vec<f64>)> = BTreeMap::new();
    for (i, s) in dataset.samples.iter().enumerate() {
        let g = groups
            .entry(s.group.as_str())
            .or_insert_with(|| (Vec::new(), vec![0.0; strata]));
        g.0.push(i);
        g.1[stratum(s.label)] += 1.0;
    }
    let mut per_stratum = vec![0.0f64; strata];
    for s in &dataset.samples {
        per_stratum[stratum(s.label)] += 1.0;
    }
    let totals = spec.targets(n, &dataset.root)?;
    let share: Vec<f64> = totals.iter().map(|t| t / n.max(1) as f64).collect();
    let target: Vec<Vec<f64>> = share
        .iter()
        .map(|f| per_stratum.iter().map(|c| f * c).collect())
        .collect();

    let order: Vec<GroupStat<'_>> = groups.into_iter().collect();
    let perm = permutation(order.len(), &mut derive(seed, Stream::Split, &[]));
    let mut shuffled: Vec<_> = perm.iter().map(|&i| order[i].clone()).collect();
    shuffled.sort_by_key(|g| std::cmp::Reverse(g.1.0.len()));

    let k = spec.parts.len();
    let mut have = vec![vec![0.0f64; strata]; k];
    let mut have_total = vec![0.0f64; k];
    let mut of_sample = vec![usize::MAX; n];
    for (_, (members, counts)) in &shuffled {
        let size = members.len() as f64;
        let cost = |s: usize| -> f64 {
            // Change of the squared distance to the targets, per class (weighted so that rare
            // classes count) and in total.
            let mut c = 0.0;
            for (j, &x) in counts.iter().enumerate() {
                if x > 0.0 {
                    c += x * (x + 2.0 * (have[s][j] - target[s][j])) / per_stratum[j];
                }
            }
            c + size * (size + 2.0 * (have_total[s] - totals[s])) / n as f64
        };
        let best = (0..k)
            .filter(|&s| totals[s] > 0.0)
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
            .unwrap_or(0);
        for &m in members {
            of_sample[m] = best;
        }
        for (h, x) in have[best].iter_mut().zip(counts) {
            *h += x;
        }
        have_total[best] += size;
    }
    Ok(Assignment {
        names: spec.parts.iter().map(|p| p.0.clone()).collect(),
        of_sample,
    })
}

impl Assignment {
    /// The splits a manifest gave in its split column. Every sample must have one.
    pub fn from_manifest(dataset: &Dataset) -> Result<Assignment> {
        let mut names: Vec<String> = Vec::new();
        let mut of_sample = Vec::with_capacity(dataset.samples.len());
        for s in &dataset.samples {
            let split = s.split.as_ref().ok_or_else(|| {
                DataError::dataset(
                    &dataset.root,
                    format!("{}: no split given", dataset.relative_name(s)),
                )
            })?;
            let i = match names.iter().position(|n| n == split) {
                Some(i) => i,
                None => {
                    names.push(split.clone());
                    names.len() - 1
                }
            };
            of_sample.push(i);
        }
        let a = Assignment { names, of_sample };
        a.check_groups(dataset)?;
        Ok(a)
    }

    /// Sample indices of split `name`.
    pub fn indices(&self, name: &str) -> Vec<usize> {
        match self.names.iter().position(|n| n == name) {
            Some(k) => (0..self.of_sample.len())
                .filter(|&i| self.of_sample[i] == k)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Fails if a group has samples in two splits.
    pub fn check_groups(&self, dataset: &Dataset) -> Result<()> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (s, &k) in dataset.samples.iter().zip(&self.of_sample) {
            if let Some(&other) = seen.get(s.group.as_str()) {
                if other != k {
                    return Err(DataError::dataset(
                        &dataset.root,
                        format!(
                            "group `{}` is in splits `{}` and `{}`",
                            s.group, self.names[other], self.names[k]
                        ),
                    ));
                }
            } else {
                seen.insert(&s.group, k);
            }
        }
        Ok(())
    }

    /// The split file: a header naming the format, seed and spec, then one row per sample
    /// (dataset-relative path, group, label, split).
    pub fn to_tsv(&self, dataset: &Dataset, provenance: &str) -> String {
        let mut out = format!(
            "{SPLIT_FORMAT}\n# {provenance}\n{SPLITS_LINE}{}\npath\tgroup\tlabel\tsplit\n",
            self.names.join(",")
        );
        for (s, &k) in dataset.samples.iter().zip(&self.of_sample) {
            let label = s.label.map(|l| dataset.classes[l].as_str()).unwrap_or("");
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                dataset.relative_name(s),
                s.group,
                label,
                self.names[k]
            ));
        }
        out
    }

    /// Writes [`Assignment::to_tsv`] atomically.
    pub fn write(&self, path: &Path, dataset: &Dataset, provenance: &str) -> Result<()> {
        write_atomic(path, self.to_tsv(dataset, provenance).as_bytes())
    }

    /// Reads a split file written for `dataset`. Every sample must be listed exactly once, with
    /// the same group and label, and no group may span two splits: a dataset that changed
    /// since the split was made is an error, not a silent reshuffle.
    pub fn read(path: &Path, dataset: &Dataset) -> Result<Assignment> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l.trim() == SPLIT_FORMAT => {}
            _ => {
                return Err(DataError::table(
                    path,
                    Some(1),
                    format!("not a split file (first line must be `{SPLIT_FORMAT}`)"),
                ));
            }
        }
        let index: BTreeMap<String, usize> = dataset
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| (dataset.relative_name(s), i))
            .collect();
        let mut names: Vec<String> = Vec::new();
        let mut of_sample = vec![usize::MAX; dataset.samples.len()];
        let mut header_seen = false;
        for (i, line) in lines {
            let ln = Some(i as u64 + 1);
            if let Some(order) = line.strip_prefix(SPLITS_LINE) {
                if names.is_empty() {
                    names = order
                        .split(',')
                        .map(str::to_string)
                        .filter(|n| !n.is_empty())
                        .collect();
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if !header_seen {
                if f != ["path", "group", "label", "split"] {
                    return Err(DataError::table(
                        path,
                        ln,
                        "expected the header path, group, label, split",
                    ));
                }
                header_seen = true;
                continue;
            }
            if f.len() != 4 {
                return Err(DataError::table(
                    path,
                    ln,
                    format!("{} fields, expected 4", f.len()),
                ));
            }
            let &i_s = index.get(f[0]).ok_or_else(|| {
                DataError::table(path, ln, format!("`{}` is not in the dataset", f[0]))
            })?;
            let s = &dataset.samples[i_s];
            let label = s.label.map(|l| dataset.classes[l].as_str()).unwrap_or("");
            if s.group != f[1] || label != f[2] {
                return Err(DataError::table(
                    path,
                    ln,
                    format!(
                        "`{}` is group `{}` label `{}` in the dataset but `{}` / `{}` here",
                        f[0], s.group, label, f[1], f[2]
                    ),
                ));
            }
            if of_sample[i_s] != usize::MAX {
                return Err(DataError::table(
                    path,
                    ln,
                    format!("`{}` is listed twice", f[0]),
                ));
            }
            let k = match names.iter().position(|n| n == f[3]) {
                Some(k) => k,
                None => {
                    names.push(f[3].to_string());
                    names.len() - 1
                }
            };
            of_sample[i_s] = k;
        }
        if let Some(missing) = of_sample.iter().position(|&k| k == usize::MAX) {
            let count = of_sample.iter().filter(|&&k| k == usize::MAX).count();
            return Err(DataError::table(
                path,
                None,
                format!(
                    "{count} dataset samples are not in the split file, e.g. `{}`",
                    dataset.relative_name(&dataset.samples[missing])
                ),
            ));
        }
        let a = Assignment { names, of_sample };
        a.check_groups(dataset)?;
        Ok(a)
    }

    /// Per-class, per-split sample counts and per-split group counts.
    pub fn counts(&self, dataset: &Dataset) -> CountTable {
        let strata = dataset.classes.len() + 1;
        let mut counts = vec![vec![0usize; strata]; self.names.len()];
        let mut groups = vec![BTreeSet::new(); self.names.len()];
        for (s, &k) in dataset.samples.iter().zip(&self.of_sample) {
            counts[k][s.label.unwrap_or(strata - 1)] += 1;
            groups[k].insert(s.group.as_str());
        }
        CountTable {
            classes: dataset.classes.clone(),
            splits: self.names.clone(),
            counts,
            groups: groups.iter().map(BTreeSet::len).collect(),
        }
    }
}

/// Sample counts per split (rows) and class (columns, the last being unlabelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountTable {
    /// Class names (columns).
    pub classes: Vec<String>,
    /// Split names (rows).
    pub splits: Vec<String>,
    /// `counts[split][class]`, with one extra last column for unlabelled samples.
    pub counts: Vec<Vec<usize>>,
    /// Groups per split.
    pub groups: Vec<usize>,
}

impl CountTable {
    /// The table as TSV (split, one column per class, unlabelled, total, groups).
    pub fn to_tsv(&self) -> String {
        self.rows().iter().map(|r| r.join("\t") + "\n").collect()
    }

    fn rows(&self) -> Vec<Vec<String>> {
        let mut head = vec!["split".to_string()];
        head.extend(self.classes.iter().cloned());
        head.extend(["unlabelled".into(), "total".into(), "groups".into()]);
        let mut rows = vec![head];
        let mut col_total = vec![0usize; self.classes.len() + 1];
        for (k, name) in self.splits.iter().enumerate() {
            let mut r = vec![name.clone()];
            for (j, c) in self.counts[k].iter().enumerate() {
                r.push(c.to_string());
                col_total[j] += c;
            }
            r.push(self.counts[k].iter().sum::<usize>().to_string());
            r.push(self.groups[k].to_string());
            rows.push(r);
        }
        let mut total = vec!["total".to_string()];
        total.extend(col_total.iter().map(usize::to_string));
        total.push(col_total.iter().sum::<usize>().to_string());
        total.push(self.groups.iter().sum::<usize>().to_string());
        rows.push(total);
        rows
    }
}

impl fmt::Display for CountTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.rows();
        let cols = rows[0].len();
        let width: Vec<usize> = (0..cols)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            for (c, cell) in r.iter().enumerate() {
                if c == 0 {
                    write!(f, "{cell:<w$}", w = width[c])?;
                } else {
                    write!(f, "  {cell:>w$}", w = width[c])?;
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
