//! A replica's way out. On SIGTERM it first says it is stopping (`/readyz`
//! answers 503, so a load balancer sends it nothing new), then the accept
//! loop closes the port and drains the connections, and last the GraphQL
//! executions still running are awaited: they run detached from their
//! connection (`schema/execute.rs`), so a client that hung up leaves one
//! running after its connection is gone. Only then may the pool close;
//! closing it earlier fails them with "pool closed".

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

pub struct Lifecycle {
    stopping: AtomicBool,
    executions: watch::Sender<usize>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            stopping: AtomicBool::new(false),
            executions: watch::Sender::new(0),
        }
    }
}

/// One execution running; counted until dropped.
pub struct Execution(watch::Sender<usize>);

impl Drop for Execution {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Lifecycle {
    /// Readiness turns off for good.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn execution(&self) -> Execution {
        self.executions.send_modify(|n| *n += 1);
        Execution(self.executions.clone())
    }

    /// GraphQL executions running now.
    pub fn executions(&self) -> usize {
        *self.executions.borrow()
    }

    /// Waits until `at_least` executions are running (tests start requests and wait for them).
    pub async fn running(&self, at_least: usize) {
        let mut seen = self.executions.subscribe();
        let _ = seen.wait_for(|n| *n >= at_least).await;
    }

    /// Waits up to `bound` for every execution to end; whether they all did.
    pub async fn executions_done(&self, bound: Duration) -> bool {
        let mut seen = self.executions.subscribe();
        tokio::time::timeout(bound, seen.wait_for(|n| *n == 0)).await.is_ok()
    }
}
