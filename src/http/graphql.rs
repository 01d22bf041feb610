//! `/graphql` over HTTP as the GraphQL over HTTP specification says
//! (<https://graphql.github.io/graphql-over-http/draft/>), checked by the
//! conformance audits of the npm package graphql-http (tests/graphql_over_http.rs).
//!
//! - `POST` takes `Content-Type: application/json` (UTF-8) only: anything
//!   else, form posts and `text/plain` among them, is 415, so a cross-site
//!   form cannot send a GraphQL request; a session cookie also needs the
//!   CSRF header (`http::auth::cookie_principal`).
//! - `GET` runs queries from the URL's query string, never mutations (405),
//!   and serves the IDE page to a browser.
//! - `application/graphql-response+json` answers say what happened in their
//!   status: 400 for a request that fails before execution (document parse
//!   or validation, operation selection, variable coercion; no `data` then),
//!   200 for data without errors, 294 for data with errors. `application/json`
//!   answers, for older clients, are 200 whenever a GraphQL response is given.
//! - Failures outside GraphQL (authentication, sizes, media types) keep
//!   Mosaic's `error_response` shape in `application/json`.

use async_graphql::parser::types::{OperationDefinition, OperationType};
use async_graphql::{ServerError, Variables};
use axum::Extension;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Map, Value};

use super::{AppState, authenticate, error_response, execution_failed};
use super::{accept, subscriptions};
use crate::db::Scope;
use crate::graphql::{Caller, limits};
use crate::metrics::CodeLabels;
use crate::schema::execute::operation;
use crate::server::ConnectionHandle;

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";
const HTML: &str = "text/html";
const EVENT_STREAM: &str = "text/event-stream";

/// The longest query string a GET may carry: `limits.max_body_bytes`, as a
/// POST body, but at most this (longer requests belong in a POST body).
const MAX_QUERY_STRING_BYTES: usize = 32 * 1024;

/// What a request gets back, negotiated from its `Accept` header (a
/// WebSocket upgrade on GET is told apart before, by its `Upgrade` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `text/event-stream`: a subscription over server-sent events (POST).
    EventStream,
    /// `application/graphql-response+json`, whose status says what happened.
    GraphqlResponse,
    /// `application/json`, for clients older than the specification.
    LegacyJson,
    /// The IDE page (GET only).
    Ide,
}

/// The answer `Accept` asks for, `None` when nothing Mosaic serves is
/// acceptable. Between the two JSON types, the higher weight wins; on a tie
/// `application/json` unless the client names the newer type itself (`*/*`
/// may be a legacy client). A GET gets the IDE page when it prefers HTML, or
/// carries no query and accepts HTML (a browser opening `/graphql`). A POST
/// that names `text/event-stream` is a subscription over server-sent events.
pub fn negotiate(headers: &HeaderMap, method: &Method, has_query: bool) -> Option<Answer> {
    let page = method == Method::GET;
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if accept.trim().is_empty() {
        // Without Accept anything goes: the page for a bare GET, else JSON.
        return Some(if page && !has_query {
            Answer::Ide
        } else {
            Answer::LegacyJson
        });
    }
    let stream = accept::weight(&accept, EVENT_STREAM);
    if !page && stream.named && stream.acceptable() {
        return Some(Answer::EventStream);
    }
    let response = accept::weight(&accept, GRAPHQL_RESPONSE_JSON);
    let json = accept::weight(&accept, JSON);
    let html = accept::weight(&accept, HTML);
    if page && html.acceptable() && (html.q > response.q.max(json.q) || !has_query) {
        return Some(Answer::Ide);
    }
    if !response.acceptable() && !json.acceptable() {
        return None;
    }
    Some(if response.q > json.q || (response.q == json.q && response.named) {
        Answer::GraphqlResponse
    } else {
        Answer::LegacyJson
    })
}

/// A GraphQL-over-HTTP request's parameters.
#[derive(Debug, Default, PartialEq)]
pub struct Params {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Option<Map<String, Value>>,
    pub extensions: Option<Map<String, Value>>,
}

impl Params {
    fn into_request(self) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(self.query);
        request.operation_name = self.operation_name;
        if let Some(variables) = self.variables {
            request.variables = Variables::from_json(Value::Object(variables));
        }
        if let Some(extensions) = self.extensions {
            request.extensions = async_graphql::Extensions(
                extensions
                    .into_iter()
                    .map(|(k, v)| (k, async_graphql::Value::from_json(v).expect("JSON converts")))
                    .collect(),
            );
        }
        request
    }

    /// From a JSON body: an object whose `query` is a string, `operationName`
    /// a string, `variables` and `extensions` objects (each optional one may
    /// be null); other members are ignored.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
        let Value::Object(mut object) = value else {
            return Err("the body must be a JSON object with a query".into());
        };
        let mut take = |name: &str| object.remove(name).filter(|v| !v.is_null());
        Ok(Self {
            query: match take("query") {
                Some(Value::String(query)) => query,
                Some(_) => return Err("query must be a string".into()),
                None => return Err("the request has no query".into()),
            },
            operation_name: match take("operationName") {
                Some(Value::String(name)) => Some(name),
                Some(_) => return Err("operationName must be a string or null".into()),
                None => None,
            },
            variables: object_or_null("variables", take("variables"))?,
            extensions: object_or_null("extensions", take("extensions"))?,
        })
    }

    /// From a URL query string (`application/x-www-form-urlencoded`):
    /// `variables` and `extensions` JSON-encoded; an empty optional parameter
    /// is an absent one; a parameter given twice is refused.
    pub fn from_query_string(pairs: Vec<(String, String)>) -> Result<Self, String> {
        let mut params = Self::default();
        let mut query = None;
        let mut seen = Vec::new();
        for (name, value) in pairs {
            if seen.contains(&name) {
                return Err(format!("{name} is given more than once"));
            }
            let json = |value: &str| match value {
                "" => Ok(None),
                text => serde_json::from_str(text)
                    .map_err(|e| format!("{name} must be a JSON object: {e}"))
                    .and_then(|v| object_or_null(&name, Some(v))),
            };
            match name.as_str() {
                "query" => query = Some(value),
                "operationName" => params.operation_name = Some(value).filter(|v| !v.is_empty()),
                "variables" => params.variables = json(&value)?,
                "extensions" => params.extensions = json(&value)?,
                _ => {}
            }
            seen.push(name);
        }
        params.query = query.ok_or("the request has no query parameter")?;
        Ok(params)
    }
}

fn object_or_null(name: &str, value: Option<Value>) -> Result<Option<Map<String, Value>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(format!("{name} must be a JSON object or null")),
    }
}

fn bad_request(message: String) -> Response {
    error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

fn not_acceptable() -> Response {
    error_response(
        StatusCode::NOT_ACCEPTABLE,
        "NOT_ACCEPTABLE",
        format!("Accept must allow {GRAPHQL_RESPONSE_JSON} or {JSON}"),
    )
}

fn with_vary(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    response
}

/// `GET /graphql`: the IDE page for a browser, else the query in the URL.
pub async fn get(State(state): State<AppState>, request: Request) -> Response {
    if subscriptions::is_websocket(request.headers()) {
        return subscriptions::websocket(state, request).await;
    }
    let (Parts { headers, uri, .. }, _) = request.into_parts();
    let limit = state.config.limits.max_body_bytes.min(MAX_QUERY_STRING_BYTES);
    if uri.query().is_some_and(|q| q.len() > limit) {
        return error_response(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("the query string exceeds the limit of {limit} bytes; send the request with POST"),
        );
    }
    let pairs = match Query::<Vec<(String, String)>>::try_from_uri(&uri) {
        Ok(Query(pairs)) => pairs,
        Err(e) => return bad_request(format!("malformed query string: {e}")),
    };
    let has_query = pairs.iter().any(|(name, _)| name == "query");
    let answer = match negotiate(&headers, &Method::GET, has_query) {
        None => return not_acceptable(),
        Some(Answer::Ide) => return with_vary(Html(crate::ide::page(state.sso.is_some())).into_response()),
        Some(answer) => answer,
    };
    match Params::from_query_string(pairs) {
        Ok(params) => run(&state, &headers, Method::GET, answer, params).await,
        Err(message) => bad_request(message),
    }
}

/// `POST /graphql`: a JSON-encoded request.
pub async fn post(
    State(state): State<AppState>,
    connection: Option<Extension<ConnectionHandle>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = match negotiate(&headers, &Method::POST, true) {
        None => return not_acceptable(),
        Some(answer) => answer,
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !content_type.is_some_and(|t| accept::is_content_type(t, JSON)) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("a POST to /graphql needs Content-Type: {JSON} (UTF-8)"),
        );
    }
    let limit = state.config.limits.max_body_bytes;
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return too_large();
    };
    match Params::from_json(&bytes) {
        Ok(params) if answer == Answer::EventStream => {
            let principal = match authenticate(&state, &headers).await {
                Ok(p) => p,
                Err(response) => return response,
            };
            subscriptions::sse(&state, principal, params.into_request(), connection.map(|c| c.0)).await
        }
        Ok(params) => run(&state, &headers, Method::POST, answer, params).await,
        Err(message) => bad_request(message),
    }
}

/// Any other method: 405 in Mosaic's error shape, naming the methods served.
pub async fn other_method() -> Response {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "/graphql takes GET (queries) and POST",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
    response
}

/// Authenticates, refuses what must not run (a mutation over GET, an
/// operation that cannot be chosen, required variables missing or null),
/// executes the rest and encodes the answer.
async fn run(state: &AppState, headers: &HeaderMap, method: Method, answer: Answer, params: Params) -> Response {
    let principal = match authenticate(state, headers).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let mut request = params.into_request();
    let operation_name = request.operation_name.clone();
    let variables = request.variables.clone();
    // Parsed once per query text, before anything reads the document.
    state.executor.documents.prepare(&mut request);
    // A document that does not parse is left to execution, which reports it
    // with its position (GRAPHQL_PARSE_FAILED) and runs nothing.
    if let Ok(document) = request.parsed_query() {
        let refused = match operation(document, operation_name.as_deref()) {
            Err(message) => Some(limits::with_code(ServerError::new(message, None), "BAD_USER_INPUT")),
            Ok(op) if method == Method::GET && op.ty == OperationType::Mutation => {
                let mut response = error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    "a mutation cannot run over GET; send it with POST",
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                return response;
            }
            Ok(op) => uncoercible(op, &variables).map(|e| limits::with_code(e, limits::VALIDATION_FAILED)),
        };
        if let Some(error) = refused {
            count_errors(state, std::slice::from_ref(&error));
            return encode(answer, async_graphql::Response::from_errors(vec![error]), true);
        }
    }
    let hop = state.executor.user_hop(&principal);
    let scope = Scope::user(principal.user_id);
    match state
        .executor
        .execute(Caller::User(principal), scope, hop, request)
        .await
    {
        Ok(response) => {
            let request_error = is_request_error(&response);
            encode(answer, response, request_error)
        }
        Err(e) => execution_failed(e),
    }
}

/// The first required variable (non-null type, no default) that is missing
/// or null. Values of the wrong type are refused by validation, which sees
/// the variables where they are used.
fn uncoercible(op: &OperationDefinition, variables: &Variables) -> Option<ServerError> {
    op.variable_definitions.iter().find_map(|def| {
        let def = &def.node;
        if def.var_type.node.nullable || def.default_value.is_some() {
            return None;
        }
        let name = &def.name.node;
        let message = match variables.get(name) {
            None => format!(
                "Variable \"${name}\" of required type \"{}\" was not provided.",
                def.var_type.node
            ),
            Some(async_graphql::Value::Null) => {
                format!(
                    "Variable \"${name}\" of non-null type \"{}\" must not be null.",
                    def.var_type.node
                )
            }
            Some(_) => return None,
        };
        Some(ServerError::new(message, Some(def.name.pos)))
    })
}

fn count_errors(state: &AppState, errors: &[ServerError]) {
    for error in errors {
        state
            .metrics
            .graphql_errors
            .get_or_create(&CodeLabels {
                code: code(error).unwrap_or_default().to_string(),
            })
            .inc();
    }
}

fn code(error: &ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(code) => Some(code),
        _ => None,
    }
}

/// Whether an executed request's response is a request error: it failed
/// before execution (async-graphql answers those too), so it has no data and
/// only the codes of parsing, validation and query limits.
fn is_request_error(response: &async_graphql::Response) -> bool {
    const BEFORE_EXECUTION: [&str; 3] = [
        limits::PARSE_FAILED,
        limits::VALIDATION_FAILED,
        limits::QUERY_TOO_COMPLEX,
    ];
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response
            .errors
            .iter()
            .all(|e| code(e).is_some_and(|c| BEFORE_EXECUTION.contains(&c)))
}

/// A GraphQL response in the negotiated media type with its status; a
/// request error (one raised before execution) has no `data` entry (GraphQL
/// spec, "Response Format").
fn encode(answer: Answer, response: async_graphql::Response, request_error: bool) -> Response {
    let status = match answer {
        Answer::GraphqlResponse if request_error => StatusCode::BAD_REQUEST,
        // The draft's status for a partial success: data and errors.
        Answer::GraphqlResponse if !response.errors.is_empty() => {
            StatusCode::from_u16(294).expect("294 is a valid status code")
        }
        _ => StatusCode::OK,
    };
    let media = match answer {
        Answer::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        _ => "application/json; charset=utf-8",
    };
    // Written straight from the response, fields in the order asked: no
    // detour through a `serde_json::Value` (which sorts them).
    let body = match request_error {
        true => serde_json::to_vec(&RequestError {
            extensions: &response.extensions,
            errors: &response.errors,
        }),
        false => serde_json::to_vec(&response),
    }
    .expect("a GraphQL response serialises");
    with_vary((status, [(header::CONTENT_TYPE, HeaderValue::from_static(media))], body).into_response())
}

/// A request error's body: the response without its `data` entry.
#[derive(serde::Serialize)]
struct RequestError<'a> {
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
    errors: &'a [async_graphql::ServerError],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn negotiation_follows_weights_and_prefers_json_for_wildcards() {
        use Answer::*;
        let post = |a: &str| negotiate(&accept(a), &Method::POST, true);
        assert_eq!(negotiate(&HeaderMap::new(), &Method::POST, true), Some(LegacyJson));
        assert_eq!(post("*/*"), Some(LegacyJson));
        assert_eq!(post("application/*"), Some(LegacyJson));
        assert_eq!(post(GRAPHQL_RESPONSE_JSON), Some(GraphqlResponse));
        assert_eq!(post("application/json"), Some(LegacyJson));
        assert_eq!(
            post("application/graphql-response+json, application/json;q=0.9"),
            Some(GraphqlResponse)
        );
        assert_eq!(
            post("application/json, application/graphql-response+json"),
            Some(GraphqlResponse)
        );
        assert_eq!(
            post("application/json, application/graphql-response+json;q=0.5"),
            Some(LegacyJson)
        );
        assert_eq!(
            post("application/graphql-response+json;q=0.2, */*;q=0.1"),
            Some(GraphqlResponse)
        );
        assert_eq!(post("application/json; charset=utf-8"), Some(LegacyJson));
        assert_eq!(post("application/json; charset=latin1"), None);
        assert_eq!(post("text/html"), None);
        assert_eq!(post("application/xml, text/*"), None);
        assert_eq!(post("*/*;q=0"), None);
        assert_eq!(post("text/event-stream"), Some(EventStream));
        assert_eq!(post("application/json, text/event-stream;q=0.9"), Some(EventStream));
        assert_eq!(post("application/json"), Some(LegacyJson));
        assert_eq!(negotiate(&HeaderMap::new(), &Method::POST, true), Some(LegacyJson));
        assert_eq!(
            post("text/html, */*;q=0.8"),
            Some(LegacyJson),
            "POST never gets the page"
        );
    }

    #[test]
    fn a_get_gets_the_page_when_it_prefers_html_or_asks_nothing() {
        use Answer::*;
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        let get = |a: &str, q| negotiate(&accept(a), &Method::GET, q);
        assert_eq!(get(browser, true), Some(Ide));
        assert_eq!(get(browser, false), Some(Ide));
        assert_eq!(get("*/*", false), Some(Ide));
        assert_eq!(negotiate(&HeaderMap::new(), &Method::GET, false), Some(Ide));
        assert_eq!(get("*/*", true), Some(LegacyJson));
        assert_eq!(get(GRAPHQL_RESPONSE_JSON, false), Some(GraphqlResponse));
        assert_eq!(get("application/json, text/html;q=0.5", true), Some(LegacyJson));
        assert_eq!(get("application/json, text/html;q=0.5", false), Some(Ide));
        assert_eq!(get("image/png", true), None);
    }

    #[test]
    fn json_parameters_have_their_types() {
        let ok = |body: &str| Params::from_json(body.as_bytes()).unwrap();
        assert_eq!(
            ok(r#"{"query":"{ a }","operationName":null,"variables":null,"extensions":null,"other":1}"#),
            Params {
                query: "{ a }".into(),
                ..Params::default()
            }
        );
        let full = ok(r#"{"query":"q","operationName":"Q","variables":{"a":1},"extensions":{"e":true}}"#);
        assert_eq!(full.operation_name.as_deref(), Some("Q"));
        assert_eq!(full.variables.unwrap()["a"], 1);
        assert_eq!(full.extensions.unwrap()["e"], true);
        for (body, error) in [
            ("", "malformed JSON"),
            ("[1]", "JSON object"),
            (r#"{"notquery":"{ a }"}"#, "no query"),
            (r#"{"query":null}"#, "no query"),
            (r#"{"query":0}"#, "query must be a string"),
            (r#"{"query":"q","operationName":false}"#, "operationName"),
            (r#"{"query":"q","variables":"{}"}"#, "variables"),
            (r#"{"query":"q","variables":[1]}"#, "variables"),
            (r#"{"query":"q","extensions":0}"#, "extensions"),
        ] {
            let message = Params::from_json(body.as_bytes()).unwrap_err();
            assert!(message.contains(error), "{body}: {message}");
        }
    }

    #[test]
    fn query_string_parameters_are_json_encoded_and_empty_means_absent() {
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let p = Params::from_query_string(pairs(&[
            ("query", "{ a }"),
            ("operationName", ""),
            ("variables", r#"{"x":"y"}"#),
            ("extensions", ""),
        ]))
        .unwrap();
        assert_eq!(p.query, "{ a }");
        assert_eq!(p.operation_name, None);
        assert_eq!(p.variables.unwrap()["x"], "y");
        assert_eq!(p.extensions, None);
        for (list, error) in [
            (pairs(&[("variables", "{}")]), "no query"),
            (pairs(&[("query", "a"), ("query", "b")]), "more than once"),
            (pairs(&[("query", "a"), ("variables", "[1]")]), "variables must be"),
            (pairs(&[("query", "a"), ("variables", "{")]), "variables must be"),
            (pairs(&[("query", "a"), ("extensions", "7")]), "extensions must be"),
        ] {
            let message = Params::from_query_string(list.clone()).unwrap_err();
            assert!(message.contains(error), "{list:?}: {message}");
        }
    }

    #[test]
    fn the_operation_is_chosen_as_graphql_says() {
        let doc = |q: &str| async_graphql::parser::parse_query(q).unwrap();
        let anonymous = doc("{ a }");
        assert!(operation(&anonymous, None).is_ok());
        assert!(operation(&anonymous, Some("A")).is_err());
        let two = doc("query A { a } mutation B { b }");
        assert_eq!(operation(&two, Some("B")).unwrap().ty, OperationType::Mutation);
        assert_eq!(operation(&two, Some("A")).unwrap().ty, OperationType::Query);
        assert!(operation(&two, Some("C")).unwrap_err().contains("\"C\""));
        assert!(operation(&two, None).unwrap_err().contains("required"));
        let one = doc("mutation M { b }");
        assert_eq!(operation(&one, None).unwrap().ty, OperationType::Mutation);
    }

    #[test]
    fn required_variables_must_be_given_and_not_null() {
        let doc = async_graphql::parser::parse_query(
            "query($a: ID!, $b: Int, $c: String! = \"x\", $d: [Int!]!) { f(a: $a, b: $b, c: $c, d: $d) }",
        )
        .unwrap();
        let op = operation(&doc, None).unwrap();
        let vars = |v: Value| Variables::from_json(v);
        let message = |v: Value| uncoercible(op, &vars(v)).map(|e| e.message);
        assert_eq!(message(serde_json::json!({ "a": "1", "d": [] })), None);
        assert!(
            message(serde_json::json!({ "d": [] }))
                .unwrap()
                .contains("\"$a\" of required type \"ID!\" was not provided")
        );
        assert!(
            message(serde_json::json!({ "a": "1", "d": null }))
                .unwrap()
                .contains("\"$d\" of non-null type \"[Int!]!\" must not be null")
        );
    }
}
