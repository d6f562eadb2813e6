//! `fractalpooluser` without Qt: renders fractals computed by the pool into PNG images.
//!
//! * Per image: a job from a random `*.fsf` file of `-configdir=` (or RSPLIB's default
//!   Mandelbrot), cut into `-threads=` tiles; each tile is one session on a thread of its own
//!   (RSPLIB's `FractalCalculationThread`), painting into a shared framebuffer with RSPLIB's
//!   palette. With `-colormarks` (default) the colours shift by image number and by the
//!   number of failovers of the tile's session, and tiles are pre-filled with session
//!   colours; with `-sessions` (default) they shift by session number. `-nocolormarks
//!   -nosessions` gives colours that depend on the iteration counts only.
//! * A finished image goes to `-output=FILE` (our addition) and, with
//!   `-imagestorageprefix=P` (accepted but unused by RSPLIB), to `P000001.png`, … .
//! * `-http=127.0.0.1:PORT` (our addition) serves a live view of the image being computed.
//! * `-images=N` (our addition) exits after N images; otherwise the next image starts after
//!   `-interimagetime=` seconds, until SIGINT.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rserpool_core::Instant;
use rserpool_core::services::fractal::{
    FractalClient, FractalClientEvent, FractalJob, Framebuffer, PaletteOptions, Tile, parse_fsf,
    rsplib_color,
};
use rserpool_proto::ids::PeIdentifier;
use rserpool_proto::services::fractal::FgpParameter;
use tracing::{info, warn};

use super::super::common::{fail, init_logging_or_exit, os_rng};
use super::http::{SharedImage, serve, write_png};
use super::pu::{ClientApp, ClientHooks, ClientSession, client_driver, client_session_config};
use crate::cli::FractalPoolUserOptions;
use crate::driver::{AppControl, Application, Step};

/// Rows of a tile that changed since they were last painted.
#[derive(Debug, Default)]
pub struct TileHooks {
    dirty: Option<(u32, u32)>,
    /// Packets received.
    pub packets: u64,
    /// PEs used (first one included).
    pub pes: Vec<PeIdentifier>,
    /// Invalid DATA messages.
    pub invalid: u64,
    /// The end marker arrived.
    pub done: bool,
}

impl ClientHooks<FractalClientEvent> for TileHooks {
    fn on_event(&mut self, _now: Instant, event: FractalClientEvent) {
        match event {
            FractalClientEvent::Painted {
                packets,
                first_row,
                last_row,
            } => {
                self.packets = packets;
                self.dirty = Some(match self.dirty {
                    Some((a, b)) => (a.min(first_row), b.max(last_row)),
                    None => (first_row, last_row),
                });
            }
            FractalClientEvent::InvalidData => self.invalid += 1,
            FractalClientEvent::Done => self.done = true,
        }
    }

    fn on_pe(&mut self, _now: Instant, pe: PeIdentifier, _failover: bool) {
        self.pes.push(pe);
    }
}

/// One tile's session plus the painting into the shared image after every step.
pub struct TileApp {
    /// The session's machine and hooks.
    pub inner: ClientApp<FractalClient, TileHooks>,
    tile: Tile,
    session: u32,
    palette: PaletteOptions,
    image: SharedImage,
}

impl TileApp {
    fn paint(&mut self) {
        let Some((first, last)) = self.inner.hooks.dirty.take() else {
            return;
        };
        let Ok(mut fb) = self.image.lock() else {
            return;
        };
        let client = &self.inner.service;
        for y in first..=last.min(self.tile.height.saturating_sub(1)) {
            for x in 0..self.tile.width {
                if let Some((v, usages)) = client.pixel(x, y) {
                    fb.set(
                        self.tile.x + x,
                        self.tile.y + y,
                        rsplib_color(v, usages, self.session, &self.palette),
                    );
                }
            }
        }
    }
}

impl Application<ClientSession> for TileApp {
    fn on_step(&mut self, step: &mut Step<'_, ClientSession>) -> AppControl {
        let c = self.inner.on_step(step);
        self.paint();
        c
    }

    fn begin_shutdown(&mut self, machine: &mut ClientSession, now: Instant) {
        self.inner.begin_shutdown(machine, now);
    }
}

/// What one tile's session did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileReport {
    /// DATA messages painted.
    pub packets: u64,
    /// PEs used, in order.
    pub pes: Vec<PeIdentifier>,
    /// Completed (end marker received).
    pub done: bool,
}

fn run_tile(
    opts: &FractalPoolUserOptions,
    job: &FractalJob,
    i: usize,
    palette: PaletteOptions,
    image: SharedImage,
) -> io::Result<TileReport> {
    let (Some(tile), Some(parameter)) = (job.tiles.get(i).copied(), job.tile_parameter(i)) else {
        return Err(io::Error::other("no such tile"));
    };
    let config = client_session_config(&opts.library, None, None);
    // CSP reports from the first tile's session only (one component per program).
    let mut driver = client_driver(
        &opts.library,
        config,
        false,
        i == 0,
        opts.identifier.map(u64::from),
    )?;
    let service = FractalClient::new(parameter, opts.recv_timeout);
    let inner = ClientApp::new(
        opts.pool_handle.clone(),
        service,
        TileHooks::default(),
        format!("session {i}: "),
    );
    let mut app = TileApp {
        inner,
        tile,
        session: u32::try_from(i).unwrap_or(u32::MAX),
        palette,
        image,
    };
    driver.run_app(&mut app)?;
    app.paint();
    let h = &app.inner.hooks;
    Ok(TileReport {
        packets: h.packets,
        pes: h.pes.clone(),
        done: h.done,
    })
}

/// The `*.fsf` files of `dir`, sorted.
pub fn fsf_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "fsf"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The job of the next image: a random `*.fsf` of the configuration directory, else
/// RSPLIB's default (Mandelbrot, (−1.5, 1.5) … (1.5, −1.5), 1024 iterations).
pub fn next_parameter(files: &[PathBuf], width: u32, height: u32, pick: u64) -> FgpParameter {
    if !files.is_empty() {
        let f = &files[(pick % files.len() as u64) as usize];
        match std::fs::read_to_string(f)
            .ok()
            .and_then(|t| parse_fsf(&t, width, height))
        {
            Some(p) => {
                info!("image from {}", f.display());
                return p;
            }
            None => warn!(
                "{}: not a fractal description, using the default",
                f.display()
            ),
        }
    }
    FgpParameter::rsplib_default(width, height)
}

/// Renders one image with `-threads=` sessions into `image`; the tiles' reports.
pub fn render_image(
    opts: &FractalPoolUserOptions,
    parameter: FgpParameter,
    run: u32,
    image: &SharedImage,
) -> io::Result<Vec<TileReport>> {
    let job = FractalJob::new(parameter, opts.threads as usize);
    let palette = PaletteOptions {
        show_failover_marks: opts.show_color_marks(),
        show_sessions: opts.show_sessions(),
        run,
    };
    {
        let mut fb = Framebuffer::new(parameter.width, parameter.height);
        fb.mark_tiles(&job, &palette);
        *image
            .lock()
            .map_err(|_| io::Error::other("image lock poisoned"))? = fb;
    }
    let reports = std::thread::scope(|s| {
        let handles: Vec<_> = (0..job.tiles.len())
            .map(|i| {
                let img = Arc::clone(image);
                let job = &job;
                std::thread::Builder::new()
                    .name(format!("tile-{i}"))
                    .spawn_scoped(s, move || run_tile(opts, job, i, palette, img))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("tile thread panicked"))),
                Err(e) => Err(e),
            })
            .collect::<io::Result<Vec<_>>>()
    })?;
    Ok(reports)
}

/// `fractalpooluser` with parsed options.
pub fn main_with(opts: FractalPoolUserOptions) -> ExitCode {
    init_logging_or_exit("fractalpooluser", &opts.library.log);
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("fractalpooluser", &e),
    }
}

fn run(opts: &FractalPoolUserOptions) -> io::Result<()> {
    use rand_xoshiro::rand_core::Rng;
    let (w, h) = (opts.width.clamp(64, 8192), opts.height.clamp(64, 4096));
    let image: SharedImage = Arc::new(Mutex::new(Framebuffer::new(w, h)));
    let caption = opts
        .caption
        .clone()
        .unwrap_or_else(|| "Fractal Generator Pool User".to_owned());
    if let Some(addr) = opts.http {
        let bound = serve(addr, Arc::clone(&image), caption)?;
        println!("Live view: http://{bound}/");
    }
    let files = fsf_files(&opts.config_dir);
    let mut rng = os_rng();
    let mut run = 0u32;
    loop {
        run += 1;
        let parameter = next_parameter(&files, w, h, rng.next_u64());
        let started = std::time::Instant::now();
        let reports = render_image(opts, parameter, run, &image)?;
        let failovers: usize = reports.iter().map(|r| r.pes.len().saturating_sub(1)).sum();
        let packets: u64 = reports.iter().map(|r| r.packets).sum();
        println!(
            "Image {run}: {w}x{h}, {} session(s), {packets} packet(s), {failovers} failover(s), {:.3} s",
            reports.len(),
            started.elapsed().as_secs_f64()
        );
        let fb = image
            .lock()
            .map_err(|_| io::Error::other("image lock poisoned"))?
            .clone();
        if let Some(p) = &opts.output {
            write_png(&fb, p)?;
        }
        if let Some(prefix) = &opts.image_storage_prefix {
            write_png(&fb, Path::new(&format!("{prefix}{run:06}.png")))?;
        }
        if opts.images > 0 && run >= opts.images {
            return Ok(());
        }
        std::thread::sleep(opts.inter_image_time);
    }
}
