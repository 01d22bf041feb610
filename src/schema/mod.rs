//! The schema's root: the query, mutation and subscription roots merged from
//! every area, the `Node` interface, and the executor that runs a request.

pub mod documents;
pub mod execute;
pub mod subscriptions;

use async_graphql::{Context, ID, Interface, MergedObject, MergedSubscription, Object, Schema, ValidationMode};
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::json;

use crate::agent_tasks;
use crate::agents;
use crate::config::Limits;
use crate::error::{AppError, AppResult};
use crate::events;
use crate::graphql::ids::{GlobalId, Kind};
use crate::graphql::wire::owned;
use crate::graphql::{QueryLimits, RequestContext, federated, limits};
use crate::knowledge;
use crate::peers;
use crate::projects;
use crate::tasks;
use crate::teams;
use crate::users::{self, admin as user_admin, api_tokens, auth_audit, sessions as my_sessions};
use crate::workspaces::{self, activity, invitations};

/// Any object that can be fetched by its global ID.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID"))]
pub enum Node {
    User(users::User),
    Workspace(workspaces::Workspace),
    Project(projects::Project),
    Task(Box<tasks::Task>),
    Event(Box<events::Event>),
    Team(Box<teams::Team>),
    KnowledgeEntry(Box<knowledge::KnowledgeEntry>),
    AgentTask(Box<agent_tasks::AgentTask>),
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Fetches any object by its global ID; null when it does not exist or is not visible to you.
    #[graphql(complexity = "limits::FORWARD_COST + child_complexity")]
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Node>> {
        let rc = RequestContext::of(ctx);
        let g = GlobalId::parse(&id)?;
        if g.instance != rc.instance_id {
            return remote_node(rc, &g, &id).await.map_err(Into::into);
        }
        let local = rc.local_id(&id, g.kind)?;
        let node = match g.kind {
            Kind::User => users::load(rc, local).await?.map(Node::User),
            Kind::Workspace => workspaces::load(rc, local).await?.map(Node::Workspace),
            Kind::Project => projects::load(rc, local).await?.map(Node::Project),
            Kind::Task => tasks::load(rc, local).await?.map(|t| Node::Task(Box::new(t))),
            Kind::Event => events::load(rc, local).await?.map(|e| Node::Event(Box::new(e))),
            Kind::Team => teams::load(rc, local).await?.map(|t| Node::Team(Box::new(t))),
            Kind::KnowledgeEntry => knowledge::load(rc, local)
                .await?
                .map(|e| Node::KnowledgeEntry(Box::new(e))),
            Kind::AgentTask => agent_tasks::load(rc, local)
                .await?
                .map(|t| Node::AgentTask(Box::new(t))),
        };
        Ok(node)
    }
}

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    users::UserQuery,
    user_admin::UserAdminQuery,
    auth_audit::AuthAuditQuery,
    my_sessions::MySessionsQuery,
    api_tokens::ApiTokenQuery,
    workspaces::WorkspaceQuery,
    invitations::InvitationQuery,
    projects::ProjectQuery,
    tasks::TaskQuery,
    activity::ActivityQuery,
    peers::PeerQuery,
    peers::audit::AuditQuery,
    agents::AgentQuery,
    knowledge::KnowledgeQuery,
    knowledge::tags::KnowledgeTagQuery,
    knowledge::search::KnowledgeSearchQuery,
    knowledge::graph::KnowledgeGraphQuery,
    agent_tasks::AgentTaskQuery,
    agent_tasks::budgets::BudgetQuery,
    NodeQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    workspaces::WorkspaceMutation,
    invitations::InvitationMutation,
    projects::ProjectMutation,
    tasks::TaskMutation,
    events::EventMutation,
    teams::TeamMutation,
    peers::PeerMutation,
    user_admin::UserAdminMutation,
    my_sessions::MySessionsMutation,
    api_tokens::ApiTokenMutation,
    agents::AgentMutation,
    knowledge::mutations::KnowledgeMutation,
    knowledge::tags::KnowledgeTagMutation,
    agent_tasks::AgentTaskMutation,
    agent_tasks::budgets::BudgetMutation,
);

#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(
    subscriptions::TaskSubscription,
    agent_tasks::events::AgentTaskSubscription,
    crate::federated_events::FederatedEventSubscription,
);

pub type MosaicSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The schema, without extensions: the one requests run on.
pub fn build_schema() -> MosaicSchema {
    builder().finish()
}

fn builder() -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
}

/// The schema twice: `checker` parses, measures and validates a request
/// against the limits and stops there; `runner` runs what passed, without
/// validating it again (`ValidationMode::Fast` keeps only the cycle check
/// and the counts: the rules run once per request). With any
/// extension installed, async-graphql passes every field and list item
/// through the extensions' resolve hook: a page of 50 tasks made about 400
/// such calls, some 15% of a local request's time, for a check that needs
/// only the parse and the validation. Requests reach the runner only as a
/// [`Checked`] request (`run`) or through `execute_stream`, which checks first.
pub struct Schemas {
    checker: MosaicSchema,
    runner: MosaicSchema,
}

impl Schemas {
    pub fn build(limits: &Limits) -> Self {
        Self {
            checker: builder().extension(QueryLimits(limits.clone())).finish(),
            runner: builder().validation_mode(ValidationMode::Fast).finish(),
        }
    }

    /// The schema's types (its SDL and fingerprint).
    pub fn schema(&self) -> &MosaicSchema {
        &self.runner
    }

    /// `request`, if it passes the checks; else why it may not run.
    pub async fn check(&self, mut request: async_graphql::Request) -> Result<Checked, Vec<async_graphql::ServerError>> {
        check(&self.checker, &mut request).await.map(|()| Checked(request))
    }

    /// Runs a checked request with the request's data (its `RequestContext`).
    pub async fn run(&self, request: Checked, data: impl std::any::Any + Send + Sync) -> async_graphql::Response {
        self.runner.execute(request.0.data(data)).await
    }

    /// As `execute`, for a subscription.
    pub fn execute_stream(&self, mut request: async_graphql::Request) -> BoxStream<'static, async_graphql::Response> {
        let (checker, runner) = (self.checker.clone(), self.runner.clone());
        stream::once(async move {
            match check(&checker, &mut request).await {
                Ok(()) => runner.execute_stream(request),
                Err(errors) => stream::once(async move { async_graphql::Response::from_errors(errors) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

/// A request that passed `Schemas::check`: the only kind `run` takes.
pub struct Checked(async_graphql::Request);

/// Why `request` may not run (a parse error, a limit, a validation rule),
/// each error with its code. Checks a copy: the request keeps its data and
/// its parse for the runner.
async fn check(
    checker: &MosaicSchema,
    request: &mut async_graphql::Request,
) -> Result<(), Vec<async_graphql::ServerError>> {
    let mut copy = async_graphql::Request::new(request.query.clone()).variables(request.variables.clone());
    copy.operation_name = request.operation_name.clone();
    if let Ok(doc) = request.parsed_query() {
        copy.set_parsed_query(doc.clone());
    }
    let checked = checker.execute(copy).await;
    if checked.errors.is_empty() {
        Ok(())
    } else {
        Err(checked.errors)
    }
}

/// The SDL as committed in `schema/mosaic.graphql`.
pub fn sdl() -> String {
    build_schema().sdl()
}

/// The schema's fingerprint peers compare: 16 bytes of its SDL's SHA-256, in hex.
pub fn schema_hash(schema: &MosaicSchema) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(schema.sdl().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// `node(id:)` for an object of another instance.
pub async fn remote_node(rc: &RequestContext, g: &GlobalId, id: &ID) -> AppResult<Option<Node>> {
    // Only the ID's own type is asked for: a peer of an older version fails
    // validation on a fragment of a type it does not know yet (e.g. Event).
    let task_fragment;
    let (selection, fragment) = match g.kind {
        Kind::Task => {
            task_fragment = tasks::wire::Selection::ALL.fragment();
            ("...TaskFields", task_fragment.as_str())
        }
        Kind::Workspace => ("...WorkspaceFields", workspaces::wire::FRAGMENT),
        Kind::Project => ("...ProjectFields", projects::wire::FRAGMENT),
        Kind::Event => ("...EventFields", events::wire::FRAGMENT),
        Kind::Team => ("...TeamFields", teams::wire::FRAGMENT),
        Kind::KnowledgeEntry => ("...KnowledgeEntryFields", knowledge::wire::FRAGMENT),
        Kind::AgentTask => ("...AgentTaskFields", agent_tasks::wire::FRAGMENT),
        Kind::User => ("... on User { id email name isAdmin instance { id name } }", ""),
    };
    let query = format!("query($id: ID!) {{ node(id: $id) {{ __typename {selection} }} }} {fragment}");
    let data = federated::forward(rc, g.instance, false, &query, json!({ "id": id.as_str() })).await?;
    let node = &data["node"];
    if node.is_null() {
        return Ok(None);
    }
    if node["id"].as_str() != Some(id.as_str()) {
        return Err(AppError::Peer {
            code: "PEER_BAD_RESPONSE",
            message: "the owner answered with another object than the one asked for".into(),
            instance: g.instance.to_string(),
            peer_code: None,
            retry_after_ms: None,
        });
    }
    Ok(Some(match g.kind {
        Kind::Task => Node::Task(Box::new(tasks::wire::Selection::ALL.parse(node)?)),
        Kind::Workspace => Node::Workspace(owned::<workspaces::wire::WorkspaceWire>(node)?),
        Kind::Project => Node::Project(owned::<projects::wire::ProjectWire>(node)?),
        Kind::Event => Node::Event(Box::new(owned::<events::wire::EventWire>(node)?)),
        Kind::Team => Node::Team(Box::new(owned::<teams::wire::TeamWire>(node)?)),
        Kind::KnowledgeEntry => Node::KnowledgeEntry(Box::new(owned::<knowledge::wire::KnowledgeEntryWire>(node)?)),
        Kind::AgentTask => Node::AgentTask(Box::new(owned::<agent_tasks::wire::AgentTaskWire>(node)?)),
        Kind::User => Node::User(owned::<users::wire::UserWire>(node)?),
    }))
}
