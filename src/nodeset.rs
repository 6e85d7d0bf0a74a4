//! Folding node names into compact sets: `pve1,pve2,pve3,pve5` -> `pve[1-3,5]` (like clush/nodeset).

use std::collections::BTreeMap;

/// Split `pve12` into (`pve`, 12, width 2); names without a trailing number give `None`.
fn split_numeric(name: &str) -> Option<(&str, u64, usize)> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 18 {
        return None;
    }
    let (prefix, num) = name.split_at(name.len() - digits);
    let width = if num.len() > 1 && num.starts_with('0') {
        num.len()
    } else {
        0
    };
    Some((prefix, num.parse().ok()?, width))
}

/// Fold names into a compact, readable set expression. Order: folded prefixes first as they
/// first appear, then names without a number.
pub fn fold(names: &[&str]) -> String {
    // (prefix, width) -> numbers, remembering first-seen order.
    let mut order: Vec<(String, usize)> = Vec::new();
    let mut groups: BTreeMap<(String, usize), Vec<u64>> = BTreeMap::new();
    let mut plain: Vec<String> = Vec::new();
    for name in names {
        match split_numeric(name) {
            Some((p, n, w)) => {
                let key = (p.to_string(), w);
                if !groups.contains_key(&key) {
                    order.push(key.clone());
                }
                groups.entry(key).or_default().push(n);
            }
            None => plain.push(name.to_string()),
        }
    }
    let mut parts = Vec::new();
    for key in order {
        let mut nums = groups.remove(&key).unwrap_or_default();
        nums.sort_unstable();
        nums.dedup();
        let (prefix, width) = key;
        if nums.len() == 1 {
            parts.push(format!("{prefix}{:0width$}", nums[0]));
            continue;
        }
        let mut ranges: Vec<String> = Vec::new();
        let mut i = 0;
        while i < nums.len() {
            let start = nums[i];
            let mut end = start;
            while i + 1 < nums.len() && nums[i + 1] == end + 1 {
                i += 1;
                end = nums[i];
            }
            ranges.push(if start == end {
                format!("{start:0width$}")
            } else {
                format!("{start:0width$}-{end:0width$}")
            });
            i += 1;
        }
        parts.push(format!("{prefix}[{}]", ranges.join(",")));
    }
    parts.extend(plain);
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn folds_runs_and_singles() {
        assert_eq!(fold(&["pve1", "pve2", "pve3", "pve5"]), "pve[1-3,5]");
        assert_eq!(fold(&["pve7"]), "pve7");
        assert_eq!(
            fold(&["node01", "node02", "gw", "pve1"]),
            "node[01-02],pve1,gw"
        );
        assert_eq!(fold(&["pve10", "pve9", "pve11"]), "pve[9-11]");
    }
}
