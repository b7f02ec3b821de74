//! The one way out of a build: its output folder, walked and checked as an uploaded archive is.
//! Regular files and folders are taken; a link to a file inside the output becomes a copy of that
//! file; a link that leaves the output (or points at nothing, or at a folder), and anything that
//! is not a file, a folder or such a link, fails the deployment naming the path. The file count
//! and total size are bounded as for archives.

use std::path::{Path, PathBuf};

/// The output's files, relative to `output`, each a regular file once this returns. Blocking.
pub(crate) fn collect(
    output: &Path,
    max_files: usize,
    max_bytes: u64,
) -> Result<Vec<(PathBuf, u64)>, String> {
    let root = output
        .canonicalize()
        .map_err(|e| format!("the build left no output folder {}: {e}", output.display()))?;
    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut total = 0u64;
    let mut folders = vec![PathBuf::new()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(root.join(&folder)).map_err(|e| e.to_string())?;
        let mut names: Vec<_> = entries.filter_map(Result::ok).map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let path = folder.join(&name);
            if name.to_str().is_none_or(|n| n.contains('\\')) {
                return Err(format!(
                    "the output's {} has a name that cannot be served",
                    path.display()
                ));
            }
            let meta = std::fs::symlink_metadata(root.join(&path)).map_err(|e| e.to_string())?;
            let kind = meta.file_type();
            if kind.is_dir() {
                folders.push(path);
            } else if kind.is_file() {
                total += meta.len();
                files.push((path, meta.len()));
            } else if kind.is_symlink() {
                links.push(path);
            } else {
                return Err(format!("the output's {} is not a file or a folder", path.display()));
            }
            if files.len() + links.len() > max_files {
                return Err(format!("the output has more than {max_files} files"));
            }
            if total > max_bytes {
                return Err(format!("the output is bigger than {max_bytes} bytes"));
            }
        }
    }
    for link in links {
        let at = root.join(&link);
        // Resolved on the host, where the build's links may point anywhere: only the target's
        // real path, once resolved, decides.
        let target =
            at.canonicalize().ok().filter(|t| t.starts_with(&root) && t.is_file()).ok_or_else(
                || {
                    format!(
                        "the output's link {} points outside the output or at no file",
                        link.display()
                    )
                },
            )?;
        let size = std::fs::metadata(&target).map_err(|e| e.to_string())?.len();
        total += size;
        if total > max_bytes {
            return Err(format!("the output is bigger than {max_bytes} bytes"));
        }
        std::fs::remove_file(&at)
            .and_then(|()| std::fs::copy(&target, &at))
            .map_err(|e| e.to_string())?;
        files.push((link, size));
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn files_come_out_and_inner_links_become_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("dist");
        std::fs::create_dir_all(out.join("assets")).expect("mkdir");
        std::fs::write(out.join("index.html"), "<h1>hi</h1>").expect("write");
        std::fs::write(out.join("assets/app.js"), "1").expect("write");
        symlink("assets/app.js", out.join("app.js")).expect("link");
        let files = collect(&out, 10, 1000).expect("collect");
        let names: Vec<_> =
            files.iter().map(|(p, s)| (p.to_str().expect("utf8").to_owned(), *s)).collect();
        assert_eq!(
            names,
            [("app.js".into(), 1), ("assets/app.js".into(), 1), ("index.html".into(), 11)]
        );
        assert!(
            !std::fs::symlink_metadata(out.join("app.js")).expect("meta").file_type().is_symlink()
        );
    }

    #[test]
    fn links_out_of_the_output_and_oversized_outputs_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("dist");
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(dir.path().join("secret"), "key").expect("write");
        symlink("../secret", out.join("leak")).expect("link");
        let err = collect(&out, 10, 1000).expect_err("outside");
        assert!(err.contains("leak"), "{err}");
        std::fs::remove_file(out.join("leak")).expect("rm");
        symlink("/etc/passwd", out.join("passwd")).expect("link");
        assert!(collect(&out, 10, 1000).is_err());
        std::fs::remove_file(out.join("passwd")).expect("rm");
        std::fs::write(out.join("big"), vec![0u8; 2000]).expect("write");
        assert!(collect(&out, 10, 1000).expect_err("big").contains("bigger"));
        assert!(collect(&dir.path().join("none"), 10, 1000).is_err());
    }
}
