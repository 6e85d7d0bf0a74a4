//! `probe` (facts become `facts.<probe>`) and `assert`; and gathering facts before the steps.
//!
//! Gathering `clock` also measures the node's clock from the controller, the way the audit does
//! ([`crate::audit::measure_clock`]: several samples over the open session, lowest round trip
//! kept), into `facts.clock.controller` = `{offset_s, error_s}` (node minus controller, seconds;
//! `none` when the node's clock could not be sampled): a node can be off while its own NTP daemon
//! says it is synchronised.

use super::super::context::{result, NodeState};
use super::super::error::StepError;
use super::super::model::{AssertStep, ProbeStep, Step};
use crate::maintenance::remote::NodeShell;
use crate::outcome::{StepResult, StepStatus};

/// Gather probe facts over the session (one exec for all of them).
pub(crate) async fn gather(
    r: &dyn NodeShell,
    names: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, StepError> {
    let script = crate::probe::combined_script(names);
    let out = r.sh(&script).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let sections = crate::probe::split_sections(&text);
    let mut facts = serde_json::Map::new();
    let t = crate::probe::Thresholds::default();
    for n in names {
        let def = crate::probe::by_name(n)
            .ok_or_else(|| StepError::Remote(format!("unknown probe {n}")))?;
        let sec = sections
            .get(n)
            .ok_or_else(|| StepError::Remote(format!("probe {n}: no output")))?;
        let rep = (def.evaluate)(&sec.text, &t).map_err(|e| StepError::Remote(e.to_string()))?;
        let mut f = rep.facts;
        if n == crate::probe::clock::NAME {
            let session = r.session().ok_or_else(|| {
                StepError::Remote("the clock probe needs an SSH session to time".into())
            })?;
            let m = crate::audit::measure_clock(session, r.timeout()).await?;
            if let serde_json::Value::Object(o) = &mut f {
                o.insert(
                    "controller".into(),
                    serde_json::to_value(m).unwrap_or(serde_json::Value::Null),
                );
            }
        }
        facts.insert(n.clone(), f);
    }
    Ok(facts)
}

pub(super) async fn probe(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    probe: &ProbeStep,
) -> Result<StepResult, StepError> {
    let names: Vec<String> = probe.probes.iter().map(|p| p.get_ref().clone()).collect();
    let facts = gather(r, &names).await?;
    st.facts.extend(facts);
    Ok(result(
        step,
        StepStatus::Ok,
        format!("facts: {}", names.join(", ")),
    ))
}

pub(super) fn assert(
    st: &NodeState<'_>,
    step: &Step,
    assert: &AssertStep,
) -> Result<StepResult, StepError> {
    let that = &assert.that;
    if st.truth(that, None)? {
        Ok(result(
            step,
            StepStatus::Ok,
            format!("{} holds", that.get_ref()),
        ))
    } else {
        let msg = match st.render(&assert.message, false)? {
            Some(m) => m,
            None => format!("assertion failed: {}", that.get_ref()),
        };
        Ok(result(step, StepStatus::Failed, msg))
    }
}
