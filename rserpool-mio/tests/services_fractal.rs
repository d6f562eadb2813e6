//! Fractal generator over real processes on 127.0.0.1 (TCP mapping): `rspserver -fractal`
//! PEs and `fractalpooluser` writing PNG files. An image computed across failovers (the PE's
//! failure tester, SIGKILL of a PE mid-image) must be pixel-identical to one computed
//! without failure, and to the image rendered locally with the same algorithm.

mod common;

use common::bin_dir;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rserpool_core::services::fractal::{
    FractalJob, FractalRenderer, Framebuffer, PaletteOptions, rsplib_color,
};
use rserpool_mio::programs::services::pool::{ClientProc, ServicePool};
use rserpool_proto::services::fractal::FgpParameter;

const LIMIT: Duration = Duration::from_secs(60);
const W: u32 = 160;
const H: u32 = 100;

fn logs(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rserpool-{test}-{}", std::process::id()))
}

/// Decodes an RGB PNG.
fn pixels(path: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("PNG file"),
    ));
    let mut r = dec.read_info().expect("PNG header");
    let mut buf = vec![0; r.output_buffer_size().expect("size")];
    let info = r.next_frame(&mut buf).expect("PNG data");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// The image as the client paints it without colour marks with `threads` tiles (each tile
/// has its own PARAMETER), computed here.
fn local_rendering(w: u32, h: u32, threads: usize) -> Vec<u8> {
    let job = FractalJob::new(FgpParameter::rsplib_default(w, h), threads);
    let opts = PaletteOptions {
        show_failover_marks: false,
        show_sessions: false,
        run: 1,
    };
    let mut fb = Framebuffer::new(w, h);
    for (i, t) in job.tiles.iter().enumerate() {
        let r = FractalRenderer::new(&job.tile_parameter(i).expect("tile"), false);
        for y in 0..t.height {
            for x in 0..t.width {
                fb.set(t.x + x, t.y + y, rsplib_color(r.pixel(x, y).0, 0, 0, &opts));
            }
        }
    }
    fb.rgb().to_vec()
}

/// Asserts two images are equal without printing megabytes.
fn same(a: &[u8], b: &[u8], what: &str) {
    let differing = a.chunks(3).zip(b.chunks(3)).filter(|(x, y)| x != y).count();
    assert!(
        a.len() == b.len() && differing == 0,
        "{what}: sizes {} / {}, {differing} pixel(s) differ",
        a.len(),
        b.len()
    );
}

/// Renders one image with `threads` sessions; `during` runs while the client works.
fn render(
    pool: &mut ServicePool,
    out: &Path,
    (w, h): (u32, u32),
    threads: u32,
    during: impl FnOnce(&mut ServicePool),
) -> Vec<String> {
    let mut args = pool.client_args();
    args.extend([
        format!("-width={w}"),
        format!("-height={h}"),
        format!("-threads={threads}"),
        "-images=1".into(),
        "-nocolormarks".into(),
        "-nosessions".into(),
        "-configdir=/nonexistent".into(),
        "-recvtimeout=2000".into(),
        format!("-output={}", out.display()),
    ]);
    let c = ClientProc::spawn(
        &pool.bin_dir,
        "fractalpooluser",
        &args,
        &pool.logs.join(format!("client-{threads}.log")),
    )
    .expect("start fractalpooluser");
    during(pool);
    let (lines, code) = c.finish(LIMIT);
    let lines: Vec<String> = lines.into_iter().map(|l| l.text).collect();
    assert_eq!(code, Some(0), "fractalpooluser: {lines:#?}");
    lines
}

fn failovers(lines: &[String]) -> usize {
    lines
        .iter()
        .find_map(|l| {
            let (_, rest) = l.split_once("packet(s), ")?;
            rest.split_once(" failover")?.0.parse().ok()
        })
        .expect("summary line")
}

#[test]
fn images_survive_failure_tester_and_killed_pe() {
    let mut pool = ServicePool::start(&bin_dir(), &logs("fgp"), &[]).expect("registrar");
    for id in [0x31, 0x32] {
        pool.start_pe_registered(id, &["-fractal", "-fgpcookiemaxpackets=2"])
            .expect("PE");
    }
    let reference = pool.logs.join("reference.png");
    let lines = render(&mut pool, &reference, (W, H), 3, |_| {});
    assert_eq!(failovers(&lines), 0, "{lines:#?}");
    let (w, h, ref_pixels) = pixels(&reference);
    assert_eq!((w, h), (W, H));
    same(
        &ref_pixels,
        &local_rendering(W, H, 3),
        "pool image = local rendering",
    );

    // Failure tester: every session is closed after 3 DATA messages (after a cookie).
    for id in [0x33, 0x34] {
        pool.start_pe_registered(
            id,
            &["-fractal", "-fgpfailureafter=3", "-poolhandle=FgpTester"],
        )
        .expect("PE");
    }
    let tester = pool.logs.join("tester.png");
    let mut args_pool = pool.client_args();
    args_pool.push("-poolhandle=FgpTester".into());
    let lines = {
        let mut a = args_pool.clone();
        a.extend([
            format!("-width={W}"),
            format!("-height={H}"),
            "-threads=2".into(),
            "-images=1".into(),
            "-nocolormarks".into(),
            "-nosessions".into(),
            "-configdir=/nonexistent".into(),
            format!("-output={}", tester.display()),
        ]);
        let c = ClientProc::spawn(
            &pool.bin_dir,
            "fractalpooluser",
            &a,
            &pool.logs.join("tester.log"),
        )
        .expect("start fractalpooluser");
        let (lines, code) = c.finish(LIMIT);
        let lines: Vec<String> = lines.into_iter().map(|l| l.text).collect();
        assert_eq!(code, Some(0), "{lines:#?}");
        lines
    };
    assert!(failovers(&lines) >= 2, "{lines:#?}");
    same(
        &pixels(&tester).2,
        &local_rendering(W, H, 2),
        "failure tester image",
    );

    // SIGKILL of one PE while both work on a larger image (one tile each).
    let (w2, h2) = (640, 400);
    let big = pool.logs.join("big.png");
    render(&mut pool, &big, (w2, h2), 2, |_| {});
    let big_pixels = pixels(&big).2;
    same(
        &big_pixels,
        &local_rendering(w2, h2, 2),
        "pool image = local rendering",
    );
    let killed = pool.logs.join("killed.png");
    // Kill a PE that serves a session of this image: the first that logs the start of a
    // new image session, as soon as it does, so the kill lands mid-image however fast the
    // machine renders it.
    let started = |p: &ServicePool, id: u32| -> usize {
        std::fs::read_to_string(p.logs.join(format!("pe-{id:x}.log")))
            .map_or(0, |l| l.matches("ImageStarted").count())
    };
    let before = [0x31, 0x32].map(|id| started(&pool, id));
    let lines = render(&mut pool, &killed, (w2, h2), 2, |p| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let victim = loop {
            if let Some(i) = (0..2).find(|&i| started(p, 0x31 + i as u32) > before[i]) {
                break 0x31 + i as u32;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no PE started a session"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(p.kill_pe(victim));
    });
    assert!(
        failovers(&lines) >= 1,
        "the killed PE's session failed over: {lines:#?}"
    );
    same(
        &pixels(&killed).2,
        &big_pixels,
        "image after SIGKILL = no-failure image",
    );
}
