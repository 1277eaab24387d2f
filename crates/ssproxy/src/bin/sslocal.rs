//! sslocal: the shadowsocks local (SOCKS5 server and tunnel) on evloop.

use std::process::ExitCode;

use clap::Parser;
use ssproxy::config::{Config, LocalArgs};

fn main() -> ExitCode {
    let args = LocalArgs::parse();
    let config = match Config::load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sslocal: {e}");
            return ExitCode::from(2);
        }
    };
    ssproxy::app::init_logging(config.verbose);
    match ssproxy::app::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("sslocal: {e}");
            ExitCode::FAILURE
        }
    }
}
