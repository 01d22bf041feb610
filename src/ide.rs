//! The GraphQL IDE served at `GET /graphql`.

pub const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Mosaic GraphQL</title></head>
<body><h1>Mosaic GraphQL</h1><p>POST GraphQL requests to this URL with <code>Authorization: Bearer &lt;token&gt;</code>.</p></body></html>"#;
