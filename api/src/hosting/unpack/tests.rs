use std::io::Write;

use super::*;

const LIMITS: Limits = Limits { max_files: 100, max_bytes: 1 << 20 };

/// One tar entry as a hostile archive may hold it: the name is written into the header as is
/// (the tar crate's builder would refuse `..`).
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

fn tar_gz(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (name, kind, data, link): (&str, _, &[u8], Option<&str>) = match entry {
            Entry::File(name, data) => (name, tar::EntryType::Regular, data, None),
            Entry::Dir(name) => (name, tar::EntryType::Directory, b"", None),
            Entry::Symlink(name, to) => (name, tar::EntryType::Symlink, b"", Some(to)),
            Entry::HardLink(name, to) => (name, tar::EntryType::Link, b"", Some(to)),
        };
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(to) = link {
            header.as_old_mut().linkname[..to.len()].copy_from_slice(to.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    let tar = builder.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// A work area: `root/archive`, and `root/work` to unpack into (so `root` shows any escape).
struct Area {
    root: tempfile::TempDir,
}

impl Area {
    fn new(archive: &[u8]) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("archive"), archive).expect("write archive");
        fs::create_dir(root.path().join("work")).expect("work dir");
        Self { root }
    }

    fn unpack(&self, limits: Limits) -> Result<Unpacked, UnpackError> {
        unpack(&self.root.path().join("archive"), &self.root.path().join("work"), limits)
    }

    fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    /// Every path under the area's root except the archive and the work directory's content.
    fn outside(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.path())
            .expect("read root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "archive" && n != "work")
            .collect();
        names.sort();
        names
    }
}

#[test]
fn a_tarball_unpacks_with_its_folders() {
    let area = Area::new(&tar_gz(&[
        Entry::Dir("repo-abc/"),
        Entry::File("repo-abc/index.html", b"<h1>hi</h1>"),
        Entry::File("./repo-abc/css/app.css", b"body{}"),
    ]));
    let unpacked = area.unpack(LIMITS).expect("unpack");
    assert_eq!(
        unpacked.files,
        [PathBuf::from("repo-abc/index.html"), PathBuf::from("repo-abc/css/app.css")]
    );
    assert_eq!(unpacked.bytes, 17);
    assert_eq!(fs::read(area.work().join("repo-abc/css/app.css")).expect("read"), b"body{}");
}

#[test]
fn parent_and_absolute_paths_are_refused_and_nothing_lands_outside() {
    for name in ["../escaped", "site/../../escaped", "/tmp/escaped-absolute"] {
        let area = Area::new(&tar_gz(&[
            Entry::File("site/index.html", b"ok"),
            Entry::File(name, b"pwned"),
        ]));
        let err = area.unpack(LIMITS).expect_err(name);
        assert!(matches!(err, UnpackError::Unsafe(_)), "{name}: {err}");
        assert!(area.outside().is_empty(), "{name} wrote {:?}", area.outside());
    }
    assert!(!Path::new("/tmp/escaped-absolute").exists());
}

#[test]
fn backslashes_are_refused_since_they_climb_elsewhere() {
    for name in ["..\\..\\etc\\passwd", "site\\..\\..\\x", "\\etc\\passwd"] {
        let area = Area::new(&tar_gz(&[Entry::File(name, b"pwned")]));
        let err = area.unpack(LIMITS).expect_err(name);
        assert!(matches!(err, UnpackError::Unsafe(_)), "{name}: {err}");
        let area = Area::new(&zip(&[(name, b"pwned")], &[]));
        assert!(matches!(area.unpack(LIMITS), Err(UnpackError::Unsafe(_))), "zip {name}");
    }
}

#[test]
fn folders_count_toward_the_entry_limit() {
    let names: Vec<String> = (0..5).map(|i| format!("d{i}/")).collect();
    let entries: Vec<Entry<'_>> = names.iter().map(|n| Entry::Dir(n)).collect();
    let area = Area::new(&tar_gz(&entries));
    let err = area.unpack(Limits { max_files: 4, max_bytes: 1 << 20 }).expect_err("folders");
    assert!(matches!(err, UnpackError::TooLarge(_)), "{err}");
}

#[test]
fn links_that_escape_the_tree_are_refused() {
    for entry in [
        Entry::Symlink("site/passwd", "../../etc/passwd"),
        Entry::Symlink("site/abs", "/etc/passwd"),
        Entry::HardLink("site/hard", "../outside"),
        Entry::HardLink("site/hard-abs", "/etc/passwd"),
    ] {
        let area = Area::new(&tar_gz(&[Entry::File("site/index.html", b"ok"), entry]));
        let err = area.unpack(LIMITS).expect_err("escaping link");
        assert!(matches!(err, UnpackError::Unsafe(_)), "{err}");
        assert!(area.outside().is_empty());
    }
}

#[test]
fn a_link_then_a_file_through_it_cannot_write_outside() {
    // The classic two-step: a link to the outside, then a file "inside" the link.
    let area = Area::new(&tar_gz(&[
        Entry::Symlink("site/out", ".."),
        Entry::File("site/out/escaped", b"pwned"),
    ]));
    // `site/out` → `..` stays in the tree (it names the root), so it is taken as a link, and
    // never created on disk: the file lands in a real folder `site/out` inside the tree.
    let unpacked = area.unpack(LIMITS).expect("unpack");
    assert!(area.outside().is_empty());
    assert!(fs::symlink_metadata(area.work().join("site/out")).expect("out").is_dir());
    assert!(unpacked.files.contains(&PathBuf::from("site/out/escaped")));
    assert!(unpacked.skipped.iter().any(|s| s.starts_with("site/out")), "{:?}", unpacked.skipped);
}

#[test]
fn links_inside_the_tree_become_copies() {
    let area = Area::new(&tar_gz(&[
        Entry::File("site/index.html", b"<p>home</p>"),
        Entry::Symlink("site/404.html", "index.html"),
        Entry::HardLink("site/copy.html", "site/index.html"),
        Entry::Symlink("site/chain.html", "404.html"),
    ]));
    let unpacked = area.unpack(LIMITS).expect("unpack");
    for name in ["site/404.html", "site/copy.html", "site/chain.html"] {
        let meta = fs::symlink_metadata(area.work().join(name)).expect(name);
        assert!(meta.is_file(), "{name} is a plain file, not a link");
        assert_eq!(fs::read(area.work().join(name)).expect(name), b"<p>home</p>");
    }
    assert_eq!(unpacked.files.len(), 4);
    assert_eq!(unpacked.bytes, 4 * 11);
}

#[test]
fn file_count_and_size_are_bounded() {
    let many: Vec<String> = (0..5).map(|i| format!("site/{i}.txt")).collect();
    let entries: Vec<Entry<'_>> = many.iter().map(|n| Entry::File(n, b"x")).collect();
    let area = Area::new(&tar_gz(&entries));
    let err = area.unpack(Limits { max_files: 4, max_bytes: 1 << 20 }).expect_err("count");
    assert!(matches!(err, UnpackError::TooLarge(_)), "{err}");

    let big = vec![b'a'; 2048];
    let area = Area::new(&tar_gz(&[Entry::File("site/big.bin", &big)]));
    let err = area.unpack(Limits { max_files: 10, max_bytes: 2047 }).expect_err("bytes");
    assert!(matches!(err, UnpackError::TooLarge(_)), "{err}");
    let area = Area::new(&tar_gz(&[Entry::File("site/big.bin", &big)]));
    let unpacked = area.unpack(Limits { max_files: 10, max_bytes: 2048 }).expect("at the limit");
    assert_eq!(unpacked.bytes, 2048);
}

#[test]
fn a_file_named_twice_is_refused() {
    let area = Area::new(&tar_gz(&[Entry::File("a.txt", b"1"), Entry::File("./a.txt", b"2")]));
    assert!(matches!(area.unpack(LIMITS), Err(UnpackError::Invalid(_))));
}

fn zip(entries: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        zip.start_file(*name, options).expect("start");
        zip.write_all(data).expect("write");
    }
    for (name, target) in symlinks {
        zip.add_symlink(*name, *target, options).expect("symlink");
    }
    zip.finish().expect("finish").into_inner()
}

#[test]
fn zips_unpack_and_their_escapes_are_refused() {
    let area = Area::new(&zip(&[("index.html", b"<p>zip</p>"), ("js/app.js", b"1")], &[]));
    let unpacked = area.unpack(LIMITS).expect("unpack");
    assert_eq!(unpacked.files.len(), 2);
    assert_eq!(fs::read(area.work().join("index.html")).expect("read"), b"<p>zip</p>");

    let area = Area::new(&zip(&[("index.html", b"ok"), ("../escaped", b"pwned")], &[]));
    assert!(matches!(area.unpack(LIMITS), Err(UnpackError::Unsafe(_))));
    assert!(area.outside().is_empty());

    let area = Area::new(&zip(&[("index.html", b"ok")], &[("evil", "../../etc/passwd")]));
    assert!(matches!(area.unpack(LIMITS), Err(UnpackError::Unsafe(_))));
}

#[test]
fn other_bytes_are_not_an_archive() {
    let area = Area::new(b"<html>not an archive</html>");
    assert!(matches!(area.unpack(LIMITS), Err(UnpackError::Invalid(_))));
    let area = Area::new(&[0x1f, 0x8b, 0, 0]);
    assert!(matches!(area.unpack(LIMITS), Err(UnpackError::Invalid(_))));
}
