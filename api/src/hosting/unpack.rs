//! Unpacking a site's source archive (tar.gz from GitHub or an upload, or zip) into a work
//! directory, refusing anything that could write outside it.
//!
//! Every entry's path is checked component by component: absolute paths, `..` and drive prefixes
//! are refused, and so is any link whose target leaves the tree. Links are never created on disk:
//! one that stays inside the tree becomes a copy of the file it names once everything is unpacked,
//! so nothing written later can follow a link out. Files are created with `create_new`, and the
//! sizes and the file count are bounded while the bytes are read, not from the archive's headers.

use std::{
    fs::{self, File},
    io::{self, Read},
    path::{Component, Path, PathBuf},
};

/// The bounds of one archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries (files, links and folders) at most.
    pub max_files: usize,
    /// Bytes of all files together, unpacked.
    pub max_bytes: u64,
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// It tries to write outside the tree (a path or a link that escapes).
    #[error("unsafe archive: {0}")]
    Unsafe(String),
    /// It holds more than the limits allow.
    #[error("archive too large: {0}")]
    TooLarge(String),
    /// It is not a tar.gz or zip archive, or it is damaged.
    #[error("unreadable archive: {0}")]
    Invalid(String),
    /// The work directory could not be written.
    #[error("cannot unpack: {0}")]
    Io(#[from] io::Error),
}

/// The archive formats taken, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// gzip-compressed tar (GitHub's tarballs).
    TarGz,
    /// zip.
    Zip,
}

impl Format {
    /// The format of an archive starting with `magic`, if taken.
    pub fn detect(magic: &[u8]) -> Option<Self> {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Some(Self::TarGz)
        } else if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
            Some(Self::Zip)
        } else {
            None
        }
    }
}

/// What was unpacked.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// The files written, relative to the work directory, in archive order.
    pub files: Vec<PathBuf>,
    /// Their bytes together.
    pub bytes: u64,
    /// Entries passed over (devices, pipes, links to nothing), for the deploy log.
    pub skipped: Vec<String>,
}

/// Unpacks the archive at `archive` into `dest` (an empty directory). Blocking: run it on a
/// blocking thread.
pub fn unpack(archive: &Path, dest: &Path, limits: Limits) -> Result<Unpacked, UnpackError> {
    let mut magic = [0u8; 4];
    let read = File::open(archive)?.read(&mut magic)?;
    let format = Format::detect(&magic[..read])
        .ok_or_else(|| UnpackError::Invalid("not a tar.gz or zip archive".into()))?;
    let mut out =
        Writer { dest, limits, unpacked: Unpacked::default(), links: Vec::new(), dirs: 0 };
    match format {
        Format::TarGz => unpack_tar(archive, &mut out)?,
        Format::Zip => unpack_zip(archive, &mut out)?,
    }
    out.resolve_links()?;
    Ok(out.unpacked)
}

/// The entry path as a path inside the tree, or why it is refused. `.` components are dropped.
pub fn inside_path(raw: &Path) -> Result<PathBuf, UnpackError> {
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => {
                // A backslash is a separator elsewhere (zips made on Windows, and whoever reads
                // the path later): a name holding one could climb out there.
                let part = part.to_str().ok_or_else(|| {
                    UnpackError::Unsafe(format!("{} is not UTF-8", raw.display()))
                })?;
                if part.contains('\\') {
                    return Err(UnpackError::Unsafe(format!(
                        "{} holds a backslash",
                        raw.display()
                    )));
                }
                clean.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Unsafe(format!("{} goes up with `..`", raw.display())));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Unsafe(format!("{} is absolute", raw.display())));
            }
        }
    }
    Ok(clean)
}

/// Where a link at `link` (inside the tree) pointing to `target` lands, if inside the tree.
fn link_target(link: &Path, target: &Path, relative_to_link: bool) -> Result<PathBuf, UnpackError> {
    let escape = || {
        UnpackError::Unsafe(format!(
            "link {} points outside the tree ({})",
            link.display(),
            target.display()
        ))
    };
    let mut resolved: Vec<&std::ffi::OsStr> = Vec::new();
    if relative_to_link {
        resolved.extend(link.parent().into_iter().flat_map(Path::iter));
    }
    for component in target.components() {
        match component {
            Component::Normal(part) => resolved.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                resolved.pop().ok_or_else(escape)?;
            }
            Component::RootDir | Component::Prefix(_) => return Err(escape()),
        }
    }
    Ok(resolved.iter().collect())
}

/// Writes entries into the tree within the limits.
struct Writer<'a> {
    dest: &'a Path,
    limits: Limits,
    unpacked: Unpacked,
    /// Links to materialise at the end: (where, what it names).
    links: Vec<(PathBuf, PathBuf)>,
    /// Folder entries seen.
    dirs: usize,
}

impl Writer<'_> {
    fn count(&self) -> Result<(), UnpackError> {
        if self.unpacked.files.len() + self.links.len() + self.dirs >= self.limits.max_files {
            return Err(UnpackError::TooLarge(format!(
                "more than {} files",
                self.limits.max_files
            )));
        }
        Ok(())
    }

    fn dir(&mut self, path: &Path) -> Result<(), UnpackError> {
        // Folders count too: an archive of nothing but folders could use up the disk's inodes.
        self.count()?;
        self.dirs += 1;
        fs::create_dir_all(self.dest.join(path))?;
        Ok(())
    }

    fn file(&mut self, path: PathBuf, content: &mut dyn Read) -> Result<(), UnpackError> {
        self.count()?;
        if path.as_os_str().is_empty() {
            return Err(UnpackError::Invalid("a file entry without a name".into()));
        }
        let full = self.dest.join(&path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut file =
            fs::OpenOptions::new().write(true).create_new(true).open(&full).map_err(|e| match e
                .kind()
            {
                io::ErrorKind::AlreadyExists => {
                    UnpackError::Invalid(format!("{} appears twice", path.display()))
                }
                _ => UnpackError::Io(e),
            })?;
        let left = self.limits.max_bytes - self.unpacked.bytes;
        let written = io::copy(&mut content.take(left + 1), &mut file)?;
        if written > left {
            return Err(UnpackError::TooLarge(format!(
                "more than {} bytes unpacked",
                self.limits.max_bytes
            )));
        }
        self.unpacked.bytes += written;
        self.unpacked.files.push(path);
        Ok(())
    }

    fn link(&mut self, path: PathBuf, target: PathBuf) -> Result<(), UnpackError> {
        self.count()?;
        self.links.push((path, target));
        Ok(())
    }

    /// Copies each in-tree link's file to the link's place (a link to a link follows it, up to
    /// a depth that stops loops).
    fn resolve_links(&mut self) -> Result<(), UnpackError> {
        let links = std::mem::take(&mut self.links);
        let find = |start: &Path| -> Option<PathBuf> {
            let mut at = start.to_path_buf();
            for _ in 0..8 {
                match links.iter().find(|(link, _)| *link == at) {
                    Some((_, next)) => at = next.clone(),
                    None => return Some(at),
                }
            }
            None
        };
        for (link, target) in &links {
            let source = find(target).map(|t| self.dest.join(t));
            match source {
                Some(source) if fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) => {
                    self.file(link.clone(), &mut File::open(&source)?)?;
                }
                _ => self.unpacked.skipped.push(format!(
                    "{}: a link to {}, which is not a file in the archive",
                    link.display(),
                    target.display()
                )),
            }
        }
        Ok(())
    }
}

fn unpack_tar(archive: &Path, out: &mut Writer<'_>) -> Result<(), UnpackError> {
    let invalid = |e: io::Error| UnpackError::Invalid(e.to_string());
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(File::open(archive)?));
    for entry in tar.entries().map_err(invalid)? {
        let mut entry = entry.map_err(invalid)?;
        let raw = entry.path().map_err(invalid)?.into_owned();
        let path = inside_path(&raw)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => out.file(path, &mut entry)?,
            tar::EntryType::Directory => out.dir(&path)?,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(invalid)?
                    .ok_or_else(|| {
                        UnpackError::Invalid(format!("{} links nowhere", raw.display()))
                    })?
                    .into_owned();
                // A symbolic link is relative to its own folder; a hard link names a path of the
                // archive.
                let target = link_target(&path, &target, kind == tar::EntryType::Symlink)?;
                out.link(path, target)?;
            }
            // Extended headers are read by the tar crate itself; the rest is not site content.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => out.unpacked.skipped.push(format!("{}: {other:?} entry", raw.display())),
        }
    }
    Ok(())
}

fn unpack_zip(archive: &Path, out: &mut Writer<'_>) -> Result<(), UnpackError> {
    let invalid = |e: zip::result::ZipError| UnpackError::Invalid(e.to_string());
    let mut zip = zip::ZipArchive::new(File::open(archive)?).map_err(invalid)?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(invalid)?;
        let raw = PathBuf::from(entry.name().map_err(invalid)?.into_owned());
        // The name as stored, checked by the same rules as tar paths (`enclosed_name` would
        // quietly accept some that climb back in).
        let path = inside_path(&raw)?;
        if entry.is_dir() {
            out.dir(&path)?;
        } else if entry.is_symlink() {
            let mut target = String::new();
            (&mut entry).take(4096).read_to_string(&mut target)?;
            let target = link_target(&path, Path::new(&target), true)?;
            out.link(path, target)?;
        } else {
            out.file(path, &mut entry)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
