#!/bin/sh
# Regenerates the seed corpora under fuzz/corpus/ (valid inputs made with the fixed keys).
# Stable Rust is enough: the generator is an ordinary binary of this crate.
set -eu
cd "$(dirname "$0")"
cargo run --quiet --release --bin gen_corpus -- corpus
