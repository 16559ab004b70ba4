//! Running under the Windows service control manager (`opengslb-agent --service ...`).
//!
//! `sc.exe create opengslb-agent binPath= "C:\...\opengslb-agent.exe --service --config
//! C:\ProgramData\OpenGSLB\agent.yaml --log-file C:\ProgramData\OpenGSLB\agent.log"`
//! registers it; the service's Stop (and system shutdown) is the same graceful stop as
//! Ctrl+C at the console: the leaving report, the gossip leave, then exit.

use std::ffi::OsString;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
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

/// The service's status handle, for the control handler to report the stop as pending.
static STATUS: OnceLock<ServiceStatusHandle> = OnceLock::new();

/// How long a stop may take, as said to the service control manager: the leaving report
/// and the gossip leave have 3 s (`daemon::LEAVE_GRACE`); replies in flight finish sooner.
const STOP_WAIT_HINT: Duration = Duration::from_secs(10);

define_windows_service!(ffi_service_main, service_main);

/// Connects to the service control manager and runs `work` as the service; returns when
/// the service has stopped. Fails at once when the process was not started by the
/// service control manager (as from a console).
pub fn run(work: impl FnOnce() -> u8 + Send + 'static) -> Result<(), windows_service::Error> {
    *WORK.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(work));
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)
}

/// Tells the service control manager the service's state.
fn report(
    status: ServiceStatusHandle,
    state: ServiceState,
    accepted: ServiceControlAccept,
    exit_code: ServiceExitCode,
    wait_hint: Duration,
) {
    let reported = status.set_service_status(ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accepted,
        exit_code,
        checkpoint: 0,
        wait_hint,
        process_id: None,
    });
    if let Err(err) = reported {
        tracing::warn!(error = %err, ?state, "cannot report the service state");
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let handler = |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            // Stop pending, with how long it may take, as the agent starts leaving.
            if let Some(&status) = STATUS.get() {
                report(
                    status,
                    ServiceState::StopPending,
                    ServiceControlAccept::empty(),
                    ServiceExitCode::Win32(0),
                    STOP_WAIT_HINT,
                );
            }
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
    let _ = STATUS.set(status);
    report(
        status,
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        ServiceExitCode::Win32(0),
        Duration::ZERO,
    );
    let work = WORK.lock().unwrap_or_else(PoisonError::into_inner).take();
    let code = work.map_or(1, |work| work());
    let exit_code = match code {
        0 => ServiceExitCode::Win32(0),
        code => ServiceExitCode::ServiceSpecific(u32::from(code)),
    };
    report(
        status,
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        exit_code,
        Duration::ZERO,
    );
}
