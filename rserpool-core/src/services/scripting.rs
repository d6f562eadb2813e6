//! Scripting PE (`rspserver -scripting`) and client (`scriptingclient`), `services.md` §6.
//!
//! The PE receives a work package (and optionally an "environment" file, cached by its
//! SHA-1), runs it, and streams the output back. Everything that touches files or
//! processes is behind traits the binary implements:
//! * [`ScriptingHost`]: the session's directory (input/environment files), the environment
//!   cache's storage, starting and polling the work (`scriptingcontrol run`), reading the
//!   output, cleaning up (`scriptingcontrol cleanup`);
//! * [`KeyringCheck`]: the environment check (`scriptingcontrol check-environment`), fed the
//!   environment's bytes as they arrive, so an OpenPGP verifier can be plugged in.
//!
//! [`EnvironmentCache`] is the cache's bookkeeping (size and entry limits, LRU); the host
//! owns the files and asks the cache what to evict.
//!
//! Differences from RSPLIB (deliberate):
//! * the PE answers a KEEPALIVE that arrives during the upload (RSPLIB aborts the session,
//!   defect §10.8, which RSPLIB's own client triggers by sending keep-alives every 10 s);
//! * the client sends KEEPALIVEs only once processing has started (so it never trips an
//!   RSPLIB PE); before that it gives the PE `transmit_timeout` per step (READY,
//!   ENVIRONMENT reply, STATUS) instead;
//! * the client fails over at once on a STATUS ≠ 0 before processing (defect §10.14);
//! * the PE aborts the session when an uploaded environment's SHA-1 differs from the hash
//!   the PU asked for (RSPLIB caches and uses it anyway); the PU then retries elsewhere.

use bytes::Bytes;
use core::fmt;
use core::time::Duration;

use rand_core::Rng;
use rserpool_proto::services::scripting::{
    HASH_SIZE, MAX_INFO_SIZE, MAX_TRANSFER_SIZE, NotReadyReason, ScriptingMessage, info_text,
};

use super::sha1::{Sha1, to_hex};
use super::{
    CloseMode, LogLevel, Outbox, PPID_SCRIPTING, ServiceOutput, ServiceSession, SessionEvent,
    random_unit,
};
use crate::time::Instant;

/// A SHA-1 digest naming an environment.
pub type EnvironmentHash = [u8; HASH_SIZE];

/// An error reported by a [`ScriptingHost`] or [`KeyringCheck`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostError {}

// ---------------------------------------------------------------------------------------
// Environment cache
// ---------------------------------------------------------------------------------------

/// One cached environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// Its SHA-1.
    pub hash: EnvironmentHash,
    /// Its size in bytes.
    pub size: u64,
    last_use: u64,
}

/// The environment cache's bookkeeping: at most `max_entries` files of together at most
/// `max_bytes`; least-recently-used entries are evicted to make room.
#[derive(Clone, Debug)]
pub struct EnvironmentCache {
    max_bytes: u64,
    max_entries: usize,
    entries: Vec<CacheEntry>,
    uses: u64,
}

impl EnvironmentCache {
    /// A cache with RSPLIB's limits: `max_size_kib` (`-sscachemaxsize`, min 128 KiB) and
    /// `max_entries` (`-sscachemaxentries`, min 1).
    pub fn new(max_size_kib: u64, max_entries: usize) -> EnvironmentCache {
        EnvironmentCache {
            max_bytes: max_size_kib.max(128).saturating_mul(1024),
            max_entries: max_entries.max(1),
            entries: Vec::new(),
            uses: 0,
        }
    }

    /// The entries, in no particular order.
    pub fn entries(&self) -> &[CacheEntry] {
        &self.entries
    }

    /// Bytes cached.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// True (and the entry becomes the most recently used) if `hash` is cached.
    pub fn lookup(&mut self, hash: &EnvironmentHash) -> bool {
        self.uses += 1;
        let uses = self.uses;
        match self.entries.iter_mut().find(|e| e.hash == *hash) {
            Some(e) => {
                e.last_use = uses;
                true
            }
            None => false,
        }
    }

    /// Records a new entry. Returns the entries evicted to make room (the host deletes
    /// their files), or `None` when the file is larger than the whole cache (not stored).
    /// Storing a hash already present refreshes it.
    pub fn insert(&mut self, hash: EnvironmentHash, size: u64) -> Option<Vec<EnvironmentHash>> {
        if size > self.max_bytes {
            return None;
        }
        self.remove(&hash);
        let mut evicted = Vec::new();
        while self.entries.len() >= self.max_entries
            || self.total_size().saturating_add(size) > self.max_bytes
        {
            let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_use)
                .map(|(i, _)| i)
            else {
                break;
            };
            evicted.push(self.entries.swap_remove(i).hash);
        }
        self.uses += 1;
        self.entries.push(CacheEntry {
            hash,
            size,
            last_use: self.uses,
        });
        Some(evicted)
    }

    /// Forgets an entry (e.g. its file turned out damaged).
    pub fn remove(&mut self, hash: &EnvironmentHash) -> bool {
        match self.entries.iter().position(|e| e.hash == *hash) {
            Some(i) => {
                self.entries.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// PE
// ---------------------------------------------------------------------------------------

/// What the scripting PE needs from the machine it runs on, per session.
pub trait ScriptingHost {
    /// Appends to the work package (`input.data`).
    fn write_input(&mut self, chunk: &[u8]) -> Result<(), HostError>;
    /// Appends to the uploaded environment (`environment.data`).
    fn write_environment(&mut self, chunk: &[u8]) -> Result<(), HostError>;
    /// Looks `hash` up in the environment cache; on a hit (file present and its SHA-1
    /// verified) installs it as this session's environment and returns true. A damaged
    /// entry is deleted and counts as a miss.
    fn fetch_cached_environment(&mut self, hash: &EnvironmentHash) -> bool;
    /// Stores the uploaded environment in the cache under `hash` (the SHA-1 computed over
    /// the received bytes) — see [`EnvironmentCache::insert`].
    fn store_environment(&mut self, hash: &EnvironmentHash, size: u64);
    /// Starts the work (`scriptingcontrol run <dir> input.data output.data status.txt
    /// <environment.data or ""> <keyring> <trustdb>`).
    fn start_work(&mut self, with_environment: bool) -> Result<(), HostError>;
    /// Non-blocking: the work's exit status once it has ended.
    fn poll_work(&mut self) -> Option<u32>;
    /// Reads the next bytes of `output.data` into `buf`; `Ok(0)` at the end. An error on
    /// the first read means there is no output (the session is aborted).
    fn read_output(&mut self, buf: &mut [u8]) -> Result<usize, HostError>;
    /// The session ended: stop the work's processes and remove the session's files (unless
    /// configured to keep them). Called exactly once.
    fn cleanup(&mut self);
}

/// The environment check (`scriptingcontrol check-environment`): the environment's bytes
/// are streamed through it while they are uploaded.
pub trait KeyringCheck {
    /// A new environment upload starts.
    fn begin(&mut self);
    /// The next bytes of the environment.
    fn update(&mut self, chunk: &[u8]);
    /// The upload is complete: `Ok` accepts the environment.
    fn finish(&mut self) -> Result<(), HostError>;
}

/// The check RSPLIB performs without keyring and trust DB: accept (with a warning).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoKeyring;

impl KeyringCheck for NoKeyring {
    fn begin(&mut self) {}
    fn update(&mut self, _chunk: &[u8]) {}
    fn finish(&mut self) -> Result<(), HostError> {
        Ok(())
    }
}

/// Settings of the scripting PE (`rspserver -scripting`), RSPLIB's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptingServerConfig {
    /// `-ssmaxthreads`: most sessions (RSPLIB: number of online CPUs; the binary fills it
    /// in, the default here is 1). Each session's load is 1 / this.
    pub max_sessions: usize,
    /// `-sstransmittimeout`: upload inactivity and send timeout (30 000 ms).
    pub transmit_timeout: Duration,
    /// `-sskeepaliveinterval` (15 000 ms).
    pub keepalive_interval: Duration,
    /// `-sskeepalivetimeout` (10 000 ms).
    pub keepalive_timeout: Duration,
    /// `-sscachemaxsize` in KiB (131 072, min 128).
    pub cache_max_size_kib: u64,
    /// `-sscachemaxentries` (16, min 1).
    pub cache_max_entries: usize,
    /// `-sskeeptempdirs` (off; for the host's cleanup).
    pub keep_temp_dirs: bool,
    /// `-ssverbose` (off).
    pub verbose: bool,
    /// How often the work is checked (RSPLIB: 1 s).
    pub poll_interval: Duration,
    /// Info sent in READY / NOTREADY: the host name (at most 63 bytes are sent, as RSPLIB).
    pub hostname: String,
}

impl Default for ScriptingServerConfig {
    fn default() -> Self {
        ScriptingServerConfig {
            max_sessions: 1,
            transmit_timeout: Duration::from_millis(30_000),
            keepalive_interval: Duration::from_millis(15_000),
            keepalive_timeout: Duration::from_millis(10_000),
            cache_max_size_kib: 131_072,
            cache_max_entries: 16,
            keep_temp_dirs: false,
            verbose: false,
            poll_interval: Duration::from_secs(1),
            hostname: String::new(),
        }
    }
}

fn info_bytes(hostname: &str) -> Bytes {
    let b = hostname.as_bytes();
    Bytes::copy_from_slice(b.get(..b.len().min(MAX_INFO_SIZE - 1)).unwrap_or(b))
}

/// What the scripting PE reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptingServerEvent {
    /// The upload is complete and the work started.
    WorkStarted {
        /// Work package bytes.
        input_size: u64,
        /// Whether an environment is used.
        with_environment: bool,
    },
    /// The work ended with this status.
    WorkFinished(u32),
    /// The output was sent completely.
    DownloadComplete {
        /// Output bytes.
        output_size: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UploadTarget {
    Input,
    Environment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerState {
    Idle,
    Upload(UploadTarget),
    Working,
    Download,
    Finished,
}

/// One scripting PE session.
#[derive(Debug)]
pub struct ScriptingServer<H: ScriptingHost, K: KeyringCheck> {
    config: ScriptingServerConfig,
    host: H,
    keyring: K,
    state: ServerState,
    needs_environment: bool,
    got_environment: bool,
    requested_environment: Option<EnvironmentHash>,
    env_hash: Sha1,
    upload_size: u64,
    input_size: u64,
    output_size: u64,
    upload_deadline: Option<Instant>,
    next_poll: Option<Instant>,
    last_keepalive: Option<Instant>,
    waiting_for_ack: bool,
    blocked_since: Option<Instant>,
    first_read: bool,
    cleaned_up: bool,
    out: Outbox<ScriptingServerEvent>,
}

impl<H: ScriptingHost, K: KeyringCheck> ScriptingServer<H, K> {
    /// A new session; it sends READY when [`SessionEvent::Up`] arrives.
    pub fn new(config: ScriptingServerConfig, host: H, keyring: K) -> ScriptingServer<H, K> {
        ScriptingServer {
            config,
            host,
            keyring,
            state: ServerState::Idle,
            needs_environment: false,
            got_environment: false,
            requested_environment: None,
            env_hash: Sha1::new(),
            upload_size: 0,
            input_size: 0,
            output_size: 0,
            upload_deadline: None,
            next_poll: None,
            last_keepalive: None,
            waiting_for_ack: false,
            blocked_since: None,
            first_read: true,
            cleaned_up: false,
            out: Outbox::default(),
        }
    }

    /// The host (for inspection).
    pub fn host(&self) -> &H {
        &self.host
    }

    fn send(&mut self, m: ScriptingMessage) {
        self.out.send(PPID_SCRIPTING, m.encode());
    }

    fn end(&mut self, mode: CloseMode) {
        if self.state == ServerState::Finished {
            return;
        }
        self.state = ServerState::Finished;
        self.out.push(ServiceOutput::Close(mode));
        self.release();
    }

    fn release(&mut self) {
        if !self.cleaned_up {
            self.cleaned_up = true;
            self.host.cleanup();
            self.out.push(ServiceOutput::Load(0.0));
        }
    }

    fn abort(&mut self, why: String) {
        self.out.log(LogLevel::Warning, format!("Scripting: {why}"));
        self.end(CloseMode::Abort);
    }

    fn upload_finished(&mut self, now: Instant, target: UploadTarget) {
        if target == UploadTarget::Input && self.needs_environment {
            self.state = ServerState::Upload(UploadTarget::Environment);
            self.env_hash = Sha1::new();
            self.upload_size = 0;
            self.keyring.begin();
            return;
        }
        if target == UploadTarget::Environment {
            let digest = core::mem::take(&mut self.env_hash).finish();
            self.out.log(
                LogLevel::Info,
                format!("Scripting: got environment {}", to_hex(&digest)),
            );
            if self.requested_environment.is_some_and(|h| h != digest) {
                self.abort("environment checksum mismatch".into());
                return;
            }
            if let Err(e) = self.keyring.finish() {
                self.abort(format!("invalid environment: {e}"));
                return;
            }
            self.host.store_environment(&digest, self.upload_size);
            self.got_environment = true;
        }
        self.send(ScriptingMessage::Status(0));
        if let Err(e) = self.host.start_work(self.got_environment) {
            self.abort(format!("unable to start the work: {e}"));
            return;
        }
        self.out.event(ScriptingServerEvent::WorkStarted {
            input_size: self.input_size,
            with_environment: self.got_environment,
        });
        self.state = ServerState::Working;
        self.upload_deadline = None;
        self.next_poll = Some(now);
    }

    fn handle_upload_state(&mut self, now: Instant, target: UploadTarget, m: ScriptingMessage) {
        match m {
            ScriptingMessage::Upload(chunk) if !chunk.is_empty() => {
                let r = match target {
                    UploadTarget::Input => {
                        self.input_size += chunk.len() as u64;
                        self.host.write_input(&chunk)
                    }
                    UploadTarget::Environment => {
                        self.env_hash.update(&chunk);
                        self.keyring.update(&chunk);
                        self.upload_size += chunk.len() as u64;
                        self.host.write_environment(&chunk)
                    }
                };
                if let Err(e) = r {
                    self.abort(format!("write error: {e}"));
                    return;
                }
                self.upload_deadline = Some(now + self.config.transmit_timeout);
            }
            ScriptingMessage::Upload(_) => self.upload_finished(now, target),
            ScriptingMessage::Environment { hash, .. } => {
                self.requested_environment = Some(hash);
                let hit = self.host.fetch_cached_environment(&hash);
                if hit {
                    self.got_environment = true;
                } else {
                    self.needs_environment = true;
                }
                self.out.log(
                    LogLevel::Info,
                    format!(
                        "Scripting: user requests environment {} ({})",
                        to_hex(&hash),
                        if hit { "cached" } else { "upload needed" }
                    ),
                );
                self.send(ScriptingMessage::Environment {
                    hash,
                    upload_needed: !hit,
                });
            }
            ScriptingMessage::KeepAlive => {
                self.send(ScriptingMessage::KeepAliveAck { status: Some(0) })
            }
            other => self.abort(format!("unexpected message {other:?} during upload")),
        }
    }

    fn poll_work(&mut self, now: Instant) {
        if let Some(status) = self.host.poll_work() {
            self.out.event(ScriptingServerEvent::WorkFinished(status));
            self.send(ScriptingMessage::Status(status));
            self.state = ServerState::Download;
            self.next_poll = None;
            return;
        }
        match (self.waiting_for_ack, self.last_keepalive) {
            (false, last) if last.is_none_or(|t| now >= t + self.config.keepalive_interval) => {
                self.last_keepalive = Some(now);
                self.waiting_for_ack = true;
                self.send(ScriptingMessage::KeepAlive);
            }
            (true, Some(t)) if now >= t + self.config.keepalive_timeout => {
                self.abort("keep-alive timeout during processing".into());
                return;
            }
            _ => {}
        }
        self.next_poll = Some(now + self.config.poll_interval);
    }

    fn next_download_chunk(&mut self) {
        let mut buf = vec![0u8; MAX_TRANSFER_SIZE];
        match self.host.read_output(&mut buf) {
            Ok(n) => {
                self.first_read = false;
                buf.truncate(n.min(MAX_TRANSFER_SIZE));
                self.output_size += buf.len() as u64;
                self.send(ScriptingMessage::Download(Bytes::from(buf)));
                if n == 0 {
                    self.out.event(ScriptingServerEvent::DownloadComplete {
                        output_size: self.output_size,
                    });
                    self.end(CloseMode::Shutdown);
                }
            }
            Err(e) if self.first_read => self.abort(format!("there are no results: {e}")),
            Err(e) => self.abort(format!("output read error: {e}")),
        }
    }
}

impl<H: ScriptingHost, K: KeyringCheck> ServiceSession for ScriptingServer<H, K> {
    type Event = ScriptingServerEvent;

    fn handle_data(&mut self, now: Instant, _ppid: u32, _stream: u16, data: Bytes) {
        if matches!(self.state, ServerState::Finished) {
            return;
        }
        let m = match ScriptingMessage::decode_bytes(&data) {
            Ok(m) => m,
            Err(e) => {
                self.abort(format!("bad message ({e}): {}", to_hex(&data)));
                return;
            }
        };
        match self.state {
            ServerState::Upload(target) => self.handle_upload_state(now, target, m),
            ServerState::Working => match m {
                ScriptingMessage::KeepAlive => {
                    self.send(ScriptingMessage::KeepAliveAck { status: Some(0) })
                }
                ScriptingMessage::KeepAliveAck { .. } => self.waiting_for_ack = false,
                other => self.abort(format!("unexpected message {other:?} while working")),
            },
            // RSPLIB does not read while it downloads; acknowledgements are harmless.
            ServerState::Download => {}
            ServerState::Idle | ServerState::Finished => {
                self.abort(format!("unexpected message {m:?}"))
            }
        }
    }

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {
        self.abort("unexpected cookie echo".into());
    }

    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        if self.state == ServerState::Finished {
            return;
        }
        match event {
            SessionEvent::Up if self.state == ServerState::Idle => {
                self.out.push(ServiceOutput::Load(
                    1.0 / self.config.max_sessions.max(1) as f64,
                ));
                self.send(ScriptingMessage::Ready {
                    info: info_bytes(&self.config.hostname),
                });
                self.state = ServerState::Upload(UploadTarget::Input);
                self.upload_deadline = Some(now + self.config.transmit_timeout);
            }
            SessionEvent::Blocked => {
                self.blocked_since.get_or_insert(now);
            }
            SessionEvent::Writable => self.blocked_since = None,
            SessionEvent::SendFailed => self.abort("send failed".into()),
            SessionEvent::PeerClosed => {
                self.state = ServerState::Finished;
                self.release();
            }
            SessionEvent::ServerShutdown => self.abort("server shutdown".into()),
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(since) = self.blocked_since
            && now >= since + self.config.transmit_timeout
        {
            self.abort("transmission timeout".into());
            return;
        }
        match self.state {
            ServerState::Upload(_) if self.upload_deadline.is_some_and(|d| now >= d) => {
                self.abort("reception timeout during upload".into());
            }
            ServerState::Working if self.next_poll.is_some_and(|t| now >= t) => self.poll_work(now),
            _ => {}
        }
    }

    fn poll_output(&mut self) -> Option<ServiceOutput<ScriptingServerEvent>> {
        if let Some(o) = self.out.pop() {
            return Some(o);
        }
        if self.state == ServerState::Download && self.blocked_since.is_none() {
            self.next_download_chunk();
            return self.out.pop();
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let blocked = self.blocked_since.map(|t| t + self.config.transmit_timeout);
        let state = match self.state {
            ServerState::Upload(_) => self.upload_deadline,
            ServerState::Working => {
                let ka = match (self.waiting_for_ack, self.last_keepalive) {
                    (true, Some(t)) => Some(t + self.config.keepalive_timeout),
                    _ => None,
                };
                [self.next_poll, ka].into_iter().flatten().min()
            }
            _ => None,
        };
        [blocked, state].into_iter().flatten().min()
    }

    fn is_finished(&self) -> bool {
        self.state == ServerState::Finished
    }
}

/// A PE session over capacity: sends NOTREADY(FULLY_LOADED, host name) when it comes up
/// and closes gracefully (RSPLIB's `rejectNewSession`).
#[derive(Debug)]
pub struct ScriptingRejectSession {
    info: Bytes,
    done: bool,
    out: Outbox<core::convert::Infallible>,
}

impl ScriptingRejectSession {
    /// A rejecting session naming `hostname`.
    pub fn new(hostname: &str) -> ScriptingRejectSession {
        ScriptingRejectSession {
            info: info_bytes(hostname),
            done: false,
            out: Outbox::default(),
        }
    }
}

impl ServiceSession for ScriptingRejectSession {
    type Event = core::convert::Infallible;

    fn handle_data(&mut self, _now: Instant, _ppid: u32, _stream: u16, _data: Bytes) {}

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {}

    fn handle_event(&mut self, _now: Instant, event: SessionEvent) {
        if self.done {
            return;
        }
        match event {
            SessionEvent::Up => {
                let m = ScriptingMessage::NotReady {
                    reason: NotReadyReason::FullyLoaded,
                    info: self.info.clone(),
                };
                self.out.send(PPID_SCRIPTING, m.encode());
                self.out.push(ServiceOutput::Close(CloseMode::Shutdown));
                self.done = true;
            }
            SessionEvent::PeerClosed => self.done = true,
            _ => {}
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<ServiceOutput<core::convert::Infallible>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn is_finished(&self) -> bool {
        self.done
    }
}

// ---------------------------------------------------------------------------------------
// PU
// ---------------------------------------------------------------------------------------

/// Settings of `scriptingclient`, RSPLIB's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptingClientConfig {
    /// `-maxretry`: trials for a work package that exits ≠ 0 (3, min 1).
    pub max_retry: u32,
    /// `-retrydelay`: wait before each failover, ±12.5 % (10 000 ms, min 100).
    pub retry_delay: Duration,
    /// `-transmittimeout` (59 500 ms): send timeout; also (not RSPLIB) how long the client
    /// waits for READY, the ENVIRONMENT reply and STATUS(0).
    pub transmit_timeout: Duration,
    /// `-keepaliveinterval` (10 000 ms).
    pub keepalive_interval: Duration,
    /// `-keepalivetimeout` (10 000 ms).
    pub keepalive_timeout: Duration,
    /// `-runid`: prefix of log lines.
    pub run_id: Option<String>,
    /// `-quiet`.
    pub quiet: bool,
}

impl Default for ScriptingClientConfig {
    fn default() -> Self {
        ScriptingClientConfig {
            max_retry: 3,
            retry_delay: Duration::from_millis(10_000),
            transmit_timeout: Duration::from_millis(59_500),
            keepalive_interval: Duration::from_millis(10_000),
            keepalive_timeout: Duration::from_millis(10_000),
            run_id: None,
            quiet: false,
        }
    }
}

/// Why a [`ScriptingClient`] cannot be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptingClientError {
    /// The environment file is empty (RSPLIB: "Unable to compute hash", exit 1).
    EmptyEnvironment,
}

impl fmt::Display for ScriptingClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the environment file is empty")
    }
}

impl std::error::Error for ScriptingClientError {}

/// What `scriptingclient` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptingClientEvent {
    /// A PE accepted the session (READY); its host name.
    ServerReady(String),
    /// The PE processes the work package.
    Processing,
    /// The next bytes of the output file (append them).
    Output(Bytes),
    /// Delete what was written to the output file so far (failover).
    DiscardOutput,
    /// A failover starts after the retry delay.
    Failover {
        /// Why.
        reason: String,
        /// Trial number (1 = first).
        trial: u32,
    },
    /// Done: the output is complete. The process exit code is 0 iff `exit_status` is 0.
    Completed {
        /// The work's exit status on the PE.
        exit_status: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    Connecting,
    WaitServerReady,
    WaitEnvironment,
    WaitStartProcessing,
    Processing,
    Download,
    RetryWait,
    FailingOver,
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UploadPart {
    Input,
    Environment,
}

/// `scriptingclient`: uploads a work package (and environment), waits, downloads the
/// output; on any failure waits the retry delay and starts again on another PE.
#[derive(Debug)]
pub struct ScriptingClient<R> {
    config: ScriptingClientConfig,
    rng: R,
    input: Bytes,
    environment: Option<(Bytes, EnvironmentHash)>,
    state: ClientState,
    trial: u32,
    exit_status: u32,
    /// Upload in progress: what and how far (`None` offset = end-of-file still to send).
    upload: Option<(UploadPart, usize)>,
    env_upload_pending: bool,
    blocked_since: Option<Instant>,
    deadline: Option<Instant>,
    keepalive_at: Option<Instant>,
    keepalive_deadline: Option<Instant>,
    retry_at: Option<Instant>,
    wrote_output: bool,
    out: Outbox<ScriptingClientEvent>,
}

impl<R: Rng> ScriptingClient<R> {
    /// A client for `input` and an optional `environment` (its SHA-1 is computed here); it
    /// waits for [`SessionEvent::Up`].
    pub fn new(
        config: ScriptingClientConfig,
        rng: R,
        input: Bytes,
        environment: Option<Bytes>,
    ) -> Result<ScriptingClient<R>, ScriptingClientError> {
        let environment = match environment {
            Some(e) if e.is_empty() => return Err(ScriptingClientError::EmptyEnvironment),
            Some(e) => {
                let h = Sha1::digest(&e);
                Some((e, h))
            }
            None => None,
        };
        let config = ScriptingClientConfig {
            max_retry: config.max_retry.max(1),
            retry_delay: config.retry_delay.max(Duration::from_millis(100)),
            ..config
        };
        Ok(ScriptingClient {
            config,
            rng,
            input,
            environment,
            state: ClientState::Connecting,
            trial: 1,
            exit_status: 0,
            upload: None,
            env_upload_pending: false,
            blocked_since: None,
            deadline: None,
            keepalive_at: None,
            keepalive_deadline: None,
            retry_at: None,
            wrote_output: false,
            out: Outbox::default(),
        })
    }

    /// The environment's SHA-1, if there is an environment.
    pub fn environment_hash(&self) -> Option<EnvironmentHash> {
        self.environment.as_ref().map(|e| e.1)
    }

    /// Current trial (1 = first).
    pub fn trial(&self) -> u32 {
        self.trial
    }

    /// The process exit code RSPLIB's client ends with: 0 iff the download completed and
    /// the remote status was 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(!(self.state == ClientState::Finished && self.exit_status == 0))
    }

    fn log(&mut self, message: String) {
        let message = match &self.config.run_id {
            Some(id) => format!("[{id}] {message}"),
            None => message,
        };
        self.out.log(LogLevel::Info, message);
    }

    fn send(&mut self, m: ScriptingMessage) {
        self.out.send(PPID_SCRIPTING, m.encode());
    }

    fn wait_for_reply(&mut self, now: Instant) {
        self.deadline = Some(now + self.config.transmit_timeout);
    }

    fn start_failover(&mut self, now: Instant, reason: String) {
        if matches!(
            self.state,
            ClientState::RetryWait | ClientState::FailingOver | ClientState::Finished
        ) {
            return;
        }
        if self.wrote_output {
            self.out.event(ScriptingClientEvent::DiscardOutput);
            self.wrote_output = false;
        }
        self.log(format!("Scripting: {reason} -> failover"));
        self.out.event(ScriptingClientEvent::Failover {
            reason,
            trial: self.trial,
        });
        self.schedule_retry(now);
    }

    fn schedule_retry(&mut self, now: Instant) {
        self.state = ClientState::RetryWait;
        self.upload = None;
        self.env_upload_pending = false;
        self.blocked_since = None;
        self.deadline = None;
        self.keepalive_at = None;
        self.keepalive_deadline = None;
        let factor = 0.875 + 0.25 * random_unit(&mut self.rng);
        let delay = self.config.retry_delay.as_micros() as f64 * factor;
        self.retry_at = Some(now + Duration::from_micros(delay as u64));
    }

    /// Queues the next upload chunk (at most one per call, only while not blocked).
    fn pump_upload(&mut self) {
        if self.blocked_since.is_none() {
            let Some((part, offset)) = self.upload else {
                return;
            };
            let data = match part {
                UploadPart::Input => self.input.clone(),
                UploadPart::Environment => match &self.environment {
                    Some((e, _)) => e.clone(),
                    None => Bytes::new(),
                },
            };
            let end = (offset + MAX_TRANSFER_SIZE).min(data.len());
            let chunk = data.slice(offset.min(end)..end);
            let last = chunk.is_empty();
            self.send(ScriptingMessage::Upload(chunk));
            if last {
                self.upload = None;
                if part == UploadPart::Input && self.env_upload_pending {
                    self.env_upload_pending = false;
                    self.upload = Some((UploadPart::Environment, 0));
                }
            } else {
                self.upload = Some((part, end));
            }
        }
    }

    fn handle_message(&mut self, now: Instant, m: ScriptingMessage) {
        match (self.state, m) {
            (ClientState::WaitServerReady, ScriptingMessage::Ready { info }) => {
                let host = info_text(&info);
                self.log(format!("Scripting: server {host} is ready"));
                self.out.event(ScriptingClientEvent::ServerReady(host));
                if let Some((_, hash)) = self.environment {
                    self.send(ScriptingMessage::Environment {
                        hash,
                        upload_needed: false,
                    });
                    self.state = ClientState::WaitEnvironment;
                } else {
                    self.state = ClientState::WaitStartProcessing;
                }
                self.upload = Some((UploadPart::Input, 0));
                self.wait_for_reply(now);
            }
            (ClientState::WaitServerReady, ScriptingMessage::NotReady { info, .. }) => {
                self.start_failover(now, format!("server {} is not ready", info_text(&info)));
            }
            (ClientState::WaitEnvironment, ScriptingMessage::Environment { upload_needed, .. }) => {
                self.state = ClientState::WaitStartProcessing;
                self.wait_for_reply(now);
                if upload_needed {
                    if self.upload.is_some() {
                        self.env_upload_pending = true;
                    } else {
                        self.upload = Some((UploadPart::Environment, 0));
                    }
                }
            }
            (ClientState::WaitStartProcessing, ScriptingMessage::Status(0)) => {
                self.state = ClientState::Processing;
                self.deadline = None;
                self.keepalive_at = Some(now + self.config.keepalive_interval);
                self.out.event(ScriptingClientEvent::Processing);
            }
            (ClientState::WaitStartProcessing, ScriptingMessage::Status(s)) => {
                self.start_failover(now, format!("server did not accept upload; status was {s}"));
            }
            (
                ClientState::Processing | ClientState::Download,
                ScriptingMessage::KeepAliveAck { .. },
            ) => {
                self.keepalive_deadline = None;
                self.keepalive_at = Some(now + self.config.keepalive_interval);
            }
            (ClientState::Processing, ScriptingMessage::KeepAlive) => {
                self.send(ScriptingMessage::KeepAliveAck { status: None });
            }
            (ClientState::Processing, ScriptingMessage::Status(s)) => {
                self.exit_status = s;
                self.state = ClientState::Download;
                if s != 0 {
                    self.trial += 1;
                    if self.trial < self.config.max_retry {
                        self.start_failover(now, format!("got exit status {s} from remote side"));
                        return;
                    }
                    self.log(format!(
                        "Scripting: maximum number of trials reached (exit status {s}); downloading the results for debugging"
                    ));
                }
            }
            (ClientState::Download, ScriptingMessage::Download(data)) => {
                if data.is_empty() {
                    self.state = ClientState::Finished;
                    self.keepalive_at = None;
                    self.keepalive_deadline = None;
                    self.out.event(ScriptingClientEvent::Completed {
                        exit_status: self.exit_status,
                    });
                    self.out.push(ServiceOutput::Close(CloseMode::Shutdown));
                } else {
                    self.wrote_output = true;
                    self.out.event(ScriptingClientEvent::Output(data));
                }
            }
            (state, m) => {
                self.start_failover(now, format!("unexpected message {m:?} in state {state:?}"));
            }
        }
    }
}

impl<R: Rng> ServiceSession for ScriptingClient<R> {
    type Event = ScriptingClientEvent;

    fn handle_data(&mut self, now: Instant, _ppid: u32, _stream: u16, data: Bytes) {
        if matches!(
            self.state,
            ClientState::Finished
                | ClientState::RetryWait
                | ClientState::FailingOver
                | ClientState::Connecting
        ) {
            return;
        }
        match ScriptingMessage::decode_exact(&data) {
            Ok(m) => self.handle_message(now, m),
            Err(e) => self.start_failover(now, format!("bad message: {e}")),
        }
    }

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {}

    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        match (event, self.state) {
            (_, ClientState::Finished) => {}
            (SessionEvent::Up, ClientState::Connecting)
            | (SessionEvent::FailoverComplete { .. }, ClientState::FailingOver) => {
                self.state = ClientState::WaitServerReady;
                self.wait_for_reply(now);
            }
            (SessionEvent::FailoverNecessary, ClientState::FailingOver) => {
                // No PE reached: wait again, then retry.
                self.schedule_retry(now);
            }
            (SessionEvent::FailoverNecessary, _) => {
                self.start_failover(now, "failover necessary".into());
            }
            (SessionEvent::FailoverStarted, ClientState::FailingOver) => {}
            (SessionEvent::FailoverStarted, _) => {
                // The session layer moves on by itself: no retry delay to wait.
                self.start_failover(now, "session layer fails over".into());
                self.retry_at = None;
                self.state = ClientState::FailingOver;
            }
            (SessionEvent::SendFailed, _) => self.start_failover(now, "send error".into()),
            (SessionEvent::Blocked, _) => {
                self.blocked_since.get_or_insert(now);
            }
            (SessionEvent::Writable, _) => {
                self.blocked_since = None;
                // Upload progress counts as activity for the reply timeout.
                if self.deadline.is_some() {
                    self.deadline = Some(now + self.config.transmit_timeout);
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        match self.state {
            ClientState::Finished | ClientState::FailingOver | ClientState::Connecting => {}
            ClientState::RetryWait => {
                if due(self.retry_at) {
                    self.retry_at = None;
                    self.state = ClientState::FailingOver;
                    self.out.push(ServiceOutput::Failover {
                        report_unreachable: false,
                    });
                }
            }
            _ => {
                if self
                    .blocked_since
                    .is_some_and(|t| now >= t + self.config.transmit_timeout)
                {
                    self.start_failover(now, "upload error: transmission timeout".into());
                } else if due(self.deadline) {
                    self.start_failover(now, "timeout waiting for the server".into());
                } else if due(self.keepalive_deadline) {
                    self.start_failover(now, "keep-alive timeout".into());
                } else if due(self.keepalive_at) {
                    self.send(ScriptingMessage::KeepAlive);
                    self.keepalive_at = None;
                    self.keepalive_deadline = Some(now + self.config.keepalive_timeout);
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<ServiceOutput<ScriptingClientEvent>> {
        if let Some(o) = self.out.pop() {
            return Some(o);
        }
        self.pump_upload();
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ClientState::Finished | ClientState::FailingOver | ClientState::Connecting => None,
            ClientState::RetryWait => self.retry_at,
            _ => [
                self.blocked_since.map(|t| t + self.config.transmit_timeout),
                self.deadline,
                self.keepalive_deadline,
                self.keepalive_at,
            ]
            .into_iter()
            .flatten()
            .min(),
        }
    }

    fn is_finished(&self) -> bool {
        self.state == ClientState::Finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    /// The shared part of the test host: the cache index and its "files".
    #[derive(Default)]
    struct Store {
        index: Option<EnvironmentCache>,
        files: HashMap<EnvironmentHash, Vec<u8>>,
        cleanups: usize,
    }

    type Work = fn(&[u8], Option<&[u8]>) -> (u32, Option<Vec<u8>>);

    /// In-memory host: files are vectors, the "script" is a function of input and
    /// environment that finishes after `polls` checks.
    struct MemHost {
        store: Rc<RefCell<Store>>,
        input: Vec<u8>,
        environment: Option<Vec<u8>>,
        work: Work,
        polls: u32,
        result: Option<(u32, Option<Vec<u8>>)>,
        read_pos: usize,
    }

    impl MemHost {
        fn new(store: &Rc<RefCell<Store>>, work: Work, polls: u32) -> MemHost {
            MemHost {
                store: store.clone(),
                input: Vec::new(),
                environment: None,
                work,
                polls,
                result: None,
                read_pos: 0,
            }
        }
    }

    impl ScriptingHost for MemHost {
        fn write_input(&mut self, chunk: &[u8]) -> Result<(), HostError> {
            self.input.extend_from_slice(chunk);
            Ok(())
        }
        fn write_environment(&mut self, chunk: &[u8]) -> Result<(), HostError> {
            self.environment
                .get_or_insert_with(Vec::new)
                .extend_from_slice(chunk);
            Ok(())
        }
        fn fetch_cached_environment(&mut self, hash: &EnvironmentHash) -> bool {
            let mut store = self.store.borrow_mut();
            let hit = store.index.as_mut().is_some_and(|c| c.lookup(hash));
            if hit {
                match store.files.get(hash).cloned() {
                    Some(f) if Sha1::digest(&f) == *hash => {
                        self.environment = Some(f);
                        return true;
                    }
                    _ => {
                        store.files.remove(hash);
                        if let Some(c) = store.index.as_mut() {
                            c.remove(hash);
                        }
                    }
                }
            }
            false
        }
        fn store_environment(&mut self, hash: &EnvironmentHash, size: u64) {
            let mut store = self.store.borrow_mut();
            let evicted = store
                .index
                .get_or_insert_with(|| EnvironmentCache::new(131_072, 16))
                .insert(*hash, size);
            if let Some(evicted) = evicted {
                for h in evicted {
                    store.files.remove(&h);
                }
                let file = self.environment.clone().unwrap_or_default();
                store.files.insert(*hash, file);
            }
        }
        fn start_work(&mut self, with_environment: bool) -> Result<(), HostError> {
            let env = if with_environment {
                self.environment.as_deref()
            } else {
                None
            };
            self.result = Some((self.work)(&self.input, env));
            Ok(())
        }
        fn poll_work(&mut self) -> Option<u32> {
            if self.polls > 0 {
                self.polls -= 1;
                return None;
            }
            self.result.as_ref().map(|r| r.0)
        }
        fn read_output(&mut self, buf: &mut [u8]) -> Result<usize, HostError> {
            let Some((_, Some(out))) = &self.result else {
                return Err(HostError("no output.data".into()));
            };
            let n = (out.len() - self.read_pos).min(buf.len());
            buf[..n].copy_from_slice(&out[self.read_pos..self.read_pos + n]);
            self.read_pos += n;
            Ok(n)
        }
        fn cleanup(&mut self) {
            self.store.borrow_mut().cleanups += 1;
        }
    }

    /// Output = reversed input followed by the environment (if any).
    fn reverse_work(input: &[u8], env: Option<&[u8]>) -> (u32, Option<Vec<u8>>) {
        let mut out: Vec<u8> = input.iter().rev().copied().collect();
        out.extend_from_slice(env.unwrap_or(b"-"));
        (0, Some(out))
    }

    fn failing_work(_: &[u8], _: Option<&[u8]>) -> (u32, Option<Vec<u8>>) {
        (3, Some(b"error log".to_vec()))
    }

    fn no_output_work(_: &[u8], _: Option<&[u8]>) -> (u32, Option<Vec<u8>>) {
        (0, None)
    }

    struct RejectingKeyring {
        seen: usize,
    }

    impl KeyringCheck for RejectingKeyring {
        fn begin(&mut self) {
            self.seen = 0;
        }
        fn update(&mut self, chunk: &[u8]) {
            self.seen += chunk.len();
        }
        fn finish(&mut self) -> Result<(), HostError> {
            Err(HostError(format!("bad signature over {} bytes", self.seen)))
        }
    }

    fn config() -> ScriptingServerConfig {
        ScriptingServerConfig {
            hostname: "node1".into(),
            max_sessions: 2,
            ..Default::default()
        }
    }

    fn drain<S: ServiceSession>(s: &mut S) -> Vec<ServiceOutput<S::Event>> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn sent<E>(outs: &[ServiceOutput<E>]) -> Vec<ScriptingMessage> {
        outs.iter()
            .filter_map(|o| match o {
                ServiceOutput::Send { ppid, data, .. } => {
                    assert_eq!(*ppid, PPID_SCRIPTING);
                    Some(ScriptingMessage::decode_exact(data).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    fn up(m: ScriptingMessage) -> Bytes {
        m.encode()
    }

    #[test]
    fn cache_limits_and_lru() {
        let h = |b: u8| [b; 20];
        let mut c = EnvironmentCache::new(1, 3); // clamped to 128 KiB
        assert_eq!(c.insert(h(1), 50_000), Some(vec![]));
        assert_eq!(c.insert(h(2), 50_000), Some(vec![]));
        assert!(c.lookup(&h(1)));
        // 128 KiB = 131 072: a third 50 000-byte file evicts the LRU entry (2).
        assert_eq!(c.insert(h(3), 50_000), Some(vec![h(2)]));
        assert!(!c.lookup(&h(2)));
        assert_eq!(c.insert(h(4), 10), Some(vec![]));
        // Entry limit 3: the next insert evicts the least recently used (1 was used
        // before 3 was inserted).
        assert_eq!(c.insert(h(5), 10), Some(vec![h(1)]));
        assert_eq!(c.entries().len(), 3);
        assert_eq!(c.total_size(), 50_020);
        assert_eq!(c.insert(h(6), 200_000), None, "larger than the cache");
        assert!(c.remove(&h(4)));
        assert!(!c.remove(&h(4)));
        // Re-inserting refreshes instead of duplicating.
        assert_eq!(c.insert(h(5), 11), Some(vec![]));
        assert_eq!(c.entries().len(), 2);
    }

    #[test]
    fn server_session_without_environment() {
        let store = Rc::new(RefCell::new(Store::default()));
        let mut s =
            ScriptingServer::new(config(), MemHost::new(&store, reverse_work, 2), NoKeyring);
        let mut now = Instant::ZERO;
        s.handle_event(now, SessionEvent::Up);
        let outs = drain(&mut s);
        assert_eq!(outs[0], ServiceOutput::Load(0.5));
        assert_eq!(
            outs[1],
            ServiceOutput::Send {
                ppid: 35,
                stream: 0,
                data: Bytes::from_static(b"\x01\x00\x00\x09node1")
            }
        );
        assert_eq!(s.poll_timeout(), Some(Instant::from_millis(30_000)));
        s.handle_data(
            now,
            35,
            0,
            up(ScriptingMessage::Upload(Bytes::from_static(b"abc"))),
        );
        s.handle_data(
            now,
            35,
            0,
            up(ScriptingMessage::Upload(Bytes::from_static(b"def"))),
        );
        s.handle_data(now, 35, 0, up(ScriptingMessage::Upload(Bytes::new())));
        let outs = drain(&mut s);
        assert_eq!(sent(&outs), vec![ScriptingMessage::Status(0)]);
        assert!(
            outs.contains(&ServiceOutput::Event(ScriptingServerEvent::WorkStarted {
                input_size: 6,
                with_environment: false
            }))
        );
        // Work checked at once: first KEEPALIVE goes out immediately (RSPLIB).
        assert_eq!(s.poll_timeout(), Some(now));
        s.handle_timeout(now);
        assert_eq!(sent(&drain(&mut s)), vec![ScriptingMessage::KeepAlive]);
        s.handle_data(
            now,
            35,
            0,
            up(ScriptingMessage::KeepAliveAck { status: None }),
        );
        s.handle_data(now, 35, 0, up(ScriptingMessage::KeepAlive));
        assert_eq!(
            sent(&drain(&mut s)),
            vec![ScriptingMessage::KeepAliveAck { status: Some(0) }]
        );
        now = Instant::from_millis(1000);
        s.handle_timeout(now);
        assert!(sent(&drain(&mut s)).is_empty());
        now = Instant::from_millis(2000);
        s.handle_timeout(now);
        let outs = drain(&mut s);
        assert_eq!(
            sent(&outs),
            vec![
                ScriptingMessage::Status(0),
                ScriptingMessage::Download(Bytes::from_static(b"fedcba-")),
                ScriptingMessage::Download(Bytes::new()),
            ]
        );
        assert_eq!(outs.last(), Some(&ServiceOutput::Load(0.0)));
        assert!(outs.contains(&ServiceOutput::Close(CloseMode::Shutdown)));
        assert!(s.is_finished());
        assert_eq!(store.borrow().cleanups, 1);
        s.handle_event(now, SessionEvent::PeerClosed);
        assert_eq!(store.borrow().cleanups, 1, "cleanup runs once");
    }

    #[test]
    fn server_environment_cache_and_keyring() {
        let store = Rc::new(RefCell::new(Store::default()));
        let env = Bytes::from(vec![7u8; 40_000]);
        let hash = Sha1::digest(&env);
        let t = Instant::ZERO;
        let run = |s: &mut ScriptingServer<MemHost, NoKeyring>, upload_env: bool| {
            s.handle_event(t, SessionEvent::Up);
            s.handle_data(
                t,
                35,
                0,
                up(ScriptingMessage::Environment {
                    hash,
                    upload_needed: false,
                }),
            );
            s.handle_data(
                t,
                35,
                0,
                up(ScriptingMessage::Upload(Bytes::from_static(b"in"))),
            );
            s.handle_data(t, 35, 0, up(ScriptingMessage::Upload(Bytes::new())));
            if upload_env {
                for c in env.chunks(MAX_TRANSFER_SIZE) {
                    s.handle_data(
                        t,
                        35,
                        0,
                        up(ScriptingMessage::Upload(Bytes::copy_from_slice(c))),
                    );
                }
                s.handle_data(t, 35, 0, up(ScriptingMessage::Upload(Bytes::new())));
            }
            sent(&drain(s))
        };
        // Miss: U = 1, the environment is uploaded after the input and cached.
        let mut s =
            ScriptingServer::new(config(), MemHost::new(&store, reverse_work, 0), NoKeyring);
        let msgs = run(&mut s, true);
        assert_eq!(
            msgs[1],
            ScriptingMessage::Environment {
                hash,
                upload_needed: true
            }
        );
        assert_eq!(msgs[2], ScriptingMessage::Status(0));
        assert_eq!(s.host().environment.as_deref(), Some(&env[..]));
        assert_eq!(store.borrow().files.get(&hash).map(Vec::len), Some(40_000));
        // Hit: U = 0, STATUS(0) right after the input; the run gets the cached file.
        let mut s2 =
            ScriptingServer::new(config(), MemHost::new(&store, reverse_work, 0), NoKeyring);
        let msgs = run(&mut s2, false);
        assert_eq!(
            msgs[1..],
            [
                ScriptingMessage::Environment {
                    hash,
                    upload_needed: false
                },
                ScriptingMessage::Status(0)
            ]
        );
        assert_eq!(s2.host().environment.as_deref(), Some(&env[..]));
        // A damaged cache file counts as a miss.
        store.borrow_mut().files.insert(hash, vec![1, 2, 3]);
        let mut s3 =
            ScriptingServer::new(config(), MemHost::new(&store, reverse_work, 0), NoKeyring);
        let msgs = run(&mut s3, true);
        assert_eq!(
            msgs[1],
            ScriptingMessage::Environment {
                hash,
                upload_needed: true
            }
        );
        // An upload that does not match the requested hash aborts the session.
        let mut s5 =
            ScriptingServer::new(config(), MemHost::new(&store, reverse_work, 0), NoKeyring);
        s5.handle_event(t, SessionEvent::Up);
        for m in [
            ScriptingMessage::Environment {
                hash: [9; 20],
                upload_needed: false,
            },
            ScriptingMessage::Upload(Bytes::new()),
            ScriptingMessage::Upload(env.clone()),
            ScriptingMessage::Upload(Bytes::new()),
        ] {
            s5.handle_data(t, 35, 0, up(m));
        }
        let outs = drain(&mut s5);
        assert!(outs.contains(&ServiceOutput::Close(CloseMode::Abort)));
        assert!(!sent(&outs).contains(&ScriptingMessage::Status(0)));
        // A keyring that rejects the environment aborts the session; nothing is cached.
        let store2 = Rc::new(RefCell::new(Store::default()));
        let mut s4 = ScriptingServer::new(
            config(),
            MemHost::new(&store2, reverse_work, 0),
            RejectingKeyring { seen: 0 },
        );
        s4.handle_event(t, SessionEvent::Up);
        let mut msgs = vec![
            ScriptingMessage::Environment {
                hash,
                upload_needed: false,
            },
            ScriptingMessage::Upload(Bytes::new()),
        ];
        msgs.extend(
            env.chunks(MAX_TRANSFER_SIZE)
                .map(|c| ScriptingMessage::Upload(Bytes::copy_from_slice(c))),
        );
        msgs.push(ScriptingMessage::Upload(Bytes::new()));
        for m in msgs {
            s4.handle_data(t, 35, 0, up(m));
        }
        let outs = drain(&mut s4);
        assert!(outs.contains(&ServiceOutput::Close(CloseMode::Abort)));
        assert!(!sent(&outs).contains(&ScriptingMessage::Status(0)));
        assert!(store2.borrow().files.is_empty());
        assert!(outs.iter().any(
            |o| matches!(o, ServiceOutput::Log { message, .. } if message.contains("40000 bytes"))
        ));
    }

    #[test]
    fn server_timeouts_and_protocol_errors() {
        let store = Rc::new(RefCell::new(Store::default()));
        let new =
            |work: Work| ScriptingServer::new(config(), MemHost::new(&store, work, 100), NoKeyring);
        let aborted = |s: &mut ScriptingServer<MemHost, NoKeyring>| {
            drain(s).contains(&ServiceOutput::Close(CloseMode::Abort)) && s.is_finished()
        };
        // Upload inactivity: 30 s after the last non-empty UPLOAD.
        let mut s = new(reverse_work);
        s.handle_event(Instant::ZERO, SessionEvent::Up);
        drain(&mut s);
        s.handle_data(
            Instant::from_millis(10_000),
            35,
            0,
            up(ScriptingMessage::Upload(Bytes::from_static(b"x"))),
        );
        // A keep-alive during the upload is answered (RSPLIB would abort).
        s.handle_data(
            Instant::from_millis(10_000),
            35,
            0,
            up(ScriptingMessage::KeepAlive),
        );
        assert_eq!(
            sent(&drain(&mut s)),
            vec![ScriptingMessage::KeepAliveAck { status: Some(0) }]
        );
        assert_eq!(s.poll_timeout(), Some(Instant::from_millis(40_000)));
        s.handle_timeout(Instant::from_millis(39_999));
        assert!(!s.is_finished());
        s.handle_timeout(Instant::from_millis(40_000));
        assert!(aborted(&mut s));
        // Keep-alive timeout while working.
        let mut s = new(reverse_work);
        s.handle_event(Instant::ZERO, SessionEvent::Up);
        s.handle_data(
            Instant::ZERO,
            35,
            0,
            up(ScriptingMessage::Upload(Bytes::new())),
        );
        let mut now = Instant::ZERO;
        while !s.is_finished() {
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
        }
        assert_eq!(now, Instant::from_millis(10_000));
        assert!(aborted(&mut s));
        // Unexpected messages, malformed messages, cookie echoes.
        for bad in [
            up(ScriptingMessage::Status(0)),
            up(ScriptingMessage::Download(Bytes::new())),
            Bytes::from_static(&[2, 0, 0, 9, 1]),
            Bytes::from_static(&[9, 0, 0, 4]),
        ] {
            let mut s = new(reverse_work);
            s.handle_event(Instant::ZERO, SessionEvent::Up);
            s.handle_data(Instant::ZERO, 35, 0, bad);
            assert!(aborted(&mut s));
        }
        let mut s = new(reverse_work);
        s.handle_event(Instant::ZERO, SessionEvent::Up);
        s.handle_data(
            Instant::ZERO,
            35,
            0,
            up(ScriptingMessage::Upload(Bytes::new())),
        );
        s.handle_data(
            Instant::ZERO,
            35,
            0,
            up(ScriptingMessage::Upload(Bytes::new())),
        );
        assert!(aborted(&mut s), "UPLOAD while working");
        let mut s = new(reverse_work);
        s.handle_cookie_echo(Instant::ZERO, Bytes::new());
        assert!(aborted(&mut s));
        // No output file.
        let mut s =
            ScriptingServer::new(config(), MemHost::new(&store, no_output_work, 0), NoKeyring);
        s.handle_event(Instant::ZERO, SessionEvent::Up);
        s.handle_data(
            Instant::ZERO,
            35,
            0,
            up(ScriptingMessage::Upload(Bytes::new())),
        );
        s.handle_timeout(Instant::ZERO);
        let outs = drain(&mut s);
        assert!(outs.contains(&ServiceOutput::Close(CloseMode::Abort)));
        assert!(
            !sent(&outs)
                .iter()
                .any(|m| matches!(m, ScriptingMessage::Download(_)))
        );
    }

    #[test]
    fn reject_session_sends_not_ready() {
        let mut r = ScriptingRejectSession::new("node1");
        r.handle_event(Instant::ZERO, SessionEvent::Up);
        assert_eq!(
            drain(&mut r),
            vec![
                ServiceOutput::Send {
                    ppid: 35,
                    stream: 0,
                    data: Bytes::from_static(b"\x00\x00\x00\x0d\x00\x00\x00\x01node1")
                },
                ServiceOutput::Close(CloseMode::Shutdown)
            ]
        );
        assert!(r.is_finished());
        // Host names are cut to 63 bytes like RSPLIB.
        let long = "h".repeat(100);
        assert_eq!(info_bytes(&long).len(), 63);
    }

    // ---- client against in-memory PEs ------------------------------------------------

    enum Pe {
        Serve(Box<ScriptingServer<MemHost, NoKeyring>>),
        Reject(ScriptingRejectSession),
    }

    impl Pe {
        fn session(&mut self) -> &mut dyn ServiceSession<Event = ScriptingServerEvent> {
            match self {
                Pe::Serve(s) => s,
                Pe::Reject(_) => unreachable!(),
            }
        }
    }

    struct Run {
        output: Vec<u8>,
        events: Vec<ScriptingClientEvent>,
        failover_times: Vec<(Instant, Instant)>,
        end: Instant,
        exit_code: i32,
        sent_by_client: Vec<ScriptingMessage>,
    }

    /// Runs `client` against `pes` in order (one per connection). `die_after`: PE 0 breaks
    /// after receiving that many messages (the driver reports FailoverNecessary).
    fn run(
        mut client: ScriptingClient<Xoshiro256PlusPlus>,
        mut pes: Vec<Pe>,
        die_after: Option<usize>,
    ) -> Run {
        let mut now = Instant::ZERO;
        let mut current = 0usize;
        let mut received = 0usize;
        let mut r = Run {
            output: Vec::new(),
            events: Vec::new(),
            failover_times: Vec::new(),
            end: now,
            exit_code: 1,
            sent_by_client: Vec::new(),
        };
        let mut failure_at = None;
        let up_pe = |pes: &mut Vec<Pe>, i: usize, now| match &mut pes[i] {
            Pe::Serve(s) => s.handle_event(now, SessionEvent::Up),
            Pe::Reject(s) => s.handle_event(now, SessionEvent::Up),
        };
        up_pe(&mut pes, 0, now);
        client.handle_event(now, SessionEvent::Up);
        for _ in 0..100_000 {
            let mut progress = true;
            while progress {
                progress = false;
                // PE → client.
                let outs: Vec<Bytes> = match &mut pes[current] {
                    Pe::Serve(s) => drain(s)
                        .into_iter()
                        .filter_map(|o| match o {
                            ServiceOutput::Send { data, .. } => Some(data),
                            _ => None,
                        })
                        .collect(),
                    Pe::Reject(s) => drain(s)
                        .into_iter()
                        .filter_map(|o| match o {
                            ServiceOutput::Send { data, .. } => Some(data),
                            _ => None,
                        })
                        .collect(),
                };
                for d in outs {
                    progress = true;
                    client.handle_data(now, 35, 0, d);
                }
                // Client → PE.
                while let Some(o) = client.poll_output() {
                    progress = true;
                    match o {
                        ServiceOutput::Send { data, .. } => {
                            r.sent_by_client
                                .push(ScriptingMessage::decode_exact(&data).unwrap());
                            received += 1;
                            if current == 0 && die_after.is_some_and(|n| received > n) {
                                if failure_at.is_none() {
                                    failure_at = Some(now);
                                    client.handle_event(now, SessionEvent::FailoverNecessary);
                                }
                                continue;
                            }
                            if let Pe::Serve(s) = &mut pes[current] {
                                s.handle_data(now, 35, 0, data);
                            }
                        }
                        ServiceOutput::Failover { report_unreachable } => {
                            assert!(!report_unreachable);
                            r.failover_times.push((failure_at.unwrap_or(now), now));
                            failure_at = None;
                            current += 1;
                            up_pe(&mut pes, current, now);
                            client.handle_event(
                                now,
                                SessionEvent::FailoverComplete {
                                    cookie_echoed: false,
                                },
                            );
                        }
                        ServiceOutput::Event(ScriptingClientEvent::Output(d)) => {
                            r.output.extend_from_slice(&d)
                        }
                        ServiceOutput::Event(ScriptingClientEvent::DiscardOutput) => {
                            r.output.clear()
                        }
                        ServiceOutput::Event(e) => {
                            if let ScriptingClientEvent::Failover { .. } = e {
                                failure_at.get_or_insert(now);
                            }
                            r.events.push(e)
                        }
                        _ => {}
                    }
                }
            }
            if client.is_finished() {
                break;
            }
            let mut next = client.poll_timeout();
            if let Pe::Serve(s) = &pes[current] {
                next = [next, s.poll_timeout()].into_iter().flatten().min();
            }
            let Some(t) = next else { break };
            now = now.max(t);
            client.handle_timeout(now);
            if let Pe::Serve(_) = &pes[current] {
                pes[current].session().handle_timeout(now);
            }
        }
        r.end = now;
        r.exit_code = client.exit_code();
        r
    }

    fn client(
        input: &[u8],
        env: Option<&[u8]>,
        max_retry: u32,
    ) -> ScriptingClient<Xoshiro256PlusPlus> {
        ScriptingClient::new(
            ScriptingClientConfig {
                max_retry,
                ..Default::default()
            },
            Xoshiro256PlusPlus::seed_from_u64(5),
            Bytes::copy_from_slice(input),
            env.map(Bytes::copy_from_slice),
        )
        .unwrap()
    }

    fn pe(store: &Rc<RefCell<Store>>, work: Work, polls: u32) -> Pe {
        Pe::Serve(Box::new(ScriptingServer::new(
            config(),
            MemHost::new(store, work, polls),
            NoKeyring,
        )))
    }

    fn expected(input: &[u8], env: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = input.iter().rev().copied().collect();
        v.extend_from_slice(env);
        v
    }

    #[test]
    fn client_and_server_end_to_end() {
        let store = Rc::new(RefCell::new(Store::default()));
        let input: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let env: Vec<u8> = (0..20_000u32).map(|i| (i % 13) as u8).collect();
        let r = run(
            client(&input, Some(&env), 3),
            vec![pe(&store, reverse_work, 25)],
            None,
        );
        assert_eq!(r.exit_code, 0);
        assert_eq!(r.output, expected(&input, &env));
        assert!(
            r.events
                .contains(&ScriptingClientEvent::ServerReady("node1".into()))
        );
        assert!(
            r.events
                .contains(&ScriptingClientEvent::Completed { exit_status: 0 })
        );
        // Order on the wire: ENVIRONMENT query, the whole input, then the environment.
        let m = &r.sent_by_client;
        assert!(matches!(
            m[0],
            ScriptingMessage::Environment {
                upload_needed: false,
                ..
            }
        ));
        let input_chunks = input.len().div_ceil(MAX_TRANSFER_SIZE);
        assert!(
            m[1..=input_chunks]
                .iter()
                .all(|x| matches!(x, ScriptingMessage::Upload(d) if !d.is_empty()))
        );
        assert_eq!(m[input_chunks + 1], ScriptingMessage::Upload(Bytes::new()));
        assert!(
            matches!(&m[input_chunks + 2], ScriptingMessage::Upload(d) if d.len() == MAX_TRANSFER_SIZE)
        );
        // The work took 25 s: the client sent keep-alives every 10 s and got answers.
        assert!(
            m.iter()
                .filter(|x| **x == ScriptingMessage::KeepAlive)
                .count()
                >= 2
        );
        assert!(r.failover_times.is_empty());
    }

    #[test]
    fn client_retries_after_failed_upload_with_identical_output() {
        let input: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let reference = {
            let store = Rc::new(RefCell::new(Store::default()));
            run(
                client(&input, None, 3),
                vec![pe(&store, reverse_work, 3)],
                None,
            )
        };
        let store = Rc::new(RefCell::new(Store::default()));
        let r = run(
            client(&input, None, 3),
            vec![pe(&store, reverse_work, 3), pe(&store, reverse_work, 3)],
            Some(2),
        );
        assert_eq!(r.exit_code, 0);
        assert_eq!(r.output, reference.output);
        assert_eq!(r.output, expected(&input, b"-"));
        assert_eq!(r.failover_times.len(), 1);
        let (failed, retried) = r.failover_times[0];
        let waited = retried - failed;
        assert!(
            waited >= Duration::from_millis(8750) && waited <= Duration::from_millis(11_250),
            "{waited:?}"
        );
        assert_eq!(store.borrow().cleanups, 1, "the second PE cleaned up");
    }

    #[test]
    fn client_not_ready_and_exit_status_retries() {
        let store = Rc::new(RefCell::new(Store::default()));
        let input = b"job";
        // NOTREADY → failover to the next PE.
        let r = run(
            client(input, None, 3),
            vec![
                Pe::Reject(ScriptingRejectSession::new("busy")),
                pe(&store, reverse_work, 0),
            ],
            None,
        );
        assert_eq!(r.exit_code, 0);
        assert_eq!(r.output, expected(input, b"-"));
        assert!(
            matches!(&r.events[0], ScriptingClientEvent::Failover { reason, trial: 1 } if reason.contains("busy"))
        );
        // Exit status 3 twice with -maxretry=3: one retry, then the error output is
        // downloaded and the client exits with 1.
        let r = run(
            client(input, None, 3),
            vec![pe(&store, failing_work, 0), pe(&store, failing_work, 0)],
            None,
        );
        assert_eq!(r.failover_times.len(), 1);
        assert_eq!(r.output, b"error log");
        assert!(
            r.events
                .contains(&ScriptingClientEvent::Completed { exit_status: 3 })
        );
        assert_eq!(r.exit_code, 1);
        // -maxretry=1: no retry at all.
        let r = run(
            client(input, None, 1),
            vec![pe(&store, failing_work, 0)],
            None,
        );
        assert!(r.failover_times.is_empty());
        assert_eq!(r.exit_code, 1);
    }

    #[test]
    fn client_timeouts() {
        let t = Instant::ZERO;
        // No READY within the transmit timeout → failover after the retry delay.
        let mut c = client(b"x", None, 3);
        c.handle_event(t, SessionEvent::Up);
        assert_eq!(c.poll_timeout(), Some(Instant::from_millis(59_500)));
        c.handle_timeout(Instant::from_millis(59_500));
        let outs = drain(&mut c);
        assert!(outs.iter().any(|o| matches!(
            o,
            ServiceOutput::Event(ScriptingClientEvent::Failover { .. })
        )));
        let retry = c.poll_timeout().unwrap();
        assert!(
            retry >= Instant::from_millis(59_500 + 8_750)
                && retry <= Instant::from_millis(59_500 + 11_250)
        );
        c.handle_timeout(retry);
        assert_eq!(
            drain(&mut c),
            vec![ServiceOutput::Failover {
                report_unreachable: false
            }]
        );
        // A failover that reaches no PE waits and tries again.
        c.handle_event(retry, SessionEvent::FailoverNecessary);
        assert!(c.poll_timeout().unwrap() > retry);
        // Keep-alive timeout while processing.
        let mut c = client(b"x", None, 3);
        c.handle_event(t, SessionEvent::Up);
        c.handle_data(
            t,
            35,
            0,
            ScriptingMessage::Ready { info: Bytes::new() }.encode(),
        );
        c.handle_data(t, 35, 0, ScriptingMessage::Status(0).encode());
        drain(&mut c);
        c.handle_timeout(Instant::from_millis(10_000));
        assert_eq!(sent(&drain(&mut c)), vec![ScriptingMessage::KeepAlive]);
        c.handle_timeout(Instant::from_millis(19_999));
        assert!(drain(&mut c).is_empty());
        c.handle_timeout(Instant::from_millis(20_000));
        assert!(drain(&mut c).iter().any(|o| matches!(o,
            ServiceOutput::Event(ScriptingClientEvent::Failover { reason, .. }) if reason.contains("keep-alive"))));
        // Messages with Length ≠ size, and empty environments.
        let mut c = client(b"x", None, 3);
        c.handle_event(t, SessionEvent::Up);
        c.handle_data(t, 35, 0, Bytes::from_static(b"\x01\x00\x00\x04extra"));
        assert!(drain(&mut c).iter().any(|o| matches!(
            o,
            ServiceOutput::Event(ScriptingClientEvent::Failover { .. })
        )));
        assert_eq!(
            ScriptingClient::new(
                ScriptingClientConfig::default(),
                Xoshiro256PlusPlus::seed_from_u64(1),
                Bytes::new(),
                Some(Bytes::new())
            )
            .unwrap_err(),
            ScriptingClientError::EmptyEnvironment
        );
    }

    #[test]
    fn client_upload_flow_control() {
        let input = vec![1u8; 3 * MAX_TRANSFER_SIZE];
        let mut c = client(&input, None, 3);
        let t = Instant::ZERO;
        c.handle_event(t, SessionEvent::Up);
        c.handle_data(
            t,
            35,
            0,
            ScriptingMessage::Ready { info: Bytes::new() }.encode(),
        );
        let mut first = Vec::new();
        while let Some(o) = c.poll_output() {
            first.push(o);
            if matches!(first.last(), Some(ServiceOutput::Send { .. })) {
                // The driver could not send it right away.
                c.handle_event(t, SessionEvent::Blocked);
            }
        }
        assert_eq!(sent(&first).len(), 1, "one chunk, then blocked");
        c.handle_event(t, SessionEvent::Writable);
        let rest = sent(&drain(&mut c));
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[2], ScriptingMessage::Upload(Bytes::new()));
        // Blocked longer than the transmit timeout → failover.
        let mut c = client(&input, None, 3);
        c.handle_event(t, SessionEvent::Up);
        c.handle_event(t, SessionEvent::Blocked);
        c.handle_data(
            t,
            35,
            0,
            ScriptingMessage::Ready { info: Bytes::new() }.encode(),
        );
        drain(&mut c);
        c.handle_timeout(Instant::from_millis(59_500));
        assert!(drain(&mut c).iter().any(|o| matches!(
            o,
            ServiceOutput::Event(ScriptingClientEvent::Failover { .. })
        )));
    }

    #[test]
    fn client_follows_automatic_failover() {
        let mut c = client(b"x", None, 3);
        let t = Instant::ZERO;
        c.handle_event(t, SessionEvent::Up);
        c.handle_data(
            t,
            35,
            0,
            ScriptingMessage::Ready { info: Bytes::new() }.encode(),
        );
        c.handle_data(t, 35, 0, ScriptingMessage::Status(0).encode());
        c.handle_data(t, 35, 0, ScriptingMessage::Status(0).encode());
        c.handle_data(
            t,
            35,
            0,
            ScriptingMessage::Download(Bytes::from_static(b"part")).encode(),
        );
        drain(&mut c);
        c.handle_event(t, SessionEvent::FailoverStarted);
        let outs = drain(&mut c);
        assert!(outs.contains(&ServiceOutput::Event(ScriptingClientEvent::DiscardOutput)));
        assert!(
            !outs
                .iter()
                .any(|o| matches!(o, ServiceOutput::Failover { .. }))
        );
        assert_eq!(c.poll_timeout(), None);
        c.handle_event(
            t,
            SessionEvent::FailoverComplete {
                cookie_echoed: false,
            },
        );
        c.handle_data(
            t,
            35,
            0,
            ScriptingMessage::Ready {
                info: Bytes::from_static(b"pe2"),
            }
            .encode(),
        );
        assert!(
            drain(&mut c).contains(&ServiceOutput::Event(ScriptingClientEvent::ServerReady(
                "pe2".into()
            )))
        );
    }
}
