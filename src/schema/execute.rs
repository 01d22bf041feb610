//! Running one GraphQL request: one transaction with the caller's scope
//! (`db::RequestDb`), the routing state of the request, and the federation
//! report added to the answer. Every transport (GraphQL over HTTP, peers'
//! QUERY and COMMAND, subscriptions) runs requests through the `Executor`.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::ServerError;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition, OperationType};
use sqlx::PgPool;
use uuid::Uuid;

use super::Checked;
use crate::auth::Principal;
use crate::auth::token_cache::TokenCache;
use crate::containers::AgentService;
use crate::db::cache::Forget;
use crate::db::{RequestDb, Scope};
use crate::error::{AppError, AppResult};
use crate::federation::protocol::Hop;
use crate::federation::{Federation, protocol};
use crate::graphql::federated::Subrequests;
use crate::graphql::pagination::CursorKey;
use crate::graphql::{Caller, InstanceInfo, RequestContext, ids, limits};
use crate::metrics::{CodeLabels, Metrics};

/// What executing a request needs, built once at start.
pub struct Executor {
    pub schemas: super::Schemas,
    pub pool: PgPool,
    pub statement_timeout: Duration,
    pub instance_id: Uuid,
    pub instance: Arc<InstanceInfo>,
    pub max_page_size: usize,
    pub federation: Arc<Federation>,
    pub cursor_key: Arc<CursorKey>,
    pub metrics: Arc<Metrics>,
    pub agents: Arc<AgentService>,
    pub knowledge: Arc<crate::knowledge::KnowledgeService>,
    /// Forgotten after every mutation, which may have revoked a token or
    /// changed a user: the notification would say so a moment later, this
    /// says so before the answer leaves.
    pub tokens: Arc<TokenCache>,
    pub documents: super::documents::Documents,
    /// Counts executions, so shutdown closes the pool only after the last.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
}

/// The operation a request runs (GraphQL's GetOperation), or why none can be chosen.
pub fn operation<'a>(document: &'a ExecutableDocument, name: Option<&str>) -> Result<&'a OperationDefinition, String> {
    match (&document.operations, name) {
        (DocumentOperations::Single(op), None) => Ok(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .get(name)
            .map(|op| &op.node)
            .ok_or_else(|| format!("Unknown operation named \"{name}\"")),
        (DocumentOperations::Single(_), Some(name)) => Err(format!("Unknown operation named \"{name}\"")),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            Ok(&ops.values().next().expect("one operation").node)
        }
        (DocumentOperations::Multiple(_), None) => Err("Operation name required in request.".into()),
    }
}

/// Whether the request runs a mutation. The document is parsed once: the
/// parse is kept in the request, and execution uses it.
fn is_mutation(request: &mut async_graphql::Request) -> bool {
    let name = request.operation_name.clone();
    request
        .parsed_query()
        .is_ok_and(|doc| operation(doc, name.as_deref()).is_ok_and(|op| op.ty == OperationType::Mutation))
}

impl Executor {
    /// The routing state of a request a user of this instance starts here.
    pub fn user_hop(&self, principal: &Principal) -> Hop {
        Hop::origin(
            self.federation.settings.hop_limit,
            self.federation.settings.deadline,
            Some(protocol::Actor {
                user: ids::GlobalId::new(ids::Kind::User, self.instance_id, principal.user_id)
                    .to_id()
                    .to_string(),
                email: principal.email_verified.then(|| principal.email.clone()),
            }),
        )
    }

    /// What the resolvers of one request see.
    pub fn context(&self, db: Arc<RequestDb>, caller: Caller, hop: Hop) -> RequestContext {
        // A peer's grant may cap its pages below the instance's page size.
        let max_page_size = match &caller {
            Caller::Peer(p) => p.max_rows.map_or(self.max_page_size, |m| m.min(self.max_page_size)),
            Caller::User(_) => self.max_page_size,
        };
        RequestContext {
            db,
            caller,
            instance_id: self.instance_id,
            instance: self.instance.clone(),
            max_page_size,
            federation: self.federation.clone(),
            hop,
            report: Arc::default(),
            subrequests: Arc::new(Subrequests::new(
                self.federation.settings.max_subrequests,
                self.federation.settings.max_parallel_subrequests,
            )),
            cursor_key: self.cursor_key.clone(),
            agents: self.agents.clone(),
            knowledge: self.knowledge.clone(),
            extensions: Arc::default(),
        }
    }

    /// Runs one GraphQL request for a caller: one transaction with the caller's
    /// scope, committed only if nothing failed, with the federation report added.
    ///
    /// The request runs to its end even when its client goes away (a client
    /// closing its connection cancels the handler): cancelled between sending
    /// BEGIN and its answer, it would hand its connection back to the pool
    /// inside a transaction. The deadline and statement timeout bound it.
    /// The caller gives the request its document (`documents.prepare`)
    /// before it reads it; one without is parsed here.
    pub async fn execute(
        self: &Arc<Self>,
        caller: Caller,
        scope: Scope,
        hop: Hop,
        mut request: async_graphql::Request,
    ) -> AppResult<async_graphql::Response> {
        let db = self.request_db(scope, !is_mutation(&mut request));
        let checked = self.schemas.check(request).await;
        self.execute_in(Arc::new(db), caller, hop, checked).await
    }

    /// The transaction a request runs in: a query's reads only, from one
    /// snapshot; a mutation's reads see committed data as it goes.
    pub fn request_db(&self, scope: Scope, read_only: bool) -> RequestDb {
        RequestDb::new(self.pool.clone(), scope, self.statement_timeout, read_only)
    }

    /// [`Self::execute`] in a transaction made (and maybe begun) by the
    /// caller, of a request it checked; one that failed the checks is
    /// answered with why.
    pub async fn execute_in(
        self: &Arc<Self>,
        db: Arc<RequestDb>,
        caller: Caller,
        hop: Hop,
        request: Result<Checked, Vec<ServerError>>,
    ) -> AppResult<async_graphql::Response> {
        let this = self.clone();
        let running = self.lifecycle.execution();
        let execution = async move {
            let _running = running;
            this.execute_to_the_end(db, caller, hop, request).await
        };
        // In the request's span: its peer calls are children in its trace.
        match tokio::spawn(tracing::Instrument::in_current_span(execution)).await {
            Ok(result) => result,
            Err(e) => Err(AppError::internal(anyhow::anyhow!(
                "a request's execution panicked: {e}"
            ))),
        }
    }

    async fn execute_to_the_end(
        &self,
        db: Arc<RequestDb>,
        caller: Caller,
        hop: Hop,
        request: Result<Checked, Vec<ServerError>>,
    ) -> AppResult<async_graphql::Response> {
        let mutation = !db.is_read_only();
        let context = self.context(db.clone(), caller, hop);
        let report = context.report.clone();
        let extensions = context.extensions.clone();
        let mut response = match request {
            Ok(request) => self.schemas.run(request, context).await,
            Err(errors) => async_graphql::Response::from_errors(errors),
        };
        let required = report
            .lock()
            .expect("report lock")
            .required_failure(&self.federation.settings.required_peers);
        if let Some(e) = required {
            response.data = async_graphql::Value::Null;
            response.errors.push(e);
        }
        // All or nothing: any error rolls back every write of the request, and a
        // rolled-back mutation returns no data (it would name rows that do not exist).
        let finished = if response.errors.is_empty() {
            db.commit().await
        } else {
            if mutation {
                response.data = async_graphql::Value::Null;
            }
            db.rollback().await
        };
        if let Err(e) = finished {
            return Err(AppError::internal(
                anyhow::Error::new(e).context("finishing the request transaction"),
            ));
        }
        if mutation {
            self.tokens.forget("");
        }
        // Errors raised by async-graphql itself at run time carry no code: an
        // undefined variable is a validation failure, the rest are input coercion.
        response.errors = std::mem::take(&mut response.errors)
            .into_iter()
            .map(|e| {
                let code = if e.message.starts_with("Variable ") && e.message.ends_with(" is not defined.") {
                    limits::VALIDATION_FAILED
                } else {
                    "BAD_USER_INPUT"
                };
                limits::with_code(e, code)
            })
            .collect();
        let report = report.lock().expect("report lock");
        response.errors.extend(report.errors());
        if let Some(federation) = report.extension() {
            response.extensions.insert(
                "federation".into(),
                async_graphql::Value::from_json(federation).expect("JSON converts"),
            );
        }
        for (key, value) in std::mem::take(&mut *extensions.lock().expect("extensions lock")) {
            response
                .extensions
                .insert(key, async_graphql::Value::from_json(value).expect("JSON converts"));
        }
        for error in &response.errors {
            let code = error
                .extensions
                .as_ref()
                .and_then(|e| e.get("code"))
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_default();
            self.metrics.graphql_errors.get_or_create(&CodeLabels { code }).inc();
        }
        Ok(response)
    }
}
