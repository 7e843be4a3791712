//! A test's databases: created on the test server, dropped when the guard goes — at the end
//! of the test, and also when it panics.

use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};

/// A database that lives as long as this value.
pub struct TestDatabase {
    pub url: String,
}

impl TestDatabase {
    /// The order and inventory databases of one test, `<name>_orders` and `<name>_inventory`,
    /// on the test server.
    pub async fn pair(name: &str) -> [Self; 2] {
        let server = crate::pg_server_url();
        [
            Self::create(&server, &format!("{name}_orders")).await,
            Self::create(&server, &format!("{name}_inventory")).await,
        ]
    }

    /// Creates database `name` on `server` (a URL without a database).
    pub async fn create(server: &str, name: &str) -> Self {
        let mut admin = admin(server).await;
        diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.expect("create database");
        Self { url: format!("{server}/{name}") }
    }
}

impl Drop for TestDatabase {
    /// Drops the database on a thread of its own (with its own runtime), so that it works in
    /// any context, a panicking test included. Failing to drop is not the test's failure:
    /// scripts/test sweeps what is left.
    fn drop(&mut self) {
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let name = platform::db::database_name(&url).to_owned();
                let server = url.trim_end_matches(&format!("/{name}")).to_owned();
                let mut admin = admin(&server).await;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map(drop)
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", platform::db::database_name(&self.url));
        }
    }
}

async fn admin(server: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(&format!("{server}/postgres")).await.expect("connection to the test server")
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

/// The number `query` answers in its one row's `count` column (a `bigint`).
pub async fn count(conn: &mut AsyncPgConnection, query: &str) -> i64 {
    diesel::sql_query(query).get_result::<Count>(conn).await.expect("count").count
}
