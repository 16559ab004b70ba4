//! Running under the Windows service control manager (`opengslb-agent --service ...`).
//!
//! `sc.exe create opengslb-agent binPath= "C:\...\opengslb-agent.exe --service --config
//! C:\ProgramData\OpenGSLB\agent.yaml --log-file C:\ProgramData\OpenGSLB\agent.log"`
//! registers it; the service's Stop (and system shutdown) is the same graceful stop as
//! Ctrl+C at the console: the leaving report, the gossip leave, then exit.

use std::ffi::OsString;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

/// The name the dispatcher announces (an own-process service answers to whatever name it
/// was registered under).
pub const SERVICE_NAME: &str = "opengslb-agent";

/// Set by the control handler when the service control manager asks the service to stop;
/// [`super::Signals`] turns it into [`crate::platform::Event::Stop`]. A stop that comes
/// before anyone waits is kept (a `Notify` permit), so it is never lost.
pub(crate) static STOP: Notify = Notify::const_new();

/// The agent's work: runs on the service's thread and returns the exit code.
type Work = Box<dyn FnOnce() -> u8 + Send>;

/// Handed from [`run`] to the service's main function, which the dispatcher calls on its
/// own thread with nothing but the service's start arguments.
static WORK: Mutex<Option<Work>> = Mutex::new(None);

define_windows_service!(ffi_service_main, service_main);

/// Connects to the service control manager and runs `work` as the service; returns when
/// the service has stopped. Fails at once when the process was not started by the
/// service control manager (as from a console).
pub fn run(work: impl FnOnce() -> u8 + Send + 'static) -> Result<(), windows_service::Error> {
    *WORK.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(work));
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)
}

fn service_main(_arguments: Vec<OsString>) {
    let handler = |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            STOP.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let status = match service_control_handler::register(SERVICE_NAME, handler) {
        Ok(status) => status,
        Err(err) => {
            tracing::error!(error = %err, "cannot register with the service control manager");
            return;
        }
    };
    let report = |state, accepted, exit_code| {
        let reported = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accepted,
            exit_code,
            checkpoint: 0,
            wait_hint: Duration::ZERO,
            process_id: None,
        });
        if let Err(err) = reported {
            tracing::warn!(error = %err, ?state, "cannot report the service state");
        }
    };
    report(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        ServiceExitCode::Win32(0),
    );
    let work = WORK.lock().unwrap_or_else(PoisonError::into_inner).take();
    let code = work.map_or(1, |work| work());
    let exit_code = match code {
        0 => ServiceExitCode::Win32(0),
        code => ServiceExitCode::ServiceSpecific(u32::from(code)),
    };
    report(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        exit_code,
    );
}
