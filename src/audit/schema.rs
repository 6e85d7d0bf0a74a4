//! The JSON Schema of the audit report (`pvefleet audit --format json`), derived from the report
//! types with schemars so that it cannot drift from what the code prints.
//!
//! `docs/audit-report.schema.json` is this schema, generated; a test fails when they differ.
//! Regenerate it with `pvefleet audit --print-schema > docs/audit-report.schema.json`.

use schemars::generate::SchemaSettings;

use super::{AuditReport, AUDIT_SCHEMA_VERSION};

/// The shipped copy of the schema, relative to the crate root.
pub const SCHEMA_PATH: &str = "docs/audit-report.schema.json";

/// The JSON Schema (draft 2020-12) of [`AuditReport`] as serialised: every `Option` field is
/// present (as `null` when empty), so it is listed as required.
pub fn audit_report_schema() -> serde_json::Value {
    let generator = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let schema = generator.into_root_schema_for::<AuditReport>();
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "$id".into(),
            format!("https://pvefleet.invalid/schema/audit-report-v{AUDIT_SCHEMA_VERSION}.json")
                .into(),
        );
        obj.insert(
            "title".into(),
            format!("pvefleet audit report, version {AUDIT_SCHEMA_VERSION}").into(),
        );
        obj.insert(
            "description".into(),
            "The document `pvefleet audit --format json` prints. `version` changes only on \
             incompatible changes. Generated from the report types \
             (`pvefleet audit --print-schema`); do not edit by hand."
                .into(),
        );
    }
    value
}

/// The schema as the shipped file holds it: pretty JSON with a final newline.
pub fn audit_report_schema_text() -> String {
    let mut text =
        serde_json::to_string_pretty(&audit_report_schema()).expect("a schema serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_schema_file_is_the_generated_one() {
        let shipped = include_str!("../../docs/audit-report.schema.json");
        let shipped: serde_json::Value =
            serde_json::from_str(shipped).expect("the shipped schema is JSON");
        assert!(
            shipped == audit_report_schema(),
            "{SCHEMA_PATH} differs from the schema derived from the report types; regenerate it:\n  \
             cargo run -- audit --print-schema > {SCHEMA_PATH}"
        );
    }

    #[test]
    fn optional_fields_are_required_and_nullable() {
        let s = audit_report_schema();
        let finding = &s["$defs"]["Finding"];
        let required: Vec<&str> = finding["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(required.contains(&"remediation"), "{finding}");
        assert_eq!(finding["additionalProperties"], false);
        assert_eq!(s["properties"]["version"]["const"], AUDIT_SCHEMA_VERSION);
    }
}
