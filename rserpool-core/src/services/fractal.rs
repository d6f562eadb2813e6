//! Fractal generator PE (`rspserver -fractal`) and the logic of `fractalpooluser`
//! (`services.md` §5).
//!
//! * [`FractalServer`]: one PE session. It computes the requested rectangle pixel by pixel
//!   with RSPLIB's algorithms ([`FractalRenderer`]), streams DATA messages of up to 324
//!   points, sends cookies with the position to resume at, and resumes from a cookie echo.
//!   Computation happens in bounded steps (`handle_timeout` while
//!   [`poll_timeout`](ServiceSession::poll_timeout) says "now"), so one driver thread can
//!   serve many sessions.
//! * [`FractalJob`] cuts an image into tiles (one session each), [`FractalClient`] runs one
//!   tile's session, [`Framebuffer`] assembles the received points into RGB with RSPLIB's
//!   palette ([`rsplib_color`]). Encoding a PNG is left to the binary.
//!
//! Differences from RSPLIB (deliberate):
//! * the PE flushes the pending DATA before every cookie and puts the *next* pixel into the
//!   cookie, so a cookie never points past undelivered points (defect §10.12); a cookie
//!   from RSPLIB (pointing at the last computed pixel) resumes correctly, that pixel is just
//!   computed twice;
//! * `-fgpdatamaxtime` is honoured as the data flush interval (RSPLIB flushes only after
//!   more than 1 s, hard-coded, defect §10.5; the defaults agree);
//! * a PARAMETER arriving while an image is computed restarts with the new job (RSPLIB reads
//!   it only after the image);
//! * tiles cover the image exactly (RSPLIB rounds the tile size and can leave the last
//!   columns/rows out or reach past the image); rows and tiles per row are RSPLIB's.

use bytes::Bytes;
use core::time::Duration;

use rserpool_proto::services::fractal::{
    FGP_MAX_POINTS, FgpCookie, FgpData, FgpParameter, FractalAlgorithm,
};

use super::{CloseMode, LogLevel, Outbox, PPID_FGP, ServiceOutput, ServiceSession, SessionEvent};
use crate::time::Instant;

// ---------------------------------------------------------------------------------------
// Computation
// ---------------------------------------------------------------------------------------

/// Computes the iteration count of any pixel of one PARAMETER's rectangle exactly as
/// RSPLIB's PE does: c = (C1Real + x·stepX) + i·(C1Imag + y·stepY), z₀ = 0, z := z² − c
/// (Mandelbrot) or z := z^N − c (MandelbrotN), stop when |z|² ≥ 2; any other algorithm (or
/// test mode) gives (x·y) mod 256.
#[derive(Clone, Copy, Debug)]
pub struct FractalRenderer {
    algorithm: RenderAlgorithm,
    c1_real: f64,
    c1_imag: f64,
    step_x: f64,
    step_y: f64,
    n: f64,
    max_iterations: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RenderAlgorithm {
    Mandelbrot,
    MandelbrotN,
    TestPattern,
}

impl FractalRenderer {
    /// A renderer for `p`; `test_mode` forces the test pattern (`-fgptestmode`).
    pub fn new(p: &FgpParameter, test_mode: bool) -> FractalRenderer {
        let algorithm = match (test_mode, p.algorithm) {
            (true, _) | (_, FractalAlgorithm::Other(_)) => RenderAlgorithm::TestPattern,
            (false, FractalAlgorithm::Mandelbrot) => RenderAlgorithm::Mandelbrot,
            (false, FractalAlgorithm::MandelbrotN) => RenderAlgorithm::MandelbrotN,
        };
        FractalRenderer {
            algorithm,
            c1_real: p.c1_real,
            c1_imag: p.c1_imag,
            step_x: (p.c2_real - p.c1_real) / f64::from(p.width),
            step_y: (p.c2_imag - p.c1_imag) / f64::from(p.height),
            n: p.n,
            max_iterations: p.max_iterations,
        }
    }

    /// The value of pixel (`x`, `y`) and the number of iterations spent on it.
    pub fn pixel(&self, x: u32, y: u32) -> (u32, u64) {
        let cr = self.c1_real + f64::from(x) * self.step_x;
        let ci = self.c1_imag + f64::from(y) * self.step_y;
        let (mut zr, mut zi) = (0.0f64, 0.0f64);
        let mut i = 0u32;
        match self.algorithm {
            RenderAlgorithm::TestPattern => return (x.wrapping_mul(y) % 256, 1),
            RenderAlgorithm::Mandelbrot => {
                while i < self.max_iterations {
                    let r = zr * zr - zi * zi - cr;
                    zi = 2.0 * zr * zi - ci;
                    zr = r;
                    if zr * zr + zi * zi >= 2.0 {
                        break;
                    }
                    i += 1;
                }
            }
            RenderAlgorithm::MandelbrotN => {
                while i < self.max_iterations {
                    let (pr, pi) = complex_powf(zr, zi, self.n);
                    zr = pr - cr;
                    zi = pi - ci;
                    if zr * zr + zi * zi >= 2.0 {
                        break;
                    }
                    i += 1;
                }
            }
        }
        (i, u64::from(i) + 1)
    }
}

/// z^n for complex z and real n as exp(n · log z); 0^n = 0 (what `std::pow` gives RSPLIB).
fn complex_powf(re: f64, im: f64, n: f64) -> (f64, f64) {
    if re == 0.0 && im == 0.0 {
        return (0.0, 0.0);
    }
    let modulus = re.hypot(im).powf(n);
    let angle = im.atan2(re) * n;
    (modulus * angle.cos(), modulus * angle.sin())
}

// ---------------------------------------------------------------------------------------
// PE
// ---------------------------------------------------------------------------------------

/// Settings of the fractal generator PE (`rspserver -fractal`), RSPLIB's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FractalServerConfig {
    /// `-fgpmaxthreads`: most parallel sessions (4; enforced by the driver). The session's
    /// load while computing is 1 / this.
    pub max_sessions: usize,
    /// `-fgptransmittimeout`: how long the transport may stay blocked (2500 ms).
    pub transmit_timeout: Duration,
    /// `-fgpcookiemaxtime`: a cookie at least this often (1000 ms, min 100).
    pub cookie_max_time: Duration,
    /// `-fgpcookiemaxpackets`: a cookie after this many DATA messages (10, min 1).
    pub cookie_max_packets: u64,
    /// `-fgpdatamaxtime`: partial DATA are flushed after this (1000 ms, min 100).
    pub data_max_time: Duration,
    /// `-fgpfailureafter`: after this many DATA messages send a cookie and close (0 = off).
    pub failure_after: u64,
    /// `-fgptestmode`: (x·y) mod 256 instead of the fractal.
    pub test_mode: bool,
    /// Work per `handle_timeout` step, in iterations (not an RSPLIB option; default
    /// 1 000 000, a few milliseconds).
    pub iterations_per_step: u64,
}

impl Default for FractalServerConfig {
    fn default() -> Self {
        FractalServerConfig {
            max_sessions: 4,
            transmit_timeout: Duration::from_millis(2500),
            cookie_max_time: Duration::from_millis(1000),
            cookie_max_packets: 10,
            data_max_time: Duration::from_millis(1000),
            failure_after: 0,
            test_mode: false,
            iterations_per_step: 1_000_000,
        }
    }
}

impl FractalServerConfig {
    /// The configuration with RSPLIB's minimums applied.
    pub fn clamped(mut self) -> FractalServerConfig {
        let min = Duration::from_millis(100);
        self.max_sessions = self.max_sessions.max(1);
        self.cookie_max_time = self.cookie_max_time.max(min);
        self.data_max_time = self.data_max_time.max(min);
        self.cookie_max_packets = self.cookie_max_packets.max(1);
        self.iterations_per_step = self.iterations_per_step.max(1);
        self
    }
}

/// What the fractal PE reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FractalServerEvent {
    /// An image (or its remainder after a cookie echo) was started.
    ImageStarted {
        /// Width × height.
        size: (u32, u32),
        /// Position the computation starts at.
        from: (u32, u32),
    },
    /// The image was finished (end marker sent).
    ImageDone {
        /// DATA messages sent for it.
        packets: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Image {
    parameter: FgpParameter,
    renderer: FractalRenderer,
    x: u32,
    y: u32,
}

/// One fractal generator PE session.
#[derive(Debug)]
pub struct FractalServer {
    config: FractalServerConfig,
    image: Option<Image>,
    buffer: FgpData,
    data_packets: u64,
    packets_since_cookie: u64,
    last_send: Instant,
    last_cookie: Instant,
    blocked_since: Option<Instant>,
    seen_input: bool,
    now: Instant,
    finished: bool,
    out: Outbox<FractalServerEvent>,
}

impl FractalServer {
    /// A new session waiting for PARAMETER or a cookie echo.
    pub fn new(config: FractalServerConfig) -> FractalServer {
        FractalServer {
            config: config.clamped(),
            image: None,
            buffer: FgpData::default(),
            data_packets: 0,
            packets_since_cookie: 0,
            last_send: Instant::ZERO,
            last_cookie: Instant::ZERO,
            blocked_since: None,
            seen_input: false,
            now: Instant::ZERO,
            finished: false,
            out: Outbox::default(),
        }
    }

    /// The position the next computed pixel has, while an image is in progress.
    pub fn position(&self) -> Option<(u32, u32)> {
        self.image.map(|i| (i.x, i.y))
    }

    fn abort(&mut self, why: String) {
        self.out.log(LogLevel::Warning, why);
        self.end(CloseMode::Abort);
    }

    fn end(&mut self, mode: CloseMode) {
        if self.image.take().is_some() {
            self.out.push(ServiceOutput::Load(0.0));
        }
        self.out.push(ServiceOutput::Close(mode));
        self.finished = true;
    }

    fn start_image(&mut self, now: Instant, parameter: FgpParameter, x: u32, y: u32) {
        if let Err(e) = parameter.check_limits() {
            self.abort(format!("Fractal: bad parameters: {e}"));
            return;
        }
        if self.image.is_none() {
            self.out
                .push(ServiceOutput::Load(1.0 / self.config.max_sessions as f64));
        }
        self.image = Some(Image {
            parameter,
            renderer: FractalRenderer::new(&parameter, self.config.test_mode),
            x,
            y,
        });
        self.buffer = FgpData::default();
        self.data_packets = 0;
        self.last_send = now;
        self.send_cookie(now);
        self.out.event(FractalServerEvent::ImageStarted {
            size: (parameter.width, parameter.height),
            from: (x, y),
        });
    }

    fn send_cookie(&mut self, now: Instant) {
        let Some(img) = self.image else { return };
        let cookie = FgpCookie {
            parameter: img.parameter,
            current_x: img.x,
            current_y: img.y,
        };
        self.out.push(ServiceOutput::SendCookie(cookie.encode()));
        self.last_cookie = now;
        self.packets_since_cookie = 0;
    }

    fn send_data(&mut self, now: Instant) {
        let data = core::mem::take(&mut self.buffer);
        self.out.send(PPID_FGP, data.encode());
        self.data_packets += 1;
        self.packets_since_cookie += 1;
        self.last_send = now;
    }

    /// Computes up to one step of pixels; returns false when the session ended.
    fn compute_step(&mut self, now: Instant) -> bool {
        let Some(mut img) = self.image else {
            return true;
        };
        let (width, height) = (img.parameter.width, img.parameter.height);
        let mut budget = self.config.iterations_per_step;
        while budget > 0 && img.y < height {
            if img.x >= width {
                img.x = 0;
                img.y += 1;
                continue;
            }
            let (value, cost) = img.renderer.pixel(img.x, img.y);
            budget = budget.saturating_sub(cost);
            if self.buffer.points.is_empty() {
                self.buffer.start_x = img.x;
                self.buffer.start_y = img.y;
            }
            self.buffer.points.push(value);
            img.x += 1;
            if img.x >= width {
                img.x = 0;
                img.y += 1;
            }
            if self.buffer.points.len() >= FGP_MAX_POINTS {
                self.image = Some(img);
                self.send_data(now);
                if self.config.failure_after > 0 && self.data_packets >= self.config.failure_after {
                    self.send_cookie(now);
                    self.out.log(
                        LogLevel::Info,
                        format!(
                            "Fractal: failure tester, disconnecting after {} packets",
                            self.data_packets
                        ),
                    );
                    self.end(CloseMode::Shutdown);
                    return false;
                }
                if self.packets_since_cookie >= self.config.cookie_max_packets {
                    self.send_cookie(now);
                }
            }
        }
        self.image = Some(img);
        if img.y >= height {
            if !self.buffer.points.is_empty() {
                self.send_data(now);
            }
            self.out.send(PPID_FGP, FgpData::end_marker().encode());
            self.out.event(FractalServerEvent::ImageDone {
                packets: self.data_packets,
            });
            self.image = None;
            self.out.push(ServiceOutput::Load(0.0));
            return true;
        }
        // Timed actions.
        if !self.buffer.points.is_empty() && now >= self.last_send + self.config.data_max_time {
            self.send_data(now);
        }
        if self.packets_since_cookie >= self.config.cookie_max_packets
            || now >= self.last_cookie + self.config.cookie_max_time
        {
            if !self.buffer.points.is_empty() {
                self.send_data(now);
            }
            self.send_cookie(now);
        }
        true
    }
}

impl ServiceSession for FractalServer {
    type Event = FractalServerEvent;

    fn handle_data(&mut self, now: Instant, _ppid: u32, _stream: u16, data: Bytes) {
        self.now = self.now.max(now);
        if self.finished {
            return;
        }
        self.seen_input = true;
        match FgpParameter::decode(&data) {
            Ok(p) => {
                if self.image.is_some() {
                    self.out.log(
                        LogLevel::Info,
                        "Fractal: new PARAMETER while computing, restarting",
                    );
                }
                self.start_image(now, p, 0, 0);
            }
            Err(e) => self.abort(format!("Fractal: bad message: {e}")),
        }
    }

    fn handle_cookie_echo(&mut self, now: Instant, cookie: Bytes) {
        self.now = self.now.max(now);
        if self.finished {
            return;
        }
        if self.seen_input {
            self.abort("Fractal: dropped unexpected ASAP COOKIE_ECHO".into());
            return;
        }
        self.seen_input = true;
        match FgpCookie::decode(&cookie) {
            Ok(c) => {
                self.out.log(
                    LogLevel::Info,
                    format!(
                        "Fractal: cookie echo, resuming at x={} y={}",
                        c.current_x, c.current_y
                    ),
                );
                self.start_image(now, c.parameter, c.current_x, c.current_y);
            }
            Err(e) => self.abort(format!("Fractal: bad cookie echo: {e}")),
        }
    }

    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        self.now = self.now.max(now);
        if self.finished {
            return;
        }
        match event {
            SessionEvent::Blocked => {
                self.blocked_since.get_or_insert(now);
            }
            SessionEvent::Writable => self.blocked_since = None,
            SessionEvent::SendFailed => self.abort("Fractal: send failed".into()),
            SessionEvent::PeerClosed => {
                if self.image.take().is_some() {
                    self.out.push(ServiceOutput::Load(0.0));
                }
                self.finished = true;
            }
            SessionEvent::ServerShutdown => {
                if self.image.is_some() {
                    if !self.buffer.points.is_empty() {
                        self.send_data(now);
                    }
                    self.send_cookie(now);
                }
                self.out.log(
                    LogLevel::Info,
                    "Fractal: aborting session due to server shutdown",
                );
                self.end(CloseMode::Abort);
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.finished {
            return;
        }
        if let Some(since) = self.blocked_since {
            if now >= since + self.config.transmit_timeout {
                self.abort("Fractal: transmission timeout".into());
            }
            return;
        }
        self.compute_step(now);
    }

    fn poll_output(&mut self) -> Option<ServiceOutput<FractalServerEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        match (self.blocked_since, self.image) {
            (Some(since), _) => Some(since + self.config.transmit_timeout),
            (None, Some(_)) => Some(self.now),
            (None, None) => None,
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

// ---------------------------------------------------------------------------------------
// PU
// ---------------------------------------------------------------------------------------

/// A rectangle of the image, computed by one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    /// Left column in the image.
    pub x: u32,
    /// Top row in the image.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// One image of `fractalpooluser`: the whole-image PARAMETER and its tiles.
#[derive(Clone, Debug, PartialEq)]
pub struct FractalJob {
    /// The job for the whole image (Width/Height = image size).
    pub parameter: FgpParameter,
    /// The tiles, in RSPLIB's order (row by row, left to right); tile *i* is session *i*.
    pub tiles: Vec<Tile>,
}

impl FractalJob {
    /// Cuts the image into `sessions` tiles (`-threads`, 1 … 512) as RSPLIB does:
    /// rows = ⌊√T⌋; every row but the last holds min(remaining, rows) tiles, the last row
    /// the rest. Unlike RSPLIB, row heights and tile widths are distributed so the tiles
    /// cover the image exactly; empty tiles (more tiles than pixels) are left out.
    pub fn new(parameter: FgpParameter, sessions: usize) -> FractalJob {
        let sessions = sessions.clamp(1, 512);
        let rows = ((sessions as f64).sqrt().floor() as usize).max(1);
        let (w, h) = (u64::from(parameter.width), u64::from(parameter.height));
        let mut remaining = sessions;
        let mut tiles = Vec::with_capacity(sessions);
        for row in 0..rows {
            let count = if row + 1 < rows {
                remaining.min(rows)
            } else {
                remaining
            };
            if count == 0 {
                continue;
            }
            remaining -= count;
            let y0 = h * row as u64 / rows as u64;
            let y1 = h * (row as u64 + 1) / rows as u64;
            for col in 0..count {
                let x0 = w * col as u64 / count as u64;
                let x1 = w * (col as u64 + 1) / count as u64;
                if x1 > x0 && y1 > y0 {
                    tiles.push(Tile {
                        x: x0 as u32,
                        y: y0 as u32,
                        width: (x1 - x0) as u32,
                        height: (y1 - y0) as u32,
                    });
                }
            }
        }
        FractalJob { parameter, tiles }
    }

    /// The PARAMETER for tile `i`: the tile's corners mapped linearly into [C1, C2]
    /// (RSPLIB's formula), same algorithm, iterations and N.
    pub fn tile_parameter(&self, i: usize) -> Option<FgpParameter> {
        let t = self.tiles.get(i)?;
        let p = &self.parameter;
        let fx = |x: u32| p.c1_real + f64::from(x) * (p.c2_real - p.c1_real) / f64::from(p.width);
        let fy = |y: u32| p.c1_imag + f64::from(y) * (p.c2_imag - p.c1_imag) / f64::from(p.height);
        Some(FgpParameter {
            width: t.width,
            height: t.height,
            c1_real: fx(t.x),
            c1_imag: fy(t.y),
            c2_real: fx(t.x + t.width),
            c2_imag: fy(t.y + t.height),
            ..*p
        })
    }
}

/// Settings of `fractalpooluser`, RSPLIB's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FractalClientConfig {
    /// `-width` (400, 64 … 8192).
    pub width: u32,
    /// `-height` (250, 64 … 4096).
    pub height: u32,
    /// `-threads`: sessions per image (1, 1 … 512).
    pub sessions: usize,
    /// `-recvtimeout`: fail over when nothing arrives for this long (5000 ms).
    pub recv_timeout: Duration,
    /// `-sendtimeout` (5000 ms; for the driver's PARAMETER send).
    pub send_timeout: Duration,
    /// `-interimagetime`: pause between images (5 s).
    pub inter_image_time: Duration,
    /// `-colormarks`: shift colours by run and failovers (on).
    pub show_failover_marks: bool,
    /// `-sessions`: shift colours by session (on).
    pub show_sessions: bool,
}

impl Default for FractalClientConfig {
    fn default() -> Self {
        FractalClientConfig {
            width: 400,
            height: 250,
            sessions: 1,
            recv_timeout: Duration::from_millis(5000),
            send_timeout: Duration::from_millis(5000),
            inter_image_time: Duration::from_secs(5),
            show_failover_marks: true,
            show_sessions: true,
        }
    }
}

impl FractalClientConfig {
    /// The configuration with RSPLIB's limits applied.
    pub fn clamped(mut self) -> FractalClientConfig {
        self.width = self.width.clamp(64, 8192);
        self.height = self.height.clamp(64, 4096);
        self.sessions = self.sessions.clamp(1, 512);
        self
    }
}

/// What a tile session reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FractalClientEvent {
    /// A DATA message was painted (`Processed packet #n`): rows `first_row ..= last_row`
    /// of the tile changed.
    Painted {
        /// Packets painted so far in this tile.
        packets: u64,
        /// First tile row touched.
        first_row: u32,
        /// Last tile row touched.
        last_row: u32,
    },
    /// A DATA message failed the checks (`Invalid data block`) and was skipped.
    InvalidData,
    /// The end marker arrived: the tile is complete.
    Done,
}

/// One tile's session (`FractalCalculationThread`): sends the PARAMETER, paints DATA into
/// the tile's buffer, fails over on a receive timeout, and sends the PARAMETER again after
/// a failover without cookie.
#[derive(Debug)]
pub struct FractalClient {
    parameter: FgpParameter,
    recv_timeout: Duration,
    values: Vec<u32>,
    marks: Vec<u32>,
    pe_usages: u32,
    packets: u64,
    deadline: Option<Instant>,
    failing_over: bool,
    resend_after_failover: bool,
    done: bool,
    finished: bool,
    out: Outbox<FractalClientEvent>,
}

impl FractalClient {
    /// A session for a tile whose job is `parameter` (see [`FractalJob::tile_parameter`]).
    pub fn new(parameter: FgpParameter, recv_timeout: Duration) -> FractalClient {
        let n = parameter.width as usize * parameter.height as usize;
        FractalClient {
            parameter,
            recv_timeout,
            values: vec![0; n],
            marks: vec![0; n],
            pe_usages: 0,
            packets: 0,
            deadline: None,
            failing_over: false,
            resend_after_failover: false,
            done: false,
            finished: false,
            out: Outbox::default(),
        }
    }

    /// True once the end marker arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Failovers completed so far (RSPLIB's `PoolElementUsages`).
    pub fn pe_usages(&self) -> u32 {
        self.pe_usages
    }

    /// The tile's iteration counts, row-major (`None` where nothing arrived), with the
    /// number of failovers completed when each arrived.
    pub fn pixel(&self, x: u32, y: u32) -> Option<(u32, u32)> {
        if x >= self.parameter.width || y >= self.parameter.height {
            return None;
        }
        let i = y as usize * self.parameter.width as usize + x as usize;
        match self.marks.get(i) {
            Some(&m) if m > 0 => self.values.get(i).map(|&v| (v, m - 1)),
            _ => None,
        }
    }

    /// All iteration counts, row-major; `None` where nothing arrived.
    pub fn values(&self) -> Vec<Option<u32>> {
        self.values
            .iter()
            .zip(&self.marks)
            .map(|(&v, &m)| (m > 0).then_some(v))
            .collect()
    }

    fn send_parameter(&mut self, now: Instant) {
        self.out.send(PPID_FGP, self.parameter.encode());
        self.deadline = Some(now + self.recv_timeout);
    }

    fn failover(&mut self, report_unreachable: bool, resend: bool) {
        self.failing_over = true;
        self.resend_after_failover = resend;
        self.deadline = None;
        self.out
            .push(ServiceOutput::Failover { report_unreachable });
    }

    fn paint(&mut self, d: &FgpData) -> bool {
        let (w, h) = (self.parameter.width, self.parameter.height);
        if d.start_x >= w || d.start_y >= h {
            return false;
        }
        let (mut x, mut y) = (d.start_x, d.start_y);
        let mark = self.pe_usages.saturating_add(1);
        for &v in &d.points {
            if y >= h {
                break;
            }
            let i = y as usize * w as usize + x as usize;
            if let (Some(slot), Some(m)) = (self.values.get_mut(i), self.marks.get_mut(i)) {
                *slot = v;
                *m = mark;
            }
            x += 1;
            if x >= w {
                x = 0;
                y += 1;
            }
        }
        self.packets += 1;
        let last_row = if x == 0 && y > d.start_y { y - 1 } else { y };
        self.out.event(FractalClientEvent::Painted {
            packets: self.packets,
            first_row: d.start_y,
            last_row: last_row.min(h - 1),
        });
        true
    }
}

impl ServiceSession for FractalClient {
    type Event = FractalClientEvent;

    fn handle_data(&mut self, now: Instant, _ppid: u32, _stream: u16, data: Bytes) {
        if self.finished || self.failing_over {
            return;
        }
        self.deadline = Some(now + self.recv_timeout);
        // Only DATA messages count; anything else is ignored like RSPLIB does.
        if data.first() != Some(&rserpool_proto::services::fractal::FGPT_DATA) {
            return;
        }
        match FgpData::decode(&data) {
            Ok(d) if d.is_end_marker() => {
                self.done = true;
                self.finished = true;
                self.deadline = None;
                self.out.event(FractalClientEvent::Done);
                self.out.push(ServiceOutput::Close(CloseMode::Shutdown));
            }
            Ok(d) => {
                if !self.paint(&d) {
                    self.out.event(FractalClientEvent::InvalidData);
                }
            }
            Err(e) => {
                self.out.log(
                    LogLevel::Warning,
                    format!("Fractal: invalid data block received: {e}"),
                );
                self.out.event(FractalClientEvent::InvalidData);
            }
        }
    }

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {}

    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        if self.finished {
            return;
        }
        match event {
            SessionEvent::Up => self.send_parameter(now),
            SessionEvent::FailoverComplete { cookie_echoed } => {
                self.pe_usages = self.pe_usages.saturating_add(1);
                self.failing_over = false;
                if cookie_echoed && !self.resend_after_failover {
                    self.deadline = Some(now + self.recv_timeout);
                } else {
                    self.send_parameter(now);
                }
            }
            SessionEvent::FailoverNecessary => {
                let resend = self.failing_over && self.resend_after_failover;
                self.failover(false, resend);
            }
            SessionEvent::SendFailed if !self.failing_over => self.failover(true, true),
            SessionEvent::FailoverStarted if !self.failing_over => {
                self.failing_over = true;
                self.resend_after_failover = false;
                self.deadline = None;
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.finished || self.failing_over {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.out
                .log(LogLevel::Info, "Fractal: receive timeout -> failover");
            self.failover(false, false);
        }
    }

    fn poll_output(&mut self) -> Option<ServiceOutput<FractalClientEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.finished || self.failing_over {
            None
        } else {
            self.deadline
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

// ---------------------------------------------------------------------------------------
// Image and palette
// ---------------------------------------------------------------------------------------

/// Colour options of `fractalpooluser`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaletteOptions {
    /// `-colormarks`: add 2·run + 5·failovers to the value.
    pub show_failover_marks: bool,
    /// `-sessions`: add 3·session number.
    pub show_sessions: bool,
    /// Image number, 1 for the first image.
    pub run: u32,
}

/// Qt's `QColor::setHsv(h, s, v).rgb()` for h in 0 … 359, s and v in 0 … 255.
pub fn hsv_to_rgb(h: u32, s: u8, v: u8) -> [u8; 3] {
    let value = u32::from(v) * 0x101;
    let saturation = u32::from(s) * 0x101;
    let to8 = |x: u32| ((x - (x >> 8) + 0x80) >> 8).min(255) as u8;
    if saturation == 0 {
        let c = to8(value);
        return [c, c, c];
    }
    let hue = (h % 360) * 100;
    let hh = f64::from(hue) / 6000.0;
    let sf = f64::from(saturation) / 65535.0;
    let vf = f64::from(value) / 65535.0;
    let i = hh as u32;
    let f = hh - f64::from(i);
    let p = vf * (1.0 - sf);
    let (r, g, b) = if i & 1 == 1 {
        let q = vf * (1.0 - sf * f);
        match i {
            1 => (q, vf, p),
            3 => (p, q, vf),
            _ => (vf, p, q),
        }
    } else {
        let t = vf * (1.0 - sf * (1.0 - f));
        match i {
            0 => (vf, t, p),
            2 => (p, vf, t),
            _ => (t, p, vf),
        }
    };
    let round = |x: f64| (x * 65535.0 + 0.5) as u32;
    [to8(round(r)), to8(round(g)), to8(round(b))]
}

/// The colour `fractalpooluser` paints an iteration count with: the value (plus
/// 2·run + 5·failovers with failover marks, plus 3·session with sessions shown, all
/// modulo 2³²) mapped to hue ((v mod 72)·5) mod 360 at full saturation and value.
pub fn rsplib_color(value: u32, pe_usages: u32, session: u32, opts: &PaletteOptions) -> [u8; 3] {
    let mut point = value;
    if opts.show_failover_marks {
        point = point
            .wrapping_add(opts.run.wrapping_mul(2))
            .wrapping_add(pe_usages.wrapping_mul(5));
    }
    if opts.show_sessions {
        point = point.wrapping_add(session.wrapping_mul(3));
    }
    hsv_to_rgb(((point % 72) * 5) % 360, 255, 255)
}

/// Background of a new image (RSPLIB fills with RGB 200, 200, 200).
pub const BACKGROUND: [u8; 3] = [200, 200, 200];

/// An RGB image (8 bits per channel, row-major, no padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Framebuffer {
    /// A `width` × `height` image filled with [`BACKGROUND`].
    pub fn new(width: u32, height: u32) -> Framebuffer {
        let n = width as usize * height as usize;
        let mut rgb = Vec::with_capacity(3 * n);
        for _ in 0..n {
            rgb.extend_from_slice(&BACKGROUND);
        }
        Framebuffer { width, height, rgb }
    }

    /// Width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels: `3 · width · height` bytes, R G B, row-major.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// One pixel's colour.
    pub fn get(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = 3 * (y as usize * self.width as usize + x as usize);
        let p = self.rgb.get(i..i + 3)?;
        Some([p[0], p[1], p[2]])
    }

    /// Sets one pixel (ignored outside the image).
    pub fn set(&mut self, x: u32, y: u32, c: [u8; 3]) {
        if x >= self.width || y >= self.height {
            return;
        }
        let i = 3 * (y as usize * self.width as usize + x as usize);
        if let Some(p) = self.rgb.get_mut(i..i + 3) {
            p.copy_from_slice(&c);
        }
    }

    /// RSPLIB's session marks before an image with several sessions: tile *i* is filled
    /// with hue ((5·i mod 72)·5) mod 256, saturation 100, value 255 (only with failover
    /// marks shown).
    pub fn mark_tiles(&mut self, job: &FractalJob, opts: &PaletteOptions) {
        if job.tiles.len() < 2 || !opts.show_failover_marks {
            return;
        }
        for (i, t) in job.tiles.iter().enumerate() {
            let hue = (((5 * i as u32) % 72) * 5) % 256;
            let c = hsv_to_rgb(hue, 100, 255);
            for y in t.y..t.y.saturating_add(t.height) {
                for x in t.x..t.x.saturating_add(t.width) {
                    self.set(x, y, c);
                }
            }
        }
    }

    /// Paints what session `session` received for `tile` so far.
    pub fn paint_tile(
        &mut self,
        tile: &Tile,
        session: u32,
        client: &FractalClient,
        opts: &PaletteOptions,
    ) {
        for y in 0..tile.height {
            for x in 0..tile.width {
                if let Some((v, usages)) = client.pixel(x, y) {
                    self.set(
                        tile.x + x,
                        tile.y + y,
                        rsplib_color(v, usages, session, opts),
                    );
                }
            }
        }
    }
}

/// The job in a `fractalpooluser` `.fsf` file (XML `FractalV1`).
///
/// `AlgorithmName` (Mandelbrot or MandelbrotN; anything else is taken as Mandelbrot),
/// `C1Real`, `C1Imag`, `C2Real`, `C2Imag`, `Useroptions/MaxIterations` (default 123),
/// `Useroptions/N` (default 2). Width and height come from the image.
pub fn parse_fsf(text: &str, width: u32, height: u32) -> Option<FgpParameter> {
    fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let end = start + text.get(start..)?.find(&close)?;
        text.get(start..end).map(str::trim)
    }
    let algorithm = match tag(text, "AlgorithmName") {
        Some("MandelbrotN") => FractalAlgorithm::MandelbrotN,
        _ => FractalAlgorithm::Mandelbrot,
    };
    let num = |name: &str| tag(text, name).and_then(|v| v.parse::<f64>().ok());
    let options = tag(text, "Useroptions").unwrap_or("");
    Some(FgpParameter {
        width,
        height,
        max_iterations: tag(options, "MaxIterations")
            .and_then(|v| v.parse::<i64>().ok())
            .map_or(123, |v| v.clamp(0, i64::from(u32::MAX)) as u32),
        algorithm,
        c1_real: num("C1Real")?,
        c1_imag: num("C1Imag")?,
        c2_real: num("C2Real")?,
        c2_imag: num("C2Imag")?,
        n: tag(options, "N")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(2.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rserpool_proto::services::fractal::FGPT_DATA;

    fn drain<S: ServiceSession>(s: &mut S) -> Vec<ServiceOutput<S::Event>> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn small(width: u32, height: u32, max_iterations: u32) -> FgpParameter {
        FgpParameter {
            max_iterations,
            ..FgpParameter::rsplib_default(width, height)
        }
    }

    /// Reference image: every pixel straight from the renderer.
    fn reference(p: &FgpParameter, test_mode: bool) -> Vec<Option<u32>> {
        let r = FractalRenderer::new(p, test_mode);
        let mut v = Vec::new();
        for y in 0..p.height {
            for x in 0..p.width {
                v.push(Some(r.pixel(x, y).0));
            }
        }
        v
    }

    #[test]
    fn renderer_matches_rsplib_definition() {
        let p = small(400, 250, 1024);
        let r = FractalRenderer::new(&p, false);
        // Corner (−1.5, 1.5): |−c|² = 4.5 ≥ 2 after the first iteration.
        assert_eq!(r.pixel(0, 0).0, 0);
        // c = 0 (x = 200, y = 125) never escapes.
        assert_eq!(r.pixel(200, 125), (1024, 1025));
        // z² − c with c = 1 (z ↦ z² − 1) is bounded: 0, −1, 0, …
        let p1 = FgpParameter {
            c1_real: 1.0,
            c2_real: 2.0,
            c1_imag: 0.0,
            c2_imag: 1.0,
            ..small(1, 1, 50)
        };
        assert_eq!(FractalRenderer::new(&p1, false).pixel(0, 0).0, 50);
        // MandelbrotN with N = 2 agrees with Mandelbrot on these points.
        let pn = FgpParameter {
            algorithm: FractalAlgorithm::MandelbrotN,
            ..p
        };
        let rn = FractalRenderer::new(&pn, false);
        for (x, y) in [(0, 0), (200, 125), (100, 100), (300, 60)] {
            assert_eq!(rn.pixel(x, y).0, r.pixel(x, y).0, "({x}, {y})");
        }
        // Test mode and unknown algorithms: (x·y) mod 256, with u32 wrap-around.
        let t = FractalRenderer::new(&p, true);
        assert_eq!(t.pixel(17, 3).0, 51);
        assert_eq!(t.pixel(100, 100).0, 10_000 % 256);
        let other = FgpParameter {
            algorithm: FractalAlgorithm::Other(9),
            ..p
        };
        assert_eq!(
            FractalRenderer::new(&other, false).pixel(65_535, 65_537).0,
            (65_535u32.wrapping_mul(65_537)) % 256
        );
    }

    /// Collects the DATA points a server sends, returning (points in order, cookies).
    fn collect(outs: &[ServiceOutput<FractalServerEvent>]) -> (Vec<FgpData>, Vec<FgpCookie>) {
        let mut data = Vec::new();
        let mut cookies = Vec::new();
        for o in outs {
            match o {
                ServiceOutput::Send { ppid, data: d, .. } => {
                    assert_eq!(*ppid, PPID_FGP);
                    data.push(FgpData::decode(d).unwrap());
                }
                ServiceOutput::SendCookie(c) => cookies.push(FgpCookie::decode(c).unwrap()),
                _ => {}
            }
        }
        (data, cookies)
    }

    fn run_server(
        s: &mut FractalServer,
        mut now: Instant,
        step: Duration,
    ) -> Vec<ServiceOutput<FractalServerEvent>> {
        let mut outs = drain(s);
        while let Some(t) = s.poll_timeout() {
            now = now.max(t);
            s.handle_timeout(now);
            outs.extend(drain(s));
            now += step;
        }
        outs
    }

    #[test]
    fn server_streams_whole_image() {
        let p = small(50, 40, 64);
        let mut s = FractalServer::new(FractalServerConfig {
            iterations_per_step: 500,
            ..Default::default()
        });
        s.handle_event(Instant::ZERO, SessionEvent::Up);
        s.handle_data(Instant::ZERO, PPID_FGP, 0, p.encode());
        let outs = run_server(&mut s, Instant::ZERO, Duration::from_micros(10));
        assert_eq!(outs[0], ServiceOutput::Load(0.25));
        assert_eq!(
            outs[1],
            ServiceOutput::SendCookie(
                FgpCookie {
                    parameter: p,
                    current_x: 0,
                    current_y: 0
                }
                .encode()
            )
        );
        let (data, _) = collect(&outs);
        assert!(data.last().unwrap().is_end_marker());
        let mut points = Vec::new();
        for d in &data[..data.len() - 1] {
            assert!(d.points.len() <= FGP_MAX_POINTS);
            let idx = d.start_y as usize * 50 + d.start_x as usize;
            assert_eq!(idx, points.len(), "DATA continue row-major");
            points.extend(d.points.iter().map(|&v| Some(v)));
        }
        assert_eq!(points, reference(&p, false));
        assert_eq!(data.len() - 1, 2000usize.div_ceil(324));
        assert!(
            outs.contains(&ServiceOutput::Event(FractalServerEvent::ImageDone {
                packets: 7
            }))
        );
        assert_eq!(outs.last(), Some(&ServiceOutput::Load(0.0)));
        assert!(!s.is_finished(), "the session stays open after an image");
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn server_cookies_follow_delivered_data() {
        let p = small(100, 100, 16);
        let mut s = FractalServer::new(FractalServerConfig {
            iterations_per_step: 200,
            test_mode: true,
            cookie_max_packets: 3,
            ..Default::default()
        });
        s.handle_data(Instant::ZERO, PPID_FGP, 0, p.encode());
        // 50 ms per step: time-based flushes and cookies happen too.
        let outs = run_server(&mut s, Instant::ZERO, Duration::from_millis(50));
        let mut delivered = 0usize;
        let mut cookies = 0;
        for o in &outs {
            match o {
                ServiceOutput::Send { data, .. } => {
                    let d = FgpData::decode(data).unwrap();
                    if !d.is_end_marker() {
                        assert_eq!(d.start_y as usize * 100 + d.start_x as usize, delivered);
                        delivered += d.points.len();
                    }
                }
                ServiceOutput::SendCookie(c) => {
                    let c = FgpCookie::decode(c).unwrap();
                    // Every pixel before the cookie's position has been sent.
                    assert_eq!(c.current_y as usize * 100 + c.current_x as usize, delivered);
                    cookies += 1;
                }
                _ => {}
            }
        }
        assert_eq!(delivered, 10_000);
        assert!(cookies >= 10_000 / 324 / 3, "{cookies} cookies");
        // Partial DATA were flushed by time (1 s at 50 ms per 200 points).
        let (data, _) = collect(&outs);
        assert!(
            data.iter()
                .any(|d| !d.is_end_marker() && d.points.len() < FGP_MAX_POINTS - 4)
        );
    }

    #[test]
    fn server_failure_after_and_shutdown() {
        let p = small(100, 100, 16);
        let mut s = FractalServer::new(FractalServerConfig {
            failure_after: 2,
            test_mode: true,
            ..Default::default()
        });
        s.handle_data(Instant::ZERO, PPID_FGP, 0, p.encode());
        let outs = run_server(&mut s, Instant::ZERO, Duration::from_micros(1));
        let (data, cookies) = collect(&outs);
        assert_eq!(data.len(), 2);
        assert_eq!(
            (
                cookies.last().unwrap().current_x,
                cookies.last().unwrap().current_y
            ),
            (48, 6)
        );
        assert_eq!(
            outs.last(),
            Some(&ServiceOutput::Close(CloseMode::Shutdown))
        );
        assert!(s.is_finished());

        let mut s = FractalServer::new(FractalServerConfig {
            iterations_per_step: 100,
            test_mode: true,
            ..Default::default()
        });
        s.handle_data(Instant::ZERO, PPID_FGP, 0, p.encode());
        s.handle_timeout(Instant::ZERO);
        drain(&mut s);
        s.handle_event(Instant::ZERO, SessionEvent::ServerShutdown);
        let outs = drain(&mut s);
        let (data, cookies) = collect(&outs);
        assert_eq!(data[0].points.len(), 100);
        assert_eq!((cookies[0].current_x, cookies[0].current_y), (0, 1));
        assert_eq!(outs.last(), Some(&ServiceOutput::Close(CloseMode::Abort)));
    }

    #[test]
    fn server_rejects_bad_input() {
        let t = Instant::ZERO;
        let cookie = FgpCookie {
            parameter: small(10, 10, 5),
            current_x: 0,
            current_y: 0,
        }
        .encode();
        type Case<'a> = Box<dyn Fn(&mut FractalServer) + 'a>;
        let cases: Vec<Case> = vec![
            Box::new(|s| s.handle_data(t, PPID_FGP, 0, Bytes::from_static(&[1, 0, 0, 60]))),
            Box::new(|s| s.handle_data(t, PPID_FGP, 0, FgpData::end_marker().encode())),
            Box::new(|s| s.handle_data(t, PPID_FGP, 0, small(65_537, 1, 1).encode())),
            Box::new(|s| s.handle_data(t, PPID_FGP, 0, small(1, 1, 1_000_001).encode())),
            Box::new(|s| s.handle_cookie_echo(t, Bytes::from_static(b"<FG-TD1>"))),
            {
                let c = cookie.clone();
                Box::new(move |s| {
                    s.handle_data(t, PPID_FGP, 0, small(10, 10, 5).encode());
                    s.handle_cookie_echo(t, c.clone());
                })
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut s = FractalServer::new(FractalServerConfig::default());
            case(&mut s);
            let outs = drain(&mut s);
            assert_eq!(
                outs.last(),
                Some(&ServiceOutput::Close(CloseMode::Abort)),
                "case {i}"
            );
            assert!(s.is_finished());
        }
    }

    #[test]
    fn server_flow_control() {
        let p = small(100, 100, 16);
        let mut s = FractalServer::new(FractalServerConfig {
            iterations_per_step: 400,
            test_mode: true,
            ..Default::default()
        });
        s.handle_data(Instant::ZERO, PPID_FGP, 0, p.encode());
        drain(&mut s);
        s.handle_event(Instant::ZERO, SessionEvent::Blocked);
        assert_eq!(s.poll_timeout(), Some(Instant::from_millis(2500)));
        s.handle_timeout(Instant::from_millis(1000));
        assert!(drain(&mut s).is_empty(), "nothing computed while blocked");
        s.handle_event(Instant::from_millis(1000), SessionEvent::Writable);
        assert_eq!(s.poll_timeout(), Some(Instant::from_millis(1000)));
        s.handle_timeout(Instant::from_millis(1000));
        assert!(!drain(&mut s).is_empty());
        s.handle_event(Instant::from_millis(1000), SessionEvent::Blocked);
        s.handle_timeout(Instant::from_millis(3500));
        assert_eq!(
            drain(&mut s).last(),
            Some(&ServiceOutput::Close(CloseMode::Abort))
        );
    }

    #[test]
    fn tiles_cover_the_image() {
        for sessions in [1usize, 2, 3, 4, 5, 7, 9, 10, 16, 100, 512] {
            let job = FractalJob::new(FgpParameter::rsplib_default(401, 251), sessions);
            assert_eq!(job.tiles.len(), sessions);
            let mut covered = vec![0u8; 401 * 251];
            for t in &job.tiles {
                for y in t.y..t.y + t.height {
                    for x in t.x..t.x + t.width {
                        covered[y as usize * 401 + x as usize] += 1;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{sessions} sessions");
        }
        // RSPLIB's arrangement: 5 sessions = 2 rows, 2 + 3 tiles.
        let job = FractalJob::new(FgpParameter::rsplib_default(400, 250), 5);
        let rows: Vec<u32> = job.tiles.iter().map(|t| t.y).collect();
        assert_eq!(rows, vec![0, 0, 125, 125, 125]);
        // Tile parameters map the corners linearly.
        let job = FractalJob::new(FgpParameter::rsplib_default(400, 250), 4);
        let p = job.tile_parameter(3).unwrap();
        assert_eq!((p.width, p.height), (200, 125));
        assert_eq!(
            (p.c1_real, p.c1_imag, p.c2_real, p.c2_imag),
            (0.0, 0.0, 1.5, -1.5)
        );
        assert!(job.tile_parameter(4).is_none());
        // Each tile computes exactly its part of the whole image.
        let whole = FractalRenderer::new(&job.parameter, false);
        let t = job.tiles[3];
        let r = FractalRenderer::new(&p, false);
        for (x, y) in [(0, 0), (13, 77), (199, 124)] {
            assert_eq!(r.pixel(x, y).0, whole.pixel(t.x + x, t.y + y).0);
        }
        // More sessions than pixels: empty tiles are left out.
        let job = FractalJob::new(small(1, 1, 1), 4);
        assert_eq!(job.tiles.len(), 1);
    }

    #[test]
    fn palette_matches_qt() {
        assert_eq!(hsv_to_rgb(0, 255, 255), [255, 0, 0]);
        assert_eq!(hsv_to_rgb(60, 255, 255), [255, 255, 0]);
        assert_eq!(hsv_to_rgb(120, 255, 255), [0, 255, 0]);
        assert_eq!(hsv_to_rgb(240, 255, 255), [0, 0, 255]);
        assert_eq!(hsv_to_rgb(5, 255, 255), [255, 21, 0]);
        assert_eq!(hsv_to_rgb(355, 255, 255), [255, 0, 21]);
        assert_eq!(hsv_to_rgb(0, 100, 255), [255, 155, 155]);
        assert_eq!(hsv_to_rgb(17, 0, 200), [200, 200, 200]);
        let opts = PaletteOptions {
            show_failover_marks: true,
            show_sessions: true,
            run: 1,
        };
        // value 10, run 1, no failover, session 0: point 12 → hue 60.
        assert_eq!(rsplib_color(10, 0, 0, &opts), [255, 255, 0]);
        // One failover shifts by 5 → point 17 → hue 85.
        assert_eq!(rsplib_color(10, 1, 0, &opts), hsv_to_rgb(85, 255, 255));
        let plain = PaletteOptions {
            show_failover_marks: false,
            show_sessions: false,
            run: 9,
        };
        assert_eq!(rsplib_color(72 + 24, 3, 5, &plain), [0, 255, 0]);
        assert_eq!(
            rsplib_color(u32::MAX, 0, 0, &plain),
            hsv_to_rgb((u32::MAX % 72) * 5, 255, 255)
        );
    }

    #[test]
    fn fsf_parsing() {
        let text = "<?xml version=\"1.0\"?><FractalV1><AlgorithmName>MandelbrotN</AlgorithmName>\
            <C1Real>-2.0</C1Real><C1Imag> 1.25 </C1Imag><C2Real>0.5</C2Real><C2Imag>-1.25</C2Imag>\
            <Useroptions><MaxIterations>300</MaxIterations><N>3.5</N></Useroptions></FractalV1>";
        let p = parse_fsf(text, 400, 250).unwrap();
        assert_eq!(p.algorithm, FractalAlgorithm::MandelbrotN);
        assert_eq!(
            (p.c1_real, p.c1_imag, p.c2_real, p.c2_imag),
            (-2.0, 1.25, 0.5, -1.25)
        );
        assert_eq!((p.max_iterations, p.n, p.width), (300, 3.5, 400));
        let minimal = "<AlgorithmName>Julia</AlgorithmName><C1Real>0</C1Real><C1Imag>0</C1Imag>\
            <C2Real>1</C2Real><C2Imag>1</C2Imag>";
        let p = parse_fsf(minimal, 64, 64).unwrap();
        assert_eq!(
            (p.algorithm, p.max_iterations, p.n),
            (FractalAlgorithm::Mandelbrot, 123, 2.0)
        );
        assert!(parse_fsf("<C1Real>x</C1Real>", 1, 1).is_none());
    }

    /// A tile session served by in-memory PEs; `freeze_after` DATA messages PE 0 stops
    /// (its later outputs are lost); the client times out and fails over to PE 1 with the
    /// newest cookie (if any).
    fn run_tile(
        p: FgpParameter,
        freeze_after: Option<usize>,
        rsplib_cookie: bool,
    ) -> (FractalClient, u32) {
        let config = FractalServerConfig {
            iterations_per_step: 3_000,
            cookie_max_packets: 4,
            ..Default::default()
        };
        let mut pes = [FractalServer::new(config), FractalServer::new(config)];
        let mut current = 0;
        let mut client = FractalClient::new(p, Duration::from_secs(5));
        let mut cookie: Option<Bytes> = None;
        let mut delivered = 0usize;
        let mut now = Instant::ZERO;
        client.handle_event(now, SessionEvent::Up);
        for _ in 0..100_000 {
            // Client → PE.
            while let Some(o) = client.poll_output() {
                match o {
                    ServiceOutput::Send { data, .. } => {
                        pes[current].handle_data(now, PPID_FGP, 0, data)
                    }
                    ServiceOutput::Failover { .. } => {
                        current = 1;
                        if let Some(c) = &cookie {
                            pes[1].handle_cookie_echo(now, c.clone());
                        }
                        client.handle_event(
                            now,
                            SessionEvent::FailoverComplete {
                                cookie_echoed: cookie.is_some(),
                            },
                        );
                    }
                    _ => {}
                }
            }
            // PE → client (a frozen PE's outputs are lost).
            for (i, pe) in pes.iter_mut().enumerate() {
                while let Some(o) = pe.poll_output() {
                    let frozen = i == 0 && freeze_after.is_some_and(|n| delivered >= n);
                    if i != current || frozen {
                        continue;
                    }
                    match o {
                        ServiceOutput::Send { data, .. } => {
                            if data[0] == FGPT_DATA {
                                delivered += 1;
                            }
                            client.handle_data(now, PPID_FGP, 0, data);
                        }
                        ServiceOutput::SendCookie(c) => {
                            let c = if rsplib_cookie {
                                // RSPLIB points at the last computed pixel (one back).
                                let mut k = FgpCookie::decode(&c).unwrap();
                                if k.current_x > 0 {
                                    k.current_x -= 1;
                                }
                                k.encode_rsplib()
                            } else {
                                c
                            };
                            cookie = Some(c);
                        }
                        _ => {}
                    }
                }
            }
            if client.is_finished() {
                break;
            }
            now += Duration::from_millis(1);
            let frozen0 = freeze_after.is_some_and(|n| delivered >= n);
            for (i, pe) in pes.iter_mut().enumerate() {
                if !(i == 0 && frozen0) && pe.poll_timeout().is_some_and(|t| t <= now) {
                    pe.handle_timeout(now);
                }
            }
            if client.poll_timeout().is_some_and(|t| t <= now) {
                client.handle_timeout(now);
            }
        }
        let usages = client.pe_usages();
        (client, usages)
    }

    #[test]
    fn failover_resumes_and_image_is_identical() {
        let p = small(60, 45, 200);
        let expected = reference(&p, false);
        let (plain, usages) = run_tile(p, None, false);
        assert!(plain.is_done());
        assert_eq!(usages, 0);
        assert_eq!(plain.values(), expected);
        for rsplib_cookie in [false, true] {
            let (c, usages) = run_tile(p, Some(5), rsplib_cookie);
            assert!(c.is_done());
            assert_eq!(usages, 1);
            assert_eq!(c.values(), expected, "rsplib cookie: {rsplib_cookie}");
            // Pixels from the second PE carry the failover mark.
            assert_eq!(c.pixel(59, 44).map(|(_, u)| u), Some(1));
            assert_eq!(c.pixel(0, 0).map(|(_, u)| u), Some(0));
        }
    }

    #[test]
    fn client_checks_data_and_failover_kinds() {
        let p = small(20, 10, 5);
        let mut c = FractalClient::new(p, Duration::from_secs(5));
        let t = Instant::ZERO;
        c.handle_event(t, SessionEvent::Up);
        assert_eq!(
            drain(&mut c),
            vec![ServiceOutput::Send {
                ppid: PPID_FGP,
                stream: 0,
                data: p.encode()
            }]
        );
        assert_eq!(c.poll_timeout(), Some(Instant::from_millis(5000)));
        let bad = FgpData {
            start_x: 20,
            start_y: 0,
            points: vec![1],
        }
        .encode();
        c.handle_data(t, PPID_FGP, 0, bad);
        c.handle_data(t, PPID_FGP, 0, Bytes::from_static(&[2, 0, 0, 16, 0, 0]));
        c.handle_data(t, PPID_FGP, 0, p.encode()); // not DATA: ignored
        let good = FgpData {
            start_x: 18,
            start_y: 2,
            points: vec![7, 8, 9],
        }
        .encode();
        c.handle_data(Instant::from_millis(100), PPID_FGP, 0, good);
        let outs = drain(&mut c);
        let events: Vec<_> = outs
            .iter()
            .filter_map(|o| match o {
                ServiceOutput::Event(e) => Some(*e),
                _ => None,
            })
            .collect();
        assert_eq!(
            events,
            vec![
                FractalClientEvent::InvalidData,
                FractalClientEvent::InvalidData,
                FractalClientEvent::Painted {
                    packets: 1,
                    first_row: 2,
                    last_row: 3
                },
            ]
        );
        assert_eq!(c.pixel(19, 2), Some((8, 0)));
        assert_eq!(c.pixel(0, 3), Some((9, 0)));
        assert_eq!(c.pixel(0, 0), None);
        assert_eq!(c.poll_timeout(), Some(Instant::from_millis(5100)));
        // A failed PARAMETER send reports the PE and resends even with a cookie.
        c.handle_event(t, SessionEvent::SendFailed);
        assert_eq!(
            drain(&mut c),
            vec![ServiceOutput::Failover {
                report_unreachable: true
            }]
        );
        c.handle_event(
            t,
            SessionEvent::FailoverComplete {
                cookie_echoed: true,
            },
        );
        assert!(matches!(drain(&mut c)[0], ServiceOutput::Send { .. }));
        // Receive timeout → failover without report; with cookie no PARAMETER.
        c.handle_timeout(Instant::from_millis(5000));
        assert!(drain(&mut c).contains(&ServiceOutput::Failover {
            report_unreachable: false
        }));
        c.handle_event(
            t,
            SessionEvent::FailoverComplete {
                cookie_echoed: true,
            },
        );
        assert!(drain(&mut c).is_empty());
        c.handle_data(t, PPID_FGP, 0, FgpData::end_marker().encode());
        assert_eq!(
            drain(&mut c),
            vec![
                ServiceOutput::Event(FractalClientEvent::Done),
                ServiceOutput::Close(CloseMode::Shutdown)
            ]
        );
        assert_eq!(c.pe_usages(), 2);
    }

    #[test]
    fn framebuffer_assembly() {
        let whole = small(40, 20, 30);
        let job = FractalJob::new(whole, 4);
        let opts = PaletteOptions {
            show_failover_marks: false,
            show_sessions: true,
            run: 1,
        };
        let mut fb = Framebuffer::new(40, 20);
        assert_eq!(fb.get(0, 0), Some(BACKGROUND));
        assert_eq!(fb.rgb().len(), 40 * 20 * 3);
        let marks = PaletteOptions {
            show_failover_marks: true,
            ..opts
        };
        fb.mark_tiles(&job, &marks);
        assert_eq!(fb.get(0, 0), Some(hsv_to_rgb(0, 100, 255)));
        assert_eq!(fb.get(39, 19), Some(hsv_to_rgb(75, 100, 255)));
        for (i, tile) in job.tiles.iter().enumerate() {
            let (client, _) = run_tile(job.tile_parameter(i).unwrap(), None, false);
            fb.paint_tile(tile, i as u32, &client, &opts);
        }
        let r = FractalRenderer::new(&whole, false);
        for (x, y) in [(0, 0), (25, 3), (39, 19), (20, 10)] {
            let session = job
                .tiles
                .iter()
                .position(|t| x >= t.x && x < t.x + t.width && y >= t.y && y < t.y + t.height)
                .unwrap();
            assert_eq!(
                fb.get(x, y),
                Some(rsplib_color(r.pixel(x, y).0, 0, session as u32, &opts))
            );
        }
        assert_eq!(fb.get(40, 0), None);
    }

    #[test]
    fn client_follows_automatic_failover() {
        let p = small(8, 8, 5);
        let t = Instant::ZERO;
        for cookie_echoed in [true, false] {
            let mut c = FractalClient::new(p, Duration::from_secs(5));
            c.handle_event(t, SessionEvent::Up);
            drain(&mut c);
            c.handle_event(t, SessionEvent::FailoverStarted);
            assert!(drain(&mut c).is_empty());
            assert_eq!(c.poll_timeout(), None);
            c.handle_event(t, SessionEvent::FailoverComplete { cookie_echoed });
            let resent = !drain(&mut c).is_empty();
            assert_eq!(resent, !cookie_echoed);
            assert_eq!(c.pe_usages(), 1);
        }
    }
}
