//! `-e KEY=VALUE` as the playbook declares KEY: a value given on the command line is always
//! text, and text is true in a template whenever it is not empty, so `-e full_reset=no` would
//! mean "yes". Each value is read as the type of the variable's default in the playbook's
//! `[vars]` (bool, integer, float, string, list), and anything else is refused, naming the
//! variable, its type and what was given; so is a name the playbook does not declare.
//!
//! Spellings: a bool takes `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` (any case); an
//! integer a decimal integer; a float a number; a list a TOML array (`["eno1", "enp2s0"]`) or
//! comma-separated words (`eno1,enp2s0`); a string the text exactly as given, or a TOML array for
//! a variable documented as "a name, or a list" (`nics`).

use std::collections::BTreeMap;

/// Why an `-e` item was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtraVarError {
    /// Not `KEY=VALUE`.
    #[error("-e {0}: expected KEY=VALUE")]
    Syntax(String),
    /// The playbook declares no such variable.
    #[error(
        "-e {name}: the playbook {playbook} declares no variable `{name}`; it declares: {declared}"
    )]
    Undeclared {
        /// The name given.
        name: String,
        /// The playbook's name.
        playbook: String,
        /// Its declared variables, comma-separated (or `none`).
        declared: String,
    },
    /// The value is not of the variable's type.
    #[error("-e {name}={given}: `{name}` is {kind} in the playbook {playbook} (default {default}); {expected}")]
    Type {
        /// The variable.
        name: String,
        /// What was given.
        given: String,
        /// `a bool`, `an integer` ...
        kind: &'static str,
        /// Its default, as TOML.
        default: String,
        /// What would be accepted.
        expected: &'static str,
        /// The playbook's name.
        playbook: String,
    },
    /// An inventory variable is not of the playbook's type for it.
    #[error("inventory variable `{name}` of {node} is {given}, but `{name}` is {kind} in the playbook {playbook} (default {default}); write it as that type (e.g. without quotes)")]
    InventoryType {
        /// The node.
        node: String,
        /// The variable.
        name: String,
        /// What the inventory has, as TOML.
        given: String,
        /// `a bool` ...
        kind: &'static str,
        /// The default, as TOML.
        default: String,
        /// The playbook's name.
        playbook: String,
    },
}

/// Check the inventory's variables of `node` that the playbook declares: each must have its
/// default's type (an inventory `full_reset = "no"` is text, and text is true), an integer
/// standing for a float, a list for a string as on the command line.
pub fn check_inventory_vars(
    declared: &BTreeMap<String, toml::Value>,
    node: &str,
    vars: &BTreeMap<String, toml::Value>,
    playbook: &str,
) -> Result<(), Box<ExtraVarError>> {
    for (name, v) in vars {
        let Some(default) = declared.get(name) else {
            continue;
        };
        let same = matches!(
            (default, v),
            (toml::Value::Boolean(_), toml::Value::Boolean(_))
                | (toml::Value::Integer(_), toml::Value::Integer(_))
                | (
                    toml::Value::Float(_),
                    toml::Value::Float(_) | toml::Value::Integer(_)
                )
                | (toml::Value::Array(_), toml::Value::Array(_))
                | (
                    toml::Value::String(_),
                    toml::Value::String(_) | toml::Value::Array(_)
                )
        ) || !matches!(
            default,
            toml::Value::Boolean(_)
                | toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Array(_)
                | toml::Value::String(_)
        );
        if !same {
            let (kind, _) = describe(default);
            return Err(Box::new(ExtraVarError::InventoryType {
                node: node.to_string(),
                name: name.clone(),
                given: v.to_string(),
                kind,
                default: default.to_string(),
                playbook: playbook.to_string(),
            }));
        }
    }
    Ok(())
}

/// Read `items` against the playbook's `declared` variables (`[vars]` with their defaults).
pub fn typed_extra(
    items: &[String],
    declared: &BTreeMap<String, toml::Value>,
    playbook: &str,
) -> Result<BTreeMap<String, toml::Value>, Box<ExtraVarError>> {
    let mut out = BTreeMap::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .ok_or_else(|| Box::new(ExtraVarError::Syntax(it.clone())))?;
        let name = k.trim();
        let Some(default) = declared.get(name) else {
            return Err(Box::new(ExtraVarError::Undeclared {
                name: name.to_string(),
                playbook: playbook.to_string(),
                declared: if declared.is_empty() {
                    "none".into()
                } else {
                    declared.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            }));
        };
        let value = typed(v, default).ok_or_else(|| {
            let (kind, expected) = describe(default);
            Box::new(ExtraVarError::Type {
                name: name.to_string(),
                given: v.to_string(),
                kind,
                default: default.to_string(),
                expected,
                playbook: playbook.to_string(),
            })
        })?;
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

fn describe(default: &toml::Value) -> (&'static str, &'static str) {
    match default {
        toml::Value::Boolean(_) => ("a bool", "give true or false (also yes/no, on/off, 1/0)"),
        toml::Value::Integer(_) => ("an integer", "give a whole number such as 600"),
        toml::Value::Float(_) => ("a number", "give a number such as 0.5"),
        toml::Value::Array(_) => (
            "a list",
            "give a TOML array such as [\"a\", \"b\"] or comma-separated words a,b",
        ),
        _ => ("a string", "give any text"),
    }
}

/// `v` as the type of `default`, or `None`.
fn typed(v: &str, default: &toml::Value) -> Option<toml::Value> {
    let t = v.trim();
    match default {
        toml::Value::Boolean(_) => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(toml::Value::Boolean(true)),
            "false" | "no" | "off" | "0" => Some(toml::Value::Boolean(false)),
            _ => None,
        },
        toml::Value::Integer(_) => t.parse::<i64>().ok().map(toml::Value::Integer),
        toml::Value::Float(_) => t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(toml::Value::Float),
        toml::Value::Array(_) => toml_array(t).or_else(|| {
            let words: Vec<toml::Value> = t
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(|w| toml::Value::String(w.to_string()))
                .collect();
            Some(toml::Value::Array(words))
        }),
        // A string is the text as given; a TOML array for "a name, or a list" variables.
        _ => Some(toml_array(t).unwrap_or_else(|| toml::Value::String(v.to_string()))),
    }
}

fn toml_array(t: &str) -> Option<toml::Value> {
    if !t.starts_with('[') {
        return None;
    }
    toml::from_str::<toml::Table>(&format!("v = {t}"))
        .ok()
        .and_then(|mut tb| tb.remove("v"))
        .filter(toml::Value::is_array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix_rrd() -> BTreeMap<String, toml::Value> {
        toml::from_str(
            "full_reset = false\nrrd_db = \"/var/lib/rrdcached/db\"\nmax_offset_s = 0.5\nlock_timeout = 600\nnics = \"bridge-ports\"\nids = [\"a\"]\n",
        )
        .unwrap()
    }

    fn one(item: &str) -> Result<toml::Value, Box<ExtraVarError>> {
        typed_extra(&[item.to_string()], &fix_rrd(), "fix-rrd")
            .map(|m| m.into_values().next().unwrap())
    }

    #[test]
    fn no_and_false_are_false_for_a_bool() {
        for s in ["no", "False", "false", "off", "0", "NO"] {
            assert_eq!(
                one(&format!("full_reset={s}")).unwrap(),
                toml::Value::Boolean(false),
                "{s}"
            );
        }
        for s in ["yes", "true", "True", "on", "1"] {
            assert_eq!(
                one(&format!("full_reset={s}")).unwrap(),
                toml::Value::Boolean(true),
                "{s}"
            );
        }
    }

    #[test]
    fn anything_else_for_a_bool_is_refused_naming_the_type() {
        let e = one("full_reset=nope").unwrap_err().to_string();
        assert!(
            e.contains("`full_reset` is a bool in the playbook fix-rrd (default false)"),
            "{e}"
        );
        assert!(e.contains("-e full_reset=nope"), "{e}");
        assert!(one("full_reset=").is_err());
    }

    #[test]
    fn numbers_are_numbers_and_strings_stay_text() {
        assert_eq!(one("lock_timeout=30").unwrap(), toml::Value::Integer(30));
        assert!(one("lock_timeout=30s").is_err());
        assert!(one("lock_timeout=1.5").is_err());
        assert_eq!(one("max_offset_s=2").unwrap(), toml::Value::Float(2.0));
        assert!(one("max_offset_s=fast").is_err());
        // A string is never parsed as TOML: "007" stays "007", "true" stays text.
        assert_eq!(
            one("rrd_db=007").unwrap(),
            toml::Value::String("007".into())
        );
        assert_eq!(
            one("rrd_db=true").unwrap(),
            toml::Value::String("true".into())
        );
    }

    #[test]
    fn lists_take_a_toml_array_or_words() {
        let want = toml::Value::Array(vec!["eno1".into(), "enp2s0".into()]);
        assert_eq!(one("ids=[\"eno1\", \"enp2s0\"]").unwrap(), want);
        assert_eq!(one("ids=eno1,enp2s0").unwrap(), want);
        // A "name, or a list" string variable takes an array too.
        assert_eq!(one("nics=[\"eno1\", \"enp2s0\"]").unwrap(), want);
        assert_eq!(
            one("nics=hang").unwrap(),
            toml::Value::String("hang".into())
        );
    }

    #[test]
    fn an_inventory_string_for_a_bool_is_refused() {
        let vars: BTreeMap<String, toml::Value> =
            toml::from_str("full_reset = \"no\"\nother = 1\n").unwrap();
        let e = check_inventory_vars(&fix_rrd(), "pve2", &vars, "fix-rrd")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("inventory variable `full_reset` of pve2 is \"no\""),
            "{e}"
        );
        assert!(e.contains("is a bool"), "{e}");
        let ok: BTreeMap<String, toml::Value> =
            toml::from_str("full_reset = true\nmax_offset_s = 2\nnics = [\"eno1\"]\n").unwrap();
        assert_eq!(
            check_inventory_vars(&fix_rrd(), "pve2", &ok, "fix-rrd"),
            Ok(())
        );
    }

    #[test]
    fn an_undeclared_name_lists_the_declared_ones() {
        let e = one("full_rest=true").unwrap_err().to_string();
        assert!(e.contains("declares no variable `full_rest`"), "{e}");
        assert!(e.contains("full_reset"), "{e}");
        assert!(matches!(
            one("x").map_err(|e| *e),
            Err(ExtraVarError::Syntax(_))
        ));
    }
}
