//! Windows: console control events and the service control manager's Stop, CPU times from
//! `GetSystemTimes`, memory load from `GlobalMemoryStatusEx`.
//!
//! The calls into the system are `unsafe` by nature; each is one call with out-pointers
//! to plain structs this function owns, and the return value is checked.
#![allow(unsafe_code)]

pub mod service;

use std::io;

use tokio::signal::windows::{
    CtrlBreak, CtrlC, CtrlClose, CtrlShutdown, ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown,
};
use windows_sys::Win32::Foundation::FILETIME;
use windows_sys::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};
use windows_sys::Win32::System::Threading::GetSystemTimes;

use super::Event;
use crate::cpu::{CpuError, CpuTimes};

#[derive(Debug)]
pub(super) struct Signals {
    c: CtrlC,
    brk: CtrlBreak,
    close: CtrlClose,
    shutdown: CtrlShutdown,
}

impl Signals {
    pub(super) fn install() -> io::Result<Signals> {
        Ok(Signals {
            c: ctrl_c()?,
            brk: ctrl_break()?,
            close: ctrl_close()?,
            shutdown: ctrl_shutdown()?,
        })
    }

    pub(super) async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.c.recv() => Event::Stop("CTRL_C"),
            _ = self.brk.recv() => Event::Stop("CTRL_BREAK"),
            _ = self.close.recv() => Event::Stop("CTRL_CLOSE"),
            _ = self.shutdown.recv() => Event::Stop("CTRL_SHUTDOWN"),
            () = service::STOP.notified() => Event::Stop("service stop"),
        }
    }
}

// The service is reported running by the dispatcher (`service::run`) and stopped when
// the work returns; nothing else is said to the service control manager.
pub(super) fn notify_ready() {}

pub(super) fn notify_stopping() {}

/// Cumulative CPU time of all processors since boot, in 100 ns units: total is kernel +
/// user (kernel time includes idle time), idle is idle.
pub fn system_times() -> Result<CpuTimes, CpuError> {
    let mut idle = FILETIME::default();
    let mut kernel = FILETIME::default();
    let mut user = FILETIME::default();
    // SAFETY: three valid, exclusive out-pointers to FILETIMEs that live across the call.
    let ok = unsafe { GetSystemTimes(&mut idle, &mut kernel, &mut user) };
    if ok == 0 {
        return Err(CpuError::System {
            call: "GetSystemTimes",
            source: io::Error::last_os_error(),
        });
    }
    let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    Ok(CpuTimes {
        total: ticks(kernel).saturating_add(ticks(user)),
        idle: ticks(idle),
    })
}

/// Physical memory in use, in percent (total − available), or `None` if the system
/// cannot say.
pub fn memory_used_pct() -> Option<f64> {
    let mut status = MEMORYSTATUSEX {
        dwLength: size_of::<MEMORYSTATUSEX>() as u32,
        ..MEMORYSTATUSEX::default()
    };
    // SAFETY: a valid, exclusive pointer to a MEMORYSTATUSEX whose dwLength is set, as
    // the call requires.
    let ok = unsafe { GlobalMemoryStatusEx(&mut status) };
    if ok == 0 || status.ullTotalPhys == 0 {
        return None;
    }
    let total = status.ullTotalPhys as f64;
    Some(100.0 * (total - status.ullAvailPhys as f64) / total)
}
