//! Backend choice: the automatic order, and `EVLOOP_BACKEND`, which is read from
//! the environment; each case runs in a child process with its own environment.

use std::process::Command;

use evloop::{BACKEND_ENV, Backend, EventLoop};

/// Re-run this test binary for one test, with `EVLOOP_BACKEND` set (or unset).
fn child(test: &str, backend: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("EVLOOP_CHOICE_CHILD", "1");
    match backend {
        Some(name) => cmd.env(BACKEND_ENV, name),
        None => cmd.env_remove(BACKEND_ENV),
    };
    cmd.output().unwrap()
}

fn in_child() -> bool {
    std::env::var_os("EVLOOP_CHOICE_CHILD").is_some()
}

/// The child side: prints the backend a default loop chose.
#[test]
fn report_chosen_backend() {
    if !in_child() {
        return;
    }
    match EventLoop::<()>::new() {
        Ok(lp) => println!("chosen={}", lp.backend()),
        Err(e) => println!("error={e}"),
    }
}

fn chosen(backend: Option<&str>) -> String {
    let out = child("report_chosen_backend", backend);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 passed"), "the child ran the test: {stdout}");
    // The harness may print the test's name on the same line, before its output.
    let found = stdout.lines().find_map(|l| {
        let at = l.find("chosen=").or_else(|| l.find("error="))?;
        Some(l[at..].split_once('=').map_or("", |(_, v)| v).to_string())
    });
    found.unwrap_or_default()
}

#[test]
fn automatic_choice_is_the_first_available_in_the_originals_order() {
    if in_child() {
        return;
    }
    let first = Backend::available().next().unwrap();
    assert_eq!(chosen(None), first.name());
    if cfg!(target_os = "linux") {
        assert_eq!(first, Backend::Epoll);
    }
}

#[test]
fn evloop_backend_env_picks_the_backend() {
    if in_child() {
        return;
    }
    assert_eq!(chosen(Some("select")), "select");
    assert_eq!(chosen(Some("poll")), "poll");
}

#[test]
fn unknown_evloop_backend_is_a_clear_error() {
    if in_child() {
        return;
    }
    let err = chosen(Some("iocp"));
    assert!(err.contains("unknown event model \"iocp\""), "{err}");
}
