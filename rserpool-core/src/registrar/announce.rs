//! ASAP Server Announces (RFC 5352 §3.6): our ASAP transports, every
//! `server_announce_cycle` ± 12.5 %, to the configured group (RSPLIB listens on
//! 239.0.0.50:3863).

use rserpool_proto::AsapMessage;
use rserpool_proto::asap::ServerAnnounce;

use crate::Protocol;

use super::Registrar;

impl Registrar {
    pub(super) fn send_server_announce(&mut self) {
        let Some(group) = self.cfg.asap_announce else {
            return;
        };
        let b = self.encode(&AsapMessage::ServerAnnounce(ServerAnnounce {
            reserved_flags: 0,
            server_id: self.id,
            transports: self.cfg.asap_transports.clone(),
            server_information: None,
            skipped: Vec::new(),
        }));
        let (now, me) = (self.clock, self.id);
        self.action(|| {
            let mut r = super::ActionRecord::new(
                now,
                super::ActionDirection::Send,
                "MulticastASAP",
                "Announce",
                "",
            );
            r.sender = me;
            r
        });
        self.transmit_udp(group, Protocol::Asap, b);
    }
}
