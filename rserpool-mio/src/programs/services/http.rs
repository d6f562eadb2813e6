//! `fractalpooluser`'s live view: a tiny HTTP/1.0 server (one thread, one request per
//! connection) serving an auto-refreshing HTML page (`/`) and the image being computed as a
//! PNG (`/image.png`, encoded from the shared framebuffer on every request). Meant for
//! 127.0.0.1; off unless `-http=` is given.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rserpool_core::services::fractal::Framebuffer;
use tracing::{debug, info};

/// The framebuffer shown, with a caption.
pub type SharedImage = Arc<Mutex<Framebuffer>>;

/// Encodes an RGB framebuffer as a PNG (8 bits per channel).
pub fn encode_png(fb: &Framebuffer) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, fb.width(), fb.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(io::Error::other)?;
        w.write_image_data(fb.rgb()).map_err(io::Error::other)?;
        w.finish().map_err(io::Error::other)?;
    }
    Ok(out)
}

/// Writes `fb` as a PNG to `path` (through a temporary file and a rename, so a reader never
/// sees half an image).
pub fn write_png(fb: &Framebuffer, path: &std::path::Path) -> io::Result<()> {
    let data = encode_png(fb)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// The HTML page: the image, reloaded twice a second.
pub fn page(caption: &str) -> String {
    let caption = caption
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{caption}</title>\n\
         <noscript><meta http-equiv=\"refresh\" content=\"1\"></noscript></head>\n\
         <body style=\"background:#333;color:#eee;font-family:sans-serif\">\n\
         <h3>{caption}</h3>\n<img id=\"img\" src=\"image.png\" alt=\"fractal\">\n\
         <script>setInterval(function(){{document.getElementById('img').src='image.png?t='+Date.now();}},500);</script>\n\
         </body></html>\n"
    )
}

/// Starts the server on `addr`; returns the bound address.
pub fn serve(addr: SocketAddr, image: SharedImage, caption: String) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    info!("live view on http://{local}/");
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = handle(s, &image, &caption) {
                            debug!("http: {e}");
                        }
                    }
                    Err(e) => debug!("http accept: {e}"),
                }
            }
        })?;
    Ok(local)
}

fn respond(s: &mut TcpStream, status: &str, kind: &str, body: &[u8]) -> io::Result<()> {
    write!(
        s,
        "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    s.flush()
}

fn handle(mut s: TcpStream, image: &SharedImage, caption: &str) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(s.try_clone()?).take(16 * 1024);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Skip the headers.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut s,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
        );
    }
    match path {
        "/" | "/index.html" => respond(
            &mut s,
            "200 OK",
            "text/html; charset=utf-8",
            page(caption).as_bytes(),
        ),
        "/image.png" => {
            let fb = image
                .lock()
                .map_err(|_| io::Error::other("image lock poisoned"))?
                .clone();
            let png = encode_png(&fb)?;
            respond(&mut s, "200 OK", "image/png", &png)
        }
        _ => respond(&mut s, "404 Not Found", "text/plain", b"not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn serves_page_and_png() {
        let mut fb = Framebuffer::new(64, 64);
        fb.set(1, 2, [1, 2, 3]);
        let img = Arc::new(Mutex::new(fb.clone()));
        let addr = serve("127.0.0.1:0".parse().unwrap(), img, "Test <1>".into()).unwrap();
        let page = String::from_utf8(get(addr, "/")).unwrap();
        assert!(page.starts_with("HTTP/1.0 200 OK"));
        assert!(page.contains("Test &lt;1&gt;") && page.contains("image.png"));
        let png = get(addr, "/image.png?t=5");
        let split = png.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &png[split..];
        assert_eq!(body, encode_png(&fb).unwrap().as_slice());
        let dec = png::Decoder::new(std::io::Cursor::new(body.to_vec()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (64, 64));
        assert_eq!(&buf[3 * (2 * 64 + 1)..3 * (2 * 64 + 1) + 3], &[1, 2, 3]);
        assert!(String::from_utf8_lossy(&get(addr, "/nope")).starts_with("HTTP/1.0 404"));
    }
}
