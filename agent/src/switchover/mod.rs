//! Planned switchovers: an operator moves a service's authority to another node without losing
//! an acknowledged write. One module per service: [`redis`] and [`galera`] (the writer). Each is an adapter run by the
//! agent that received the request; the API only parses the request and answers. Beside them,
//! [`failover`] is the operator's forced Redis failover, for a master that is already broken.

pub mod failover;
pub mod galera;
pub mod redis;

use std::sync::Arc;

use crate::cluster::EventKind;
use crate::ids::NodeId;
use crate::status::Handles;

/// Runs the operator's pre hook for a switchover of `service` asked through this agent, and
/// commits its audit line; `Err` is the veto, worded for the operator.
pub(crate) async fn pre_hook(
    h: &Arc<Handles>,
    service: &str,
    why: String,
    epoch: u64,
    to: NodeId,
    from: NodeId,
) -> Result<(), String> {
    let Some(hooks) = &h.hooks else {
        return Ok(());
    };
    let event = hooks.planned(EventKind::Switchover, service, &why, epoch, vec![to, from]);
    crate::hooks::pre_check(Some(hooks), event, |c| async move {
        h.propose(c).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await
}
