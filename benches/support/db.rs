//! A fresh database for a bench: on `DATABASE_URL`'s server, or on the
//! benches' own embedded cluster under the target directory (left running
//! and reused by the next bench; scripts/bench does not stop it).

use std::path::PathBuf;

use sqlx::Connection;

/// Creates `<prefix>_<random>` and returns its URL.
pub async fn fresh_database(prefix: &str) -> String {
    let template = match std::env::var("DATABASE_URL") {
        Ok(url) => format!(
            "{}/DBNAME",
            url.rsplit_once('/').expect("DATABASE_URL has a database").0
        ),
        Err(_) => {
            let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench");
            std::fs::create_dir_all(&tmp).unwrap();
            let pg = mosaic::db::EmbeddedPostgres::start(&tmp.join("pg")).expect("private PostgreSQL");
            let url = pg.url("DBNAME");
            std::mem::forget(pg);
            url
        }
    };
    let db = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&template.replace("DBNAME", "postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
    template.replace("DBNAME", &db)
}
