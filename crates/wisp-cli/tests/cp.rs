//! `wisp cp` against the real wispd (see `common`): files and trees both ways, byte-exact,
//! modes kept, the selected sprite and NAME: forms, copies inside a sprite, and errors.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Daemon;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Deterministic bytes of every value.
fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_files_both_ways() {
    let d = Daemon::start();
    d.create("cp-files").await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("blob.bin");
    let bytes = data(3 << 20, 7);
    fs::write(&src, &bytes).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
    let src_s = src.to_str().unwrap();

    // Up into the home directory of the selected sprite (DEST is a directory).
    let r = d.run(&["cp", "-s", "cp-files", src_s, ":"]).await;
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    let r = d
        .run(&[
            "exec",
            "-s",
            "cp-files",
            "--",
            "sh",
            "-c",
            "stat -c %U:%a /home/sprite/blob.bin; wc -c < /home/sprite/blob.bin",
        ])
        .await;
    assert_eq!(r.stdout, "sprite:750\n3145728\n", "{}", r.stderr);

    // Down again under a new name (NAME:PATH form), byte-exact, mode kept.
    let back = dir.path().join("back.bin");
    let r = d
        .run(&["cp", "cp-files:blob.bin", back.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(fs::read(&back).unwrap() == bytes, "downloaded bytes differ");
    assert_eq!(mode(&back), 0o750);
    // Into an existing local directory; an absolute sprite path.
    let into = dir.path().join("into");
    fs::create_dir(&into).unwrap();
    let r = d
        .run(&["cp", "cp-files:/etc/hostname", into.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = d
        .run(&["exec", "-s", "cp-files", "cat", "/etc/hostname"])
        .await;
    assert_eq!(fs::read_to_string(into.join("hostname")).unwrap(), r.stdout);
    // A new name in the sprite, replacing an existing file; parents are created.
    let small = dir.path().join("small.txt");
    fs::write(&small, "v1").unwrap();
    let small_s = small.to_str().unwrap();
    for _ in 0..2 {
        let r = d
            .run(&["cp", small_s, "cp-files:deep/er/renamed.txt"])
            .await;
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let r = d
        .run(&[
            "exec",
            "-s",
            "cp-files",
            "cat",
            "/home/sprite/deep/er/renamed.txt",
        ])
        .await;
    assert_eq!(r.stdout, "v1");

    // Errors are readable and leave nothing behind.
    let missing = dir.path().join("missing");
    let r = d
        .run(&["cp", "cp-files:nope.txt", missing.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no such file or directory"),
        "{}",
        r.stderr
    );
    assert!(!missing.exists());
    let r = d.run(&["cp", small_s, "cp-files:/etc/passwd"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("permission denied (403)"), "{}", r.stderr);
    let r = d
        .run(&["cp", "--as-root", small_s, "cp-files:/etc/wisp-cp"])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = d.run(&["cp", small_s, dir.path().to_str().unwrap()]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("neither"), "{}", r.stderr);
    let r = d.run(&["cp", small_s, "no-such-sprite:x"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "error: sprite not found (404)\n")
    );
    let r = d
        .run(&["cp", "cp-files:/home/sprite", dir.path().to_str().unwrap()])
        .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("use -r"), "{}", r.stderr);
    let r = d.run(&["cp", small_s, ":x"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no sprite selected"), "{}", r.stderr);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("wisp-part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_recursive_trees() {
    let d = Daemon::start();
    d.create("cp-tree").await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("sub/inner")).unwrap();
    fs::create_dir_all(tree.join("empty/nested-empty")).unwrap();
    fs::write(tree.join("top.txt"), "top").unwrap();
    fs::write(tree.join("with space.txt"), "spaced").unwrap();
    fs::write(tree.join("sub/inner/big.bin"), data(2 << 20, 3)).unwrap();
    fs::write(tree.join("sub/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(tree.join("sub/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("top.txt", tree.join("link")).unwrap();

    // Without -r a directory is refused.
    let r = d
        .run(&["cp", "-s", "cp-tree", tree.to_str().unwrap(), ":"])
        .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("use -r"), "{}", r.stderr);
    // Up: into the existing home directory, as /home/sprite/tree.
    let r = d
        .run(&["cp", "-r", "-s", "cp-tree", tree.to_str().unwrap(), ":"])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("skipped"), "{}", r.stderr);
    let listing = "cd /home/sprite/tree && find . | sort && stat -c %a sub/run.sh && \
                   wc -c < sub/inner/big.bin";
    let r = d
        .run(&["exec", "-s", "cp-tree", "--", "sh", "-c", listing])
        .await;
    assert_eq!(
        r.stdout,
        ".\n./empty\n./empty/nested-empty\n./sub\n./sub/inner\n./sub/inner/big.bin\n\
         ./sub/run.sh\n./top.txt\n./with space.txt\n755\n2097152\n",
        "{}",
        r.stderr
    );

    // Inside the sprite: into an existing directory.
    let r = d
        .run(&["exec", "-s", "cp-tree", "mkdir", "/home/sprite/copies"])
        .await;
    assert_eq!(r.code, 0);
    let r = d.run(&["cp", "-r", "cp-tree:tree", "cp-tree:copies"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Down: to a new local directory, the same tree back.
    let back = dir.path().join("back");
    let r = d
        .run(&["cp", "-r", "cp-tree:copies/tree", back.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fs::read_to_string(back.join("top.txt")).unwrap(), "top");
    assert_eq!(
        fs::read_to_string(back.join("with space.txt")).unwrap(),
        "spaced"
    );
    assert!(fs::read(back.join("sub/inner/big.bin")).unwrap() == data(2 << 20, 3));
    assert_eq!(mode(&back.join("sub/run.sh")), 0o755);
    assert!(back.join("empty/nested-empty").is_dir());
    assert!(!back.join("link").exists());
    // Again into the now existing directory: lands as back/tree.
    let r = d
        .run(&["cp", "-r", "cp-tree:copies/tree", back.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        fs::read_to_string(back.join("tree/top.txt")).unwrap(),
        "top"
    );
}
