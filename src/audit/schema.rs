//! The JSON Schemas of the audit's JSON documents, derived from their types with schemars so
//! that they cannot drift from what the code prints: the report (`pvefleet audit --format json`)
//! and the comparison (`pvefleet audit --compare OLD.json --format json`).
//!
//! `docs/audit-report.schema.json` and `docs/audit-compare.schema.json` are these schemas,
//! generated; a test fails when they differ. Regenerate them with
//! `pvefleet audit --print-schema report > docs/audit-report.schema.json` and
//! `pvefleet audit --print-schema compare > docs/audit-compare.schema.json`.

use schemars::generate::SchemaSettings;

use super::compare::{Comparison, COMPARE_SCHEMA_VERSION};
use super::{AuditReport, AUDIT_SCHEMA_VERSION};

/// The audit's JSON documents that have a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// The report, [`AuditReport`].
    Report,
    /// The comparison, [`Comparison`].
    Compare,
}

impl Document {
    /// The shipped copy of the schema, relative to the crate root.
    pub fn path(self) -> &'static str {
        match self {
            Document::Report => "docs/audit-report.schema.json",
            Document::Compare => "docs/audit-compare.schema.json",
        }
    }

    /// The JSON Schema (draft 2020-12) of the document as serialised: every `Option` field is
    /// present (as `null` when empty), so it is listed as required.
    pub fn schema(self) -> serde_json::Value {
        let generator = SchemaSettings::draft2020_12()
            .for_serialize()
            .into_generator();
        let (schema, version, name, what) = match self {
            Document::Report => (
                generator.into_root_schema_for::<AuditReport>(),
                AUDIT_SCHEMA_VERSION,
                "audit-report",
                "pvefleet audit report",
            ),
            Document::Compare => (
                generator.into_root_schema_for::<Comparison>(),
                COMPARE_SCHEMA_VERSION,
                "audit-compare",
                "pvefleet audit comparison",
            ),
        };
        let command = match self {
            Document::Report => "pvefleet audit --format json",
            Document::Compare => "pvefleet audit --compare OLD.json --format json",
        };
        let mut value = schema.to_value();
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "$id".into(),
                format!("https://pvefleet.invalid/schema/{name}-v{version}.json").into(),
            );
            obj.insert("title".into(), format!("{what}, version {version}").into());
            obj.insert(
                "description".into(),
                format!(
                    "The document `{command}` prints. `version` changes only on incompatible \
                     changes. Generated from the types (`pvefleet audit --print-schema`); do \
                     not edit by hand."
                )
                .into(),
            );
        }
        value
    }

    /// The schema as the shipped file holds it: pretty JSON with a final newline.
    pub fn schema_text(self) -> String {
        let mut text = serde_json::to_string_pretty(&self.schema()).expect("a schema serialises");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_schema_files_are_the_generated_ones() {
        let shipped = [
            (
                Document::Report,
                include_str!("../../docs/audit-report.schema.json"),
            ),
            (
                Document::Compare,
                include_str!("../../docs/audit-compare.schema.json"),
            ),
        ];
        for (doc, text) in shipped {
            let path = doc.path();
            let kind = match doc {
                Document::Report => "report",
                Document::Compare => "compare",
            };
            let file: serde_json::Value =
                serde_json::from_str(text).expect("the shipped schema is JSON");
            assert!(
                file == doc.schema(),
                "{path} differs from the schema derived from the types; regenerate it:\n  \
                 cargo run -- audit --print-schema {kind} > {path}"
            );
        }
    }

    #[test]
    fn optional_fields_are_required_and_nullable() {
        let s = Document::Report.schema();
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
