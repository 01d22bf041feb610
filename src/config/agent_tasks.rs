//! Agent tasks: the queue's cap, the heartbeat agents must keep, and the
//! sizes an agent controls through the worker API.

use std::time::Duration;

use super::setting::settings;

settings! {
    /// The agent task queue and its worker API.
    pub struct AgentTaskSettings {
        /// Tasks held (assigned or running) on this instance at once; a
        /// claim beyond it waits, and is answered 429 AGENT_LIMIT_REACHED
        /// when its wait ends with no slot free.
        max_running: usize = 20; "agent_tasks.max_running", "MOSAIC_AGENT_TASKS_MAX_RUNNING", range(1, 100_000);
        /// A held task whose agent sent no heartbeat for this long goes back
        /// to the queue, to resume from its last checkpoint.
        heartbeat_timeout: Duration = Duration::from_secs(30);
            "agent_tasks.heartbeat_timeout_ms", "MOSAIC_AGENT_TASKS_HEARTBEAT_TIMEOUT_MS", millis();
        /// How often the reaper looks for missed heartbeats.
        reaper_interval: Duration = Duration::from_secs(5);
            "agent_tasks.reaper_interval_ms", "MOSAIC_AGENT_TASKS_REAPER_INTERVAL_MS", millis();
        /// The largest checkpoint or result, in bytes of JSON.
        max_checkpoint_bytes: usize = 64 * 1024;
            "agent_tasks.max_checkpoint_bytes", "MOSAIC_AGENT_TASKS_MAX_CHECKPOINT_BYTES", range(16, 16 * 1024 * 1024);
        /// The longest a claim may wait for work (its `waitMs` is capped here);
        /// below `limits.request_timeout_ms`, which would cut it off.
        max_claim_wait: Duration = Duration::from_secs(25);
            "agent_tasks.max_claim_wait_ms", "MOSAIC_AGENT_TASKS_MAX_CLAIM_WAIT_MS", millis();
        /// The first retry's delay; each further one doubles, up to `retry_max`.
        retry_base: Duration = Duration::from_secs(1);
            "agent_tasks.retry_base_ms", "MOSAIC_AGENT_TASKS_RETRY_BASE_MS", millis();
        retry_max: Duration = Duration::from_secs(300);
            "agent_tasks.retry_max_ms", "MOSAIC_AGENT_TASKS_RETRY_MAX_MS", millis();
    }
}
