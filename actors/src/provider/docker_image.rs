//! The worker image, built without a registry: `FROM scratch` holding the `hodei` binary, the
//! shared libraries it loads, and a static busybox for `/bin/sh` and the coreutils jobs expect.
//! The build context is a tar made here and sent to the engine's build API (bollard); nothing is
//! pulled and no `docker` CLI is needed.
//!
//! The tag is derived from the content (`hodei-worker:<sha256 prefix>`), so a changed binary
//! gets a new image and an unchanged one is never rebuilt.

use std::io::Read;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::docker_engine::{AGENT_PATH, DockerError, WORK_DIR, engine_message};

/// Image repository of the default worker image.
pub const IMAGE_REPOSITORY: &str = "hodei-worker";
/// Label on every worker image Hodei builds (`hodei.io/image=worker`).
pub const IMAGE_LABEL: &str = "hodei.io/image";
/// Where a static busybox is looked for (Debian's `busybox-static` installs `/bin/busybox`).
pub const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox"];
/// Applets linked in `/bin` (what jobs and the agent's shell commands use).
pub const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "cat",
    "echo",
    "ls",
    "sleep",
    "true",
    "false",
    "env",
    "printf",
    "test",
    "[",
    "head",
    "tail",
    "dd",
    "yes",
    "seq",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "touch",
    "grep",
    "sed",
    "awk",
    "wc",
    "date",
    "id",
    "kill",
    "ps",
    "sort",
    "uniq",
    "tr",
    "cut",
    "find",
    "xargs",
    "tee",
    "basename",
    "dirname",
    "pwd",
    "hostname",
    "uname",
    "chmod",
    "ln",
    "stat",
    "md5sum",
    "sha256sum",
    "gzip",
    "tar",
    "timeout",
    "nproc",
    "free",
    "du",
    "df",
    "wget",
    "expr",
];

/// What goes into a worker image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The `hodei` binary (its shared libraries are found with the system's loader).
    pub binary: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
    /// Tag; `None` = `hodei-worker:<content hash>`.
    pub tag: Option<String>,
}

impl ImageSpec {
    /// The image for `binary`, with the busybox found on this machine.
    pub fn for_binary(binary: impl Into<PathBuf>) -> Result<ImageSpec, DockerError> {
        Ok(ImageSpec {
            binary: binary.into(),
            busybox: find_busybox()?,
            tag: None,
        })
    }
}

/// The first static busybox of [`BUSYBOX_PATHS`] (or `HODEI_BUSYBOX`).
pub fn find_busybox() -> Result<PathBuf, DockerError> {
    if let Ok(p) = std::env::var("HODEI_BUSYBOX") {
        return Ok(PathBuf::from(p));
    }
    BUSYBOX_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            DockerError::Image(format!(
                "no static busybox found (looked at {}); install Debian's busybox-static or set HODEI_BUSYBOX",
                BUSYBOX_PATHS.join(", ")
            ))
        })
}

/// Shared libraries `binary` loads, with the dynamic loader, as `ldd` resolves them on this
/// machine (empty for a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, DockerError> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| DockerError::Image(format!("running ldd on {}: {e}", binary.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(DockerError::Image(format!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(parse_ldd(&text))
}

/// The absolute paths in `ldd` output (`libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`).
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

fn read_file(p: &Path) -> Result<Vec<u8>, DockerError> {
    let mut f = std::fs::File::open(p)
        .map_err(|e| DockerError::Image(format!("reading {}: {e}", p.display())))?;
    let mut b = Vec::new();
    f.read_to_end(&mut b)
        .map_err(|e| DockerError::Image(format!("reading {}: {e}", p.display())))?;
    Ok(b)
}

/// The build context: a Dockerfile and a `rootfs/` tree, and the content-derived tag.
pub struct BuildContext {
    /// The tar.
    pub tar: Vec<u8>,
    /// `hodei-worker:<hash>` (or the tag asked for).
    pub tag: String,
}

/// The Dockerfile of the worker image.
pub const DOCKERFILE: &str = "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/bin\nWORKDIR /var/lib/hodei\nENTRYPOINT []\n";

/// Builds the context tar for `spec` (reads the binary, its libraries and busybox).
pub fn build_context(spec: &ImageSpec) -> Result<BuildContext, DockerError> {
    let libs = shared_libraries(&spec.binary)?;
    let binary = read_file(&spec.binary)?;
    let busybox = read_file(&spec.busybox)?;
    let mut hash = Sha256::new();
    hash.update(&binary);
    hash.update(&busybox);
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        (format!("rootfs{AGENT_PATH}"), binary, 0o755),
        ("rootfs/bin/busybox".into(), busybox, 0o755),
    ];
    for lib in &libs {
        // The loader and libraries keep their paths: the binary's interpreter is absolute.
        let resolved = std::fs::canonicalize(lib)
            .map_err(|e| DockerError::Image(format!("resolving {}: {e}", lib.display())))?;
        let data = read_file(&resolved)?;
        hash.update(lib.to_string_lossy().as_bytes());
        hash.update(&data);
        files.push((format!("rootfs{}", lib.display()), data, 0o755));
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let tag = spec
        .tag
        .clone()
        .unwrap_or_else(|| format!("{IMAGE_REPOSITORY}:{hex}"));

    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(0);
        b.append_data(&mut h, path, data)
    };
    let io = |e: std::io::Error| DockerError::Image(format!("building the context: {e}"));
    add("Dockerfile", DOCKERFILE.as_bytes(), 0o644).map_err(io)?;
    for (path, data, mode) in &files {
        add(path, data, *mode).map_err(io)?;
    }
    for dir in ["rootfs/tmp", "rootfs/var/lib/hodei/work"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(if dir.ends_with("tmp") { 0o1777 } else { 0o755 });
        h.set_mtime(0);
        b.append_data(&mut h, format!("{dir}/"), std::io::empty())
            .map_err(io)?;
    }
    debug_assert!(WORK_DIR.starts_with("/var/lib/hodei"));
    for applet in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(0);
        b.append_link(&mut h, format!("rootfs/bin/{applet}"), "busybox")
            .map_err(io)?;
    }
    let tar = b.into_inner().map_err(io)?;
    Ok(BuildContext { tar, tag })
}

/// Whether the engine has `image`.
pub async fn image_exists(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(DockerError::engine(format!("inspect image {image}"), e)),
    }
}

/// Builds the worker image for `spec` unless the engine already has it; returns its tag.
pub async fn build_worker_image(docker: &Docker, spec: &ImageSpec) -> Result<String, DockerError> {
    let spec2 = spec.clone();
    let ctx = tokio::task::spawn_blocking(move || build_context(&spec2))
        .await
        .map_err(|e| DockerError::Image(e.to_string()))??;
    if spec.tag.is_none() && image_exists(docker, &ctx.tag).await? {
        return Ok(ctx.tag);
    }
    // One build per tag on this machine at a time (several nodes starting together would
    // otherwise each send the whole context); the others then find the image.
    let lock_path = std::env::temp_dir().join(format!(
        "hodei-image-{}.lock",
        ctx.tag.replace(['/', ':'], "_")
    ));
    let _lock = tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ok()?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok()
    })
    .await
    .ok()
    .flatten();
    if spec.tag.is_none() && image_exists(docker, &ctx.tag).await? {
        return Ok(ctx.tag);
    }
    let labels = std::collections::HashMap::from([(IMAGE_LABEL, "worker")]);
    let opts = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(&ctx.tag)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(ctx.tar.into())));
    let mut last = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(d) = info.error_detail {
                    return Err(DockerError::Engine {
                        op: format!("build image {}", ctx.tag),
                        reason: d.message.unwrap_or_default(),
                    });
                }
                if let Some(s) = info.stream {
                    last = s.trim().to_string();
                }
            }
            Err(e) => {
                return Err(DockerError::Engine {
                    op: format!("build image {}", ctx.tag),
                    reason: engine_message(&e),
                });
            }
        }
    }
    if !image_exists(docker, &ctx.tag).await? {
        return Err(DockerError::Engine {
            op: format!("build image {}", ctx.tag),
            reason: format!("the engine reported no image (last output: {last})"),
        });
    }
    if spec.tag.is_none() {
        remove_stale_images(docker, &ctx.tag).await;
    }
    Ok(ctx.tag)
}

/// Removes older default worker images (each binary gets its own), tagged or not; an image a
/// container still uses is kept by the engine.
async fn remove_stale_images(docker: &Docker, keep: &str) {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{IMAGE_LABEL}=worker")],
    )]);
    let opts = bollard::query_parameters::ListImagesOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(images) = docker.list_images(Some(opts)).await else {
        return;
    };
    for image in images {
        let default_repo = image.repo_tags.is_empty()
            || image
                .repo_tags
                .iter()
                .all(|t| t.starts_with(&format!("{IMAGE_REPOSITORY}:")) && t != keep);
        if default_repo {
            let _ = docker
                .remove_image(
                    &image.id,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed_into_absolute_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n\tlibm.so.6 => not found\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn the_context_holds_the_binary_busybox_links_and_a_content_tag() {
        // Any executable works as the "binary"; /bin/sh's libraries are found by ldd.
        let dir = tempfile::tempdir().expect("tmp");
        let fake_busybox = dir.path().join("busybox");
        std::fs::write(&fake_busybox, b"not really busybox").expect("write");
        let spec = ImageSpec {
            binary: PathBuf::from("/bin/sh"),
            busybox: fake_busybox,
            tag: None,
        };
        let ctx = build_context(&spec).expect("context");
        assert!(ctx.tag.starts_with("hodei-worker:"), "{}", ctx.tag);
        assert_eq!(build_context(&spec).expect("again").tag, ctx.tag);
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(&ctx.tar[..]);
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            names.push(e.path().expect("path").display().to_string());
        }
        assert!(names.contains(&"Dockerfile".to_string()), "{names:?}");
        assert!(names.contains(&"rootfs/usr/local/bin/hodei".to_string()));
        assert!(names.contains(&"rootfs/bin/busybox".to_string()));
        assert!(names.contains(&"rootfs/bin/sh".to_string()));
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
    }
}
