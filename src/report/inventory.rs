//! Rendering of resolved inventories (`pvefleet inventory show`).

use comfy_table::{presets, ContentArrangement, Table};

use crate::inventory::Node;

/// A table of nodes: name, address, port, user, groups, become, vars.
pub fn render_nodes(source: &str, nodes: &[Node], color: bool) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec![
            "node", "address", "port", "user", "groups", "become", "vars",
        ]);
    if !color {
        table.force_no_tty();
    }
    for n in nodes {
        let vars: Vec<String> = n.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        table.add_row(vec![
            n.name.clone(),
            n.address.clone(),
            n.port.map_or("(22)".into(), |p| p.to_string()),
            n.user.clone().unwrap_or_else(|| "(root)".into()),
            n.groups.join(","),
            if n.become_root { "sudo" } else { "" }.to_string(),
            vars.join(" "),
        ]);
    }
    format!("inventory: {source} ({} nodes)\n{table}", nodes.len())
}
