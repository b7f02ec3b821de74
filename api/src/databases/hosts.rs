//! The database hosts: PostgreSQL servers the platform administers over an admin connection
//! (`DATABASE_HOSTS`). Every change to a managed database on its host is here, each one
//! idempotent (a pass cut off anywhere is finished by the next), with names that derive from the
//! service id and never from input.

use std::{collections::HashMap, str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::{
    AssertSqlSafe, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::OnceCell;

/// Iterations of SCRAM-SHA-256's key derivation (PostgreSQL's default).
const SCRAM_ITERATIONS: u32 = 4096;

/// What a managed database's role may do: its connection limit and statement timeout.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once.
    pub connections: u32,
    /// The longest statement, in milliseconds.
    pub statement_timeout_ms: u64,
}

/// One PostgreSQL server: where owners connect and how the platform administers it.
pub struct Host {
    /// `host:port`: how rows name it.
    pub key: String,
    /// The host owners connect to.
    pub host: String,
    /// Its port.
    pub port: u16,
    admin: PgConnectOptions,
    admin_user: String,
    admin_password: Option<SecretString>,
    pool: PgPool,
    prepared: OnceCell<bool>,
    tls: OnceCell<bool>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("key", &self.key).finish_non_exhaustive()
    }
}

/// The configured hosts.
#[derive(Debug, Default)]
pub struct Hosts(Vec<Arc<Host>>);

impl Hosts {
    /// The hosts of `DATABASE_HOSTS` (comma-separated admin URLs); none when unset.
    pub fn parse(list: Option<&SecretString>) -> anyhow::Result<Self> {
        let Some(list) = list else { return Ok(Self::default()) };
        let mut hosts = Vec::new();
        for entry in list.expose_secret().split(',').map(str::trim).filter(|e| !e.is_empty()) {
            // The URL holds a password: errors name the entry's position, never its text.
            let n = hosts.len() + 1;
            let url = url::Url::parse(entry)
                .ok()
                .filter(|u| matches!(u.scheme(), "postgres" | "postgresql"))
                .with_context(|| format!("DATABASE_HOSTS entry {n} is not a postgres:// URL"))?;
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .with_context(|| format!("DATABASE_HOSTS entry {n} names no host"))?
                .to_owned();
            let port = url.port().unwrap_or(5432);
            let admin_user = match url.username() {
                "" => "postgres".to_owned(),
                user => percent_encoding::percent_decode_str(user).decode_utf8()?.into_owned(),
            };
            let admin_password = url
                .password()
                .map(|p| percent_encoding::percent_decode_str(p).decode_utf8())
                .transpose()?
                .map(|p| SecretString::from(p.into_owned()));
            let admin = PgConnectOptions::from_str(entry)
                .with_context(|| format!("DATABASE_HOSTS entry {n} is not a PostgreSQL URL"))?
                .database("postgres");
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(admin.clone());
            let key = format!("{host}:{port}");
            anyhow::ensure!(
                hosts.iter().all(|h: &Arc<Host>| h.key != key),
                "DATABASE_HOSTS names {key} twice"
            );
            hosts.push(Arc::new(Host {
                key,
                host,
                port,
                admin,
                admin_user,
                admin_password,
                pool,
                prepared: OnceCell::new(),
                tls: OnceCell::new(),
            }));
        }
        Ok(Self(hosts))
    }

    /// Whether no host is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The host `key` names (`host:port`), if still configured.
    pub fn get(&self, key: &str) -> Option<&Arc<Host>> {
        self.0.iter().find(|h| h.key == key)
    }

    /// Every host.
    pub fn all(&self) -> &[Arc<Host>] {
        &self.0
    }

    /// Where a new database goes: the host with the fewest live databases, then the least data.
    pub async fn place(&self, db: &PgPool, chain_id: i64) -> anyhow::Result<&Arc<Host>> {
        let keys: Vec<String> = self.0.iter().map(|h| h.key.clone()).collect();
        let loads = sqlx::query!(
            r#"select host as "host!", count(*) as "databases!", coalesce(sum(size_bytes), 0)::bigint as "bytes!"
               from managed_databases
               where chain_id = $1 and dropped_at is null and host = any($2)
               group by host"#,
            chain_id,
            &keys
        )
        .fetch_all(db)
        .await?;
        let load = |key: &str| {
            loads.iter().find(|l| l.host == key).map_or((0, 0), |l| (l.databases, l.bytes))
        };
        self.0.iter().min_by_key(|h| load(&h.key)).context("no database host is configured")
    }
}

/// `name` as an SQL identifier. Names are `ds_<digits>`; quoting keeps it safe regardless.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// SCRAM-SHA-256's keys of `password` with `salt`: the client key, the stored key (its hash)
/// and the server key (RFC 5802, section 3).
fn scram_keys(password: &[u8], salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
    let hmac = |label: &[u8]| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&salted).expect("any key length");
        mac.update(label);
        mac.finalize().into_bytes().into()
    };
    let client_key = hmac(b"Client Key");
    (client_key, Sha256::digest(client_key).into(), hmac(b"Server Key"))
}

/// The SCRAM-SHA-256 verifier of `password` (RFC 5802/7677, in PostgreSQL's stored form): what
/// `CREATE ROLE … PASSWORD` takes so that the password itself never reaches the server, its logs
/// or its statistics.
pub fn scram_verifier(password: &SecretString) -> String {
    let salt: [u8; 16] = crate::random::bytes();
    let (_, stored_key, server_key) =
        scram_keys(password.expose_secret().as_bytes(), &salt, SCRAM_ITERATIONS);
    format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key),
        B64.encode(server_key)
    )
}

impl Host {
    /// An admin connection to database `name` (the maintenance database when `None`).
    async fn connect(&self, name: Option<&str>) -> anyhow::Result<PgConnection> {
        let options = match name {
            Some(name) => self.admin.clone().database(name),
            None => self.admin.clone(),
        };
        PgConnection::connect_with(&options)
            .await
            .with_context(|| format!("connect to database host {} as admin", self.key))
    }

    /// Runs `sql` on the maintenance database.
    async fn run(&self, sql: String) -> anyhow::Result<()> {
        self.prepare().await?;
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .with_context(|| format!("on database host {}", self.key))?;
        Ok(())
    }

    /// Once per process: the host's own databases refuse the platform's roles (`CONNECT` is
    /// granted to `PUBLIC` by default), so a database's role reaches its database only.
    async fn prepare(&self) -> anyhow::Result<()> {
        self.prepared
            .get_or_try_init(|| async {
                sqlx::raw_sql(
                    "revoke connect, temporary on database postgres from public;
                     revoke connect, temporary on database template1 from public",
                )
                .execute(&self.pool)
                .await
                .with_context(|| format!("prepare database host {}", self.key))?;
                Ok::<_, anyhow::Error>(true)
            })
            .await?;
        Ok(())
    }

    /// Whether the server takes TLS connections (the URL's `sslmode` follows it).
    pub async fn tls(&self) -> anyhow::Result<bool> {
        let on = self
            .tls
            .get_or_try_init(|| async {
                let ssl: String = sqlx::query_scalar("select current_setting('ssl')")
                    .fetch_one(&self.pool)
                    .await?;
                Ok::<_, anyhow::Error>(ssl == "on")
            })
            .await?;
        Ok(*on)
    }

    /// Makes database `name` and its login role with `password` (its SCRAM verifier), `limits`,
    /// and `CONNECT` granted when `open`. What exists already is left and brought in line.
    pub async fn create(
        &self,
        name: &str,
        password: &SecretString,
        limits: Limits,
        open: bool,
    ) -> anyhow::Result<()> {
        self.prepare().await?;
        let (role, verifier) = (ident(name), literal(&scram_verifier(password)));
        let role_exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_roles where rolname = $1)")
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
        let attributes = format!(
            "login nosuperuser nocreatedb nocreaterole noreplication nobypassrls noinherit \
             connection limit {} password {verifier}",
            limits.connections
        );
        if role_exists {
            self.run(format!("alter role {role} {attributes}")).await?;
        } else {
            self.run(format!("create role {role} {attributes}")).await?;
        }
        self.run(format!(
            "alter role {role} set statement_timeout = {}",
            limits.statement_timeout_ms
        ))
        .await?;
        let database_exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
        if !database_exists {
            // Owned by the admin role: the database's settings (its connection limit, its
            // quota's read-only default) are the platform's, not its user's.
            self.run(format!(
                "create database {role} template template0 encoding 'UTF8' connection limit {}",
                limits.connections
            ))
            .await?;
        }
        self.run(format!(
            "revoke all on database {role} from public;
             grant temporary on database {role} to {role}"
        ))
        .await?;
        // Inside it, the role owns the `public` schema: its tables are its own.
        let mut inside = self.connect(Some(name)).await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "alter schema public owner to {role}; revoke all on schema public from public"
        )))
        .execute(&mut inside)
        .await?;
        inside.close().await.ok();
        self.set_open(name, open).await
    }

    /// Sets the role's password (its SCRAM verifier).
    pub async fn set_password(&self, name: &str, password: &SecretString) -> anyhow::Result<()> {
        self.run(format!(
            "alter role {} password {}",
            ident(name),
            literal(&scram_verifier(password))
        ))
        .await
    }

    /// Lets the role connect (`open`), or refuses it and ends its open sessions. Revoking
    /// `CONNECT` before ending the sessions leaves no window: a session starting after the revoke
    /// is refused, and one that started before is in `pg_stat_activity` and ended. The admin
    /// keeps connecting, so a closed database is still backed up and restored.
    pub async fn set_open(&self, name: &str, open: bool) -> anyhow::Result<()> {
        let role = ident(name);
        if open {
            self.run(format!("grant connect on database {role} to {role}")).await
        } else {
            self.run(format!("revoke connect on database {role} from {role}")).await?;
            self.end_sessions(name).await
        }
    }

    /// Ends every session of database `name` but the admin's own.
    pub async fn end_sessions(&self, name: &str) -> anyhow::Result<()> {
        sqlx::query(
            "select pg_terminate_backend(pid) from pg_stat_activity
             where datname = $1 and pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes new transactions of database `name` read-only by default (`on`), or writable, and
    /// ends its sessions so that the next one starts with the new default.
    pub async fn set_read_only(&self, name: &str, on: bool) -> anyhow::Result<()> {
        let database = ident(name);
        if on {
            self.run(format!("alter database {database} set default_transaction_read_only = on"))
                .await?;
        } else {
            self.run(format!("alter database {database} reset default_transaction_read_only"))
                .await?;
        }
        self.end_sessions(name).await
    }

    /// Drops database `name` (ending its sessions) and its role.
    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        let name = ident(name);
        self.run(format!("drop database if exists {name} with (force)")).await?;
        self.run(format!("drop role if exists {name}")).await
    }

    /// The sizes (`pg_database_size`) of those of `names` that exist.
    pub async fn sizes(&self, names: &[String]) -> anyhow::Result<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select datname::text, pg_database_size(datname) from pg_database
             where datname = any($1)",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("measure databases on {}", self.key))?;
        Ok(rows.into_iter().collect())
    }

    /// The connection URL of database `name` for its owner (the password in it when given).
    pub fn url(&self, name: &str, password: Option<&SecretString>, tls: bool) -> String {
        let secret = password.map_or(String::new(), |p| {
            format!(
                ":{}",
                percent_encoding::utf8_percent_encode(
                    p.expose_secret(),
                    percent_encoding::NON_ALPHANUMERIC
                )
            )
        });
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let sslmode = if tls { "require" } else { "disable" };
        format!("postgres://{name}{secret}@{host}:{}/{name}?sslmode={sslmode}", self.port)
    }

    /// The environment that points `pg_dump`/`pg_restore` at database `name` as the
    /// admin (the password through the environment, never the command line).
    pub fn client_env(&self, name: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("PGHOST".to_owned(), self.host.clone()),
            ("PGPORT".to_owned(), self.port.to_string()),
            ("PGUSER".to_owned(), self.admin_user.clone()),
            ("PGDATABASE".to_owned(), name.to_owned()),
            // A read-only database (past its quota) still takes a restore.
            ("PGOPTIONS".to_owned(), "-c default_transaction_read_only=off".to_owned()),
        ];
        if let Some(password) = &self.admin_password {
            env.push(("PGPASSWORD".to_owned(), password.expose_secret().to_owned()));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_have_postgres_form() {
        let verifier = scram_verifier(&SecretString::from("pencil".to_owned()));
        let (head, keys) =
            verifier.split_once('$').and_then(|(_, rest)| rest.split_once('$')).unwrap();
        let (iterations, salt) = head.split_once(':').unwrap();
        assert_eq!(iterations, "4096");
        assert_eq!(B64.decode(salt).unwrap().len(), 16);
        let (stored, server) = keys.split_once(':').unwrap();
        assert_eq!(B64.decode(stored).unwrap().len(), 32);
        assert_eq!(B64.decode(server).unwrap().len(), 32);
        assert!(verifier.starts_with("SCRAM-SHA-256$"));
    }

    #[test]
    fn keys_match_rfc7677_exchange() {
        // RFC 7677, section 3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (client_key, stored_key, server_key) = scram_keys(b"pencil", &salt, 4096);
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!(
            "n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
        );
        let sign = |key: &[u8]| -> [u8; 32] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
            mac.update(auth.as_bytes());
            mac.finalize().into_bytes().into()
        };
        let signature = sign(&stored_key);
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        assert_eq!(B64.encode(proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(B64.encode(sign(&server_key)), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[tokio::test]
    async fn urls_encode_the_password_and_name_the_tls_mode() {
        let hosts = Hosts::parse(Some(&SecretString::from(
            "postgres://admin:s3cret@db1.example:6432/postgres".to_owned(),
        )))
        .unwrap();
        let host = hosts.get("db1.example:6432").unwrap();
        assert_eq!(
            host.url("ds_7", Some(&SecretString::from("a/b".to_owned())), true),
            "postgres://ds_7:a%2Fb@db1.example:6432/ds_7?sslmode=require"
        );
        assert_eq!(
            host.url("ds_7", None, false),
            "postgres://ds_7@db1.example:6432/ds_7?sslmode=disable"
        );
    }

    #[tokio::test]
    async fn bad_host_lists_are_refused_without_echoing_them() {
        for bad in ["mysql://root:pw@x/db", "not a url", "postgres://a:pw@h/x,postgres://b:pw@h/x"]
        {
            let err = Hosts::parse(Some(&SecretString::from(bad.to_owned()))).unwrap_err();
            assert!(!format!("{err:#}").contains("pw"), "{err:#}");
        }
    }
}
