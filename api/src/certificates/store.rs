//! The certificates this replica serves, in memory: the one of each linked domain (loaded from
//! `tls_certificates`, their keys opened here) and the operator's wildcard for the sites domain.
//! The gateway's TLS handshakes pick from it by SNI; a name it holds nothing for gets no
//! certificate (the handshake fails) and never causes an order; a handshake without a name gets
//! the sites wildcard, when there is one.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context;
use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    jobs::{Job, Schedule},
    seal::Sealer,
    wakes::Wake,
};

/// The longest between two loads (an issuance's NOTIFY loads sooner).
const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// A certificate with its key, parsed.
pub type Served = Arc<CertifiedKey>;

/// The certificates this replica serves; cheap to clone.
#[derive(Clone)]
pub struct CertStore {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<CryptoProvider>,
    /// Linked domains' certificates by name (lower case, no trailing dot).
    by_name: RwLock<HashMap<String, Served>>,
    /// The sites domain and its wildcard, when the operator gave one.
    sites: Option<(String, Served)>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.inner.by_name.read().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("CertStore")
            .field("domains", &names)
            .field("sites", &self.inner.sites.as_ref().map(|(d, _)| d))
            .finish()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Served> {
        match hello.server_name() {
            Some(name) => self.get(name),
            // No name (an IP address was dialled, or an old client): the sites wildcard, as a
            // server's default certificate; the `Host` header then picks the site.
            None => self.inner.sites.as_ref().map(|(_, wildcard)| wildcard.clone()),
        }
    }
}

/// The sealing context of `domain`'s private key.
pub(super) fn key_context(domain: &str) -> Vec<u8> {
    [b"tls key\0".as_slice(), domain.as_bytes()].concat()
}

/// A certificate chain and key, both PEM, parsed and checked to belong together.
pub fn certified(
    provider: &CryptoProvider,
    chain_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<Served> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the certificate chain is not PEM")?;
    anyhow::ensure!(!chain.is_empty(), "the certificate chain is empty");
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("the private key is not PEM")?;
    Ok(Arc::new(
        CertifiedKey::from_der(chain, key, provider)
            .context("the key does not match the certificate")?,
    ))
}

impl CertStore {
    /// An empty store, with the sites domain's wildcard from `cert`/`key` files when given.
    pub fn new(
        sites_domain: &str,
        files: Option<(&std::path::Path, &std::path::Path)>,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let sites = match files {
            Some((cert, key)) => {
                let chain = std::fs::read(cert)
                    .with_context(|| format!("SITES_TLS_CERT_FILE {}", cert.display()))?;
                let key = SecretString::from(
                    std::fs::read_to_string(key)
                        .with_context(|| format!("SITES_TLS_KEY_FILE {}", key.display()))?,
                );
                let served = certified(&provider, &chain, key.expose_secret().as_bytes())
                    .context("SITES_TLS_CERT_FILE / SITES_TLS_KEY_FILE")?;
                Some((normal(sites_domain).into_owned(), served))
            }
            None => None,
        };
        Ok(Self { inner: Arc::new(Inner { provider, by_name: RwLock::default(), sites }) })
    }

    /// The certificate for `name` (a TLS server name or a `Host` without its port): the linked
    /// domain's, else the wildcard for one label under the sites domain.
    pub fn get(&self, name: &str) -> Option<Served> {
        let name = normal(name);
        if let Some(found) = self.inner.by_name.read().ok()?.get(name.as_ref()) {
            return Some(found.clone());
        }
        if !self.wildcard_covers(&name) {
            return None;
        }
        self.inner.sites.as_ref().map(|(_, wildcard)| wildcard.clone())
    }

    /// Whether the sites domain's wildcard covers `name` (normal): one label under it.
    fn wildcard_covers(&self, name: &str) -> bool {
        let Some((domain, _)) = self.inner.sites.as_ref() else { return false };
        name.strip_suffix(domain.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.'))
    }

    /// Whether `name` is served over HTTPS (its plain-HTTP requests are redirected): looked up
    /// without copying anything, on every plain request.
    pub fn has(&self, name: &str) -> bool {
        let name = normal(name);
        self.inner.by_name.read().is_ok_and(|names| names.contains_key(name.as_ref()))
            || self.wildcard_covers(&name)
    }

    /// The rustls configuration that serves these certificates (HTTP/2 and HTTP/1.1).
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Loads every stored certificate that has not expired, of a name still linked, replacing
    /// what was held. A row that
    /// does not open or parse is skipped (and logged), never served.
    pub async fn reload(
        &self,
        db: &sqlx::PgPool,
        sealer: &Sealer,
        chain_id: u64,
    ) -> anyhow::Result<usize> {
        // Only names still linked to a site: an unlinked name is neither served over HTTPS nor
        // redirected there.
        let rows = sqlx::query!(
            "select c.domain, c.chain_pem, c.key_sealed from tls_certificates c
             where c.not_after > now()
               and exists (select 1 from domains d
                           where d.chain_id = $1 and d.name = c.domain and d.service_id is not null
                             and (d.expires_at is null or d.expires_at > chain_now($1)))",
            chain_id as i64
        )
        .fetch_all(db)
        .await?;
        let mut loaded = HashMap::with_capacity(rows.len());
        for row in rows {
            let served = sealer
                .open_for(&row.key_sealed, &key_context(&row.domain))
                .map_err(|_| anyhow::anyhow!("the key does not open"))
                .and_then(|key| {
                    certified(
                        &self.inner.provider,
                        row.chain_pem.as_bytes(),
                        key.expose_secret().as_bytes(),
                    )
                });
            match served {
                Ok(served) => {
                    loaded.insert(row.domain, served);
                }
                Err(err) => {
                    tracing::error!(target: "api::certificates", domain = row.domain, %err, "stored certificate not served");
                }
            }
        }
        let count = loaded.len();
        *self.inner.by_name.write().map_err(|_| anyhow::anyhow!("certificate store poisoned"))? =
            loaded;
        metrics::gauge!("tls_certificates_served").set(count as f64);
        Ok(count)
    }

    /// The job that keeps this replica's certificates in line with the table: at start, when
    /// any replica stores one (NOTIFY), and every minute.
    pub fn loader(
        &self,
        db: &sqlx::PgPool,
        sealer: &Sealer,
        wakes: &crate::wakes::Wakes,
        chain_id: u64,
    ) -> Job {
        let (store, db, sealer) = (self.clone(), db.clone(), sealer.clone());
        let woken = wakes.of(Wake::Certificates);
        Job::periodic(
            "tls-certificate-loader",
            move || Schedule::every(RELOAD_EVERY).woken_by_notify(woken.clone()),
            move || {
                let (store, db, sealer) = (store.clone(), db.clone(), sealer.clone());
                async move {
                    store.reload(&db, &sealer, chain_id).await?;
                    Ok(())
                }
            },
        )
    }
}

/// A name as certificates are keyed: lower case, no port, no trailing dot.
pub fn normal(name: &str) -> std::borrow::Cow<'_, str> {
    let name = match name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => name,
    };
    let name = name.trim_end_matches('.');
    // Most hosts come lowercase: borrowed, no allocation per request.
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        (params.self_signed(&key).expect("cert").pem(), key.serialize_pem())
    }

    #[test]
    fn the_wildcard_covers_one_label_under_the_sites_domain_only() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = pair(&["*.sites.test"]);
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert).expect("write");
        std::fs::write(&key_path, key).expect("write");
        let store = CertStore::new("sites.test", Some((&cert_path, &key_path))).expect("store");
        assert!(store.has("blog.sites.test"));
        assert!(store.has("Blog.Sites.Test.:443"));
        assert!(!store.has("sites.test"));
        assert!(!store.has("a.b.sites.test"));
        assert!(!store.has("blog.other.test"));
        assert!(!store.has("evilsites.test"));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let (cert, _) = pair(&["shop.test"]);
        let (_, other_key) = pair(&["shop.test"]);
        let err = certified(&provider, cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
        let (cert, key) = pair(&["shop.test"]);
        assert!(certified(&provider, cert.as_bytes(), key.as_bytes()).is_ok());
    }

    #[test]
    fn names_are_keyed_without_case_port_or_final_dot() {
        assert_eq!(normal("Shop.Example.COM.:8443"), "shop.example.com");
        assert_eq!(normal("shop.example.com"), "shop.example.com");
    }
}
