//! A relay between an instance and PostgreSQL's Unix socket that counts
//! round trips: each time a client writes after the server has answered it.
//! Bytes pass through unchanged; the count is over every connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub struct Relay {
    /// The socket directory to put in the instance's `host=`.
    pub dir: PathBuf,
    round_trips: Arc<AtomicU64>,
}

impl Relay {
    /// Listens in `dir` under the socket name of `upstream` (a PostgreSQL
    /// socket file, `.s.PGSQL.<port>`), so only `host=` changes in a URL.
    pub fn start(upstream: &Path, dir: &Path) -> Relay {
        std::fs::create_dir_all(dir).unwrap();
        let name = upstream.file_name().expect("a socket file name");
        let socket = dir.join(name);
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let round_trips = Arc::new(AtomicU64::new(0));
        let counted = round_trips.clone();
        let upstream = upstream.to_path_buf();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = UnixStream::connect(&upstream).await.unwrap();
                tokio::spawn(pass(client, server, counted.clone()));
            }
        });
        Relay {
            dir: dir.to_path_buf(),
            round_trips,
        }
    }

    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

async fn pass(client: UnixStream, server: UnixStream, round_trips: Arc<AtomicU64>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Whether the server has written since the client last did.
    let answered = Arc::new(AtomicBool::new(true));
    let heard = answered.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if answered.swap(false, Ordering::AcqRel) {
                round_trips.fetch_add(1, Ordering::Relaxed);
            }
            if to_server.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            heard.store(true, Ordering::Release);
            if to_client.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down);
}
