//! The guest's dynamic backends, as the rewritten module reports them (`module_rewrite`),
//! and the connection each redirected one gets: to the test's dynamic-backend dispatcher,
//! which is first told, in one JSON line, which registration the connection is for.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::module_rewrite::{REPORT_ENDPOINT, SLOT_IP, decode_hex};
use crate::wire::DynamicRegistration;

/// The invocation's registrations and where its test's dispatcher listens: written by the
/// log sink (on the guest's thread, as the guest registers), read by the network fence's
/// supervisor (when viceroy connects).
#[derive(Clone, Default)]
pub(crate) struct DynamicSlots {
    state: Arc<Mutex<SlotsState>>,
}

#[derive(Default)]
struct SlotsState {
    dispatcher: Option<SocketAddr>,
    registrations: Vec<DynamicRegistration>,
    /// Reports that did not parse: a bug of edge-test's, named in the test's failure.
    unreadable: Vec<String>,
}

impl DynamicSlots {
    /// Starts an invocation whose test serves dynamic backends at `dispatcher`.
    pub(crate) fn begin(&self, dispatcher: Option<SocketAddr>) {
        let mut state = crate::sync::lock(&self.state);
        state.dispatcher = dispatcher;
        state.registrations.clear();
        state.unreadable.clear();
    }

    /// Takes a log entry that is a registration report (returning `true`), or leaves it.
    pub(crate) fn take_report(&self, entry: &[u8]) -> bool {
        let Some(report) = entry
            .strip_prefix(REPORT_ENDPOINT.as_bytes())
            .and_then(|rest| rest.strip_prefix(b" :: "))
        else {
            return false;
        };
        let report = String::from_utf8_lossy(report);
        let mut state = crate::sync::lock(&self.state);
        match parse_report(report.trim_end_matches(['\n', '\r'])) {
            Ok(registration) => state.registrations.push(registration),
            Err(why) => state.unreadable.push(why),
        }
        true
    }

    /// The invocation's registrations, as `"`name` to target"`.
    pub(crate) fn registered(&self) -> Vec<String> {
        crate::sync::lock(&self.state)
            .registrations
            .iter()
            .map(|r| format!("dynamic backend `{}` to {}", r.name, r.target))
            .collect()
    }

    /// Why a report could not be read, if one could not.
    pub(crate) fn take_unreadable(&self) -> Vec<String> {
        std::mem::take(&mut crate::sync::lock(&self.state).unreadable)
    }

    /// A connection to the dispatcher for the registration a `connect` to `to` stands for,
    /// told which one it is; `None` when `to` is not a redirected backend's address.
    pub(crate) fn connect(&self, to: SocketAddr) -> Option<Result<OwnedFd, String>> {
        let slot = slot_of(to)?;
        let (dispatcher, registration) = {
            let state = crate::sync::lock(&self.state);
            (
                state.dispatcher,
                state
                    .registrations
                    .iter()
                    .find(|r| r.slot as usize == slot)
                    .cloned(),
            )
        };
        Some((|| {
            let registration =
                registration.ok_or_else(|| format!("dynamic backend #{slot} (never reported)"))?;
            let dispatcher = dispatcher.ok_or_else(|| {
                format!(
                    "dynamic backend `{}` to {} (no dispatcher for dynamic backends)",
                    registration.name, registration.target
                )
            })?;
            let unreachable = |e: std::io::Error| {
                format!(
                    "dynamic backend `{}` to {} (the test's dispatcher at {dispatcher}: {e})",
                    registration.name, registration.target
                )
            };
            let mut stream = TcpStream::connect_timeout(&dispatcher, Duration::from_secs(5))
                .map_err(unreachable)?;
            let mut line = serde_json::to_vec(&registration).expect("a registration serializes");
            line.push(b'\n');
            stream.write_all(&line).map_err(unreachable)?;
            // The guest's side of a connection is non-blocking, as viceroy made its own.
            stream.set_nonblocking(true).map_err(unreachable)?;
            Ok(OwnedFd::from(stream))
        })())
    }
}

/// Which registration a redirected backend's address stands for: `127.0.0.2:<slot + 1>`.
fn slot_of(to: SocketAddr) -> Option<usize> {
    (to.ip() == IpAddr::V4(Ipv4Addr::from(SLOT_IP)) && to.port() > 0)
        .then(|| usize::from(to.port()) - 1)
}

/// Reads a report: hex fields separated by spaces (see `module_rewrite`): slot, name,
/// target, options, config, host override, certificate host name, SNI host name.
fn parse_report(report: &str) -> Result<DynamicRegistration, String> {
    let fields: Vec<Vec<u8>> = report
        .split(' ')
        .map(decode_hex)
        .collect::<Option<_>>()
        .ok_or_else(|| format!("a dynamic backend report {report:?} is not hex"))?;
    let [
        slot,
        name,
        target,
        options,
        config,
        host_override,
        cert_hostname,
        sni_hostname,
    ] = fields.as_slice()
    else {
        return Err(format!(
            "a dynamic backend report has {} fields, not 8: {report:?}",
            fields.len()
        ));
    };
    let word = |bytes: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let options = word(options, 0).ok_or("a report's options are not 4 bytes")?;
    let set = |bit: u32| options & (1 << bit) != 0;
    let timeout = |bit: u32, at: usize| set(bit).then(|| word(config, at)).flatten();
    let text =
        |bytes: &[u8], bit: u32| set(bit).then(|| String::from_utf8_lossy(bytes).into_owned());
    Ok(DynamicRegistration {
        slot: word(slot, 0).ok_or("a report's slot is not 4 bytes")?,
        name: String::from_utf8_lossy(name).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        host_override: text(host_override, 1),
        use_tls: set(5),
        connect_timeout_ms: timeout(2, 8),
        first_byte_timeout_ms: timeout(3, 12),
        between_bytes_timeout_ms: timeout(4, 16),
        cert_hostname: text(cert_hostname, 8),
        sni_hostname: text(sni_hostname, 11),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_report_reads_back_as_the_guest_registered_it() {
        let options: u32 = (1 << 1) | (1 << 3) | (1 << 5);
        let mut config = [0u8; 108];
        config[12..16].copy_from_slice(&2500u32.to_le_bytes());
        config[16..20].copy_from_slice(&9u32.to_le_bytes());
        let report = [
            hex_of(&3u32.to_le_bytes()),
            hex_of(b"origin"),
            hex_of(b"api.example.com:443"),
            hex_of(&options.to_le_bytes()),
            hex_of(&config),
            hex_of(b"api.example.com"),
            String::new(),
            String::new(),
        ]
        .join(" ");
        let registration = parse_report(&report).unwrap();
        assert_eq!(
            registration,
            DynamicRegistration {
                slot: 3,
                name: "origin".into(),
                target: "api.example.com:443".into(),
                host_override: Some("api.example.com".into()),
                use_tls: true,
                connect_timeout_ms: None,
                first_byte_timeout_ms: Some(2500),
                between_bytes_timeout_ms: None,
                cert_hostname: None,
                sni_hostname: None,
            },
            "an option not set is not reported, whatever the config holds"
        );
    }

    #[test]
    fn only_the_slot_address_stands_for_a_registration() {
        assert_eq!(slot_of("127.0.0.2:1".parse().unwrap()), Some(0));
        assert_eq!(slot_of("127.0.0.2:7".parse().unwrap()), Some(6));
        assert_eq!(slot_of("127.0.0.1:1".parse().unwrap()), None);
        assert_eq!(slot_of("127.0.0.2:0".parse().unwrap()), None);
    }

    #[test]
    fn a_damaged_report_is_named() {
        let error = parse_report("zz").unwrap_err();
        assert!(error.contains("not hex"), "{error}");
        let error = parse_report("00").unwrap_err();
        assert!(error.contains("not 8"), "{error}");
    }
}
