//! rdma-hostprep: see `rdma-hostprep --help` and the README's "Host
//! preparation and install".

use rdma_hostprep::cli;
use rdma_hostprep::error::HostprepError;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match cli::run(&args, &mut std::io::stdout()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rdma-hostprep: {e}");
            if matches!(e, HostprepError::Usage(_)) {
                eprintln!("run `rdma-hostprep --help` for usage");
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}
