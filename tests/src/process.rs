//! A child process under test: output captured line by line, waited on with deadlines,
//! and always stopped (SIGTERM, then SIGKILL) when the handle is dropped.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Captured output lines of both streams, in arrival order, with a flag per stream closed.
#[derive(Debug, Default)]
struct Output {
    lines: Vec<String>,
    stdout: String,
    closed: usize,
}

/// A running (or exited) child with captured output.
#[derive(Debug)]
pub struct Spawned {
    name: String,
    child: Child,
    output: Arc<(Mutex<Output>, Condvar)>,
}

impl Spawned {
    /// Starts `command` with stdin closed and stdout/stderr captured. The child is killed
    /// if the test process dies (PR_SET_PDEATHSIG), so nothing outlives a crashed test.
    pub fn start(name: &str, mut command: Command) -> Spawned {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[allow(unsafe_code)]
        // SAFETY: prctl is async-signal-safe; nothing is allocated between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        collect(stdout, Arc::clone(&output), true);
        collect(stderr, Arc::clone(&output), false);
        Spawned {
            name: name.to_owned(),
            child,
            output,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a line containing `needle` has been printed; returns that line.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line_where(needle, |l| l.contains(needle), timeout)
    }

    /// Waits until a line for which `matches` holds has been printed (`what` names it in
    /// the failure); returns that line.
    pub fn wait_for_line_where(
        &self,
        what: &str,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let (_, changed) = &*self.output;
        let mut output = self.lock();
        loop {
            if let Some(line) = output.lines.iter().find(|l| matches(l)) {
                return line.clone();
            }
            let now = Instant::now();
            if now >= deadline || output.closed == 2 {
                let so_far = output.lines.join("\n");
                drop(output); // never panic while holding the lock
                panic!(
                    "{}: no line containing {what:?} within {timeout:?}; output so far:\n{so_far}",
                    self.name
                );
            }
            output = changed
                .wait_timeout(output, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Everything printed so far (both streams, one line each).
    pub fn output(&self) -> String {
        self.lock().lines.join("\n")
    }

    /// The output, also after a panic elsewhere poisoned the lock (the data stays valid).
    fn lock(&self) -> std::sync::MutexGuard<'_, Output> {
        self.output
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends a signal.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with a pid we own (the child is not reaped until we wait on it).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill {} {signal}", self.name);
    }

    /// Sends a signal if the child still runs; whether it did.
    pub fn signal_if_running(&mut self, signal: libc::c_int) -> bool {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return false;
        }
        self.signal(signal);
        true
    }

    /// The exit status if the child has exited (its output then complete), without
    /// waiting for it otherwise.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().expect("try_wait")?;
        self.wait_closed(Instant::now() + Duration::from_secs(1));
        Some(status)
    }

    /// Waits for the child to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the readers drain the pipes so output() is complete.
                self.wait_closed(deadline.max(Instant::now() + Duration::from_secs(1)));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}; output:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs to completion (for one-shot commands): exit status, stdout, and all output.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let status = self.wait_exit(timeout);
        let output = self.lock();
        (status, output.stdout.clone(), output.lines.join("\n"))
    }

    fn wait_closed(&self, deadline: Instant) {
        let (lock, changed) = &*self.output;
        let mut output = lock.lock().expect("output lock");
        while output.closed < 2 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            output = changed
                .wait_timeout(output, deadline - now)
                .expect("output lock")
                .0;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- output of {} -----\n{}\n-----",
                self.name,
                self.output()
            );
        }
    }
}

fn collect(
    stream: impl Read + Send + 'static,
    output: Arc<(Mutex<Output>, Condvar)>,
    is_stdout: bool,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let (lock, changed) = &*output;
                    let mut out = lock
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if is_stdout {
                        out.stdout.push_str(&line);
                    }
                    out.lines.push(line.trim_end_matches('\n').to_owned());
                    changed.notify_all();
                }
            }
        }
        let (lock, changed) = &*output;
        lock.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .closed += 1;
        changed.notify_all();
    });
}
