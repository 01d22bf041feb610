//! Embeds the GraphQL IDE's assets (GraphiQL and React) and the knowledge
//! graph page's (force-graph), installed from the npm registry by
//! `npm ci --prefix ide` and never committed, into the binary.
//!
//! Each is also gzipped here (best compression), so clients that accept gzip
//! get a quarter of the bytes without compressing on every request.
//!
//! When they are not installed the build still succeeds: nothing is embedded,
//! `ASSETS_PRESENT` is false, and `GET /graphql` explains how to get them.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

/// (name served under `/graphql/ide/`, path under `ide/node_modules`, content type)
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "react.production.min.js",
        "react/umd/react.production.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "react-dom.production.min.js",
        "react-dom/umd/react-dom.production.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "graphiql.min.js",
        "graphiql/graphiql.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "graphiql.min.css",
        "graphiql/graphiql.min.css",
        "text/css; charset=utf-8",
    ),
    // The knowledge graph page (`/knowledge/graph`); bundles its d3 parts.
    (
        "force-graph.min.js",
        "force-graph/dist/force-graph.min.js",
        "text/javascript; charset=utf-8",
    ),
];

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let modules = root.join("ide/node_modules");
    println!("cargo:rerun-if-changed=build.rs");
    // sqlx::migrate! embeds migrations/ at compile time; a new file must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=ide/package-lock.json");

    let paths: Vec<PathBuf> = ASSETS.iter().map(|(_, p, _)| modules.join(p)).collect();
    let present = paths.iter().all(|p| p.is_file());
    if present {
        for (_, p, _) in ASSETS {
            println!("cargo:rerun-if-changed=ide/node_modules/{p}");
        }
    } else {
        // A missing path would make Cargo rerun this script (and rebuild the
        // crate) on every build; watch the nearest existing directory instead,
        // whose modification time changes when `npm ci` creates its entries.
        let mut watched = std::collections::BTreeSet::new();
        for (_, p, _) in ASSETS {
            let mut watch = Path::new("ide/node_modules").join(p);
            while !root.join(&watch).exists() {
                match watch.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => watch = parent.to_path_buf(),
                    _ => break,
                }
            }
            watched.insert(watch);
        }
        for watch in watched {
            println!("cargo:rerun-if-changed={}", watch.display());
        }
        println!(
            "cargo:warning=GraphQL IDE assets not installed: GET /graphql will serve instructions \
             instead of GraphiQL (run `npm ci --prefix ide`, then rebuild)"
        );
    }

    let mut generated = String::new();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a, for cache-busting URLs
    writeln!(generated, "/// Whether the IDE assets were installed at build time.").unwrap();
    writeln!(generated, "pub const ASSETS_PRESENT: bool = {present};").unwrap();
    writeln!(
        generated,
        "/// (file name, content type, bytes, gzipped bytes) of each embedded asset."
    )
    .unwrap();
    writeln!(generated, "pub static ASSETS: &[(&str, &str, &[u8], &[u8])] = &[").unwrap();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    if present {
        for ((name, _, content_type), path) in ASSETS.iter().zip(&paths) {
            let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let gz_path = out_dir.join(format!("{name}.gz"));
            fs::write(&gz_path, gzip(&bytes)).unwrap_or_else(|e| panic!("writing {}: {e}", gz_path.display()));
            for b in name.bytes().chain(bytes) {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            let literal = format!("{:?}", path.display().to_string());
            let gz_literal = format!("{:?}", gz_path.display().to_string());
            writeln!(
                generated,
                "    ({name:?}, {content_type:?}, include_bytes!({literal}), include_bytes!({gz_literal})),"
            )
            .unwrap();
        }
    }
    writeln!(generated, "];").unwrap();
    println!("cargo:rustc-env=MOSAIC_IDE_ASSETS_VERSION={hash:016x}");

    let out = out_dir.join("ide_assets.rs");
    fs::write(&out, generated).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}
