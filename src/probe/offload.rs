//! `offload`: NIC offload features of the physical ports, e1000e hangs, and whether the desired
//! settings are persisted in a way ifupdown2 applies (DOMAIN.md §3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{missing, Finding, Grade, ParseError, Thresholds, DISABLE_OFFLOAD};

/// Probe name.
pub const NAME: &str = "offload";

/// The snippet: physical NICs only (they have a `device`), skipping taps, firewall bridges,
/// veths, bridges and bonds; bridge ports and bond members are named.
pub const SNIPPET: &str = r#"if ! command -v ethtool >/dev/null 2>&1; then echo "@@missing ethtool"; fi
for d in /sys/class/net/*; do
  n=${d##*/}
  case "$n" in lo|tap*|fwbr*|fwpr*|fwln*|veth*|vmbr*|bond*) continue ;; esac
  [ -e "$d/device" ] || continue
  echo "@@nic $n"
  for b in /sys/class/net/*/brif/"$n"; do [ -e "$b" ] && echo "@@bridge $(basename "$(dirname "$(dirname "$b")")")"; done
  for s in /sys/class/net/*/bonding/slaves; do [ -f "$s" ] && grep -qw "$n" "$s" && echo "@@bond $(basename "$(dirname "$(dirname "$s")")")"; done
  if command -v ethtool >/dev/null 2>&1; then
    ethtool -i "$n" 2>/dev/null | grep -E '^(driver|bus-info):' | sed 's/^/@@/'
    echo "@@sub k"
    ethtool -k "$n" 2>&1
  fi
done
echo "@@sub interfaces"
cat /etc/network/interfaces /etc/network/interfaces.d/* 2>/dev/null
echo "@@sub hang"
journalctl -k -b --no-pager -q -o short-iso 2>/dev/null | grep -E 'Detected Hardware Unit Hang|Reset adapter unexpectedly' | tail -n 100"#;

/// One offload feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    /// On or off.
    pub on: bool,
    /// `[fixed]`: cannot be changed.
    pub fixed: bool,
}

/// Parse `ethtool -k` output: feature name -> state (child features included).
pub fn parse_ethtool_k(text: &str) -> Result<BTreeMap<String, Feature>, ParseError> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("Features for ") || line.trim().is_empty() {
            continue;
        }
        let Some((name, rest)) = line.trim().split_once(": ") else {
            return Err(ParseError {
                probe: NAME,
                message: format!("ethtool -k: unexpected line {line:?}"),
            });
        };
        let on = match rest.split_whitespace().next() {
            Some("on") => true,
            Some("off") => false,
            _ => {
                return Err(ParseError {
                    probe: NAME,
                    message: format!("ethtool -k: feature {name} is neither on nor off: {rest:?}"),
                })
            }
        };
        out.insert(
            name.to_string(),
            Feature {
                on,
                fixed: rest.contains("[fixed]"),
            },
        );
    }
    Ok(out)
}

/// How an interface's offload settings are persisted in /etc/network/interfaces (and the
/// files of /etc/network/interfaces.d/ it sources, which the snippet appends).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    /// Features turned off by `pre-up`/`up`/`post-up ethtool -K IF ...` lines: naming the
    /// interface anywhere, or `$IFACE` inside its own stanza (ifupdown2 sets `IFACE` for the
    /// commands of a stanza).
    pub post_up_off: Vec<String>,
    /// Features turned off by ifupdown2's own keys in the interface's stanza (`tso-offload off`).
    pub ifupdown2_off: Vec<String>,
    /// ifupdown1 `offload-*` keys, which ifupdown2 ignores.
    pub ifupdown1_keys: Vec<String>,
}

fn short_to_long(s: &str) -> &str {
    match s {
        "tso" => "tcp-segmentation-offload",
        "gso" => "generic-segmentation-offload",
        "gro" => "generic-receive-offload",
        "lro" => "large-receive-offload",
        "sg" => "scatter-gather",
        "rx" => "rx-checksumming",
        "tx" => "tx-checksumming",
        other => other,
    }
}

/// What /etc/network/interfaces persists for `iface`.
pub fn parse_persisted(interfaces: &str, iface: &str) -> Persisted {
    let mut p = Persisted::default();
    let mut stanza = String::new();
    for raw in interfaces.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        match first {
            "iface" => stanza = words.next().unwrap_or("").to_string(),
            "auto" | "allow-hotplug" | "source" | "mapping" => stanza.clear(),
            "post-up" | "up" | "pre-up" => {
                let cmd: Vec<&str> = words.collect();
                let Some(k) = cmd
                    .iter()
                    .position(|w| *w == "-K" || *w == "--offload" || *w == "--features")
                else {
                    continue;
                };
                let target = cmd.get(k + 1).copied().unwrap_or("");
                let names_it = target == iface
                    || (stanza == iface && (target == "$IFACE" || target == "${IFACE}"));
                if !cmd.iter().take(k).any(|w| w.ends_with("ethtool")) || !names_it {
                    continue;
                }
                for pair in cmd[k + 2..].chunks(2) {
                    if let [feat, "off"] = pair {
                        p.post_up_off.push(short_to_long(feat).to_string());
                    }
                }
            }
            key if stanza == iface && key.ends_with("-offload") && words.next() == Some("off") => {
                p.ifupdown2_off
                    .push(short_to_long(key.trim_end_matches("-offload")).to_string());
            }
            key if stanza == iface && key.starts_with("offload-") => {
                p.ifupdown1_keys.push(line.to_string())
            }
            _ => {}
        }
    }
    p
}

/// One physical NIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// Driver (`ethtool -i`).
    pub driver: Option<String>,
    /// PCI address.
    pub bus_info: Option<String>,
    /// The bridge it is a port of.
    pub bridge: Option<String>,
    /// The bond it is a member of.
    pub bond: Option<String>,
    /// Offload features.
    pub features: BTreeMap<String, Feature>,
    /// Persisted settings.
    pub persisted: Persisted,
    /// Hang / reset lines in this boot's kernel log.
    pub hang_lines: usize,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffloadFacts {
    /// Physical NICs.
    pub nics: Vec<Nic>,
    /// ethtool missing.
    pub ethtool_missing: bool,
}

/// Parse the snippet's output.
pub fn parse(text: &str) -> Result<OffloadFacts, ParseError> {
    let interfaces = super::sub(text, "interfaces").unwrap_or("");
    let hangs = super::sub(text, "hang").unwrap_or("");
    let mut nics = Vec::new();
    let mut cur: Option<Nic> = None;
    let mut in_k = false;
    let mut k_text = String::new();
    let finish = |cur: &mut Option<Nic>,
                  k_text: &mut String,
                  nics: &mut Vec<Nic>|
     -> Result<(), ParseError> {
        if let Some(mut n) = cur.take() {
            n.features = parse_ethtool_k(k_text)?;
            n.persisted = parse_persisted(interfaces, &n.name);
            n.hang_lines = hangs
                .lines()
                .filter(|l| l.contains(&format!(" {}: ", n.name)))
                .count();
            nics.push(n);
        }
        k_text.clear();
        Ok(())
    };
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("@@nic ") {
            finish(&mut cur, &mut k_text, &mut nics)?;
            in_k = false;
            cur = Some(Nic {
                name: name.trim().to_string(),
                driver: None,
                bus_info: None,
                bridge: None,
                bond: None,
                features: BTreeMap::new(),
                persisted: Persisted::default(),
                hang_lines: 0,
            });
        } else if line.starts_with("@@sub interfaces") {
            finish(&mut cur, &mut k_text, &mut nics)?;
            break;
        } else if let Some(n) = cur.as_mut() {
            if line == "@@sub k" {
                in_k = true;
            } else if let Some(v) = line.strip_prefix("@@driver: ") {
                n.driver = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("@@bus-info: ") {
                n.bus_info = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("@@bridge ") {
                n.bridge = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("@@bond ") {
                n.bond = Some(v.trim().to_string());
            } else if in_k {
                k_text.push_str(line);
                k_text.push('\n');
            }
        }
    }
    finish(&mut cur, &mut k_text, &mut nics)?;
    Ok(OffloadFacts {
        nics,
        ethtool_missing: missing(text).contains(&"ethtool"),
    })
}

const SEG: [&str; 2] = ["tcp-segmentation-offload", "generic-segmentation-offload"];

/// Grade: `offload.hang` and `offload.persist` per NIC.
pub fn grade(f: &OffloadFacts, _t: &Thresholds) -> Vec<Finding> {
    if f.ethtool_missing {
        return vec![Finding::new(
            "offload.nics",
            Grade::Skip,
            "ethtool is not installed",
        )];
    }
    if f.nics.is_empty() {
        return vec![Finding::new(
            "offload.nics",
            Grade::Skip,
            "no physical NIC found",
        )];
    }
    let mut out = Vec::new();
    for n in &f.nics {
        let on: Vec<&str> = SEG
            .iter()
            .copied()
            .filter(|s| n.features.get(*s).is_some_and(|x| x.on))
            .collect();
        let drv = n.driver.as_deref().unwrap_or("?");
        out.push(match (n.hang_lines, on.is_empty()) {
            (0, _) => Finding::new(
                "offload.hang",
                Grade::Pass,
                format!("{} ({drv}): no hangs this boot", n.name),
            ),
            (h, false) => Finding::new(
                "offload.hang",
                Grade::Fail,
                format!(
                    "{} ({drv}): {h} hang/reset lines this boot with TSO/GSO on",
                    n.name
                ),
            )
            .fix(DISABLE_OFFLOAD),
            (h, true) => Finding::new(
                "offload.hang",
                Grade::Warn,
                format!(
                    "{} ({drv}): {h} hang/reset lines earlier this boot; TSO/GSO are off now",
                    n.name
                ),
            ),
        });
        let persisted_off = |feat: &str| {
            n.persisted.post_up_off.iter().any(|p| p == feat)
                || n.persisted.ifupdown2_off.iter().any(|p| p == feat)
        };
        let off_not_persisted: Vec<&str> = SEG
            .iter()
            .copied()
            .filter(|s| n.features.get(*s).is_some_and(|x| !x.on && !x.fixed) && !persisted_off(s))
            .collect();
        let configured_not_applied: Vec<&str> = SEG
            .iter()
            .copied()
            .filter(|s| n.features.get(*s).is_some_and(|x| x.on && !x.fixed) && persisted_off(s))
            .collect();
        out.push(if !n.persisted.ifupdown1_keys.is_empty() {
            Finding::new(
                "offload.persist",
                Grade::Warn,
                format!(
                    "{}: ifupdown1 keys ignored by ifupdown2 ({}); use post-up ethtool -K",
                    n.name,
                    n.persisted.ifupdown1_keys.join(", ")
                ),
            )
            .fix(DISABLE_OFFLOAD)
        } else if !configured_not_applied.is_empty() {
            Finding::new(
                "offload.persist",
                Grade::Warn,
                format!(
                    "{}: {} off in the config but on now: configured, not applied",
                    n.name,
                    configured_not_applied.join(", ")
                ),
            )
            .fix("ifreload -a")
        } else if !off_not_persisted.is_empty() {
            Finding::new(
                "offload.persist",
                Grade::Warn,
                format!(
                    "{}: {} off now but not persisted: back on after a reboot",
                    n.name,
                    off_not_persisted.join(", ")
                ),
            )
            .fix(DISABLE_OFFLOAD)
        } else {
            Finding::new(
                "offload.persist",
                Grade::Pass,
                format!("{}: running state matches the config", n.name),
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::probe::fixture;

    #[test]
    fn ethtool_k_from_real_captures() {
        let f = parse_ethtool_k(&fixture("ethtool-k/e1000e-eno1-tso-gso-off-grep.txt")).unwrap();
        assert_eq!(
            f["tcp-segmentation-offload"],
            Feature {
                on: false,
                fixed: false
            }
        );
        assert_eq!(
            f["generic-receive-offload"],
            Feature {
                on: true,
                fixed: false
            }
        );
        assert_eq!(
            f["large-receive-offload"],
            Feature {
                on: false,
                fixed: true
            }
        );
        assert_eq!(
            f["tx-tcp-ecn-segmentation"],
            Feature {
                on: false,
                fixed: true
            }
        );
        let f = parse_ethtool_k(&fixture("ethtool-k/eth1-on-firewalla-grep-v-fixed.txt")).unwrap();
        assert!(f["tcp-segmentation-offload"].on && f["scatter-gather"].on);
        let f = parse_ethtool_k(&fixture("ethtool-k/eth0-all-off-openwrt.txt")).unwrap();
        assert_eq!(f.len(), 38);
        assert!(parse_ethtool_k("Features for x:\nbroken line\n").is_err());
        assert!(parse_ethtool_k("").unwrap().is_empty());
    }

    const IFACES: &str = "auto lo\niface lo inet loopback\n\niface eno1 inet manual\n\toffload-tso off\n\ttso-offload off\n\nauto vmbr0\niface vmbr0 inet static\n\taddress 10.0.0.1/24\n\tbridge-ports eno1\n\tpost-up /usr/sbin/ethtool -K eno1 tso off gso off\n";

    #[test]
    fn persistence_the_way_ifupdown2_reads_it() {
        let p = parse_persisted(IFACES, "eno1");
        assert_eq!(
            p.post_up_off,
            vec!["tcp-segmentation-offload", "generic-segmentation-offload"]
        );
        assert_eq!(p.ifupdown2_off, vec!["tcp-segmentation-offload"]);
        assert_eq!(p.ifupdown1_keys, vec!["offload-tso off"]);
        assert_eq!(parse_persisted(IFACES, "eno2"), Persisted::default());
    }

    #[test]
    fn hangs_with_tso_on_fail_and_unpersisted_changes_warn() {
        let out = String::from(
            "@@nic eno1\n@@bridge vmbr0\n@@driver: e1000e\n@@bus-info: 0000:00:1f.6\n@@sub k\nFeatures for eno1:\ntcp-segmentation-offload: on\ngeneric-segmentation-offload: on\n\
             @@sub interfaces\niface eno1 inet manual\n@@sub hang\n2024-10-19T11:34:38+0200 pve1 kernel: e1000e 0000:00:1f.6 eno1: Detected Hardware Unit Hang:\n"
        );
        let f = parse(&out).unwrap();
        assert_eq!(f.nics[0].bridge.as_deref(), Some("vmbr0"));
        assert_eq!(f.nics[0].hang_lines, 1);
        let g = grade(&f, &Thresholds::default());
        assert_eq!(g[0].grade, Grade::Fail);
        assert_eq!(g[0].remediation.as_deref(), Some(DISABLE_OFFLOAD));
        assert_eq!(g[1].grade, Grade::Pass);
        let fixed_now = out.replace("offload: on", "offload: off");
        let g = grade(&parse(&fixed_now).unwrap(), &Thresholds::default());
        assert_eq!(g[0].grade, Grade::Warn);
        assert_eq!(g[1].grade, Grade::Warn, "off but not persisted");
        assert!(
            grade(
                &parse("@@missing ethtool\n@@sub interfaces\n").unwrap(),
                &Thresholds::default()
            )[0]
            .grade
                == Grade::Skip
        );
    }

    fn one_nic(name: &str, tso_gso: &str, interfaces: &str) -> OffloadFacts {
        parse(&format!(
            "@@nic {name}\n@@driver: e1000e\n@@sub k\nFeatures for {name}:\ntcp-segmentation-offload: {tso_gso}\ngeneric-segmentation-offload: {tso_gso}\n@@sub interfaces\n{interfaces}@@sub hang\n"
        ))
        .unwrap()
    }

    #[test]
    fn configured_off_but_running_on_is_not_applied() {
        let ifaces = fixture("network-interfaces/pve-ovs-bond-post-up-per-port.txt");
        for nic in ["eno1", "enp8s0"] {
            let p = parse_persisted(&ifaces, nic);
            assert_eq!(
                p.post_up_off,
                vec!["tcp-segmentation-offload", "generic-segmentation-offload"],
                "{nic}"
            );
        }
        let g = grade(&one_nic("eno1", "on", &ifaces), &Thresholds::default());
        let persist = g.iter().find(|f| f.check == "offload.persist").unwrap();
        assert_eq!(persist.grade, Grade::Warn);
        assert_eq!(
            persist.detail,
            "eno1: tcp-segmentation-offload, generic-segmentation-offload off in the config but on now: configured, not applied"
        );
        assert_eq!(persist.remediation.as_deref(), Some("ifreload -a"));
        let g = grade(&one_nic("eno1", "off", &ifaces), &Thresholds::default());
        let persist = g.iter().find(|f| f.check == "offload.persist").unwrap();
        assert_eq!(persist.grade, Grade::Pass, "{}", persist.detail);
        // ifupdown2's own keys count the same way.
        let keys = "iface eno1 inet manual\n\ttso-offload off\n\tgso-offload off\n";
        let g = grade(&one_nic("eno1", "on", keys), &Thresholds::default());
        assert_eq!(g[1].remediation.as_deref(), Some("ifreload -a"));
    }

    #[test]
    fn iface_variable_counts_only_in_its_own_stanza() {
        let ifaces = fixture("network-interfaces/openstack-iface-variable.txt");
        assert_eq!(
            parse_persisted(&ifaces, "eth2").post_up_off,
            vec!["generic-receive-offload"]
        );
        // br-ex's `post-up ethtool -K $IFACE` is about br-ex, not about eth2 or eth3.
        assert_eq!(parse_persisted(&ifaces, "eth3"), Persisted::default());
        assert_eq!(
            parse_persisted(&ifaces, "br-ex").post_up_off,
            vec!["generic-receive-offload"]
        );
        let pre_up =
            "iface eno1 inet manual\n    pre-up /sbin/ethtool -K ${IFACE} tso off gso off\n";
        assert_eq!(
            parse_persisted(pre_up, "eno1").post_up_off,
            vec!["tcp-segmentation-offload", "generic-segmentation-offload"]
        );
    }

    #[test]
    fn stanzas_from_interfaces_d_count() {
        // The snippet prints /etc/network/interfaces, then every file of interfaces.d.
        let main = "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n";
        let extra =
            "iface eno1 inet manual\n\tpost-up /usr/sbin/ethtool -K $IFACE tso off gso off\n";
        let f = one_nic("eno1", "off", &format!("{main}{extra}"));
        assert_eq!(f.nics[0].persisted.post_up_off.len(), 2);
        assert_eq!(grade(&f, &Thresholds::default())[1].grade, Grade::Pass);
        assert!(SNIPPET.contains("cat /etc/network/interfaces /etc/network/interfaces.d/*"));
    }
}
