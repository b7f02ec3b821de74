//! Pre-compressed copies of a deployment's text files, made once at deploy so the gateway never
//! compresses per request: brotli (quality 11) and gzip (level 9) of every compressible file from
//! 1 KiB to 8 MiB, kept when they save at least a twentieth, added to IPFS as a directory of their
//! own (the site's directory and CID stay exactly the output) and recorded by file and encoding.
//! A deployment whose copies cannot be made is served uncompressed: they are an optimisation, not
//! part of the site.

use std::{
    io::{Read, Write},
    path::Path,
};

use crate::hosting::HostingState;

/// Files smaller than this gain too little.
const MIN_BYTES: u64 = 1024;
/// Files larger than this are left as they are (compressing them would hold a deploy up).
const MAX_BYTES: u64 = 8 * 1024 * 1024;

/// One compressed copy: the site file it is of, its encoding, and its path among the copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Copy {
    pub path: String,
    pub encoding: &'static str,
    pub file: String,
    pub size: u64,
}

/// Whether a file of this name is worth compressing (text, scripts, data, vector images, wasm).
fn compressible(path: &str) -> bool {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let essence = mime.essence_str();
    mime.type_() == mime_guess::mime::TEXT
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "application/manifest+json"
                | "image/svg+xml"
                | "application/rss+xml"
                | "application/atom+xml"
        )
        || path.ends_with(".mjs")
        || path.ends_with(".map")
}

/// Writes the brotli and gzip copies of `root`'s compressible `files` under `out` (as
/// `<path>.br` and `<path>.gz`), and answers them.
pub(super) fn make(root: &Path, files: &[(String, u64)], out: &Path) -> std::io::Result<Vec<Copy>> {
    let mut copies = Vec::new();
    for (path, size) in files {
        if !(MIN_BYTES..=MAX_BYTES).contains(size) || !compressible(path) {
            continue;
        }
        let mut data = Vec::with_capacity(*size as usize);
        std::fs::File::open(root.join(path))?.read_to_end(&mut data)?;
        let worth = |compressed: &[u8]| (compressed.len() as u64) * 20 < (data.len() as u64) * 19;
        let mut brotli = Vec::new();
        {
            let params =
                brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 22, ..Default::default() };
            brotli::BrotliCompress(&mut data.as_slice(), &mut brotli, &params)?;
        }
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&data)?;
        let gzip = gzip.finish()?;
        for (encoding, suffix, bytes) in [("br", "br", brotli), ("gzip", "gz", gzip)] {
            if !worth(&bytes) {
                continue;
            }
            let file = format!("{path}.{suffix}");
            let target = out.join(&file);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, &bytes)?;
            copies.push(Copy { path: path.clone(), encoding, file, size: bytes.len() as u64 });
        }
    }
    Ok(copies)
}

/// Makes, stores and records deployment `id`'s compressed copies of the files under `root`;
/// answers a line for its log.
pub(super) async fn store(
    state: &HostingState,
    id: i64,
    root: &Path,
    files: &[(String, u64)],
) -> anyhow::Result<String> {
    let Some(ipfs) = &state.ipfs else { anyhow::bail!("no IPFS node") };
    let out = tempfile::Builder::new().prefix("ds-compressed-").tempdir()?;
    let copies = tokio::task::spawn_blocking({
        let (root, files, out) = (root.to_owned(), files.to_vec(), out.path().to_owned());
        move || make(&root, &files, &out)
    })
    .await??;
    sqlx::query!("delete from deployment_file_encodings where deployment_id = $1", id)
        .execute(&state.db)
        .await?;
    if copies.is_empty() {
        return Ok("no file worth compressing".into());
    }
    let listed: Vec<(String, u64)> = copies.iter().map(|c| (c.file.clone(), c.size)).collect();
    let added = ipfs.add_directory(out.path(), &listed).await?;
    let mut rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for copy in &copies {
        let cid = added
            .files
            .get(&copy.file)
            .ok_or_else(|| anyhow::anyhow!("the node's reply lacks {}", copy.file))?;
        rows.0.push(copy.path.clone());
        rows.1.push(copy.encoding.to_owned());
        rows.2.push(cid.clone());
        rows.3.push(copy.size as i64);
    }
    sqlx::query!(
        "insert into deployment_file_encodings (deployment_id, path, encoding, cid, size_bytes)
         select $1, * from unnest($2::text[], $3::text[], $4::text[], $5::bigint[])",
        id,
        &rows.0,
        &rows.1,
        &rows.2,
        &rows.3
    )
    .execute(&state.db)
    .await?;
    let files = copies.iter().map(|c| c.path.as_str()).collect::<std::collections::BTreeSet<_>>();
    Ok(format!("files compressed once (brotli and gzip): {}", files.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_files_get_both_copies_and_the_rest_none() {
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let script = "function hello() { return 'hello world'; }\n".repeat(200);
        let mut random = vec![0u8; 4096];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
        std::fs::create_dir_all(root.path().join("js")).unwrap();
        std::fs::write(root.path().join("js/app.js"), &script).unwrap();
        std::fs::write(root.path().join("tiny.css"), "a{}").unwrap();
        std::fs::write(root.path().join("photo.png"), &random).unwrap();
        std::fs::write(root.path().join("noise.txt"), &random).unwrap();
        let files = vec![
            ("js/app.js".to_owned(), script.len() as u64),
            ("tiny.css".to_owned(), 3),
            ("photo.png".to_owned(), random.len() as u64),
            ("noise.txt".to_owned(), random.len() as u64),
        ];
        let copies = make(root.path(), &files, out.path()).unwrap();
        let made: Vec<(&str, &str)> =
            copies.iter().map(|c| (c.path.as_str(), c.encoding)).collect();
        assert_eq!(made, [("js/app.js", "br"), ("js/app.js", "gzip")]);
        // Each copy decodes to the file.
        let mut unbrotli = Vec::new();
        brotli::BrotliDecompress(
            &mut std::fs::File::open(out.path().join("js/app.js.br")).unwrap(),
            &mut unbrotli,
        )
        .unwrap();
        assert_eq!(unbrotli, script.as_bytes());
        let mut ungzip = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(out.path().join("js/app.js.gz")).unwrap())
            .read_to_string(&mut ungzip)
            .unwrap();
        assert_eq!(ungzip, script);
        assert!(copies.iter().all(|c| c.size * 20 < script.len() as u64 * 19));
    }
}
