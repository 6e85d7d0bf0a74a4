//! What is passed through (bound to vfio-pci) on which node, from the audit's gpu facts: one
//! table the terminal, Markdown and HTML reports all show.

use serde::Serialize;

use crate::audit::AuditReport;

/// One device bound to vfio-pci on a node (GPUs, HBAs, NICs passed through), from the node's
/// `gpu` facts: what an operator asks as "what is passed through on which node".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassedThrough {
    pub node: String,
    pub slot: String,
    pub class: String,
    pub name: String,
    pub id: String,
}

pub fn passed_through(r: &AuditReport) -> Vec<PassedThrough> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    r.nodes
        .iter()
        .flat_map(|row| {
            let devices = row
                .facts
                .get("gpu")
                .and_then(|g| g.get("passthrough"))
                .and_then(|p| p.as_array())
                .cloned()
                .unwrap_or_default();
            devices.into_iter().map(move |d| PassedThrough {
                node: row.node.clone(),
                slot: text(&d["slot"]),
                class: text(&d["class"]),
                name: text(&d["name"]),
                id: text(&d["id"]),
            })
        })
        .collect()
}
