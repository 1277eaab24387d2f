//! ssserver: the shadowsocks server on evloop.

use std::process::ExitCode;

use clap::Parser;
use ssproxy::config::{Config, ServerArgs};

fn main() -> ExitCode {
    let args = ServerArgs::parse();
    let config = match Config::load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ssserver: {e}");
            return ExitCode::from(2);
        }
    };
    ssproxy::app::init_logging(config.verbose);
    match ssproxy::app::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("ssserver: {e}");
            ExitCode::FAILURE
        }
    }
}
