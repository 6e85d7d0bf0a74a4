//! `--limit` target patterns: names, globs, numeric ranges, groups, negation, comma lists.
//!
//! A limit is a comma-separated list of terms. A term is a node name (`pve1`), a glob (`pve*`,
//! `pve?`), a numeric range (`pve[1-3]`, `pve[1-3,7]`, `pve[01-10]`), a group (`@gpu`), or any of
//! those negated with a leading `!`. The selection is the union of the positive terms (all nodes
//! when there are none) minus the negated ones, kept in inventory order. A term that matches no
//! node is an error: a typo must never silently turn a run into a no-op (or into "all nodes"); so is
//! a limit with no term at all (`''`, `,`).

use globset::{Glob, GlobMatcher};

use super::Inventory;

/// A `--limit` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The pattern text is malformed.
    #[error("bad --limit term `{term}`: {reason}")]
    Syntax {
        /// The term.
        term: String,
        /// What is wrong.
        reason: String,
    },
    /// A term matched nothing.
    #[error("--limit term `{term}` matches no node (nodes: {known})")]
    NoMatch {
        /// The term.
        term: String,
        /// The inventory's nodes, abbreviated.
        known: String,
    },
    /// `@cluster:NAME` names no cluster.
    #[error("--limit names unknown cluster `@cluster:{cluster}` (clusters: {known})")]
    UnknownCluster {
        /// The name.
        cluster: String,
        /// Known clusters.
        known: String,
    },
    /// `@group` names no group.
    #[error("--limit names unknown group `@{group}` (groups: {known})")]
    UnknownGroup {
        /// The group.
        group: String,
        /// Declared groups.
        known: String,
    },
    /// Everything was excluded.
    #[error("--limit `{0}` leaves no node selected")]
    Empty(String),
    /// No term at all (`''`, `,`, spaces): a typo, never read as "every node".
    #[error(
        "the pattern {0:?} names no node: an empty --limit is refused rather than read as every \
         node (leave --limit out to select every node)"
    )]
    NoTerms(String),
}

enum Matcher {
    Name(String),
    Glob(GlobMatcher),
    Group(String),
    /// `@cluster:NAME`: the nodes of one Proxmox VE cluster.
    Cluster(String),
    /// Names expanded from a numeric range.
    Names(Vec<String>),
}

struct Term {
    text: String,
    negated: bool,
    matcher: Matcher,
}

/// Split on commas that are not inside `[...]`.
fn split_terms(limit: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in limit.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&limit[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&limit[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// A numeric range in a term that cannot be expanded (the reason of a [`LimitError::Syntax`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RangeError {
    /// A bound that does not fit a number.
    #[error("`{0}` is not a number")]
    NotANumber(String),
    /// The low bound is above the high one.
    #[error("range {0}-{1} runs backwards")]
    Backwards(u64, u64),
    /// Wider than 100000.
    #[error("range {0}-{1} is too large")]
    TooLarge(u64, u64),
}

/// Expand `prefix[1-3,7]suffix` (numbers only, zero padding kept) into names; `None` when the
/// brackets do not hold a numeric list (then the term is a glob character class).
fn expand_range(term: &str) -> Result<Option<Vec<String>>, RangeError> {
    let (Some(open), Some(close)) = (term.find('['), term.find(']')) else {
        return Ok(None);
    };
    if close < open {
        return Ok(None);
    }
    let inner = &term[open + 1..close];
    let numeric = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ',')
        && inner
            .split(',')
            .all(|p| p.split('-').all(|n| !n.is_empty()));
    if !numeric {
        return Ok(None);
    }
    let (prefix, suffix) = (&term[..open], &term[close + 1..]);
    let rest = match expand_range(suffix)? {
        Some(v) => v,
        None => vec![suffix.to_string()],
    };
    let mut names = Vec::new();
    for part in inner.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        let (a, b): (u64, u64) = (
            lo.parse()
                .map_err(|_| RangeError::NotANumber(lo.to_string()))?,
            hi.parse()
                .map_err(|_| RangeError::NotANumber(hi.to_string()))?,
        );
        if a > b {
            return Err(RangeError::Backwards(a, b));
        }
        if b - a > 100_000 {
            return Err(RangeError::TooLarge(a, b));
        }
        for n in a..=b {
            for r in &rest {
                names.push(format!("{prefix}{n:0width$}{r}"));
            }
        }
    }
    Ok(Some(names))
}

fn parse_term(raw: &str) -> Result<Term, LimitError> {
    let (negated, body) = match raw.strip_prefix('!') {
        Some(b) => (true, b.trim()),
        None => (false, raw),
    };
    let syntax = |reason: String| LimitError::Syntax {
        term: raw.to_string(),
        reason,
    };
    if body.is_empty() {
        return Err(syntax("empty pattern".into()));
    }
    let matcher = if let Some(c) = body.strip_prefix("@cluster:") {
        if c.is_empty() {
            return Err(syntax("`@cluster:` needs a cluster name".into()));
        }
        Matcher::Cluster(c.to_string())
    } else if let Some(g) = body.strip_prefix('@') {
        if g.is_empty() {
            return Err(syntax("`@` needs a group name".into()));
        }
        Matcher::Group(g.to_string())
    } else if let Some(names) = expand_range(body).map_err(|e| syntax(e.to_string()))? {
        Matcher::Names(names)
    } else if body.contains(['*', '?', '[']) {
        Matcher::Glob(
            Glob::new(body)
                .map_err(|e| syntax(e.kind().to_string()))?
                .compile_matcher(),
        )
    } else {
        Matcher::Name(body.to_string())
    };
    Ok(Term {
        text: raw.to_string(),
        negated,
        matcher,
    })
}

fn abbreviate(names: &[&str]) -> String {
    const MAX: usize = 12;
    if names.len() <= MAX {
        names.join(", ")
    } else {
        format!("{}, ... ({} in all)", names[..MAX].join(", "), names.len())
    }
}

/// Check a `--limit` value before any inventory is read: it must hold at least one term. An
/// empty selector is a typo, and reading it as "every node" would make it the most dangerous one.
pub fn parse_pattern(limit: &str) -> Result<String, LimitError> {
    if split_terms(limit).is_empty() {
        return Err(LimitError::NoTerms(limit.to_string()));
    }
    Ok(limit.to_string())
}

/// Select the nodes of `inv` that `limit` names, in inventory order. `None` selects every node;
/// `Some` with no term in it (`""`, `","`) is an error, not every node.
pub fn select<'a>(
    inv: &'a Inventory,
    limit: Option<&str>,
) -> Result<Vec<&'a super::Node>, LimitError> {
    let Some(limit) = limit else {
        return Ok(inv.nodes.iter().collect());
    };
    let terms = split_terms(&parse_pattern(limit)?)
        .into_iter()
        .map(parse_term)
        .collect::<Result<Vec<_>, _>>()?;
    let names = inv.names();
    let mut included = vec![terms.iter().all(|t| t.negated); inv.nodes.len()];
    let mut excluded = vec![false; inv.nodes.len()];
    for term in &terms {
        let hits: Vec<usize> = match &term.matcher {
            Matcher::Cluster(c) => {
                let hits: Vec<usize> = (0..names.len())
                    .filter(|&i| inv.nodes[i].cluster.as_deref() == Some(c.as_str()))
                    .collect();
                if hits.is_empty() {
                    let mut known: Vec<&str> = inv
                        .nodes
                        .iter()
                        .filter_map(|n| n.cluster.as_deref())
                        .collect();
                    known.dedup();
                    return Err(LimitError::UnknownCluster {
                        cluster: c.clone(),
                        known: if known.is_empty() {
                            "none: give nodes `cluster = \"NAME\"`".into()
                        } else {
                            abbreviate(&known)
                        },
                    });
                }
                hits
            }
            Matcher::Group(g) => {
                let Some(members) = inv.groups.get(g) else {
                    return Err(LimitError::UnknownGroup {
                        group: g.clone(),
                        known: abbreviate(
                            &inv.groups.keys().map(String::as_str).collect::<Vec<_>>(),
                        ),
                    });
                };
                (0..names.len())
                    .filter(|&i| members.iter().any(|m| m == names[i]))
                    .collect()
            }
            Matcher::Name(n) => (0..names.len()).filter(|&i| names[i] == n).collect(),
            Matcher::Names(ns) => (0..names.len())
                .filter(|&i| ns.iter().any(|n| n == names[i]))
                .collect(),
            Matcher::Glob(g) => (0..names.len()).filter(|&i| g.is_match(names[i])).collect(),
        };
        if hits.is_empty() {
            return Err(LimitError::NoMatch {
                term: term.text.clone(),
                known: abbreviate(&names),
            });
        }
        for i in hits {
            if term.negated {
                excluded[i] = true;
            } else {
                included[i] = true;
            }
        }
    }
    let selected: Vec<_> = inv
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| included[*i] && !excluded[*i])
        .map(|(_, n)| n)
        .collect();
    if selected.is_empty() {
        return Err(LimitError::Empty(limit.to_string()));
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn inv() -> Inventory {
        let mut text = String::from("[groups.gpu]\n[groups.rack1]\n");
        for i in 1..=12 {
            let groups = match i {
                1 | 3 => "[\"gpu\", \"rack1\"]",
                2 => "[\"rack1\"]",
                _ => "[]",
            };
            text.push_str(&format!("[nodes.pve{i}]\ngroups = {groups}\n"));
        }
        text.push_str("[nodes.backup01]\n");
        Inventory::parse(&text, Path::new("inv.toml")).unwrap()
    }

    fn names(limit: &str) -> Vec<String> {
        let inv = inv();
        select(&inv, Some(limit))
            .unwrap()
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    #[test]
    fn plain_names_and_commas() {
        assert_eq!(names("pve2,pve1"), ["pve1", "pve2"], "inventory order kept");
    }

    #[test]
    fn globs() {
        assert_eq!(names("backup*"), ["backup01"]);
        assert_eq!(names("pve?").len(), 9);
    }

    #[test]
    fn numeric_ranges_with_lists_and_padding() {
        assert_eq!(names("pve[1-3]"), ["pve1", "pve2", "pve3"]);
        assert_eq!(names("pve[2,10-11]"), ["pve2", "pve10", "pve11"]);
        assert_eq!(names("backup[01-01]"), ["backup01"]);
    }

    #[test]
    fn groups_and_negation() {
        assert_eq!(names("@gpu"), ["pve1", "pve3"]);
        assert_eq!(names("@rack1,!@gpu"), ["pve2"]);
        assert_eq!(names("!pve*").len(), 1, "only negations: all minus those");
        assert_eq!(names("pve[1-3],!pve2"), ["pve1", "pve3"]);
    }

    #[test]
    fn a_term_matching_nothing_is_an_error() {
        let inv = inv();
        let e = select(&inv, Some("pve1,pve99")).unwrap_err();
        assert!(
            matches!(e, LimitError::NoMatch { ref term, .. } if term == "pve99"),
            "{e}"
        );
        let e = select(&inv, Some("!nope")).unwrap_err();
        assert!(matches!(e, LimitError::NoMatch { .. }), "{e}");
    }

    #[test]
    fn unknown_group_and_empty_selection_are_errors() {
        let inv = inv();
        assert!(matches!(
            select(&inv, Some("@nvidia")).unwrap_err(),
            LimitError::UnknownGroup { .. }
        ));
        assert!(matches!(
            select(&inv, Some("pve1,!pve1")).unwrap_err(),
            LimitError::Empty(_)
        ));
    }

    #[test]
    fn a_limit_without_any_term_is_an_error_not_every_node() {
        let inv = inv();
        for limit in ["", " ", ",", " , ,", "\t"] {
            assert_eq!(
                select(&inv, Some(limit)).unwrap_err(),
                LimitError::NoTerms(limit.to_string()),
                "{limit:?}"
            );
            assert!(parse_pattern(limit).is_err(), "{limit:?}");
        }
        assert_eq!(parse_pattern("pve1,").unwrap(), "pve1,");
        assert_eq!(names("pve1,"), ["pve1"], "a trailing comma is harmless");
    }

    #[test]
    fn malformed_terms_are_syntax_errors() {
        let inv = inv();
        assert!(matches!(
            select(&inv, Some("pve[3-1]")).unwrap_err(),
            LimitError::Syntax { .. }
        ));
        assert!(matches!(
            select(&inv, Some("@")).unwrap_err(),
            LimitError::Syntax { .. }
        ));
        assert_eq!(
            select(&inv, Some("pve[3-1]")).unwrap_err().to_string(),
            "bad --limit term `pve[3-1]`: range 3-1 runs backwards"
        );
        assert_eq!(
            select(&inv, Some("pve[1-99999999999999999999]"))
                .unwrap_err()
                .to_string(),
            "bad --limit term `pve[1-99999999999999999999]`: `99999999999999999999` is not a number"
        );
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn at_cluster_selects_one_clusters_nodes() {
        let inv = Inventory::parse(
            "[defaults]\ncluster = \"home\"\n[nodes.a1]\naddress = \"10.0.0.1\"\n[nodes.a2]\naddress = \"10.0.0.2\"\n[nodes.b1]\naddress = \"10.1.0.1\"\ncluster = \"prod\"\n",
            Path::new("inv.toml"),
        )
        .unwrap();
        let names = |l: &str| -> Vec<String> {
            select(&inv, Some(l))
                .unwrap()
                .into_iter()
                .map(|n| n.name.clone())
                .collect()
        };
        assert_eq!(names("@cluster:home"), ["a1", "a2"]);
        assert_eq!(names("@cluster:prod"), ["b1"]);
        assert_eq!(names("@cluster:home,!a2"), ["a1"]);
        let e = select(&inv, Some("@cluster:lab")).unwrap_err().to_string();
        assert!(
            e.contains("unknown cluster `@cluster:lab` (clusters: home, prod)"),
            "{e}"
        );
        assert!(select(&inv, Some("@cluster:")).is_err());
    }
}
