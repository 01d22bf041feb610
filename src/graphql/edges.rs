//! A page's edges as a GraphQL list, resolved one after another.
//!
//! async-graphql resolves a list's items concurrently: past 30 items it
//! boxes each item's future into a `FuturesOrdered`, an allocation, a waker
//! and a poll cycle per item. Edges of tasks and agent tasks hold their rows
//! in memory and seal their cursors on the CPU (an agent task's `events`
//! reads through the request's one connection, a query at a time anyway),
//! so nothing would overlap: resolved in order, a page costs only its
//! items' fields. The schema sees
//! the same `[Edge!]!`. (The executing schema has no extension that hooks
//! a list's items; `QueryLimits` runs on the checker.)

use std::borrow::Cow;

use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{ContextSelectionSet, OutputType, Positioned, ServerResult, Value};

#[derive(Clone, Debug)]
pub struct Edges<T>(pub Vec<T>);

impl<T: OutputType> OutputType for Edges<T> {
    fn type_name() -> Cow<'static, str> {
        Vec::<T>::type_name()
    }

    fn qualified_type_name() -> String {
        Vec::<T>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        Vec::<T>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        let mut items = Vec::with_capacity(self.0.len());
        for (idx, item) in self.0.iter().enumerate() {
            let ctx = ctx.with_index(idx);
            items.push(item.resolve(&ctx, field).await.map_err(|e| ctx.set_error_path(e))?);
        }
        Ok(Value::List(items))
    }
}
