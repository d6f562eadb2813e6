//! Encoders for the hot and the large messages (written straight into the registrar's
//! buffer, without building the typed message first), and conversions between the
//! handlespace's records and the wire's Pool Element parameter.

use bytes::{BufMut, Bytes, BytesMut};

use rserpool_proto::Encode;
use rserpool_proto::ids::ServerId;
use rserpool_proto::param::PoolElementParameter;

use crate::handlespace::{ElementRef, Handlespace, PoolElementInfo, WalkCursor};

use super::config::MAX_MESSAGE_SIZE;

/// The Pool Element parameter of a stored PE (`with_asap`: include its ASAP transport, as
/// ENRP requires; ASAP answers omit it as RSPLIB does).
pub(crate) fn element_param(e: &ElementRef<'_>, with_asap: bool) -> PoolElementParameter {
    PoolElementParameter {
        pe_id: e.pe_id(),
        home_server_id: e.home_registrar(),
        registration_life: e.registration_life(),
        user_transport: e.user_transport(),
        policy: e.policy(),
        asap_transport: if with_asap { e.asap_transport() } else { None },
    }
}

/// The Pool Element parameter of a [`PoolElementInfo`].
pub(crate) fn info_param(info: &PoolElementInfo) -> PoolElementParameter {
    PoolElementParameter {
        pe_id: info.pe_id,
        home_server_id: info.home_registrar,
        registration_life: info.registration_life,
        user_transport: info.user_transport.clone(),
        policy: info.policy,
        asap_transport: info.asap_transport.clone(),
    }
}

/// The [`PoolElementInfo`] a Pool Element parameter describes.
pub(crate) fn param_info(p: &PoolElementParameter) -> PoolElementInfo {
    PoolElementInfo {
        pe_id: p.pe_id,
        home_registrar: p.home_server_id,
        registration_life: p.registration_life,
        policy: p.policy,
        user_transport: p.user_transport.clone(),
        asap_transport: p.asap_transport.clone(),
    }
}

/// A parameter's TLV without trailing padding (what an error cause quotes).
pub(crate) fn tlv_unpadded(p: &impl Encode) -> Bytes {
    let mut v = Vec::with_capacity(p.encoded_len());
    p.encode(&mut v);
    let len = match v.get(2..4) {
        Some(&[a, b]) => usize::from(u16::from_be_bytes([a, b])),
        _ => v.len(),
    };
    v.truncate(len.min(v.len()));
    Bytes::from(v)
}

/// Writes a message header with a zero length (patched by [`finish`]). The buffer must
/// be empty.
pub(crate) fn begin(buf: &mut BytesMut, ty: u8, flags: u8) {
    buf.put_u8(ty);
    buf.put_u8(flags);
    buf.put_u16(0);
}

/// Patches the message length (whole buffer) and splits the message off.
pub(crate) fn finish(buf: &mut BytesMut) -> Bytes {
    let len = u16::try_from(buf.len()).unwrap_or(u16::MAX);
    if let Some(l) = buf.get_mut(2..4) {
        l.copy_from_slice(&len.to_be_bytes());
    }
    buf.split().freeze()
}

/// Patches the flags byte of a message (after [`begin`]).
pub(crate) fn set_flags(buf: &mut BytesMut, flags: u8) {
    if let Some(f) = buf.get_mut(1) {
        *f = flags;
    }
}

/// The ENRP Handle Table Response for a walk starting after `cursor`: PEs of `owner`
/// only (W=1) or all (W=0), up to `max_elements` PEs and `max_bytes` bytes. Returns the
/// message and, if more PEs remain (M flag set), the cursor to continue from.
#[allow(clippy::too_many_arguments)]
pub(crate) fn table_response(
    buf: &mut BytesMut,
    hs: &Handlespace,
    sender: ServerId,
    receiver: ServerId,
    owner: Option<ServerId>,
    cursor: Option<&WalkCursor>,
    max_elements: usize,
    max_bytes: usize,
) -> (Bytes, Option<WalkCursor>) {
    let max_bytes = max_bytes.clamp(1024, MAX_MESSAGE_SIZE);
    let max_elements = max_elements.max(1);
    begin(
        buf,
        rserpool_proto::enrp::msg_type::HANDLE_TABLE_RESPONSE,
        0,
    );
    buf.put_u32(sender.0);
    buf.put_u32(receiver.0);
    let mut walk: Box<dyn Iterator<Item = ElementRef<'_>>> = match owner {
        Some(o) => Box::new(hs.walk_owner(o, cursor)),
        None => Box::new(hs.walk(cursor)),
    };
    let mut last: Option<ElementRef<'_>> = None;
    let mut more = false;
    for (count, e) in walk.by_ref().enumerate() {
        let param = element_param(&e, true);
        let new_pool = last.is_none_or(|l| l.pool_handle() != e.pool_handle());
        let need = param.encoded_len()
            + if new_pool {
                e.pool_handle().encoded_len()
            } else {
                0
            };
        if count >= max_elements || (count > 0 && buf.len() + need > max_bytes) {
            more = true;
            break;
        }
        if new_pool {
            e.pool_handle().encode(buf);
        }
        param.encode(buf);
        last = Some(e);
    }
    if more {
        set_flags(buf, 0x02);
    }
    let next = if more { last.map(|l| l.cursor()) } else { None };
    (finish(buf), next)
}
