//! Site archives made in tests: a tar.gz with every file under one top folder, as GitHub's
//! tarballs are.

use std::io::Write;

/// A tar.gz holding `files` (name, bytes) under `top/`.
pub fn site_tar_gz(top: &str, files: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("{top}/{name}"), *data)?;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&builder.into_inner()?)?;
    Ok(gz.finish()?)
}
