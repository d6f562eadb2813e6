//! The scripting PE's host side ([`ScriptingHost`]): what RSPLIB's `scriptingcontrol` and
//! its environment cache do, in-process.
//!
//! * Each session gets a directory `$TMPDIR/rspSS-Session-XXXXXX` holding `input.data`,
//!   `environment.data` (uploaded or copied from the cache) and the work's files.
//! * **run**: `input.data` is unpacked into the directory (plain tar or gzip-compressed tar,
//!   recognised by its first bytes; paths leaving the directory are refused by the `tar`
//!   crate), `ssrun` is made executable (mode 700) and run there as
//!   `./ssrun output.data <environment.data or ""> <keyring> <trustdb>` — directly if it
//!   starts with `#!`, else with `sh`. Its exit code is the STATUS (killed by signal *n*:
//!   128 + *n*). Its standard output and error go to `ssrun.log` in the directory. It runs in
//!   a process group of its own.
//! * **cleanup**: the process group is killed (SIGKILL, like `scriptingcontrol cleanup`)
//!   and the directory removed unless `-sskeeptempdirs`.
//! * **environment cache**: files named by the hex SHA-1 in `-sscachedirectory=` (default a
//!   new `$TMPDIR/rspSS-EnvironmentCache-XXXXXX`), bookkept by [`EnvironmentCache`] (size
//!   and entry limits, LRU eviction); a hit is re-verified by its SHA-1 and a damaged entry
//!   deleted.
//! * **check-environment**: [`super::keyring`] (OpenPGP, `-sskeyring=`).
//! * **input check** (run, with `-sskeyring=`): `input.data` must be an OpenPGP-signed work
//!   package, maybe encrypted to a secret key of the keyring; it is replaced by the signed
//!   content before unpacking ([`super::keyring`]). Refused → the session is aborted.
//!
//! Work packages may be plain, gzip- or bzip2-compressed tar archives (RSPLIB unpacks with
//! `tar xzf`/`tar xjf`); the compression is recognised by its magic bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use rserpool_core::services::scripting::{
    EnvironmentCache, EnvironmentHash, HostError, ScriptingHost,
};
use rserpool_core::services::sha1::{Sha1, to_hex};
use tracing::{debug, warn};

use super::keyring::{EnvironmentCheck, Keyring, MAX_VERIFIED_SIZE};
use crate::cli::ScriptingOptions;

/// The host name RSPLIB sends in READY/NOTREADY (`uname -n`).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Creates a new directory `<parent>/<prefix>XXXXXX` (six random characters).
pub fn make_temp_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    use rand_xoshiro::rand_core::Rng;
    let mut rng = super::super::common::os_rng();
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..100 {
        let suffix: String = (0..6)
            .map(|_| char::from(CHARS[(rng.next_u32() as usize) % CHARS.len()]))
            .collect();
        let p = parent.join(format!("{prefix}{suffix}"));
        match fs::create_dir(&p) {
            Ok(()) => {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o700))?;
                return Ok(p);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot create a temporary directory"))
}

/// What all sessions of a scripting PE share: cache, keyring, settings.
#[derive(Debug)]
pub struct ScriptingEnvironment {
    temp_root: PathBuf,
    cache_dir: PathBuf,
    cache_is_temporary: bool,
    cache: Mutex<EnvironmentCache>,
    keyring: Option<Arc<Keyring>>,
    keyring_path: Option<PathBuf>,
    trustdb_path: Option<PathBuf>,
    keep_temp_dirs: bool,
}

impl ScriptingEnvironment {
    /// Sets the cache directory up and loads the keyring (an unreadable keyring is an
    /// error at start, not per session).
    pub fn new(opts: &ScriptingOptions) -> io::Result<ScriptingEnvironment> {
        let temp_root = std::env::temp_dir();
        let (cache_dir, cache_is_temporary) = match &opts.cache_directory {
            Some(d) => {
                fs::create_dir_all(d)?;
                (d.clone(), false)
            }
            None => (make_temp_dir(&temp_root, "rspSS-EnvironmentCache-")?, true),
        };
        let keyring = match &opts.keyring {
            Some(p) => Some(Arc::new(Keyring::load(p)?)),
            None => None,
        };
        Ok(ScriptingEnvironment {
            temp_root,
            cache_dir,
            cache_is_temporary,
            cache: Mutex::new(EnvironmentCache::new(
                u64::from(opts.cache_max_size_kib),
                opts.cache_max_entries as usize,
            )),
            keyring,
            keyring_path: opts.keyring.clone(),
            trustdb_path: opts.trust_db.clone(),
            keep_temp_dirs: opts.keep_temp_dirs,
        })
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// A host for a new session (creates its directory).
    pub fn new_session(self: &Arc<Self>) -> io::Result<FsHost> {
        let dir = make_temp_dir(&self.temp_root, "rspSS-Session-")?;
        debug!("scripting session directory {}", dir.display());
        Ok(FsHost {
            env: Arc::clone(self),
            dir,
            input: None,
            environment: None,
            child: None,
            output: None,
        })
    }

    /// The environment check for a new session.
    pub fn keyring_check(&self) -> EnvironmentCheck {
        EnvironmentCheck::new(self.keyring.clone())
    }

    fn cache_file(&self, hash: &EnvironmentHash) -> PathBuf {
        self.cache_dir.join(to_hex(hash))
    }
}

impl Drop for ScriptingEnvironment {
    fn drop(&mut self) {
        if self.cache_is_temporary && !self.keep_temp_dirs {
            let _ = fs::remove_dir_all(&self.cache_dir);
        }
    }
}

/// One scripting session's files and work process.
#[derive(Debug)]
pub struct FsHost {
    env: Arc<ScriptingEnvironment>,
    dir: PathBuf,
    input: Option<File>,
    environment: Option<File>,
    child: Option<Child>,
    output: Option<File>,
}

fn host_err(what: &str, e: impl std::fmt::Display) -> HostError {
    HostError(format!("{what}: {e}"))
}

/// Replaces the signed (and maybe encrypted) work package at `path` by its verified
/// content (`scriptingcontrol run`'s `gpg --decrypt`; [`Keyring::open_work_package`]).
fn open_signed_input(keyring: &Keyring, path: &Path) -> Result<(), HostError> {
    let size = fs::metadata(path)
        .map_err(|e| host_err("input.data", e))?
        .len();
    if size > MAX_VERIFIED_SIZE as u64 {
        return Err(HostError(format!(
            "input.data: {size} bytes, too large to verify"
        )));
    }
    let data = fs::read(path).map_err(|e| host_err("input.data", e))?;
    let content = keyring
        .open_work_package(&data)
        .map_err(|e| host_err("invalid input (OpenPGP check)", e))?;
    fs::write(path, content).map_err(|e| host_err("input.data", e))
}

/// Unpacks a plain, gzip- or bzip2-compressed tar archive into `dir` (by its magic bytes).
pub fn unpack_work_package(archive: &Path, dir: &Path) -> io::Result<()> {
    let mut head = [0u8; 3];
    let n = File::open(archive)?.read(&mut head)?;
    let file = File::open(archive)?;
    match head.get(..n) {
        Some([0x1f, 0x8b, ..]) => tar::Archive::new(flate2::read::GzDecoder::new(file)).unpack(dir),
        // `tar xjf` reads concatenated bzip2 streams (pbzip2 output) too.
        Some(b"BZh") => tar::Archive::new(bzip2::read::MultiBzDecoder::new(file)).unpack(dir),
        _ => tar::Archive::new(file).unpack(dir),
    }
}

/// Packs the files of `dir` (recursively, sorted, modes kept, times zeroed so the archive
/// is reproducible) into a gzip-compressed tar archive at `out`: a work package. `dir` must
/// hold an `ssrun` script. Returns the number of files.
pub fn pack_work_package(dir: &Path, out: &Path) -> io::Result<usize> {
    if !dir.join("ssrun").is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no ssrun script", dir.display()),
        ));
    }
    fn walk(base: &Path, rel: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(base.join(rel))?
            .collect::<io::Result<Vec<_>>>()?
            .into_iter()
            .map(|e| e.file_name())
            .collect();
        entries.sort();
        for name in entries {
            let r = rel.join(&name);
            let meta = fs::symlink_metadata(base.join(&r))?;
            if meta.is_dir() {
                walk(base, &r, files)?;
            } else if meta.is_file() {
                files.push(r);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)?;
    let gz = flate2::write::GzEncoder::new(File::create(out)?, flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for rel in &files {
        let path = dir.join(rel);
        let meta = fs::metadata(&path)?;
        let mut h = tar::Header::new_gnu();
        h.set_size(meta.len());
        h.set_mode(meta.permissions().mode() & 0o777);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, rel, File::open(&path)?)?;
    }
    b.into_inner()?.finish()?;
    Ok(files.len())
}

impl FsHost {
    /// The session's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn append(slot: &mut Option<File>, path: PathBuf, chunk: &[u8]) -> io::Result<()> {
        if slot.is_none() {
            *slot = Some(OpenOptions::new().create(true).append(true).open(path)?);
        }
        match slot.as_mut() {
            Some(f) => f.write_all(chunk),
            None => Err(io::Error::other("file not open")),
        }
    }

    fn environment_path(&self) -> PathBuf {
        self.dir.join("environment.data")
    }
}

impl ScriptingHost for FsHost {
    fn write_input(&mut self, chunk: &[u8]) -> Result<(), HostError> {
        let p = self.dir.join("input.data");
        Self::append(&mut self.input, p, chunk).map_err(|e| host_err("input.data", e))
    }

    fn write_environment(&mut self, chunk: &[u8]) -> Result<(), HostError> {
        let p = self.environment_path();
        Self::append(&mut self.environment, p, chunk).map_err(|e| host_err("environment.data", e))
    }

    fn fetch_cached_environment(&mut self, hash: &EnvironmentHash) -> bool {
        let hit = self
            .env
            .cache
            .lock()
            .map(|mut c| c.lookup(hash))
            .unwrap_or(false);
        if !hit {
            return false;
        }
        let cached = self.env.cache_file(hash);
        match fs::read(&cached) {
            Ok(data) if Sha1::digest(&data) == *hash => {
                match fs::write(self.environment_path(), &data) {
                    Ok(()) => true,
                    Err(e) => {
                        warn!("cannot install the cached environment: {e}");
                        false
                    }
                }
            }
            r => {
                warn!(
                    "cached environment {} damaged or missing ({}): removed",
                    to_hex(hash),
                    r.err()
                        .map_or_else(|| "checksum".to_owned(), |e| e.to_string())
                );
                let _ = fs::remove_file(&cached);
                if let Ok(mut c) = self.env.cache.lock() {
                    c.remove(hash);
                }
                false
            }
        }
    }

    fn store_environment(&mut self, hash: &EnvironmentHash, size: u64) {
        if let Some(f) = self.environment.as_mut() {
            let _ = f.flush();
        }
        let evicted = match self.env.cache.lock() {
            Ok(mut c) => c.insert(*hash, size),
            Err(_) => None,
        };
        match evicted {
            Some(old) => {
                for h in old {
                    let _ = fs::remove_file(self.env.cache_file(&h));
                }
                if let Err(e) = fs::copy(self.environment_path(), self.env.cache_file(hash)) {
                    warn!(
                        "cannot store environment {} in the cache: {e}",
                        to_hex(hash)
                    );
                    if let Ok(mut c) = self.env.cache.lock() {
                        c.remove(hash);
                    }
                }
            }
            None => debug!(
                "environment {} larger than the cache: not stored",
                to_hex(hash)
            ),
        }
    }

    fn start_work(&mut self, with_environment: bool) -> Result<(), HostError> {
        // Close the upload files so everything is on disk.
        self.input = None;
        self.environment = None;
        let input = self.dir.join("input.data");
        if !input.exists() {
            File::create(&input).map_err(|e| host_err("input.data", e))?;
        }
        match &self.env.keyring {
            Some(keyring) => open_signed_input(keyring, &input)?,
            None => warn!("Skipping verification of the input: no keyring configured"),
        }
        unpack_work_package(&input, &self.dir).map_err(|e| host_err("unpacking the input", e))?;
        let script = self.dir.join("ssrun");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o700))
            .map_err(|e| host_err("ssrun", e))?;
        let mut head = [0u8; 2];
        let shebang = File::open(&script)
            .and_then(|mut f| f.read(&mut head))
            .map(|n| n == 2 && &head == b"#!")
            .unwrap_or(false);
        let mut cmd = if shebang {
            Command::new("./ssrun")
        } else {
            let mut c = Command::new("sh");
            c.arg("./ssrun");
            c
        };
        let env_arg = if with_environment {
            "environment.data"
        } else {
            ""
        };
        let path_arg = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let log = File::create(self.dir.join("ssrun.log")).map_err(|e| host_err("ssrun.log", e))?;
        let log2 = log.try_clone().map_err(|e| host_err("ssrun.log", e))?;
        cmd.arg("output.data")
            .arg(env_arg)
            .arg(path_arg(&self.env.keyring_path))
            .arg(path_arg(&self.env.trustdb_path))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        let child = cmd.spawn().map_err(|e| host_err("starting ssrun", e))?;
        debug!("ssrun started as process {}", child.id());
        self.child = Some(child);
        Ok(())
    }

    fn poll_work(&mut self) -> Option<u32> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(s)) => {
                self.child = None;
                Some(match (s.code(), s.signal()) {
                    (Some(code), _) => code as u32,
                    (None, Some(sig)) => 128 + sig as u32,
                    (None, None) => 1,
                })
            }
            Ok(None) => None,
            Err(e) => {
                warn!("ssrun: {e}");
                self.child = None;
                Some(1)
            }
        }
    }

    fn read_output(&mut self, buf: &mut [u8]) -> Result<usize, HostError> {
        if self.output.is_none() {
            self.output = Some(
                File::open(self.dir.join("output.data")).map_err(|e| host_err("output.data", e))?,
            );
        }
        match self.output.as_mut() {
            Some(f) => f.read(buf).map_err(|e| host_err("output.data", e)),
            None => Err(HostError("output.data not open".into())),
        }
    }

    fn cleanup(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole process group (ssrun and its children), like `scriptingcontrol cleanup`.
            // `--` is essential: procps-ng 4.0's kill(1) reads `-KILL -PGID` as kill(-1, SIGKILL),
            // i.e. every process the user may signal (as root: the whole machine).
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--"])
                .arg(format!("-{}", c.id()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        self.input = None;
        self.environment = None;
        self.output = None;
        if self.env.keep_temp_dirs {
            debug!("keeping {}", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for FsHost {
    fn drop(&mut self) {
        // cleanup() normally ran; make sure no work process outlives the session.
        if self.child.is_some() {
            self.cleanup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RspServerOptions;
    use crate::cli::argv::try_parse_from;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rserpool-sshost-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn environment(cache: &Path) -> Arc<ScriptingEnvironment> {
        let o: RspServerOptions = try_parse_from([
            "rspserver".to_owned(),
            "-scripting".into(),
            format!("-sscachedirectory={}", cache.display()),
        ])
        .unwrap();
        Arc::new(ScriptingEnvironment::new(&o.scripting).unwrap())
    }

    fn package(dir: &Path, script: &str) -> Vec<u8> {
        let src = dir.join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("ssrun"), script).unwrap();
        fs::write(src.join("sub/in.txt"), "b\na\n").unwrap();
        let out = dir.join("pkg.tar.gz");
        assert_eq!(pack_work_package(&src, &out).unwrap(), 2);
        fs::read(out).unwrap()
    }

    fn run_to_end(host: &mut FsHost) -> u32 {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(s) = host.poll_work() {
                return s;
            }
            assert!(std::time::Instant::now() < end, "work did not end");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn work_package_runs_in_its_session_directory() {
        let d = temp("run");
        // No shebang: run with sh. Arguments: output, environment, keyring, trust DB.
        let pkg = package(
            &d,
            "sort sub/in.txt > \"$1\"; echo \"env=[$2]\" >> \"$1\"; exit 3\n",
        );
        let env = environment(&d.join("cache"));
        let mut host = env.new_session().unwrap();
        let dir = host.dir().to_path_buf();
        for chunk in pkg.chunks(100) {
            host.write_input(chunk).unwrap();
        }
        host.start_work(false).unwrap();
        assert_eq!(run_to_end(&mut host), 3);
        let mut buf = [0u8; 64];
        let n = host.read_output(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a\nb\nenv=[]\n");
        assert_eq!(host.read_output(&mut buf).unwrap(), 0);
        host.cleanup();
        assert!(!dir.exists(), "session directory removed");
        // A session without output.data: the first read fails.
        let mut host = env.new_session().unwrap();
        host.write_input(&package(&d, "#!/bin/sh\nexit 0\n"))
            .unwrap();
        host.start_work(false).unwrap();
        assert_eq!(run_to_end(&mut host), 0);
        assert!(host.read_output(&mut buf).is_err());
        host.cleanup();
        // Not a tar archive: the work does not start.
        let mut host = env.new_session().unwrap();
        host.write_input(b"this is not a tar archive at all")
            .unwrap();
        assert!(host.start_work(false).is_err());
        host.cleanup();
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn with_a_keyring_only_signed_work_packages_run() {
        let d = temp("signed");
        let fixture = |n: &str| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(n)
        };
        let o: RspServerOptions = try_parse_from([
            "rspserver".to_owned(),
            "-scripting".into(),
            format!("-sscachedirectory={}", d.join("cache").display()),
            format!("-sskeyring={}", fixture("work-signer-secret.gpg").display()),
        ])
        .unwrap();
        let env = Arc::new(ScriptingEnvironment::new(&o.scripting).unwrap());
        let run = |input: &str| -> Result<Vec<u8>, HostError> {
            let mut host = env.new_session().unwrap();
            for chunk in fs::read(fixture(input)).unwrap().chunks(100) {
                host.write_input(chunk).unwrap();
            }
            let started = host.start_work(false);
            let out = started.map(|()| {
                assert_eq!(run_to_end(&mut host), 0);
                fs::read(host.dir().join("output.data")).unwrap()
            });
            host.cleanup();
            out
        };
        let expected = "rserpool scripting example\nlines: 5\napple\nbanana\ncherry\nfig\npear\n";
        // Signed (gpg --sign), signed and encrypted (gpg --sign --encrypt).
        for input in ["work.tar.gz.gpg", "work.tar.gz.enc.gpg"] {
            assert_eq!(run(input).unwrap(), expected.as_bytes(), "{input}");
        }
        // The same package unsigned, or encrypted but unsigned: refused.
        for input in ["work.tar.gz", "work.tar.gz.enc-unsigned.gpg"] {
            let e = run(input).unwrap_err();
            assert!(e.0.contains("invalid input"), "{input}: {e:?}");
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn bzip2_work_package_runs() {
        let d = temp("bz2");
        // The gzip package re-compressed with bzip2 (as `tar cjf` makes it), in two
        // concatenated streams (as pbzip2 makes it).
        let gz = package(&d, "sort sub/in.txt > \"$1\"\n");
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        let half = tar.len() / 2;
        let mut bz = Vec::new();
        for part in [&tar[..half], &tar[half..]] {
            let mut z = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
            z.write_all(part).unwrap();
            bz.extend_from_slice(&z.finish().unwrap());
        }
        assert_eq!(&bz[..3], b"BZh");
        let env = environment(&d.join("cache"));
        let mut host = env.new_session().unwrap();
        host.write_input(&bz).unwrap();
        host.start_work(false).unwrap();
        assert_eq!(run_to_end(&mut host), 0);
        let mut buf = [0u8; 64];
        let n = host.read_output(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a\nb\n");
        host.cleanup();
        // A damaged bzip2 stream: the work does not start.
        let mut host = env.new_session().unwrap();
        host.write_input(b"BZh91AY&SYgarbage garbage").unwrap();
        assert!(host.start_work(false).is_err());
        host.cleanup();
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn cleanup_stops_a_running_work() {
        let d = temp("kill");
        let env = environment(&d.join("cache"));
        let mut host = env.new_session().unwrap();
        host.write_input(&package(&d, "#!/bin/sh\nsleep 30 &\nsleep 30\n"))
            .unwrap();
        host.start_work(false).unwrap();
        assert_eq!(host.poll_work(), None);
        let started = std::time::Instant::now();
        host.cleanup();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(!host.dir().exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn environment_cache_hits_and_damage() {
        let d = temp("cache");
        let env = environment(&d.join("cache"));
        let data = b"the environment".to_vec();
        let hash = Sha1::digest(&data);
        let mut a = env.new_session().unwrap();
        assert!(!a.fetch_cached_environment(&hash));
        a.write_environment(&data).unwrap();
        a.store_environment(&hash, data.len() as u64);
        a.cleanup();
        let mut b = env.new_session().unwrap();
        assert!(b.fetch_cached_environment(&hash));
        assert_eq!(fs::read(b.dir().join("environment.data")).unwrap(), data);
        b.cleanup();
        // A damaged cache file is a miss and is removed.
        fs::write(env.cache_dir().join(to_hex(&hash)), b"damaged").unwrap();
        let mut c = env.new_session().unwrap();
        assert!(!c.fetch_cached_environment(&hash));
        assert!(!env.cache_dir().join(to_hex(&hash)).exists());
        c.cleanup();
        let _ = fs::remove_dir_all(&d);
    }
}
