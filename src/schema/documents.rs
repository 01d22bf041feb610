//! Parsed GraphQL documents by query text. A federated query reaches every
//! hop as the same subquery text, and clients repeat their queries; parsing
//! (a PEG parser) costs several times what copying a parse does.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::parser::types::ExecutableDocument;

/// Documents kept at most; past it the cache starts again empty.
const CAPACITY: usize = 256;
/// Longer queries are parsed each time, so the cache stays small whatever
/// clients send.
const MAX_QUERY_BYTES: usize = 16 * 1024;

#[derive(Default)]
pub struct Documents(Mutex<HashMap<String, ExecutableDocument>>);

impl Documents {
    /// Gives `request` its parsed document: a copy of the kept one, or a
    /// fresh parse that is then kept. A query that does not parse is left to
    /// execution, which reports the error.
    pub fn prepare(&self, request: &mut async_graphql::Request) {
        if request.query.len() > MAX_QUERY_BYTES {
            return;
        }
        if let Some(doc) = self.0.lock().expect("documents lock").get(&request.query) {
            request.set_parsed_query(doc.clone());
            return;
        }
        let Ok(doc) = request.parsed_query() else {
            return;
        };
        let doc = doc.clone();
        let mut kept = self.0.lock().expect("documents lock");
        if kept.len() >= CAPACITY {
            kept.clear();
        }
        kept.insert(request.query.clone(), doc);
    }
}
