//! Templates (`{{ }}`) and conditions (`when`, `changed_when`, `assert`) with minijinja.
//!
//! Undefined variables are errors, never empty strings. In commands (`run`, `wait_for`, guards)
//! every interpolated value is shell-quoted unless marked `|safe`; in file content it is inserted
//! as is. The `q` filter quotes explicitly anywhere.

use std::collections::HashSet;

use minijinja::value::Value;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};

use crate::quote::shell_quote;

/// A template or condition that could not be compiled or evaluated; the message is minijinja's,
/// without its `(in <string>:1)` location (the caller gives the real one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// It uses a variable (or an attribute, an item) that is not defined.
    #[error("{0}")]
    Undefined(String),
    /// It is not valid template or expression syntax.
    #[error("{0}")]
    Syntax(String),
    /// Anything else that failed while rendering or evaluating (a bad filter argument, an
    /// operation on the wrong types, ...).
    #[error("{0}")]
    Render(String),
}

/// The two template environments.
pub struct Templates {
    text: Environment<'static>,
    cmd: Environment<'static>,
}

fn q(v: Value) -> Value {
    let s = match v.as_str() {
        Some(s) => s.to_string(),
        None => v.to_string(),
    };
    Value::from_safe_string(shell_quote(&s))
}

fn base() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("q", q);
    env.add_filter("shell_quote", q);
    env
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    /// Both environments.
    pub fn new() -> Templates {
        let text = base();
        let mut cmd = base();
        cmd.set_formatter(|out, _state, value| {
            if value.is_safe() {
                out.write_str(value.as_str().unwrap_or(""))?;
            } else {
                let s = match value.as_str() {
                    Some(s) => s.to_string(),
                    None => value.to_string(),
                };
                out.write_str(&shell_quote(&s))?;
            }
            Ok(())
        });
        Templates { text, cmd }
    }

    /// Render file content or a plain value.
    pub fn text(&self, src: &str, ctx: &Value) -> Result<String, TemplateError> {
        if !src.contains("{{") && !src.contains("{%") {
            return Ok(src.to_string());
        }
        // minijinja drops one trailing newline; file content must keep it.
        let mut out = self.text.render_str(src, ctx).map_err(describe)?;
        if src.ends_with('\n') && !out.ends_with('\n') {
            out.push('\n');
        }
        Ok(out)
    }

    /// Render a shell command: interpolated values are quoted.
    pub fn command(&self, src: &str, ctx: &Value) -> Result<String, TemplateError> {
        if !src.contains("{{") && !src.contains("{%") {
            return Ok(src.to_string());
        }
        self.cmd.render_str(src, ctx).map_err(describe)
    }

    /// Evaluate a condition.
    pub fn truth(&self, expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
        let e = self.text.compile_expression(expr).map_err(describe)?;
        e.eval(ctx).map(|v| v.is_true()).map_err(describe)
    }

    /// The variables and attribute paths a condition reads (`facts.clock.offset_s`), sorted,
    /// without a path that a longer one read extends.
    pub fn condition_paths(&self, expr: &str) -> Vec<String> {
        let Ok(e) = self.text.compile_expression(expr) else {
            return Vec::new();
        };
        let all = e.undeclared_variables(true);
        let mut paths: Vec<String> = all
            .iter()
            .filter(|p| {
                !all.iter().any(|q| {
                    q.len() > p.len() && q.starts_with(p.as_str()) && q[p.len()..].starts_with('.')
                })
            })
            .cloned()
            .collect();
        paths.sort();
        paths
    }

    /// Top-level variables a template or expression uses (syntax errors reported).
    pub fn variables(&self, src: &str, expression: bool) -> Result<HashSet<String>, TemplateError> {
        if expression {
            let e = self.text.compile_expression(src).map_err(describe)?;
            Ok(e.undeclared_variables(false))
        } else {
            let t = self.text.template_from_str(src).map_err(describe)?;
            Ok(t.undeclared_variables(false))
        }
    }
}

fn describe(e: minijinja::Error) -> TemplateError {
    let mut s = e.to_string();
    // minijinja appends "(in <string>:1)"; the caller gives the real location.
    if let Some(i) = s.find(" (in <") {
        s.truncate(i);
    }
    match e.kind() {
        ErrorKind::UndefinedError => TemplateError::Undefined(s),
        ErrorKind::SyntaxError => TemplateError::Syntax(s),
        _ => TemplateError::Render(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_names_the_paths_it_reads_not_their_prefixes() {
        let t = Templates::new();
        assert_eq!(
            t.condition_paths(
                "(facts.clock.controller is not none and facts.clock.controller.offset_s | abs > max_offset_s) or facts.clock.ntp_synchronized == false"
            ),
            vec![
                "facts.clock.controller.offset_s",
                "facts.clock.ntp_synchronized",
                "max_offset_s"
            ]
        );
        assert_eq!(t.condition_paths("full_reset"), vec!["full_reset"]);
        assert!(
            t.condition_paths("(((").is_empty(),
            "a syntax error names nothing"
        );
    }

    fn ctx() -> Value {
        Value::from(minijinja::value::Serde(serde_json::json!({
            "node": {"name": "pve1"},
            "evil": "x'; reboot; echo '",
            "ids": ["8086:3e92"],
            "n": 3,
        })))
    }

    #[test]
    fn commands_quote_every_value_unless_safe() {
        let t = Templates::new();
        assert_eq!(
            t.command("echo {{ evil }}", &ctx()).unwrap(),
            "echo 'x'\\''; reboot; echo '\\'''"
        );
        assert_eq!(
            t.command("echo {{ node.name }} {{ n }}", &ctx()).unwrap(),
            "echo pve1 3"
        );
        assert_eq!(
            t.command("echo {{ 'a b'|safe }}", &ctx()).unwrap(),
            "echo a b"
        );
        assert_eq!(
            t.text("ids={{ ids|join(',') }}", &ctx()).unwrap(),
            "ids=8086:3e92"
        );
        assert_eq!(
            t.text("x {{ evil|q }}", &ctx()).unwrap(),
            "x 'x'\\''; reboot; echo '\\'''"
        );
    }

    #[test]
    fn undefined_variables_are_errors() {
        let t = Templates::new();
        let e = t.text("{{ nope }}", &ctx()).unwrap_err();
        assert!(matches!(e, TemplateError::Undefined(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("undefined"), "{e}");
        assert!(matches!(
            t.truth("nope == 1", &ctx()),
            Err(TemplateError::Undefined(_))
        ));
        assert!(t.truth("n > 2", &ctx()).unwrap());
        let vars = t
            .variables("{{ node.name }} {{ gpu_mode }}", false)
            .unwrap();
        assert!(vars.contains("gpu_mode") && vars.contains("node"));
        assert!(matches!(
            t.variables("{{ unclosed", false),
            Err(TemplateError::Syntax(_))
        ));
    }
}
