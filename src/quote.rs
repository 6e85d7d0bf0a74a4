//! Shell quoting for values that go into remote POSIX `sh` commands.
//!
//! Every value interpolated into a command sent to a node goes through [`shell_quote`]: wrapped in
//! single quotes, with each embedded `'` written as `'\''`. Values made only of characters that
//! are never special to `sh` are left bare, for readable plans.

/// Quote `s` as one POSIX shell word.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if safe {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::shell_quote;
    use std::process::Command;

    #[test]
    fn quoted_values_survive_a_real_shell_unchanged() {
        let values = [
            "plain",
            "",
            "with space",
            "it's",
            "$(reboot)",
            "`id`",
            "a\"b",
            "semi;colon && ls | cat > /tmp/x",
            "new\nline",
            "*?[]{}~",
            "'''",
            "ünïcödé",
        ];
        for v in values {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(v)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), v, "value {v:?}");
        }
    }

    #[test]
    fn safe_words_stay_bare() {
        assert_eq!(shell_quote("/etc/default/grub"), "/etc/default/grub");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
