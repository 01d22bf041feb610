//! `schema/mosaic.graphql` must match the schema the code serves.
//! Regenerate with: cargo run -- schema print --output schema/mosaic.graphql

#[test]
fn committed_sdl_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/mosaic.graphql"))
        .expect("schema/mosaic.graphql exists");
    let current = mosaic::schema::sdl();
    assert!(
        committed == current,
        "schema/mosaic.graphql is stale: run `cargo run -- schema print --output schema/mosaic.graphql`"
    );
}
