//! TLV machinery shared by the parameter and message codecs: nom-based readers with a typed
//! error, the parameter sequence reader that applies the unknown-parameter action bits, and
//! the encoding helpers.
//!
//! Every reader works on sub-slices of one [`Bytes`] buffer (the message), so opaque fields
//! become [`Bytes`] views without copying and error offsets are pointer differences.

use bytes::{BufMut, Bytes};
use nom::Parser;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::param::{SkippedParameter, UnknownParameter, is_known};

/// Rounds up to a multiple of 4.
pub(crate) const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Error inside the parsers: position, kind and (once known) the innermost TLV to quote.
#[derive(Debug)]
pub(crate) struct PErr<'a> {
    pub at: &'a [u8],
    pub kind: DecodeErrorKind,
    pub tlv: Option<&'a [u8]>,
}

impl<'a> nom::error::ParseError<&'a [u8]> for PErr<'a> {
    fn from_error_kind(input: &'a [u8], _kind: nom::error::ErrorKind) -> Self {
        // Only reached if a nom primitive runs out of input despite the explicit checks.
        PErr {
            at: input,
            kind: DecodeErrorKind::Truncated {
                need: input.len().saturating_add(1),
                have: input.len(),
            },
            tlv: None,
        }
    }

    fn append(_input: &'a [u8], _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

/// Parser result: nom's `IResult` with our error.
pub(crate) type Res<'a, O> = nom::IResult<&'a [u8], O, PErr<'a>>;
/// Result of a parser that consumes a whole TLV value.
pub(crate) type PResult<'a, O> = Result<O, nom::Err<PErr<'a>>>;

/// Builds a parser error.
pub(crate) fn fail<'a>(at: &'a [u8], kind: DecodeErrorKind) -> nom::Err<PErr<'a>> {
    nom::Err::Error(PErr {
        at,
        kind,
        tlv: None,
    })
}

/// Attaches `raw` as the TLV to quote unless an inner TLV is already attached.
pub(crate) fn quote<'a>(raw: &'a [u8]) -> impl Fn(nom::Err<PErr<'a>>) -> nom::Err<PErr<'a>> {
    move |e| match e {
        nom::Err::Error(mut p) | nom::Err::Failure(mut p) => {
            if p.tlv.is_none() {
                p.tlv = Some(raw);
            }
            nom::Err::Error(p)
        }
        nom::Err::Incomplete(n) => nom::Err::Incomplete(n),
    }
}

/// Drops an attached TLV quote (for structures that look like TLVs but are not parameters).
pub(crate) fn unquote(e: nom::Err<PErr<'_>>) -> nom::Err<PErr<'_>> {
    match e {
        nom::Err::Error(mut p) | nom::Err::Failure(mut p) => {
            p.tlv = None;
            nom::Err::Error(p)
        }
        other => other,
    }
}

/// Big-endian u16: a nom parser like `nom::number::complete::be_u16`, but one load instead
/// of a byte loop, and a `Truncated` error saying how much was missing.
#[inline]
pub(crate) fn u16_be(i: &[u8]) -> Res<'_, u16> {
    match i.split_first_chunk::<2>() {
        Some((b, rest)) => Ok((rest, u16::from_be_bytes(*b))),
        None => Err(fail(
            i,
            DecodeErrorKind::Truncated {
                need: 2,
                have: i.len(),
            },
        )),
    }
}

/// Big-endian u32 (see [`u16_be`]).
#[inline]
pub(crate) fn u32_be(i: &[u8]) -> Res<'_, u32> {
    match i.split_first_chunk::<4>() {
        Some((b, rest)) => Ok((rest, u32::from_be_bytes(*b))),
        None => Err(fail(
            i,
            DecodeErrorKind::Truncated {
                need: 4,
                have: i.len(),
            },
        )),
    }
}

/// Converts a parser error into the public error; `whole` is the buffer all slices point into.
pub(crate) fn to_decode_error(whole: &Bytes, e: nom::Err<PErr<'_>>) -> DecodeError {
    match e {
        nom::Err::Error(p) | nom::Err::Failure(p) => {
            let base = whole.as_ptr() as usize;
            let at = p.at.as_ptr() as usize;
            let offset = if at >= base && at - base <= whole.len() {
                at - base
            } else {
                0
            };
            let raw = p.tlv.map(|t| whole.slice_ref(t)).unwrap_or_default();
            DecodeError::new(offset, p.kind, raw)
        }
        nom::Err::Incomplete(_) => DecodeError::new(
            whole.len(),
            DecodeErrorKind::Truncated {
                need: whole.len().saturating_add(1),
                have: whole.len(),
            },
            Bytes::new(),
        ),
    }
}

/// One TLV as found on the wire.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tlv<'a> {
    /// Full type code, action bits included.
    pub ty: u16,
    /// The value (Length − 4 bytes).
    pub value: &'a [u8],
    /// Header + value, without padding.
    pub raw: &'a [u8],
}

/// Reads one TLV and skips its padding (a missing final pad at the end of `i` is tolerated).
#[inline]
pub(crate) fn tlv(i: &[u8]) -> Res<'_, Tlv<'_>> {
    if i.len() < 4 {
        let mut e = fail(
            i,
            DecodeErrorKind::Truncated {
                need: 4,
                have: i.len(),
            },
        );
        if let nom::Err::Error(p) = &mut e {
            p.tlv = Some(i);
        }
        return Err(e);
    }
    let (_, (ty, len)) = (u16_be, u16_be).parse_complete(i)?;
    let len = usize::from(len);
    if len < 4 {
        return Err(quote(i.get(..4).unwrap_or(i))(fail(
            i,
            DecodeErrorKind::BadLength { ty, length: len },
        )));
    }
    let Some((raw, _)) = i.split_at_checked(len) else {
        return Err(quote(i)(fail(
            i,
            DecodeErrorKind::Truncated {
                need: len,
                have: i.len(),
            },
        )));
    };
    let value = raw.get(4..).unwrap_or_default();
    let rest = i.get(pad4(len).min(i.len())..).unwrap_or_default();
    Ok((rest, Tlv { ty, value, raw }))
}

/// Decoding context: the buffer all slices point into, and the skip-and-report parameters
/// met so far (at any depth).
pub(crate) struct Cx<'a> {
    pub buf: &'a Bytes,
    pub reports: Vec<UnknownParameter>,
    /// Skipped TLVs of the message's top level.
    pub skipped: Vec<SkippedParameter>,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Cx {
            buf,
            reports: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// A zero-copy [`Bytes`] view of a sub-slice of the buffer.
    pub(crate) fn bytes(&self, s: &[u8]) -> Bytes {
        if s.is_empty() {
            Bytes::new()
        } else {
            self.buf.slice_ref(s)
        }
    }
}

/// A sequence of TLVs read in the order a message (or a nested parameter) defines.
///
/// TLVs whose type has the "skip" action bit (0x8000) and that the caller does not ask for are
/// skipped; at the top level of a message they are kept (with their position) so that the
/// message re-encodes byte for byte. An unknown type with a "stop" action ends decoding with
/// [`DecodeErrorKind::UnknownParameter`].
pub(crate) struct Seq<'a> {
    rest: &'a [u8],
    index: u16,
    retain: bool,
}

impl<'a> Seq<'a> {
    /// A sequence over `i`; `retain` keeps skipped TLVs (top level of a message).
    pub(crate) fn new(i: &'a [u8], retain: bool) -> Self {
        Seq {
            rest: i,
            index: 0,
            retain,
        }
    }

    /// The next TLV if `want` accepts its type; `None` at the end or when the next TLV is a
    /// known, non-skippable parameter that `want` rejects (left in place).
    #[inline]
    pub(crate) fn next_if(
        &mut self,
        cx: &mut Cx<'a>,
        want: impl Fn(u16) -> bool,
    ) -> PResult<'a, Option<Tlv<'a>>> {
        loop {
            if self.rest.is_empty() {
                return Ok(None);
            }
            let (rest, t) = tlv(self.rest)?;
            if want(t.ty) {
                self.rest = rest;
                self.index = self.index.saturating_add(1);
                return Ok(Some(t));
            }
            if t.ty & 0x8000 != 0 {
                let p = UnknownParameter {
                    raw: cx.bytes(t.raw),
                };
                if t.ty & 0x4000 != 0 {
                    cx.reports.push(p.clone());
                }
                if self.retain {
                    cx.skipped.push(SkippedParameter {
                        position: self.index,
                        parameter: p,
                    });
                }
                self.rest = rest;
                continue;
            }
            if is_known(t.ty) {
                return Ok(None);
            }
            return Err(quote(t.raw)(fail(
                t.raw,
                DecodeErrorKind::UnknownParameter { ty: t.ty },
            )));
        }
    }

    /// How many TLVs of type `ty` and at least `min_len` bytes follow back to back (a capacity
    /// hint; stops at anything else, including malformed headers). `min_len` bounds the hint
    /// by what a valid parameter needs, so garbage cannot make it reserve much.
    pub(crate) fn count_ahead(&self, ty: u16, min_len: usize) -> usize {
        let mut n = 0;
        let mut i = self.rest;
        while let Some(&[t0, t1, l0, l1]) = i.get(..4) {
            if u16::from_be_bytes([t0, t1]) != ty {
                break;
            }
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            if len < min_len.max(4) {
                break;
            }
            n += 1;
            i = i.get(pad4(len)..).unwrap_or_default();
        }
        n
    }

    /// The next TLV, which must be of type `ty`.
    #[inline]
    pub(crate) fn required(
        &mut self,
        cx: &mut Cx<'a>,
        ty: u16,
        name: &'static str,
    ) -> PResult<'a, Tlv<'a>> {
        self.required_if(cx, |t| t == ty, name)
    }

    /// The next TLV, which must satisfy `want`.
    #[inline]
    pub(crate) fn required_if(
        &mut self,
        cx: &mut Cx<'a>,
        want: impl Fn(u16) -> bool,
        name: &'static str,
    ) -> PResult<'a, Tlv<'a>> {
        match self.next_if(cx, want)? {
            Some(t) => Ok(t),
            None => Err(self.unexpected_or_missing(name)),
        }
    }

    fn unexpected_or_missing(&self, name: &'static str) -> nom::Err<PErr<'a>> {
        if self.rest.is_empty() {
            return fail(self.rest, DecodeErrorKind::MissingParameter(name));
        }
        match tlv(self.rest) {
            Ok((_, t)) => quote(t.raw)(fail(
                t.raw,
                DecodeErrorKind::UnexpectedParameter { ty: t.ty },
            )),
            Err(e) => e,
        }
    }

    /// Requires the end of the sequence (after skipping skippable TLVs).
    #[inline]
    pub(crate) fn end(&mut self, cx: &mut Cx<'a>) -> PResult<'a, ()> {
        if self.rest.is_empty() {
            return Ok(());
        }
        if self.next_if(cx, |_| false)?.is_some() || !self.rest.is_empty() {
            return Err(self.unexpected_or_missing("end of parameters"));
        }
        Ok(())
    }
}

/// Length field value for `n` bytes: saturates at 65535 (only the trailing padding of the last
/// nested TLV can push a decodable TLV over, and readers accept the shortened form).
pub(crate) fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Writes a TLV header for a value of `value_len` bytes.
pub(crate) fn put_header(buf: &mut impl BufMut, ty: u16, value_len: usize) {
    buf.put_u16(ty);
    buf.put_u16(len16(value_len + 4));
}

/// Writes the zero padding after `len` bytes.
pub(crate) fn put_pad(buf: &mut impl BufMut, len: usize) {
    let pad = pad4(len) - len;
    if pad > 0 {
        buf.put_bytes(0, pad);
    }
}

/// Writes a TLV with an opaque value, padded.
pub(crate) fn put_opaque(buf: &mut impl BufMut, ty: u16, value: &[u8]) {
    put_header(buf, ty, value.len());
    buf.put_slice(value);
    put_pad(buf, value.len());
}

/// Interleaves retained skipped TLVs with the known ones while encoding a message.
pub(crate) struct Emit<'s> {
    skipped: &'s [SkippedParameter],
    index: u16,
}

impl<'s> Emit<'s> {
    pub(crate) fn new(skipped: &'s [SkippedParameter]) -> Self {
        Emit { skipped, index: 0 }
    }

    /// Call before writing each known TLV.
    pub(crate) fn before(&mut self, buf: &mut impl BufMut) {
        while let Some((first, rest)) = self.skipped.split_first() {
            if first.position > self.index {
                break;
            }
            first.parameter.encode_raw(buf);
            self.skipped = rest;
        }
        self.index = self.index.saturating_add(1);
    }

    /// Writes the remaining skipped TLVs.
    pub(crate) fn finish(self, buf: &mut impl BufMut) {
        for s in self.skipped {
            s.parameter.encode_raw(buf);
        }
    }
}

/// Encoded size of retained skipped TLVs.
pub(crate) fn skipped_len(skipped: &[SkippedParameter]) -> usize {
    skipped.iter().map(|s| pad4(s.parameter.raw.len())).sum()
}

/// A decoded message header and the bytes its parameters are read from.
pub(crate) struct Header<'a> {
    pub ty: u8,
    pub flags: u8,
    /// The message as far as the header length (padded) and the data reach.
    pub message: &'a [u8],
    /// `message` without the 4 header bytes.
    pub body: &'a [u8],
}

/// Reads the common message header (RFC 5354 §4). The length may or may not count the final
/// padding; it must not exceed the data. Bytes after the padded length are ignored.
pub(crate) fn header(data: &Bytes) -> Result<Header<'_>, DecodeError> {
    let d: &[u8] = data;
    let (Some(&ty), Some(&flags), Some(len)) = (
        d.first(),
        d.get(1),
        d.get(2..4)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(|b| usize::from(u16::from_be_bytes(b))),
    ) else {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::Truncated {
                need: 4,
                have: d.len(),
            },
            Bytes::new(),
        ));
    };
    if len < 4 {
        return Err(DecodeError::new(
            2,
            DecodeErrorKind::BadLength { ty: 0, length: len },
            Bytes::new(),
        ));
    }
    if len > d.len() {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::Truncated {
                need: len,
                have: d.len(),
            },
            Bytes::new(),
        ));
    }
    let message = d.get(..pad4(len).min(d.len())).unwrap_or(d);
    let body = message.get(4..).unwrap_or_default();
    Ok(Header {
        ty,
        flags,
        message,
        body,
    })
}

/// Writes a message header for a message of `total` bytes (padded).
pub(crate) fn put_message_header(buf: &mut impl BufMut, ty: u8, flags: u8, total: usize) {
    buf.put_u8(ty);
    buf.put_u8(flags);
    buf.put_u16(len16(total));
}

/// Writes a message's parameters, interleaving its retained skipped TLVs.
pub(crate) struct Writer<'b, 's, B: BufMut> {
    buf: &'b mut B,
    emit: Emit<'s>,
}

impl<'b, 's, B: BufMut> Writer<'b, 's, B> {
    pub(crate) fn new(buf: &'b mut B, skipped: &'s [SkippedParameter]) -> Self {
        Writer {
            buf,
            emit: Emit::new(skipped),
        }
    }

    /// Fixed fields (written before any parameter).
    pub(crate) fn fixed(&mut self) -> &mut B {
        self.buf
    }

    /// One known parameter.
    pub(crate) fn put<P: crate::param::Encode>(&mut self, p: &P) {
        self.emit.before(self.buf);
        p.encode(self.buf);
    }

    /// An optional known parameter.
    pub(crate) fn opt<P: crate::param::Encode>(&mut self, p: Option<&P>) {
        if let Some(p) = p {
            self.put(p);
        }
    }

    /// Writes the trailing skipped parameters.
    pub(crate) fn finish(self) {
        self.emit.finish(self.buf);
    }
}

/// Encoded length of an optional parameter.
pub(crate) fn opt_len<P: crate::param::Encode>(p: Option<&P>) -> usize {
    p.map_or(0, crate::param::Encode::encoded_len)
}
