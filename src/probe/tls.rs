//! `tls`: the node's TLS certificates, days until they expire.
//!
//! pveproxy serves `/etc/pve/local/pveproxy-ssl.pem` when an operator (or ACME) installed one,
//! else `/etc/pve/local/pve-ssl.pem`, the node certificate the cluster CA signs for two years at
//! most (pve-cluster `PVE/Cluster/Setup.pm` `gen_pve_ssl_cert`: `-days` capped at 2 * 365, run
//! again by `pvecm updatecerts --force`). An expired one breaks the web UI and the API between
//! nodes.
//! The snippet asks openssl for each file's end date (`openssl x509 -enddate -noout -in FILE`:
//! `notAfter=Mar  5 12:00:00 2027 GMT`, OpenSSL's ASN1_TIME_print format) and the node's clock.

use serde::{Deserialize, Serialize};

use super::{marker, missing, Finding, Grade, ParseError, Thresholds};

/// Probe name.
pub const NAME: &str = "tls";

/// The certificates checked, with their check names.
pub const CERTS: [(&str, &str); 2] = [
    ("/etc/pve/local/pve-ssl.pem", "tls.pve-ssl"),
    ("/etc/pve/local/pveproxy-ssl.pem", "tls.pveproxy-ssl"),
];

/// The snippet.
pub const SNIPPET: &str = r#"if ! command -v openssl >/dev/null 2>&1; then echo "@@missing openssl"; fi
if [ ! -d /etc/pve/local ]; then echo "@@missing pve"; fi
echo "@@now $(date +%s)"
for f in /etc/pve/local/pve-ssl.pem /etc/pve/local/pveproxy-ssl.pem; do
  if [ -e "$f" ]; then echo "@@cert $f $(openssl x509 -enddate -noout -in "$f" 2>&1 | head -n 1)"; else echo "@@absent $f"; fi
done"#;

/// One certificate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertFacts {
    /// The file.
    pub path: String,
    /// Whether it exists.
    pub present: bool,
    /// End of validity, Unix seconds (when openssl could read it).
    pub not_after: Option<i64>,
    /// openssl's answer when it was not a `notAfter=` line.
    pub error: Option<String>,
}

/// What the snippet found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// The node's clock, Unix seconds.
    pub now: Option<i64>,
    /// No openssl on the node.
    pub no_openssl: bool,
    /// No `/etc/pve/local` (not a Proxmox VE node, or pmxcfs is not mounted).
    pub not_proxmox: bool,
    /// The certificates, in [`CERTS`] order.
    pub certs: Vec<CertFacts>,
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `Mar  5 12:00:00 2027 GMT` (OpenSSL's ASN1_TIME_print: month, day padded to 2, time, year,
/// `GMT`) as Unix seconds.
pub fn parse_openssl_time(s: &str) -> Option<i64> {
    let w: Vec<&str> = s.split_whitespace().collect();
    let [mon, day, time, year, "GMT"] = w.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| x == mon)? as i64 + 1;
    let d: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, sec] = hms.as_slice() else {
        return None;
    };
    Some(days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<TlsFacts, ParseError> {
    let err = |message: String| ParseError {
        probe: NAME,
        message,
    };
    let miss = missing(text);
    let now = match marker(text, "now") {
        Some(v) => Some(
            v.trim()
                .parse::<i64>()
                .map_err(|_| err(format!("date +%s gave {v:?}")))?,
        ),
        None => None,
    };
    let mut certs = Vec::new();
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("@@absent ") {
            certs.push(CertFacts {
                path: path.to_string(),
                present: false,
                not_after: None,
                error: None,
            });
        } else if let Some(rest) = line.strip_prefix("@@cert ") {
            let (path, answer) = rest.split_once(' ').unwrap_or((rest, ""));
            let not_after = answer
                .strip_prefix("notAfter=")
                .map(|t| parse_openssl_time(t).ok_or_else(|| err(format!("{path}: {answer:?}"))))
                .transpose()?;
            certs.push(CertFacts {
                path: path.to_string(),
                present: true,
                not_after,
                error: not_after.is_none().then(|| answer.trim().to_string()),
            });
        }
    }
    Ok(TlsFacts {
        now,
        no_openssl: miss.contains(&"openssl"),
        not_proxmox: miss.contains(&"pve"),
        certs,
    })
}

fn date_of(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
}

/// Grade: `tls.pve-ssl` and `tls.pveproxy-ssl` (the latter only when the file exists).
pub fn grade(f: &TlsFacts, t: &Thresholds) -> Vec<Finding> {
    if f.not_proxmox {
        return vec![Finding::new(
            "tls.pve-ssl",
            Grade::Skip,
            "no /etc/pve/local (not a Proxmox VE node, or pmxcfs not mounted)",
        )];
    }
    if f.no_openssl {
        return vec![Finding::new(
            "tls.pve-ssl",
            Grade::Skip,
            "openssl not available",
        )];
    }
    let mut out = Vec::new();
    for (path, check) in CERTS {
        let Some(c) = f.certs.iter().find(|c| c.path == path) else {
            continue;
        };
        if !c.present {
            if check == "tls.pve-ssl" {
                out.push(
                    Finding::new(check, Grade::Fail, format!("{path} is missing"))
                        .fix("pvecm updatecerts --force; systemctl restart pveproxy"),
                );
            }
            continue;
        }
        let (Some(end), Some(now)) = (c.not_after, f.now) else {
            out.push(Finding::new(
                check,
                Grade::Warn,
                format!(
                    "{path}: openssl cannot read it: {}",
                    c.error.as_deref().unwrap_or("no answer")
                ),
            ));
            continue;
        };
        let days = (end - now).div_euclid(86_400);
        let renew = if check == "tls.pve-ssl" {
            "pvecm updatecerts --force; systemctl restart pveproxy"
        } else {
            "renew it (pvenode acme cert renew, or install a new one); systemctl restart pveproxy"
        };
        let when = date_of(end);
        let finding = if end <= now {
            Finding::new(
                check,
                Grade::Fail,
                format!("{path} expired on {when} ({} days ago)", -days),
            )
            .fix(renew)
        } else if days < i64::from(t.cert_fail_days) {
            Finding::new(
                check,
                Grade::Fail,
                format!("{path} expires on {when}, in {days} days"),
            )
            .fix(renew)
        } else if days < i64::from(t.cert_warn_days) {
            Finding::new(
                check,
                Grade::Warn,
                format!("{path} expires on {when}, in {days} days"),
            )
            .fix(renew)
        } else {
            Finding::new(
                check,
                Grade::Pass,
                format!("valid until {when} ({days} days)"),
            )
        };
        out.push(finding);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_end_dates_are_read_as_utc_seconds() {
        assert_eq!(
            parse_openssl_time("Mar  5 12:00:00 2027 GMT"),
            Some(1_804_248_000)
        );
        assert_eq!(parse_openssl_time("Jan  1 00:00:00 1970 GMT"), Some(0));
        assert_eq!(
            parse_openssl_time("Feb 29 00:00:00 2000 GMT"),
            Some(951_782_400)
        );
        assert_eq!(parse_openssl_time("Mar  5 12:00:00 2027"), None);
        assert_eq!(parse_openssl_time("Foo  5 12:00:00 2027 GMT"), None);
    }

    #[test]
    fn certificates_warn_under_30_days_and_fail_expired() {
        let text = crate::probe::fixture("tls-openssl-enddate");
        let f = parse(&text).unwrap();
        assert_eq!(f.certs.len(), 2);
        let g = grade(&f, &Thresholds::default());
        // The fixture's node clock is 2027-02-20 12:00 UTC; pve-ssl ends 2027-03-05 (13 days).
        assert_eq!(g[0].check, "tls.pve-ssl");
        assert_eq!(g[0].grade, Grade::Warn, "{}", g[0].detail);
        assert!(g[0].detail.contains("in 13 days"), "{}", g[0].detail);
        assert_eq!(g[1].check, "tls.pveproxy-ssl");
        assert_eq!(g[1].grade, Grade::Fail, "{}", g[1].detail);
        assert!(
            g[1].detail.contains("expired on 2027-01-10"),
            "{}",
            g[1].detail
        );
        let lenient = Thresholds {
            cert_warn_days: 10,
            ..Thresholds::default()
        };
        assert_eq!(grade(&f, &lenient)[0].grade, Grade::Pass);
    }

    #[test]
    fn an_absent_proxy_certificate_is_normal_and_garbage_is_a_warning() {
        let text = "@@now 1800000000\n@@cert /etc/pve/local/pve-ssl.pem Could not read certificate from /etc/pve/local/pve-ssl.pem\n@@absent /etc/pve/local/pveproxy-ssl.pem\n";
        let g = grade(&parse(text).unwrap(), &Thresholds::default());
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].grade, Grade::Warn);
        assert!(g[0].detail.contains("Could not read certificate"));
        let g = grade(
            &parse("@@missing pve\n@@now 1\n").unwrap(),
            &Thresholds::default(),
        );
        assert_eq!(g[0].grade, Grade::Skip);
    }
}
