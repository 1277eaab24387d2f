//! The loop benchmark harness (being written).

fn main() {
    eprintln!("the benchmark harness is not written yet");
}
