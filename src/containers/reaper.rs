//! The background loop: reconcile with the engine until that has succeeded
//! once, then on every tick persist activity and, for the running agents whose
//! lease this replica holds (renewed here) or takes over, stop idle ones (never
//! one with a proxied request in flight) and restart those whose configuration
//! changed. It ends when the service is dropped or its pool closed, and an
//! unreachable engine only costs a warning.

use std::sync::{Arc, Weak};
use std::time::Duration;

use time::OffsetDateTime;

use super::{AgentService, store};

/// Whether this process has said that agents are off for want of an engine.
static AGENTS_OFF_SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub async fn run(service: Weak<AgentService>) {
    let mut warned = false;
    loop {
        let Some(svc) = service.upgrade() else { return };
        if svc.pool.is_closed() {
            return;
        }
        if !svc.is_reconciled() {
            match super::reconcile::run(&svc).await {
                Ok(report) => {
                    tracing::info!(
                        adopted = report.adopted,
                        removed = report.removed,
                        "agent containers reconciled"
                    );
                    warned = false;
                }
                Err(e) if !warned => {
                    warned = true;
                    if e.code() != "AGENT_UNAVAILABLE" {
                        tracing::warn!(code = e.code(), error = %e.message(), "cannot reconcile agent containers yet");
                    } else if !AGENTS_OFF_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        // Once per process (the demo runs three instances), in plain words.
                        tracing::warn!(
                            docker_host = %svc.settings.docker_host,
                            "no Docker engine answers: agents are off, everything else works; they start once an engine runs"
                        );
                    }
                }
                Err(_) => {}
            }
        }
        if svc.is_reconciled() {
            tick(&svc).await;
        }
        let interval = svc.settings.reaper_interval;
        drop(svc);
        tokio::time::sleep(interval).await;
    }
}

/// One pass: activity to the database, idle agents stopped, stale ones restarted.
pub async fn tick(svc: &Arc<AgentService>) {
    svc.persist_activity().await;
    let rows = match store::overview(&svc.pool).await {
        Ok(rows) => rows,
        Err(e) => {
            if !svc.pool.is_closed() {
                tracing::warn!(error = %e, "listing agents failed");
            }
            return;
        }
    };
    let now = OffsetDateTime::now_utc();
    for row in rows.into_iter().filter(|r| r.status == "RUNNING") {
        // Only the replica holding an agent's lease manages it; this one
        // renews its own and takes over those whose holder stopped renewing.
        if row.lease_live && row.managed_by != Some(svc.replica_id) {
            continue;
        }
        match svc.lease(row.user_id).await {
            Ok(store::Lease::Refused) => continue,
            Ok(store::Lease::Taken) => tracing::info!(user = %row.user_id, "managing an agent whose lease lapsed"),
            Ok(store::Lease::Renewed) => {}
            Err(e) => {
                tracing::warn!(user = %row.user_id, code = e.code(), error = %e.message(), "renewing an agent lease failed");
                continue;
            }
        }
        let idle = Duration::from_secs(row.idle_timeout_s.max(1) as u64);
        let last = svc.last_active(row.user_id).max(row.last_active_at);
        let idle_for = last.map(|t| now - t);
        // A first look only: `stop_if_idle` decides again under the user's lock.
        let busy = svc.in_flight(row.user_id) > 0;
        let result = if !busy && idle_for.is_none_or(|d| d >= idle) {
            svc.stop_if_idle(row.user_id, row.last_active_at, idle)
                .await
                .map(|stopped| {
                    if stopped {
                        tracing::info!(user = %row.user_id, "idle agent stopped");
                    }
                })
        } else if row.running_version != Some(row.desired_version) {
            tracing::info!(user = %row.user_id, from = ?row.running_version, to = row.desired_version,
                "agent configuration changed: restarting");
            svc.restart_stale(row.user_id).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(user = %row.user_id, code = e.code(), error = %e.message(), "agent reaper step failed");
        }
    }
}
