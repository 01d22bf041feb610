//! A private PostgreSQL cluster in the data directory, made from the installed
//! server binaries. Used when no `DATABASE_URL` is configured.
//!
//! The cluster listens on a Unix socket inside its own directory only (no TCP
//! port), with socket permissions 0700, so several instances on one machine
//! never collide and nobody else can connect. PostgreSQL refuses to run as
//! root, so when we are root the cluster runs as the `postgres` user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, anyhow, bail};
use sqlx::postgres::PgConnectOptions;

const SUPERUSER: &str = "postgres";
const PORT: u16 = 5432;
/// Unix socket paths are limited to 107 bytes on Linux.
const MAX_SOCKET_PATH: usize = 107;

pub struct EmbeddedPostgres {
    root: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<nix::unistd::User>,
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Creates the cluster under `data_dir/postgres` on first use and starts it
    /// unless it is already running (e.g. `mosaic serve` holds it while a CLI
    /// command runs). Only a cluster started here is stopped by [`stop`].
    pub fn start(data_dir: &Path) -> Result<Self> {
        let bin_dir = locate_binaries()?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve data directory {}", data_dir.display()))?;
        let root = data_dir.join("postgres");
        let run_as = if nix::unistd::geteuid().is_root() {
            Some(
                nix::unistd::User::from_name(SUPERUSER)?
                    .ok_or_else(|| anyhow!("running as root, and there is no '{SUPERUSER}' user to run PostgreSQL as; run as another user or set DATABASE_URL"))?,
            )
        } else {
            None
        };
        let mut pg = Self {
            root,
            bin_dir,
            run_as,
            started_here: false,
        };
        let socket = pg.socket_dir().join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "data directory path is too long for a PostgreSQL socket ({}); choose a shorter MOSAIC_DATA_DIR or set DATABASE_URL",
                socket.display()
            );
        }
        // One process at a time creates or starts the cluster.
        std::fs::create_dir_all(&pg.root)?;
        let lock = std::fs::File::create(data_dir.join("postgres.lock"))?;
        fs4::fs_std::FileExt::lock_exclusive(&lock).context("cannot lock the embedded cluster")?;
        pg.ensure_initialised()?;
        if !pg.is_running()? {
            pg.pg_ctl(&["start", "-w", "-t", "120", "-l"], Some(&pg.root.join("server.log")))
                .context("starting the embedded PostgreSQL")?;
            pg.started_here = true;
        }
        fs4::fs_std::FileExt::unlock(&lock)?;
        Ok(pg)
    }

    /// Connection options for the superuser over the private socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(self.socket_dir())
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// A `postgres://` URL for the same connection (CLI and tests print or pass it).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{PORT}/{database}?host={}",
            self.socket_dir().display()
        )
    }

    /// Stops the cluster on [`EmbeddedPostgres::stop`] even if another process started it.
    pub fn own(&mut self) {
        self.started_here = true;
    }

    /// Stops the cluster if this process started (or owns) it.
    pub fn stop(&mut self) -> Result<()> {
        if self.started_here {
            self.pg_ctl(&["stop", "-m", "fast", "-w"], None)?;
            self.started_here = false;
        }
        Ok(())
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    fn ensure_initialised(&self) -> Result<()> {
        if self.data().join("PG_VERSION").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(self.socket_dir())?;
        self.chown_tree()?;
        let data = self.data();
        let out = self
            .command("initdb")
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale", "-D"])
            .arg(&data)
            .output()
            .context("running initdb")?;
        check(&out, "initdb")?;
        // Socket-only, owner-only access: trust auth is safe because nobody
        // but the cluster's own OS user (and root) can open the socket.
        let settings = format!(
            "\n# written by mosaic\nlisten_addresses = ''\nport = {PORT}\nunix_socket_directories = '{}'\nunix_socket_permissions = 0700\nmax_connections = 200\ntimezone = 'UTC'\n",
            self.socket_dir().display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(&settings);
        std::fs::write(&conf, text)?;
        self.chown_tree()
    }

    fn is_running(&self) -> Result<bool> {
        let out = self
            .command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(self.data())
            .output()?;
        // pg_ctl status: 0 running, 3 not running.
        Ok(out.status.code() == Some(0))
    }

    fn pg_ctl(&self, args: &[&str], log: Option<&Path>) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.args(args);
        if let Some(log) = log {
            cmd.arg(log);
        }
        let out = cmd.arg("-D").arg(self.data()).output()?;
        check(&out, "pg_ctl").map_err(|e| {
            let tail = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            anyhow!(
                "{e}; server log: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir(&self.root);
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("HOME", &user.dir);
        }
        cmd
    }

    fn chown_tree(&self) -> Result<()> {
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        chown_recursive(&self.root, user)
    }
}

fn chown_recursive(path: &Path, user: &nix::unistd::User) -> Result<()> {
    nix::unistd::chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("cannot give {} to {}", path.display(), user.name))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_recursive(&entry?.path(), user)?;
        }
    }
    Ok(())
}

fn check(out: &Output, what: &str) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    bail!("{what} failed ({}): {}", out.status, stderr.trim())
}

/// Finds `initdb` and `pg_ctl`: `MOSAIC_PG_BIN`, then the newest Debian-style
/// `/usr/lib/postgresql/*/bin`, then `pg_config --bindir`.
pub fn locate_binaries() -> Result<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(dir) = std::env::var("MOSAIC_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_tools(&dir) {
            return Ok(dir);
        }
        bail!("MOSAIC_PG_BIN={} does not contain initdb and pg_ctl", dir.display());
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, d)| has_tools(d))
        .collect();
    candidates.sort();
    if let Some((_, dir)) = candidates.pop() {
        return Ok(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return Ok(dir);
        }
    }
    bail!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: apt-get install postgresql), set MOSAIC_PG_BIN to their directory, or set DATABASE_URL"
    )
}
