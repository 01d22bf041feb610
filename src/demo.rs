//! `mosaic demo`: a local federation of three instances (hq, work, home),
//! each with its own embedded PostgreSQL, HTTPS between them (a generated
//! local CA), seeded data, and a peering chain home → work → hq set up through
//! the real protocol. A second run reuses the data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;
use sqlx::Connection;
use tokio::sync::watch;
use uuid::Uuid;

use crate::app::Application;
use crate::config::{Config, FederationSettings, TlsFiles};
use crate::federation::{Federation, registry, tls};
use crate::secrets::Secret;

/// (instance name, seeded user, workspace, tasks)
const INSTANCES: [(&str, &str, &str, &[&str]); 3] = [
    (
        "hq",
        "ceo@hq.example",
        "Company",
        &["Quarterly plan", "Board deck", "Hiring budget"],
    ),
    (
        "work",
        "lead@work.example",
        "Team",
        &["Ship v2", "Fix login bug", "Write release notes"],
    ),
    (
        "home",
        "you@home.example",
        "Personal",
        &["Buy groceries", "Renew passport", "Call the plumber"],
    ),
];

struct Running {
    name: &'static str,
    url: String,
    database_url: String,
    federation: Arc<Federation>,
    served: tokio::task::JoinHandle<Result<()>>,
}

pub async fn run(port_base: u16, data_dir: PathBuf, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    std::fs::create_dir_all(&data_dir).with_context(|| format!("--data-dir: cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let pki = tls::local_pki(&data_dir.join("tls"))?;
    // One key for the three instances, made on the first run.
    let secret =
        crate::secrets::key_file(&data_dir.join(crate::secrets::KEY_FILE), true)?.context("the demo's key file")?;
    let (stop, stopped) = watch::channel(false);
    let mut running = Vec::new();
    let started = start_instances(port_base, &data_dir, &pki, &secret, &stopped, &mut running).await;
    let result = match started {
        Ok(()) => prepare(&running, &data_dir, &pki.ca_cert).await,
        Err(e) => Err(e),
    };
    if result.is_ok() {
        println!("ready");
        let home = running.last().expect("three instances");
        println!(
            "\nMosaic demo: {} instances with HTTPS between them (CA: {})",
            running.len(),
            pki.ca_cert.display()
        );
        for r in &running {
            println!("  {:<5} {}/graphql", r.name, r.url);
        }
        println!("\nOpen the home instance's IDE: {}/graphql", home.url);
        println!(
            "(trust {} or accept the certificate; tokens are in {})",
            pki.ca_cert.display(),
            data_dir.join("demo.json").display()
        );
        println!("\nExample federated queries (home asks work, which asks hq):");
        println!(
            "  {{ tasks(scope: {{all: true}}, first: 20, orderBy: {{field: TITLE}}) {{ edges {{ node {{ title instance {{ name }} }} }} totalCount }} }}"
        );
        println!("  {{ workspaces(scope: {{instances: [\"home\", \"work\"]}}) {{ name instance {{ name }} }} }}");
        println!("Press Ctrl-C to stop.");
        shutdown.await;
    }
    // Every instance started is stopped (with its cluster), whatever failed.
    let _ = stop.send(true);
    let mut stopped = Ok(());
    for r in running {
        let served = r.served.await.map_err(anyhow::Error::from).and_then(|r| r);
        stopped = stopped.and(served);
    }
    result.and(stopped)
}

/// Starts the three instances in order, pushing each onto `running` as it
/// starts, so a failure leaves the ones already running for the caller to stop.
async fn start_instances(
    port_base: u16,
    data_dir: &Path,
    pki: &tls::LocalPki,
    secret: &Secret,
    stopped: &watch::Receiver<bool>,
    running: &mut Vec<Running>,
) -> Result<()> {
    for (i, (name, ..)) in INSTANCES.iter().enumerate() {
        let port = port_base
            .checked_add(i as u16)
            .context("--port-base: ports run past 65535")?;
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let config = Config {
            listen,
            data_dir: data_dir.join(name),
            instance_name: name.to_string(),
            secret_key: Some(secret.clone()),
            public_url: Some(format!("https://127.0.0.1:{port}")),
            tls: Some(TlsFiles {
                cert_file: pki.cert.clone(),
                key_file: pki.key.clone(),
            }),
            federation: FederationSettings {
                ca_file: Some(pki.ca_cert.clone()),
                // The demo's instances are peers on loopback.
                allowed_peer_networks: crate::config::parse_networks("127.0.0.0/8, ::1/128").expect("static networks"),
                ..FederationSettings::default()
            },
            ..Config::default()
        };
        let app = Application::build(config)
            .await
            .with_context(|| format!("starting instance {name}"))?;
        let federation = app.state.federation.clone();
        let url = app.base_url().to_string();
        let database_url = app.database_url();
        let mut stopped = stopped.clone();
        let served = tokio::spawn(app.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        running.push(Running {
            name,
            url,
            database_url,
            federation,
            served,
        });
    }
    Ok(())
}

/// Seeds each instance once, peers home → work → hq once, and writes demo.json.
async fn prepare(running: &[Running], data_dir: &Path, ca: &Path) -> Result<()> {
    let previous = previous_tokens(&data_dir.join("demo.json"));
    let mut listing = Vec::new();
    for (r, (_, email, workspace, tasks)) in running.iter().zip(INSTANCES) {
        let mut conn = sqlx::PgConnection::connect(&r.database_url).await?;
        let user: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&mut conn)
            .await?;
        if user.is_none() {
            seed(&mut conn, email, workspace, tasks).await?;
        }
        let token = demo_token(&mut conn, email, previous.get(r.name)).await?;
        listing.push(json!({ "name": r.name, "url": r.url, "graphql": format!("{}/graphql", r.url), "user": email, "token": token }));
    }
    // home → work → hq: each asks the next, which grants its workspaces,
    // read-write, and lets reads go on (so home sees hq through work).
    for pair in running.windows(2).rev() {
        let (asked, asking) = (&pair[0], &pair[1]);
        let known = registry::get(&asking.federation.pool, asked.federation.instance_id).await?;
        if known.is_some_and(|p| p.outbound_state == crate::federation::registry::PeerState::Active) {
            continue;
        }
        asking.federation.connect(&asked.url, "demo").await?;
        let workspaces: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM workspaces")
            .fetch_all(&mut sqlx::PgConnection::connect(&asked.database_url).await?)
            .await?;
        let terms = crate::federation::grant::Terms {
            workspaces,
            read_write: true,
            users: None,
            forward: true,
            ..Default::default()
        };
        asked
            .federation
            .approve(asking.federation.instance_id, &terms, "demo")
            .await?;
    }
    let doc = json!({ "instances": listing, "ca_cert": ca });
    tls::write_private(
        &data_dir.join("demo.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    Ok(())
}

/// Each instance's token in an earlier run's demo.json, by instance name.
fn previous_tokens(path: &Path) -> std::collections::HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Default::default();
    };
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    doc["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| Some((i["name"].as_str()?.to_string(), i["token"].as_str()?.to_string())))
        .collect()
}

/// The seeded user's token: the earlier run's while it still works (a second
/// run mints nothing), else a new one.
async fn demo_token(conn: &mut sqlx::PgConnection, email: &str, previous: Option<&String>) -> Result<String> {
    if let Some(token) = previous {
        let valid: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND u.email = $2 AND (t.expires_at IS NULL OR t.expires_at > now()))",
        )
        .bind(crate::auth::tokens::hash(token))
        .bind(email)
        .fetch_one(&mut *conn)
        .await?;
        if valid {
            return Ok(token.clone());
        }
    }
    crate::auth::tokens::create_named(conn, email, "demo", None).await
}

async fn seed(conn: &mut sqlx::PgConnection, email: &str, workspace: &str, tasks: &[&str]) -> Result<()> {
    let user = crate::auth::users::create(conn, email, None, true).await?;
    let ws = Uuid::now_v7();
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('mosaic.user_id', $1, true)")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO workspaces (id, name, created_by) VALUES ($1, $2, $3)")
        .bind(ws)
        .bind(workspace)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    for (i, title) in tasks.iter().enumerate() {
        sqlx::query("INSERT INTO tasks (id, workspace_id, title, priority, created_by) VALUES ($1, $2, $3, $4, $5)")
            .bind(Uuid::now_v7())
            .bind(ws)
            .bind(title)
            .bind((i % 4) as i16)
            .bind(user)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
