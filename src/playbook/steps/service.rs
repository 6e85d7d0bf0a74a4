//! `service`: a systemd unit started, stopped, restarted, enabled or disabled. Each state is
//! checked first, so a unit already as wanted is `ok` (restarted always acts).

use super::super::context::{result, NodeState};
use super::super::error::StepError;
use super::super::model::{ServiceState, ServiceStep, Step};
use crate::maintenance::remote::{first_line, NodeShell};
use crate::outcome::{StepResult, StepStatus};
use crate::quote::shell_quote;
use crate::ssh::ExitStatus;

pub(super) async fn service(
    r: &mut dyn NodeShell,
    st: &mut NodeState<'_>,
    step: &Step,
    service: &ServiceStep,
) -> Result<StepResult, StepError> {
    let unit = st.render_one(&service.service, false)?;
    let want = service.state.as_str();
    let q = shell_quote(&unit);
    // One unit per query: with several units systemctl answers "any of" (DOMAIN.md §7).
    let (query, good) = match service.state {
        ServiceState::Enabled | ServiceState::Disabled => {
            (format!("systemctl is-enabled {q}"), want)
        }
        _ => (format!("systemctl is-active {q}"), "active"),
    };
    let (_, state) = r.text(&query).await?;
    let matches = state.trim() == good;
    let verb = match (service.state, matches) {
        (ServiceState::Started | ServiceState::Enabled | ServiceState::Disabled, true)
        | (ServiceState::Stopped, false) => None,
        (ServiceState::Started, false) => Some("start"),
        (ServiceState::Stopped, true) => Some("stop"),
        (ServiceState::Restarted, _) => Some("restart"),
        (ServiceState::Enabled, false) => Some("enable"),
        (ServiceState::Disabled, false) => Some("disable"),
    };
    let cmd = verb.map(|v| format!("systemctl {v} {q}"));
    let Some(cmd) = cmd else {
        return Ok(result(
            step,
            StepStatus::Ok,
            format!("{unit} already {want}"),
        ));
    };
    let mut res = result(step, StepStatus::Changed, format!("{unit} {want}"));
    res.commands.push(cmd.clone());
    if !st.s.check {
        let o = r.sh(&cmd).await?;
        if o.exit != ExitStatus::Code(0) {
            res.status = StepStatus::Failed;
            res.detail = format!("{cmd}: {}", first_line(&o.stderr));
        }
    }
    Ok(res)
}
