//! `cargo bench -p axle --bench bundle`: offline update bundles against `shared/design/bundles.md`.
//! Prints a table and one JSON line. Needs `bsdiff`, `xdelta3` and `zstd` (Debian packages) to
//! compare with, root, runc and a static busybox for the campaign figure (as `.ci/run` sets up).
//!
//! Figures, per version pair (a Rust binary rebuilt with a small change, a rootfs tar with that
//! binary replaced and three configs edited, a 4 MiB firmware image with scattered edits and a
//! 16 KiB insertion): our delta payload against `bsdiff`, `xdelta3 -9` and
//! `zstd -19 --long --patch-from`, each output checked by applying it; our create and apply time
//! and the apply's peak memory (`axle bundle verify` with the base, which stages the target).
//! Then verify throughput on a 64 MiB bundle and a campaign end to end (apply → Committed).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{axle_bin, random_bytes, Agent, Server};

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Runs a command; returns (seconds, peak RSS in KiB) of that one child.
#[allow(clippy::zombie_processes, reason = "the child is reaped by wait4, which also reports its peak memory")]
fn measured(program: &Path, args: &[&str]) -> (f64, u64) {
    let started = Instant::now();
    let child = Command::new(program).args(args).stdout(std::process::Stdio::null()).spawn().expect("spawns");
    let mut status = 0;
    // SAFETY: rusage is plain data, filled by the kernel for this child only.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child; status and usage are valid out-pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert!(waited == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{program:?} {args:?} failed");
    (started.elapsed().as_secs_f64(), usage.ru_maxrss as u64)
}

/// A small Rust program; `variant` changes one string and one function.
fn rust_binary(dir: &Path, variant: u32) -> PathBuf {
    let source = dir.join(format!("app{variant}.rs"));
    let text = format!(
        r#"use std::collections::BTreeMap;
fn checksum(data: &[u8]) -> u32 {{ data.iter().fold({variant}u32, |a, b| a.rotate_left(5) ^ u32::from(*b)) }}
fn main() {{
    let mut table = BTreeMap::new();
    for (i, arg) in std::env::args().enumerate() {{ table.insert(i, arg); }}
    println!("route planner build {variant}: {{}} args, checksum {{}}", table.len(), checksum(b"maps"));
    let text = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    println!("{{}}", text.trim().to_uppercase());
}}
"#
    );
    std::fs::write(&source, text).expect("write source");
    let binary = dir.join(format!("app{variant}"));
    run("rustc", &["-C", "opt-level=2", "-o", p(&binary), p(&source)]);
    binary
}

fn rootfs_tar(dir: &Path, variant: u32, app: &Path) -> PathBuf {
    let root = dir.join(format!("rootfs{variant}"));
    for sub in ["bin", "usr/bin", "etc"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox (Debian package busybox-static)");
    std::fs::copy(app, root.join("usr/bin/app")).expect("app");
    for (i, name) in ["hostname", "app.conf", "routes.conf"].iter().enumerate() {
        std::fs::write(
            root.join("etc").join(name),
            format!("# {name}\nvalue={}\nlevel={variant}{i}\n", variant * 10 + i as u32),
        )
        .expect("config");
    }
    let tar = dir.join(format!("rootfs{variant}.tar"));
    run("tar", &["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf", p(&tar), "-C", p(&root), "."]);
    tar
}

fn firmware(edited: bool) -> Vec<u8> {
    let mut bytes = random_bytes(11, 4 << 20);
    if edited {
        let mut spots = random_bytes(5, 40).into_iter();
        for k in 0..20usize {
            let at = (k * 200_000 + usize::from(spots.next().unwrap_or(0)) * 97) % (bytes.len() - 64);
            bytes[at..at + 16].copy_from_slice(&[k as u8; 16]);
        }
        bytes.splice(1 << 20..1 << 20, random_bytes(3, 16 << 10));
    }
    bytes
}

struct Pair {
    name: &'static str,
    old: PathBuf,
    new: PathBuf,
}

struct Row {
    pair: &'static str,
    new_len: u64,
    full: u64,
    ours: u64,
    codec: String,
    bsdiff: u64,
    xdelta3: u64,
    zstd: u64,
    create_s: f64,
    apply_s: f64,
    apply_kib: u64,
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The other tools' deltas, each checked by applying it.
fn others(work: &Path, pair: &Pair) -> (u64, u64, u64) {
    let (old, new) = (p(&pair.old), p(&pair.new));
    let out = |tool: &str| work.join(format!("{}.{tool}", pair.name));
    let check = |rebuilt: &Path| {
        assert!(std::fs::read(rebuilt).ok() == std::fs::read(&pair.new).ok(), "{} round trip", rebuilt.display())
    };
    run("bsdiff", &[old, new, p(&out("bsdiff"))]);
    run("bspatch", &[old, p(&out("bsdiff.new")), p(&out("bsdiff"))]);
    check(&out("bsdiff.new"));
    run("xdelta3", &["-e", "-9", "-f", "-s", old, new, p(&out("xdelta3"))]);
    run("xdelta3", &["-d", "-f", "-s", old, p(&out("xdelta3")), p(&out("xdelta3.new"))]);
    check(&out("xdelta3.new"));
    let patch_from = format!("--patch-from={old}");
    run("zstd", &["-q", "-f", "-19", "--long=27", &patch_from, new, "-o", p(&out("zstd"))]);
    run("zstd", &["-q", "-f", "-d", "--long=27", &patch_from, p(&out("zstd")), "-o", p(&out("zstd.new"))]);
    check(&out("zstd.new"));
    (size(&out("bsdiff")), size(&out("xdelta3")), size(&out("zstd")))
}

fn keys(work: &Path) -> (PathBuf, PathBuf) {
    let key = work.join("bench");
    run(p(&axle_bin()), &["bundle", "keygen", p(&key)]);
    let root = work.join("root.json");
    run(p(&axle_bin()), &["bundle", "root", "--sign", p(&key.with_extension("key")), "-o", p(&root)]);
    (key.with_extension("key"), root)
}

fn payload(bundle: &Path, target: &str) -> (u64, String) {
    let out = Command::new(axle_bin()).args(["bundle", "inspect", "-o", "json", p(bundle)]).output().expect("inspect");
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let payload = &metadata["bundle"]["signed"]["payloads"][target];
    (payload["length"].as_u64().unwrap_or(0), payload["codec"].as_str().unwrap_or("").to_string())
}

fn ours(work: &Path, pair: &Pair, key: &Path, root: &Path) -> Row {
    let dirs = |which: &str, file: &Path| {
        let dir = work.join(format!("{}-{which}", pair.name));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::copy(file, dir.join("target")).expect("copy");
        dir
    };
    let (base, source) = (dirs("base", &pair.old), dirs("source", &pair.new));
    let (full_bundle, delta_bundle) =
        (work.join(format!("{}-full.axb", pair.name)), work.join(format!("{}-delta.axb", pair.name)));
    let axle = axle_bin();
    let create = |out: &Path, base: Option<&Path>| {
        let mut args = vec!["bundle", "create", p(&source), "-o", p(out), "--version", "2", "--key", p(key)];
        if let Some(base) = base {
            args.extend(["--base", p(base)]);
        }
        measured(&axle, &args).0
    };
    create(&full_bundle, None);
    let create_s = create(&delta_bundle, Some(&base));
    let (apply_s, apply_kib) = measured(
        &axle,
        &["bundle", "verify", p(&delta_bundle), "--root", p(root), "--installed-version", "1", "--base", p(&base)],
    );
    let (ours, codec) = payload(&delta_bundle, "target");
    let (bsdiff, xdelta3, zstd) = others(work, pair);
    Row {
        pair: pair.name,
        new_len: size(&pair.new),
        full: payload(&full_bundle, "target").0,
        ours,
        codec,
        bsdiff,
        xdelta3,
        zstd,
        create_s,
        apply_s,
        apply_kib,
    }
}

/// `axle bundle verify` of a 64 MiB incompressible target: bundle MB/s.
fn verify_throughput(work: &Path, key: &Path, root: &Path) -> f64 {
    let source = work.join("big");
    std::fs::create_dir_all(&source).expect("mkdir");
    std::fs::write(source.join("blob.bin"), random_bytes(99, 64 << 20)).expect("write");
    let bundle = work.join("big.axb");
    run(p(&axle_bin()), &["bundle", "create", p(&source), "-o", p(&bundle), "--version", "1", "--key", p(key)]);
    let seconds: Vec<f64> =
        (0..3).map(|_| measured(&axle_bin(), &["bundle", "verify", p(&bundle), "--root", p(root)]).0).collect();
    size(&bundle) as f64 / (1 << 20) as f64 / support::median(seconds)
}

/// A bundle of a Deployment (runc) and a 512 KiB file applied to a server and agent:
/// `axle bundle apply` until the campaign committed.
fn campaign_seconds(work: &Path, key: &Path, root: &Path) -> f64 {
    let server = Server::start_with(&["--trust-root", p(root)]);
    let _agent = Agent::start(&server, "hpc-1", 10);
    support::import_sample_image(&server, "axle/sample:1.0");
    support::wait_for("hpc-1", Duration::from_secs(20), || {
        server.kubectl_ok(&["get", "nodes", "--no-headers"]).contains(" Ready ").then_some(())
    });
    let mut samples = Vec::new();
    for version in 1..=3u32 {
        let source = work.join(format!("campaign-{version}"));
        std::fs::create_dir_all(&source).expect("mkdir");
        let deployment = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: nav, namespace: default}}\nspec:\n  replicas: 1\n  \
             selector: {{matchLabels: {{app: nav}}}}\n  template:\n    metadata: {{labels: {{app: nav}}}}\n    spec:\n      \
             nodeName: hpc-1\n      terminationGracePeriodSeconds: 0\n      containers:\n      - name: nav\n        \
             image: axle/sample:1.0\n        command: [\"/bin/sh\", \"-c\", \"echo {version}; exec sleep 1000\"]\n"
        );
        std::fs::write(source.join("nav.yaml"), deployment).expect("write");
        std::fs::write(source.join("maps.bin"), random_bytes(u64::from(version), 512 << 10)).expect("write");
        let bundle = work.join(format!("campaign-{version}.axb"));
        let version_arg = version.to_string();
        run(
            p(&axle_bin()),
            &["bundle", "create", p(&source), "-o", p(&bundle), "--version", &version_arg, "--key", p(key)],
        );
        let kubeconfig = server.kubeconfig.clone();
        samples.push(measured(&axle_bin(), &["bundle", "apply", p(&bundle), "--kubeconfig", p(&kubeconfig)]).0);
    }
    support::median(samples)
}

fn main() {
    let work = tempfile::tempdir().expect("tempdir");
    let work = work.path();
    let (key, root) = keys(work);
    let app1 = rust_binary(work, 1);
    let app2 = rust_binary(work, 2);
    let firmware_old = work.join("firmware-1.bin");
    let firmware_new = work.join("firmware-2.bin");
    std::fs::write(&firmware_old, firmware(false)).expect("write");
    std::fs::write(&firmware_new, firmware(true)).expect("write");
    let pairs = [
        Pair { name: "rust-binary", old: app1.clone(), new: app2.clone() },
        Pair { name: "rootfs-tar", old: rootfs_tar(work, 1, &app1), new: rootfs_tar(work, 2, &app2) },
        Pair { name: "firmware-4mib", old: firmware_old, new: firmware_new },
    ];
    let rows: Vec<Row> = pairs.iter().map(|pair| ours(work, pair, &key, &root)).collect();
    let throughput = verify_throughput(work, &key, &root);
    let campaign = campaign_seconds(work, &key, &root);

    println!("| pair (new size) | full zstd | ours (codec) | bsdiff | xdelta3 -9 | zstd -19 patch-from | ours ≤ best | create | apply | apply peak RSS |");
    println!("|---|--:|--:|--:|--:|--:|:-:|--:|--:|--:|");
    let mut json_rows = Vec::new();
    for r in &rows {
        let best = r.bsdiff.min(r.xdelta3).min(r.zstd);
        println!(
            "| {} ({:.1} MiB) | {} | {} ({}) | {} | {} | {} | {} | {:.2} s | {:.3} s | {:.1} MiB |",
            r.pair,
            r.new_len as f64 / (1 << 20) as f64,
            r.full,
            r.ours,
            r.codec,
            r.bsdiff,
            r.xdelta3,
            r.zstd,
            if r.ours <= best { "yes" } else { "NO" },
            r.create_s,
            r.apply_s,
            r.apply_kib as f64 / 1024.0
        );
        json_rows.push(serde_json::json!({"pair": r.pair, "ours": r.ours, "codec": r.codec, "bsdiff": r.bsdiff, "xdelta3": r.xdelta3,
            "zstd": r.zstd, "full": r.full, "create_s": r.create_s, "apply_s": r.apply_s, "apply_peak_kib": r.apply_kib}));
    }
    println!();
    println!("| figure | value |");
    println!("|---|--:|");
    println!("| verify a 64 MiB bundle (signatures, hashes, decode to staging) | {throughput:.0} MB/s |");
    println!("| campaign end to end: apply (upload, verify, stage, roll out, health, commit) | {campaign:.2} s |");
    println!("{}", serde_json::json!({"pairs": json_rows, "verify_mib_per_s": throughput, "campaign_s": campaign}));
}
