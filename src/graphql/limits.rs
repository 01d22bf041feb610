//! Query limits (depth, complexity, aliases) and error codes for requests
//! that fail before execution. Limits come from configuration.
//!
//! Introspection (`__schema`, `__type` at the root) is measured apart from the
//! data a document asks for: its shape is fixed by the schema, not by data,
//! and GraphiQL's introspection query is deeper than any sensible data limit.
//! It has its own fixed bounds ([`INTROSPECTION_MAX_DEPTH`],
//! [`INTROSPECTION_MAX_FIELDS`]); the configured limits apply to the rest.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};

use crate::config::Limits;

/// What a field that may send a subrequest to a peer adds to a query's
/// complexity (a scoped list, or a nested field of a remote object): about
/// what fifty local fields cost, so aliases and nesting cannot multiply
/// signed requests cheaply.
pub const FORWARD_COST: usize = 50;

pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

pub fn with_code(mut e: ServerError, code: &str) -> ServerError {
    let ext = e.extensions.get_or_insert_with(Default::default);
    if ext.get("code").is_none() {
        ext.set("code", code);
    }
    e
}

fn too_complex(message: String) -> ServerError {
    with_code(ServerError::new(message, None), QUERY_TOO_COMPLEX)
}

/// Deepest field nesting allowed inside `__schema`/`__type` (graphql-js's
/// introspection query, with nine levels of `ofType`, needs 15).
pub const INTROSPECTION_MAX_DEPTH: usize = 20;
/// Most fields (fragments inlined) allowed inside `__schema`/`__type` together.
pub const INTROSPECTION_MAX_FIELDS: usize = 1000;

/// The checking schema's extension (`schema::Schemas`): it parses,
/// measures and validates a request, then stops; nothing is executed.
pub struct QueryLimits(pub Limits);

impl ExtensionFactory for QueryLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryLimitsExtension {
            limits: self.0.clone(),
            shape: Mutex::new(None),
        })
    }
}

/// One request's extension: the limits, and the document's shape measured at parse time.
struct QueryLimitsExtension {
    limits: Limits,
    /// `None` until parsed here: then the whole document counts as data.
    shape: Mutex<Option<Shape>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for QueryLimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next
            .run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, PARSE_FAILED))?;
        let aliases = count_aliases(&doc);
        if aliases > self.limits.max_aliases {
            return Err(too_complex(format!(
                "query uses {aliases} aliases; the limit is {}",
                self.limits.max_aliases
            )));
        }
        // Work is bounded: measuring stops once past what any limit allows.
        let budget = self
            .limits
            .max_complexity
            .saturating_mul(4)
            .max(4 * INTROSPECTION_MAX_FIELDS);
        let shape = Shape::of(&doc, budget, self.limits.max_depth.max(INTROSPECTION_MAX_DEPTH) + 1)
            .ok_or_else(|| too_complex(format!("query selects more than {budget} fields")))?;
        if shape.introspection_depth > INTROSPECTION_MAX_DEPTH {
            return Err(too_complex(format!(
                "introspection depth {} exceeds the limit of {INTROSPECTION_MAX_DEPTH}",
                shape.introspection_depth
            )));
        }
        if shape.introspection_fields > INTROSPECTION_MAX_FIELDS {
            return Err(too_complex(format!(
                "introspection selects more than {INTROSPECTION_MAX_FIELDS} fields"
            )));
        }
        *self.shape.lock().expect("shape lock") = Some(shape);
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| with_code(e, VALIDATION_FAILED))
                .collect::<Vec<_>>()
        })?;
        // Introspection fields have no complexity of their own: one each, as
        // `Shape` counts them, so what remains is the data part's.
        let (depth, complexity) = match *self.shape.lock().expect("shape lock") {
            Some(shape) => (
                shape.data_depth,
                result.complexity.saturating_sub(shape.introspection_fields),
            ),
            None => (result.depth, result.complexity),
        };
        if depth > self.limits.max_depth {
            return Err(vec![too_complex(format!(
                "query depth {depth} exceeds the limit of {}",
                self.limits.max_depth
            ))]);
        }
        if complexity > self.limits.max_complexity {
            return Err(vec![too_complex(format!(
                "query complexity {complexity} exceeds the limit of {}",
                self.limits.max_complexity
            ))]);
        }
        Ok(result)
    }

    /// Checked: the running schema executes the request.
    async fn execute(&self, _ctx: &ExtensionContext<'_>, _operation: Option<&str>, _next: NextExecute<'_>) -> Response {
        Response::default()
    }
}

fn count_aliases(doc: &ExecutableDocument) -> usize {
    fn in_set(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(f) => usize::from(f.node.alias.is_some()) + in_set(&f.node.selection_set.node),
                Selection::InlineFragment(f) => in_set(&f.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let operations: usize = doc
        .operations
        .iter()
        .map(|(_, op)| in_set(&op.node.selection_set.node))
        .sum();
    let fragments: usize = doc.fragments.values().map(|f| in_set(&f.node.selection_set.node)).sum();
    operations + fragments
}

/// Depths and the introspection field count of a document, fragments inlined
/// and `__typename` not counted (as async-graphql's own depth and complexity).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Shape {
    data_depth: usize,
    introspection_depth: usize,
    introspection_fields: usize,
}

impl Shape {
    /// Measures every operation; `None` past `budget` selections. Does not descend below
    /// `max_level`, so fragment cycles (refused by validation later) and
    /// fragment fan-out cannot make this loop or blow up.
    fn of(doc: &ExecutableDocument, budget: usize, max_level: usize) -> Option<Self> {
        let mut walk = Walk {
            doc,
            visited: 0,
            budget,
            max_level,
        };
        let mut shape = Shape::default();
        for (_, op) in doc.operations.iter() {
            let mut roots = Vec::new();
            walk.fields(&op.node.selection_set.node, &mut roots);
            for (name, field) in roots {
                let (depth, fields) = walk.measure(field, 1);
                if name == "__schema" || name == "__type" {
                    shape.introspection_depth = shape.introspection_depth.max(depth);
                    shape.introspection_fields = shape.introspection_fields.saturating_add(fields);
                } else {
                    shape.data_depth = shape.data_depth.max(depth);
                }
            }
        }
        (walk.visited <= budget).then_some(shape)
    }
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    /// Selections looked at so far; measuring stops past `budget`.
    visited: usize,
    budget: usize,
    /// Deeper than this is over every depth limit: not descended into.
    max_level: usize,
}

impl<'a> Walk<'a> {
    /// The fields of a selection set with fragments inlined, `__typename` left out.
    fn fields(&mut self, set: &'a SelectionSet, out: &mut Vec<(&'a str, &'a SelectionSet)>) {
        for item in &set.items {
            self.visited += 1;
            if self.visited > self.budget {
                return;
            }
            match &item.node {
                Selection::Field(f) if f.node.name.node == "__typename" => {}
                Selection::Field(f) => out.push((f.node.name.node.as_str(), &f.node.selection_set.node)),
                Selection::InlineFragment(f) => self.fields(&f.node.selection_set.node, out),
                Selection::FragmentSpread(s) => {
                    if let Some(fragment) = self.doc.fragments.get(&s.node.fragment_name.node) {
                        self.fields(&fragment.node.selection_set.node, out);
                    }
                }
            }
        }
    }

    /// (depth, field count) of a field at `level` with selection set `set`.
    fn measure(&mut self, set: &'a SelectionSet, level: usize) -> (usize, usize) {
        if level > self.max_level || self.visited > self.budget {
            return (1, 1);
        }
        let mut children = Vec::new();
        self.fields(set, &mut children);
        let (mut depth, mut count) = (0, 0);
        for (_, child) in children {
            let (d, c) = self.measure(child, level + 1);
            depth = depth.max(d);
            count += c;
        }
        (depth + 1, count + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(query: &str) -> Option<Shape> {
        Shape::of(&async_graphql::parser::parse_query(query).unwrap(), 1000, 30)
    }

    #[test]
    fn introspection_is_measured_apart_from_data() {
        let s = shape("{ a { b __typename } __schema { types { name __typename } } }").unwrap();
        assert_eq!(
            s,
            Shape {
                data_depth: 2,
                introspection_depth: 3,
                introspection_fields: 3
            }
        );
        // Fragments are inlined, each spread counted; `__type` is introspection too.
        let s = shape("query { ...R } fragment R on Q { x { y } __type(name: \"T\") { ...N ...N } } fragment N on __Type { name }").unwrap();
        assert_eq!(
            s,
            Shape {
                data_depth: 2,
                introspection_depth: 2,
                introspection_fields: 3
            }
        );
        // Only root fields are introspection.
        assert_eq!(shape("{ a { __schema { x } } }").unwrap().introspection_fields, 0);
    }

    #[test]
    fn cycles_and_fan_out_end_within_the_bounds() {
        let cycle = shape("{ __schema { ...A } } fragment A on __Schema { t { ...A } }").unwrap();
        assert!(cycle.introspection_depth > 30, "{cycle:?}");
        let fan = (0..10)
            .map(|i| format!("fragment F{i} on T {{ ...F{} ...F{} }}", i + 1, i + 1))
            .collect::<Vec<_>>()
            .join(" ");
        let doc = format!("{{ a {{ ...F0 }} }} {fan} fragment F10 on T {{ x }}");
        assert_eq!(shape(&doc), None, "2^10 spreads exceed the budget");
    }
}
