//! Unit tests of the pcap module.
