//! berth-cni: read the CNI environment and stdin, run the verb, print the
//! result (or the spec's error JSON, exit status 1).
use std::io::{Read, Write};

fn main() {
    let env = berth_cni::spec::Env::from_process();
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err =
            berth_cni::spec::CniError::new(berth_cni::spec::code::IO_FAILURE, format!("reading stdin: {e}"));
        print(&err.to_json(berth_cni::spec::LATEST));
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let outcome = match runtime {
        Ok(rt) => rt.block_on(berth_cni::run(&env, &stdin)),
        Err(e) => Err((
            berth_cni::spec::LATEST.to_string(),
            berth_cni::spec::CniError::new(berth_cni::spec::code::IO_FAILURE, format!("starting: {e}")),
        )),
    };
    match outcome {
        Ok(Some(v)) => print(&v),
        Ok(None) => {}
        Err((version, e)) => {
            print(&e.to_json(&version));
            std::process::exit(1);
        }
    }
}

fn print(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
