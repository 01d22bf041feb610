//! Reconciliation at start: the engine's containers labelled with this
//! instance are compared with the database. Unknown ones (no agent row, or a
//! name the row does not have) are removed; known ones are adopted with their
//! real state; rows that claim a container the engine does not have are
//! marked stopped.

use std::collections::HashMap;

use super::{AgentError, AgentService, store};

#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub adopted: usize,
    pub removed: usize,
}

pub async fn run(svc: &AgentService) -> Result<Report, AgentError> {
    let observed = svc.lifecycle.list().await?;
    let rows = store::overview(&svc.pool).await?;
    let known: HashMap<_, _> = rows.iter().map(|r| (r.user_id, r)).collect();
    let mut report = Report::default();
    let mut seen = std::collections::HashSet::new();
    for o in &observed {
        let row = o.user_id.and_then(|u| known.get(&u));
        match row {
            Some(row) if row.container_name == o.name && seen.insert(row.user_id) => {
                store::record_adopted(&svc.pool, row.user_id, Some(o)).await?;
                report.adopted += 1;
            }
            _ => {
                tracing::info!(container = %o.name, "removing an agent container this instance does not know");
                svc.lifecycle.remove(&o.id).await?;
                report.removed += 1;
            }
        }
    }
    for row in rows.iter().filter(|r| !seen.contains(&r.user_id)) {
        if row.status != "STOPPED" || row.container_id.is_some() {
            store::record_adopted(&svc.pool, row.user_id, None).await?;
        }
    }
    svc.set_reconciled();
    Ok(report)
}
