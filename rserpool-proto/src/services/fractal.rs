//! Fractal Generator Protocol (FGP), PPID 32 (`services.md` §5).
//!
//! ```text
//! PARAMETER (Type 1, 60 bytes): Width u32 | Height u32 | MaxIterations u32 |
//!     AlgorithmID u32 | C1Real f64 | C1Imag f64 | C2Real f64 | C2Imag f64 | N f64
//! DATA (Type 2, 16 + 4·P bytes): StartX u32 | StartY u32 | Points u32 | P × u32
//!     end of image: StartX = StartY = 0xFFFFFFFF, Points = 0
//! Cookie (76 bytes): "<FG-TD1>" | PARAMETER (header Length 4 in RSPLIB!) | CurrentX | CurrentY
//! ```
//!
//! Receivers ignore the Length fields (the PE checks size ≥ 60 and Type; the PU checks
//! size ≥ 16 + 4·Points), and so do these decoders.

use bytes::Bytes;

use super::{COMMON_HEADER_SIZE, CommonHeader, Reader, ServiceError, ServiceErrorKind, put_header};

/// Type of PARAMETER (PU → PE).
pub const FGPT_PARAMETER: u8 = 0x01;
/// Type of DATA (PE → PU).
pub const FGPT_DATA: u8 = 0x02;
/// Size of a PARAMETER message.
pub const FGP_PARAMETER_SIZE: usize = 60;
/// Size of a DATA message without points.
pub const FGP_DATA_HEADER_SIZE: usize = 16;
/// Most points in one DATA message (`FGD_MAX_POINTS`; a full DATA is 1312 bytes).
pub const FGP_MAX_POINTS: usize = 324;
/// The cookie identifier `<FG-TD1>`.
pub const FGP_COOKIE_ID: [u8; 8] = *b"<FG-TD1>";
/// Size of the FGP cookie.
pub const FGP_COOKIE_SIZE: usize = 76;
/// Largest Width and Height the PE accepts.
pub const FGP_MAX_DIMENSION: u32 = 65_536;
/// Largest MaxIterations the PE accepts.
pub const FGP_MAX_ITERATIONS: u32 = 1_000_000;
/// StartX/StartY of the end-of-image marker.
pub const FGP_END_MARKER: u32 = 0xffff_ffff;

/// The algorithm a PARAMETER asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FractalAlgorithm {
    /// 1: z := z² − c (RSPLIB's code; Wireshark's text says "+ c").
    Mandelbrot,
    /// 2: z := z^N − c with real N.
    MandelbrotN,
    /// Any other value: RSPLIB's PE silently produces the test pattern (x·y) mod 256.
    Other(u32),
}

impl FractalAlgorithm {
    /// The wire value.
    pub fn code(self) -> u32 {
        match self {
            FractalAlgorithm::Mandelbrot => 1,
            FractalAlgorithm::MandelbrotN => 2,
            FractalAlgorithm::Other(c) => c,
        }
    }

    /// The algorithm for a wire value.
    pub fn from_code(code: u32) -> FractalAlgorithm {
        match code {
            1 => FractalAlgorithm::Mandelbrot,
            2 => FractalAlgorithm::MandelbrotN,
            c => FractalAlgorithm::Other(c),
        }
    }
}

/// A PARAMETER message: one rectangle of the complex plane to render.
///
/// Equality compares the `f64` fields bit by bit (so a decoded NaN equals itself).
#[derive(Clone, Copy, Debug)]
pub struct FgpParameter {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Iteration limit per pixel.
    pub max_iterations: u32,
    /// Algorithm.
    pub algorithm: FractalAlgorithm,
    /// Real part of the top-left corner.
    pub c1_real: f64,
    /// Imaginary part of the top-left corner.
    pub c1_imag: f64,
    /// Real part of the bottom-right corner.
    pub c2_real: f64,
    /// Imaginary part of the bottom-right corner.
    pub c2_imag: f64,
    /// Exponent for [`FractalAlgorithm::MandelbrotN`].
    pub n: f64,
}

impl PartialEq for FgpParameter {
    fn eq(&self, o: &FgpParameter) -> bool {
        self.width == o.width
            && self.height == o.height
            && self.max_iterations == o.max_iterations
            && self.algorithm == o.algorithm
            && self.c1_real.to_bits() == o.c1_real.to_bits()
            && self.c1_imag.to_bits() == o.c1_imag.to_bits()
            && self.c2_real.to_bits() == o.c2_real.to_bits()
            && self.c2_imag.to_bits() == o.c2_imag.to_bits()
            && self.n.to_bits() == o.n.to_bits()
    }
}

impl Eq for FgpParameter {}

impl FgpParameter {
    /// `fractalpooluser`'s default job for a `width` × `height` image: Mandelbrot,
    /// C1 = (−1.5, 1.5), C2 = (1.5, −1.5), N = 2, 1024 iterations.
    pub fn rsplib_default(width: u32, height: u32) -> FgpParameter {
        FgpParameter {
            width,
            height,
            max_iterations: 1024,
            algorithm: FractalAlgorithm::Mandelbrot,
            c1_real: -1.5,
            c1_imag: 1.5,
            c2_real: 1.5,
            c2_imag: -1.5,
            n: 2.0,
        }
    }

    /// Decodes a PARAMETER as the PE does: ≥ 60 bytes and Type 1; Length and Flags ignored.
    pub fn decode(data: &[u8]) -> Result<FgpParameter, ServiceError> {
        let h = CommonHeader::decode(data)?;
        if h.ty != FGPT_PARAMETER {
            return Err(ServiceError::new(0, ServiceErrorKind::UnknownType(h.ty)));
        }
        let r = Reader::new(data);
        r.bytes(0, FGP_PARAMETER_SIZE)?;
        Ok(FgpParameter {
            width: r.u32(4)?,
            height: r.u32(8)?,
            max_iterations: r.u32(12)?,
            algorithm: FractalAlgorithm::from_code(r.u32(16)?),
            c1_real: r.f64(20)?,
            c1_imag: r.f64(28)?,
            c2_real: r.f64(36)?,
            c2_imag: r.f64(44)?,
            n: r.f64(52)?,
        })
    }

    /// The PE's limits: Width and Height ≤ 65 536, MaxIterations ≤ 1 000 000.
    pub fn check_limits(&self) -> Result<(), ServiceError> {
        let bad = |offset, field, value: u32| {
            Err(ServiceError::new(
                offset,
                ServiceErrorKind::OutOfRange {
                    field,
                    value: u64::from(value),
                },
            ))
        };
        if self.width > FGP_MAX_DIMENSION {
            return bad(4, "Width", self.width);
        }
        if self.height > FGP_MAX_DIMENSION {
            return bad(8, "Height", self.height);
        }
        if self.max_iterations > FGP_MAX_ITERATIONS {
            return bad(12, "MaxIterations", self.max_iterations);
        }
        Ok(())
    }

    fn write(&self, out: &mut Vec<u8>, header_length: usize) {
        put_header(out, FGPT_PARAMETER, 0, header_length);
        out.extend_from_slice(&self.width.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.max_iterations.to_be_bytes());
        out.extend_from_slice(&self.algorithm.code().to_be_bytes());
        for v in [
            self.c1_real,
            self.c1_imag,
            self.c2_real,
            self.c2_imag,
            self.n,
        ] {
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
    }

    /// Encodes the 60-byte message.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(FGP_PARAMETER_SIZE);
        self.write(&mut out, FGP_PARAMETER_SIZE);
        Bytes::from(out)
    }
}

/// A DATA message: `points` iteration counts, row-major from (`start_x`, `start_y`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct FgpData {
    /// Column of the first point.
    pub start_x: u32,
    /// Row of the first point.
    pub start_y: u32,
    /// Iteration counts (at most [`FGP_MAX_POINTS`] are encoded).
    pub points: Vec<u32>,
}

impl FgpData {
    /// The end-of-image marker.
    pub fn end_marker() -> FgpData {
        FgpData {
            start_x: FGP_END_MARKER,
            start_y: FGP_END_MARKER,
            points: Vec::new(),
        }
    }

    /// True for the end-of-image marker (StartX = StartY = 0xFFFFFFFF, no points).
    pub fn is_end_marker(&self) -> bool {
        self.start_x == FGP_END_MARKER && self.start_y == FGP_END_MARKER && self.points.is_empty()
    }

    /// Decodes a DATA message as the PU does: Type 2, ≥ 16 bytes, at most 324 points, and
    /// all announced points present; Length and Flags ignored.
    pub fn decode(data: &[u8]) -> Result<FgpData, ServiceError> {
        let h = CommonHeader::decode(data)?;
        if h.ty != FGPT_DATA {
            return Err(ServiceError::new(0, ServiceErrorKind::UnknownType(h.ty)));
        }
        let r = Reader::new(data);
        let start_x = r.u32(4)?;
        let start_y = r.u32(8)?;
        let n = r.u32(12)?;
        let count = usize::try_from(n).unwrap_or(usize::MAX);
        if count > FGP_MAX_POINTS {
            return Err(ServiceError::new(12, ServiceErrorKind::TooManyPoints(n)));
        }
        let raw = r.bytes(FGP_DATA_HEADER_SIZE, 4 * count)?;
        let points = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(FgpData {
            start_x,
            start_y,
            points,
        })
    }

    /// Encoded size: `16 + 4 · min(points, 324)`.
    pub fn encoded_len(&self) -> usize {
        FGP_DATA_HEADER_SIZE + 4 * self.points.len().min(FGP_MAX_POINTS)
    }

    /// Encodes the message (points beyond [`FGP_MAX_POINTS`] are not encoded).
    pub fn encode(&self) -> Bytes {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        put_header(&mut out, FGPT_DATA, 0, len);
        out.extend_from_slice(&self.start_x.to_be_bytes());
        out.extend_from_slice(&self.start_y.to_be_bytes());
        let n = self.points.len().min(FGP_MAX_POINTS);
        out.extend_from_slice(&u32::try_from(n).unwrap_or(0).to_be_bytes());
        for p in self.points.iter().take(n) {
            out.extend_from_slice(&p.to_be_bytes());
        }
        Bytes::from(out)
    }
}

/// An FGP message, by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FgpMessage {
    /// PARAMETER.
    Parameter(FgpParameter),
    /// DATA (including the end marker).
    Data(FgpData),
}

impl FgpMessage {
    /// Decodes either message type.
    pub fn decode(data: &[u8]) -> Result<FgpMessage, ServiceError> {
        match CommonHeader::decode(data)?.ty {
            FGPT_PARAMETER => FgpParameter::decode(data).map(FgpMessage::Parameter),
            FGPT_DATA => FgpData::decode(data).map(FgpMessage::Data),
            t => Err(ServiceError::new(0, ServiceErrorKind::UnknownType(t))),
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Bytes {
        match self {
            FgpMessage::Parameter(p) => p.encode(),
            FgpMessage::Data(d) => d.encode(),
        }
    }
}

/// The FGP PE's cookie: the job and the position to resume at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FgpCookie {
    /// The job.
    pub parameter: FgpParameter,
    /// Column to resume at.
    pub current_x: u32,
    /// Row to resume at.
    pub current_y: u32,
}

impl FgpCookie {
    /// Decodes a cookie as RSPLIB's PE does: exactly 76 bytes, ID `<FG-TD1>`, an embedded
    /// PARAMETER of Type 1 (its Length, 4 from RSPLIB or 60 from us, is ignored). The
    /// parameter's limits are not checked here (see [`FgpParameter::check_limits`]).
    pub fn decode(data: &[u8]) -> Result<FgpCookie, ServiceError> {
        if data.len() != FGP_COOKIE_SIZE {
            return Err(ServiceError::new(
                0,
                ServiceErrorKind::BadCookieSize {
                    have: data.len(),
                    expected: FGP_COOKIE_SIZE,
                },
            ));
        }
        let r = Reader::new(data);
        if r.array::<8>(0)? != FGP_COOKIE_ID {
            return Err(ServiceError::new(0, ServiceErrorKind::BadCookieId));
        }
        let inner = r.bytes(8, FGP_PARAMETER_SIZE)?;
        let parameter = FgpParameter::decode(inner).map_err(|e| ServiceError {
            offset: e.offset + 8,
            kind: e.kind,
        })?;
        Ok(FgpCookie {
            parameter,
            current_x: r.u32(68)?,
            current_y: r.u32(72)?,
        })
    }

    fn encode_with(&self, embedded_length: usize) -> Bytes {
        let mut out = Vec::with_capacity(FGP_COOKIE_SIZE);
        out.extend_from_slice(&FGP_COOKIE_ID);
        self.parameter.write(&mut out, embedded_length);
        out.extend_from_slice(&self.current_x.to_be_bytes());
        out.extend_from_slice(&self.current_y.to_be_bytes());
        Bytes::from(out)
    }

    /// Encodes the cookie with the embedded PARAMETER's Length = 60 (correct; RSPLIB's PE
    /// ignores the field, so RSPLIB PEs resume from it).
    pub fn encode(&self) -> Bytes {
        self.encode_with(FGP_PARAMETER_SIZE)
    }

    /// Encodes the cookie byte for byte as RSPLIB does (embedded Length = 4, defect §10.3).
    pub fn encode_rsplib(&self) -> Bytes {
        self.encode_with(COMMON_HEADER_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const PARAM: &str = "01 00 00 3c 00 00 01 90 00 00 00 fa 00 00 04 00 00 00 00 01
        bf f8 00 00 00 00 00 00  3f f8 00 00 00 00 00 00  3f f8 00 00 00 00 00 00
        bf f8 00 00 00 00 00 00  40 00 00 00 00 00 00 00";

    #[test]
    fn spec_examples() {
        let p = hex(PARAM);
        let param = FgpParameter::rsplib_default(400, 250);
        assert_eq!(FgpParameter::decode(&p).unwrap(), param);
        assert_eq!(param.encode(), p);
        assert_eq!(
            FgpMessage::decode(&p).unwrap(),
            FgpMessage::Parameter(param)
        );

        let d = hex(
            "02 00 00 1c 00 00 01 8e 00 00 00 00 00 00 00 03 00 00 00 05 00 00 00 07 00 00 04 00",
        );
        let data = FgpData {
            start_x: 398,
            start_y: 0,
            points: vec![5, 7, 1024],
        };
        assert_eq!(FgpData::decode(&d).unwrap(), data);
        assert_eq!(data.encode(), d);

        let end = hex("02 00 00 10 ff ff ff ff ff ff ff ff 00 00 00 00");
        assert!(FgpData::decode(&end).unwrap().is_end_marker());
        assert_eq!(FgpData::end_marker().encode(), end);

        // Cookie at x=17, y=3 as RSPLIB writes it (embedded Length 4).
        let mut c = hex("3c 46 47 2d 54 44 31 3e");
        let mut inner = p.clone();
        inner[3] = 4;
        c.extend_from_slice(&inner);
        c.extend_from_slice(&hex("00 00 00 11 00 00 00 03"));
        let cookie = FgpCookie {
            parameter: param,
            current_x: 17,
            current_y: 3,
        };
        assert_eq!(FgpCookie::decode(&c).unwrap(), cookie);
        assert_eq!(cookie.encode_rsplib(), c);
        let ours = cookie.encode();
        assert_eq!(ours[11], 60);
        assert_eq!(FgpCookie::decode(&ours).unwrap(), cookie);
    }

    #[test]
    fn validation() {
        let mut p = FgpParameter::rsplib_default(65_537, 10);
        assert!(matches!(
            p.check_limits().unwrap_err().kind,
            ServiceErrorKind::OutOfRange { field: "Width", .. }
        ));
        p.width = 65_536;
        p.max_iterations = 1_000_001;
        assert!(matches!(
            p.check_limits().unwrap_err().kind,
            ServiceErrorKind::OutOfRange {
                field: "MaxIterations",
                ..
            }
        ));
        p.max_iterations = 1_000_000;
        assert!(p.check_limits().is_ok());

        let mut d = FgpData {
            start_x: 0,
            start_y: 0,
            points: vec![1; 10],
        }
        .encode()
        .to_vec();
        d[15] = 200; // announces 200 points, carries 10
        assert!(matches!(
            FgpData::decode(&d).unwrap_err().kind,
            ServiceErrorKind::Truncated { .. }
        ));
        d[14] = 1; // 456 points
        assert_eq!(
            FgpData::decode(&d).unwrap_err().kind,
            ServiceErrorKind::TooManyPoints(456)
        );
        assert_eq!(
            FgpData::decode(&hex(PARAM)).unwrap_err().kind,
            ServiceErrorKind::UnknownType(1)
        );
        let mut c = FgpCookie {
            parameter: FgpParameter::rsplib_default(1, 1),
            current_x: 0,
            current_y: 0,
        }
        .encode()
        .to_vec();
        c[8] = 2; // embedded type must be PARAMETER
        assert_eq!(
            FgpCookie::decode(&c).unwrap_err(),
            ServiceError::new(8, ServiceErrorKind::UnknownType(2))
        );
        c.push(0);
        assert!(matches!(
            FgpCookie::decode(&c).unwrap_err().kind,
            ServiceErrorKind::BadCookieSize { have: 77, .. }
        ));
    }

    fn parameter() -> impl Strategy<Value = FgpParameter> {
        (
            (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
            proptest::array::uniform5(any::<u64>()),
        )
            .prop_map(|((w, h, it, a), f)| FgpParameter {
                width: w,
                height: h,
                max_iterations: it,
                algorithm: FractalAlgorithm::from_code(a),
                c1_real: f64::from_bits(f[0]),
                c1_imag: f64::from_bits(f[1]),
                c2_real: f64::from_bits(f[2]),
                c2_imag: f64::from_bits(f[3]),
                n: f64::from_bits(f[4]),
            })
    }

    fn data() -> impl Strategy<Value = FgpData> {
        (
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u32>(), 0..=FGP_MAX_POINTS),
        )
            .prop_map(|(start_x, start_y, points)| FgpData {
                start_x,
                start_y,
                points,
            })
    }

    proptest! {
        #[test]
        fn parameter_roundtrip(p in parameter()) {
            let b = p.encode();
            prop_assert_eq!(b.len(), FGP_PARAMETER_SIZE);
            prop_assert_eq!(FgpParameter::decode(&b).unwrap(), p);
            for cut in 0..b.len() {
                prop_assert!(FgpParameter::decode(&b[..cut]).is_err());
            }
        }

        #[test]
        fn data_roundtrip(d in data(), cut in any::<usize>()) {
            let b = d.encode();
            prop_assert_eq!(b.len(), d.encoded_len());
            prop_assert_eq!(FgpMessage::decode(&b).unwrap(), FgpMessage::Data(d));
            prop_assert!(FgpData::decode(&b[..cut % b.len()]).is_err());
        }

        #[test]
        fn cookie_roundtrip(p in parameter(), x in any::<u32>(), y in any::<u32>()) {
            let c = FgpCookie { parameter: p, current_x: x, current_y: y };
            let b = c.encode();
            prop_assert_eq!(b.len(), FGP_COOKIE_SIZE);
            prop_assert_eq!(FgpCookie::decode(&b).unwrap(), c);
            prop_assert_eq!(FgpCookie::decode(&c.encode_rsplib()).unwrap(), c);
            for cut in 0..b.len() {
                prop_assert!(FgpCookie::decode(&b[..cut]).is_err());
            }
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = FgpMessage::decode(&data);
            let _ = FgpCookie::decode(&data);
        }
    }
}
