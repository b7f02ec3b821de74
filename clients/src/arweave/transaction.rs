//! Arweave format-2 transactions: the operator's wallet (an RSA JWK), the deep hash a
//! transaction signs, and the JSON the node takes. The signature is RSA-PSS over SHA-256, as
//! every Arweave node verifies it.

use aws_lc_rs::{rand::SystemRandom, rsa, signature::RSA_PSS_SHA256};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};

/// An Arweave wallet: the key that signs and pays for the platform's uploads.
pub struct Wallet {
    key: rsa::KeyPair,
    /// The public modulus: a transaction's `owner`.
    owner: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("Wallet").field("address", &self.address()).finish_non_exhaustive()
    }
}

/// The fields of an RSA JWK (RFC 7518 §6.3), each base64url.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    n: String,
    e: String,
    d: String,
    p: String,
    q: String,
    dp: String,
    dq: String,
    qi: String,
}

impl Wallet {
    /// A wallet from its JWK, as Arweave wallets are kept.
    pub fn from_jwk(json: &str) -> anyhow::Result<Self> {
        let jwk: Jwk = serde_json::from_str(json)
            .map_err(|e| anyhow::anyhow!("the Arweave wallet is not an RSA JWK: {e}"))?;
        anyhow::ensure!(jwk.kty == "RSA", "the Arweave wallet is a {} key, not RSA", jwk.kty);
        let field = |name: &str, value: &str| {
            B64.decode(value.trim_end_matches('='))
                .map_err(|_| anyhow::anyhow!("the Arweave wallet's `{name}` is not base64url"))
        };
        let owner = field("n", &jwk.n)?;
        let components = rsa::KeyPairComponents {
            public_key: rsa::PublicKeyComponents { n: owner.clone(), e: field("e", &jwk.e)? },
            d: field("d", &jwk.d)?,
            p: field("p", &jwk.p)?,
            q: field("q", &jwk.q)?,
            dP: field("dp", &jwk.dp)?,
            dQ: field("dq", &jwk.dq)?,
            qInv: field("qi", &jwk.qi)?,
        };
        let key = rsa::KeyPair::from_components(&components)
            .map_err(|e| anyhow::anyhow!("the Arweave wallet's key is refused: {e}"))?;
        Ok(Self { key, owner, rng: SystemRandom::new() })
    }

    /// The wallet's address: the SHA-256 of its modulus, base64url.
    pub fn address(&self) -> String {
        B64.encode(Sha256::digest(&self.owner))
    }

    fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PSS_SHA256, &self.rng, message, &mut signature)
            .map_err(|_| anyhow::anyhow!("the Arweave wallet could not sign"))?;
        Ok(signature)
    }
}

/// What a deep hash covers: bytes, or a list of items.
pub enum DeepHashItem<'a> {
    /// Bytes.
    Blob(&'a [u8]),
    /// A list of items.
    List(Vec<DeepHashItem<'a>>),
}

/// Arweave's deep hash (SHA-384): a blob hashes its tag (`blob` and its length) with its bytes;
/// a list folds its items' hashes into the hash of its tag (`list` and its length).
pub fn deep_hash(item: &DeepHashItem<'_>) -> [u8; 48] {
    match item {
        DeepHashItem::Blob(bytes) => {
            let tag = Sha384::digest(format!("blob{}", bytes.len()));
            Sha384::new().chain_update(tag).chain_update(Sha384::digest(bytes)).finalize().into()
        }
        DeepHashItem::List(items) => {
            let mut acc: [u8; 48] = Sha384::digest(format!("list{}", items.len())).into();
            for item in items {
                acc =
                    Sha384::new().chain_update(acc).chain_update(deep_hash(item)).finalize().into();
            }
            acc
        }
    }
}

/// A transaction tag (name and value, base64url in the JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Tag {
    /// The name, base64url.
    pub name: String,
    /// The value, base64url.
    pub value: String,
}

/// A signed format-2 transaction as the node's `POST /tx` takes it.
#[derive(Debug, Clone, Serialize)]
pub struct Transaction {
    /// 2.
    pub format: u8,
    /// The SHA-256 of the signature, base64url: the transaction id.
    pub id: String,
    /// The anchor it was made against.
    pub last_tx: String,
    /// The signer's public modulus, base64url.
    pub owner: String,
    /// Its tags.
    pub tags: Vec<Tag>,
    /// No recipient: empty.
    pub target: String,
    /// No transfer: "0".
    pub quantity: String,
    /// The data inline (base64url), or empty when it is uploaded as chunks.
    pub data: String,
    /// The data's size in bytes, decimal.
    pub data_size: String,
    /// The root of the data's chunk tree, base64url.
    pub data_root: String,
    /// The fee in winston, decimal.
    pub reward: String,
    /// The RSA-PSS signature, base64url.
    pub signature: String,
}

/// What a data transaction says before it is signed.
pub struct Unsigned<'a> {
    /// The anchor (`/tx_anchor`), base64url.
    pub anchor: &'a str,
    /// The fee in winston.
    pub reward: &'a str,
    /// Tags, in clear.
    pub tags: &'a [(&'a str, &'a str)],
    /// The data's size in bytes.
    pub data_size: u64,
    /// The root of the data's chunk tree.
    pub data_root: [u8; 32],
    /// The data inline, if it goes in the body.
    pub data: Option<&'a [u8]>,
}

impl Unsigned<'_> {
    /// Signs it with `wallet`: the signature covers the deep hash of the format, owner, target,
    /// quantity, reward, anchor, tags, data size and data root.
    pub fn sign(&self, wallet: &Wallet) -> anyhow::Result<Transaction> {
        let anchor = B64
            .decode(self.anchor.trim())
            .map_err(|_| anyhow::anyhow!("the node's anchor is not base64url"))?;
        let size = self.data_size.to_string();
        let tags: Vec<DeepHashItem<'_>> = self
            .tags
            .iter()
            .map(|(name, value)| {
                DeepHashItem::List(vec![
                    DeepHashItem::Blob(name.as_bytes()),
                    DeepHashItem::Blob(value.as_bytes()),
                ])
            })
            .collect();
        let message = deep_hash(&DeepHashItem::List(vec![
            DeepHashItem::Blob(b"2"),
            DeepHashItem::Blob(&wallet.owner),
            DeepHashItem::Blob(b""),
            DeepHashItem::Blob(b"0"),
            DeepHashItem::Blob(self.reward.as_bytes()),
            DeepHashItem::Blob(&anchor),
            DeepHashItem::List(tags),
            DeepHashItem::Blob(size.as_bytes()),
            DeepHashItem::Blob(&self.data_root),
        ]));
        let signature = wallet.sign(&message)?;
        Ok(Transaction {
            format: 2,
            id: B64.encode(Sha256::digest(&signature)),
            last_tx: self.anchor.trim().to_owned(),
            owner: B64.encode(&wallet.owner),
            tags: self
                .tags
                .iter()
                .map(|(name, value)| Tag { name: B64.encode(name), value: B64.encode(value) })
                .collect(),
            target: String::new(),
            quantity: "0".into(),
            data: self.data.map(|d| B64.encode(d)).unwrap_or_default(),
            data_size: size,
            data_root: B64.encode(self.data_root),
            reward: self.reward.to_owned(),
            signature: B64.encode(signature),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_hash_tags_blobs_and_lists() {
        let blob = deep_hash(&DeepHashItem::Blob(b"abc"));
        let expected: [u8; 48] = Sha384::new()
            .chain_update(Sha384::digest(b"blob3"))
            .chain_update(Sha384::digest(b"abc"))
            .finalize()
            .into();
        assert_eq!(blob, expected);
        let list = deep_hash(&DeepHashItem::List(vec![DeepHashItem::Blob(b"abc")]));
        let expected: [u8; 48] = Sha384::new()
            .chain_update(Sha384::digest(b"list1"))
            .chain_update(blob)
            .finalize()
            .into();
        assert_eq!(list, expected);
        assert_ne!(deep_hash(&DeepHashItem::List(vec![])), deep_hash(&DeepHashItem::Blob(b"")));
    }

    #[test]
    fn a_wallet_that_is_not_an_rsa_jwk_is_refused() {
        assert!(Wallet::from_jwk("{}").is_err());
        let ec = r#"{"kty":"EC","n":"","e":"","d":"","p":"","q":"","dp":"","dq":"","qi":""}"#;
        let err = Wallet::from_jwk(ec).unwrap_err().to_string();
        assert!(err.contains("EC key, not RSA"), "{err}");
    }
}
