//! Reads Windows' smoothed RTT of every established TCP connection to the backends' ports,
//! from the IP Helper's extended TCP statistics: `GetTcpTable2`/`GetTcp6Table2` list the
//! connections, `SetPerTcpConnectionEStats` turns on path statistics for each, and
//! `GetPerTcpConnectionEStats` reads `SmoothedRtt` (milliseconds) back.
//!
//! The two per-connection calls are looked up in `iphlpapi.dll` at run time, never linked:
//! a system without them (Wine has neither `GetPerTcp*ConnectionEStats`) would not even
//! start a program that imports them. Without them, or without the right to enable
//! collection (it needs Administrator, as a service running as LocalSystem has), the
//! collector answers an error and latency learning says it is off.
//!
//! Resolution: Windows keeps the RTT in whole milliseconds. A connection with RTT samples
//! and a smoothed RTT of 0 is under a millisecond, and is reported as 0.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_INSUFFICIENT_BUFFER, ERROR_NOT_SUPPORTED, NO_ERROR,
};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetTcp6Table2, GetTcpTable2, MIB_TCP_STATE_ESTAB, MIB_TCP6ROW, MIB_TCP6ROW2, MIB_TCP6TABLE2,
    MIB_TCPROW_LH, MIB_TCPROW_LH_0, MIB_TCPROW2, MIB_TCPTABLE2, TCP_ESTATS_PATH_ROD_v0,
    TCP_ESTATS_PATH_RW_v0, TCP_ESTATS_TYPE, TcpConnectionEstatsPath,
};
use windows_sys::Win32::Networking::WinSock::IN6_ADDR;
use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LoadLibraryW};

use super::collector::Connection;

/// `GetPerTcpConnectionEStats` / `GetPerTcp6ConnectionEStats`.
type GetEstats<Row> = unsafe extern "system" fn(
    row: *const Row,
    kind: TCP_ESTATS_TYPE,
    rw: *mut u8,
    rw_version: u32,
    rw_size: u32,
    ros: *mut u8,
    ros_version: u32,
    ros_size: u32,
    rod: *mut u8,
    rod_version: u32,
    rod_size: u32,
) -> u32;

/// `SetPerTcpConnectionEStats` / `SetPerTcp6ConnectionEStats`.
type SetEstats<Row> = unsafe extern "system" fn(
    row: *const Row,
    kind: TCP_ESTATS_TYPE,
    rw: *const u8,
    rw_version: u32,
    rw_size: u32,
    offset: u32,
) -> u32;

/// The four calls, found once.
struct Api {
    get4: GetEstats<MIB_TCPROW_LH>,
    set4: SetEstats<MIB_TCPROW_LH>,
    get6: GetEstats<MIB_TCP6ROW>,
    set6: SetEstats<MIB_TCP6ROW>,
}

/// Finds the per-connection calls in `iphlpapi.dll`, once; the error names the first one
/// missing.
fn api() -> io::Result<&'static Api> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load)
        .as_ref()
        .map_err(|reason| io::Error::new(io::ErrorKind::Unsupported, reason.clone()))
}

fn load() -> Result<Api, String> {
    let name: Vec<u16> = "iphlpapi.dll\0".encode_utf16().collect();
    // SAFETY: a NUL-terminated UTF-16 name that lives across the call.
    let module = unsafe { LoadLibraryW(name.as_ptr()) };
    if module.is_null() {
        return Err(format!(
            "iphlpapi.dll cannot be loaded: {}",
            io::Error::last_os_error()
        ));
    }
    let find = |symbol: &str| {
        let c_name = format!("{symbol}\0");
        // SAFETY: a loaded module and a NUL-terminated ASCII name that lives across the call.
        unsafe { GetProcAddress(module, c_name.as_ptr()) }.ok_or_else(|| {
            format!(
                "iphlpapi.dll does not export {symbol}: this system has no extended TCP \
                 statistics (Windows has them since Vista; Wine has none)"
            )
        })
    };
    // SAFETY: each address is the named export of iphlpapi.dll, whose signature is the
    // documented one the type spells out (and windows-sys declares identically).
    unsafe {
        Ok(Api {
            get4: std::mem::transmute::<
                unsafe extern "system" fn() -> isize,
                GetEstats<MIB_TCPROW_LH>,
            >(find("GetPerTcpConnectionEStats")?),
            set4: std::mem::transmute::<
                unsafe extern "system" fn() -> isize,
                SetEstats<MIB_TCPROW_LH>,
            >(find("SetPerTcpConnectionEStats")?),
            get6: std::mem::transmute::<unsafe extern "system" fn() -> isize, GetEstats<MIB_TCP6ROW>>(
                find("GetPerTcp6ConnectionEStats")?,
            ),
            set6: std::mem::transmute::<unsafe extern "system" fn() -> isize, SetEstats<MIB_TCP6ROW>>(
                find("SetPerTcp6ConnectionEStats")?,
            ),
        })
    }
}

/// Every established TCP connection whose local port is in `ports`, IPv4 and IPv6.
pub fn established(ports: &HashSet<u16>) -> io::Result<Vec<Connection>> {
    let api = api()?;
    let mut found = Vec::new();
    for row in table::<MIB_TCPTABLE2, MIB_TCPROW2>(|t, size| {
        // SAFETY: `t` is null or a buffer of `*size` bytes; `size` is valid.
        unsafe { GetTcpTable2(t, size, 0) }
    })? {
        let local_port = port(row.dwLocalPort);
        if row.dwState != MIB_TCP_STATE_ESTAB as u32 || !ports.contains(&local_port) {
            continue;
        }
        let key = MIB_TCPROW_LH {
            Anonymous: MIB_TCPROW_LH_0 {
                dwState: row.dwState,
            },
            dwLocalAddr: row.dwLocalAddr,
            dwLocalPort: row.dwLocalPort,
            dwRemoteAddr: row.dwRemoteAddr,
            dwRemotePort: row.dwRemotePort,
        };
        let peer = IpAddr::V4(Ipv4Addr::from(row.dwRemoteAddr.to_ne_bytes()));
        let local = IpAddr::V4(Ipv4Addr::from(row.dwLocalAddr.to_ne_bytes()));
        if let Some(rtt) = path_rtt(&key, api.set4, api.get4)? {
            found.push(connection(
                local,
                local_port,
                peer,
                port(row.dwRemotePort),
                rtt,
            ));
        }
    }
    let v6 = table::<MIB_TCP6TABLE2, MIB_TCP6ROW2>(|t, size| {
        // SAFETY: as above.
        unsafe { GetTcp6Table2(t, size, 0) }
    });
    let v6 = match v6 {
        // A host without the IPv6 stack has no IPv6 connections to measure.
        Err(e) if e.raw_os_error() == Some(ERROR_NOT_SUPPORTED as i32) => Vec::new(),
        other => other?,
    };
    for row in v6 {
        let local_port = port(row.dwLocalPort);
        if row.State != MIB_TCP_STATE_ESTAB || !ports.contains(&local_port) {
            continue;
        }
        let key = MIB_TCP6ROW {
            State: row.State,
            LocalAddr: row.LocalAddr,
            dwLocalScopeId: row.dwLocalScopeId,
            dwLocalPort: row.dwLocalPort,
            RemoteAddr: row.RemoteAddr,
            dwRemoteScopeId: row.dwRemoteScopeId,
            dwRemotePort: row.dwRemotePort,
        };
        let peer = ipv6(row.RemoteAddr);
        let local = ipv6(row.LocalAddr);
        if let Some(rtt) = path_rtt(&key, api.set6, api.get6)? {
            found.push(connection(
                local,
                local_port,
                peer,
                port(row.dwRemotePort),
                rtt,
            ));
        }
    }
    Ok(found)
}

/// Turns on path statistics for one connection and reads its smoothed RTT; `None` for a
/// connection that is gone or has no RTT sample yet. Access denied is an error for the
/// whole collector: no connection will do better.
fn path_rtt<Row>(
    row: &Row,
    set: SetEstats<Row>,
    get: GetEstats<Row>,
) -> io::Result<Option<Duration>> {
    let enable = TCP_ESTATS_PATH_RW_v0 {
        EnableCollection: true,
    };
    // SAFETY: `row` and `enable` are valid for reads of their sizes across the call.
    let set_result = unsafe {
        set(
            row,
            TcpConnectionEstatsPath,
            (&raw const enable).cast(),
            0,
            size_of::<TCP_ESTATS_PATH_RW_v0>() as u32,
            0,
        )
    };
    if set_result == ERROR_ACCESS_DENIED {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "SetPerTcpConnectionEStats: access denied (collecting TCP statistics needs \
             Administrator; run the agent as a service, which runs as LocalSystem)",
        ));
    }
    if set_result != NO_ERROR {
        return Ok(None); // the connection closed since the table was read
    }
    let mut rod = TCP_ESTATS_PATH_ROD_v0::default();
    // SAFETY: `row` is valid for reads and `rod` for writes of their sizes; the read-write
    // and static parts are not asked for (null, size 0).
    let got = unsafe {
        get(
            row,
            TcpConnectionEstatsPath,
            std::ptr::null_mut(),
            0,
            0,
            std::ptr::null_mut(),
            0,
            0,
            (&raw mut rod).cast(),
            0,
            size_of::<TCP_ESTATS_PATH_ROD_v0>() as u32,
        )
    };
    if got != NO_ERROR || rod.CountRtt == 0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_millis(u64::from(rod.SmoothedRtt))))
}

/// A table from one of the `GetTcp*Table2` calls, copied out: asks for the size, then
/// for the rows, again if connections arrived in between.
fn table<Table, Row: Copy>(call: impl Fn(*mut Table, *mut u32) -> u32) -> io::Result<Vec<Row>> {
    let mut size = 0u32;
    for _ in 0..8 {
        // u64 words: the buffer is aligned for the table's fields.
        let mut buffer = vec![0u64; (size as usize).div_ceil(8).max(1)];
        let mut given = (buffer.len() * 8) as u32;
        let result = call(buffer.as_mut_ptr().cast(), &mut given);
        if result == ERROR_INSUFFICIENT_BUFFER {
            size = given.saturating_add(16 * size_of::<Row>() as u32);
            continue;
        }
        if result != NO_ERROR {
            return Err(io::Error::from_raw_os_error(result as i32));
        }
        let bytes = buffer.len() * 8;
        // The table is a u32 count, then the rows at the rows' own alignment.
        let offset = size_of::<u32>().next_multiple_of(align_of::<Row>());
        // SAFETY: the call filled the buffer with a table: a u32 count first.
        let count = unsafe { buffer.as_ptr().cast::<u32>().read() } as usize;
        if offset + count * size_of::<Row>() > bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TCP table is larger than its buffer",
            ));
        }
        // SAFETY: `count` rows start at `offset`, inside the buffer (checked above), and
        // are plain data.
        let rows = unsafe {
            std::slice::from_raw_parts(
                buffer.as_ptr().cast::<u8>().add(offset).cast::<Row>(),
                count,
            )
        };
        return Ok(rows.to_vec());
    }
    Err(io::Error::other(
        "the TCP table kept growing while it was read",
    ))
}

/// A port as the IP Helper gives it: network byte order in the low 16 bits.
fn port(raw: u32) -> u16 {
    u16::from_be(raw as u16)
}

fn ipv6(addr: IN6_ADDR) -> IpAddr {
    // SAFETY: every bit pattern of the union is a valid byte array.
    IpAddr::V6(Ipv6Addr::from(unsafe { addr.u.Byte }))
}

fn connection(
    local: IpAddr,
    local_port: u16,
    peer: IpAddr,
    peer_port: u16,
    rtt: Duration,
) -> Connection {
    // Windows has no socket cookie: the four-tuple is unique while the connection lives.
    let mut hasher = DefaultHasher::new();
    (local, local_port, peer, peer_port).hash(&mut hasher);
    Connection {
        peer,
        peer_port,
        local_port,
        rtt,
        cookie: hasher.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(last_octet: u8, remote_port: u16) -> MIB_TCPROW2 {
        MIB_TCPROW2 {
            dwState: MIB_TCP_STATE_ESTAB as u32,
            dwLocalAddr: u32::from_ne_bytes([127, 0, 0, 1]),
            dwLocalPort: u32::from(8080u16.to_be()),
            dwRemoteAddr: u32::from_ne_bytes([192, 0, 2, last_octet]),
            dwRemotePort: u32::from(remote_port.to_be()),
            ..MIB_TCPROW2::default()
        }
    }

    /// Writes a table of `rows` as GetTcpTable2 does: too small a buffer gets
    /// ERROR_INSUFFICIENT_BUFFER and the size needed.
    fn fill(rows: &[MIB_TCPROW2], table: *mut MIB_TCPTABLE2, size: *mut u32) -> u32 {
        let offset = std::mem::offset_of!(MIB_TCPTABLE2, table);
        let needed = (offset + rows.len() * size_of::<MIB_TCPROW2>()) as u32;
        // SAFETY: the caller's size pointer and a buffer of that many bytes.
        unsafe {
            if *size < needed {
                *size = needed;
                return ERROR_INSUFFICIENT_BUFFER;
            }
            table.cast::<u32>().write(rows.len() as u32);
            let first = table.cast::<u8>().add(offset).cast::<MIB_TCPROW2>();
            for (i, r) in rows.iter().enumerate() {
                first.add(i).write(*r);
            }
        }
        NO_ERROR
    }

    #[test]
    fn a_table_is_read_again_when_connections_arrive_between_the_calls() {
        let rows: Vec<MIB_TCPROW2> = (1..=40).map(|i| row(i, 50000 + u16::from(i))).collect();
        let calls = std::cell::Cell::new(0usize);
        // The first answer's size covers 2 rows; by the second call 40 exist.
        let read = table::<MIB_TCPTABLE2, MIB_TCPROW2>(|t, size| {
            calls.set(calls.get() + 1);
            let now = if calls.get() == 1 {
                &rows[..2]
            } else {
                &rows[..]
            };
            fill(now, t, size)
        })
        .expect("table");
        assert!(calls.get() >= 3, "asked again after the table grew");
        assert_eq!(read.len(), 40);
        assert_eq!(port(read[0].dwLocalPort), 8080);
        assert_eq!(port(read[39].dwRemotePort), 50040);
        assert_eq!(
            Ipv4Addr::from(read[39].dwRemoteAddr.to_ne_bytes()),
            Ipv4Addr::new(192, 0, 2, 40)
        );
    }

    #[test]
    fn an_empty_table_and_a_failing_call() {
        let empty = table::<MIB_TCPTABLE2, MIB_TCPROW2>(|t, size| fill(&[], t, size));
        assert!(empty.expect("empty").is_empty());
        let failed = table::<MIB_TCPTABLE2, MIB_TCPROW2>(|_, _| 87); // ERROR_INVALID_PARAMETER
        assert_eq!(failed.err().and_then(|e| e.raw_os_error()), Some(87));
    }

    #[test]
    fn the_same_four_tuple_gives_the_same_cookie() {
        let peer: IpAddr = "192.0.2.1".parse().expect("ip");
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let a = connection(local, 80, peer, 5000, Duration::from_millis(3));
        let b = connection(local, 80, peer, 5000, Duration::from_millis(9));
        let c = connection(local, 80, peer, 5001, Duration::from_millis(3));
        assert_eq!(a.cookie, b.cookie);
        assert_ne!(a.cookie, c.cookie);
    }
}
