//! ACL benchmark (issue 16): load time and lookup cost of `ssproxy::acl::Acl` on generated
//! files of 100, 10 000 and 100 000 rules. A benchmark, not a test: it prints figures.
//!
//!     cargo run --release -p ssproxy --example acl_bench
//!
//! The files look like the lists users load (libev's gfwlist.acl, chn.acl): mostly
//! domains written as libev's `(^|\.)domain\.tld$` regexes, some rust `||domain` rules,
//! a few other regexes, and CIDRs. Each figure is a median: load over 3 loads, lookups
//! over batches of 100 lookups (20 000 lookups per row), in nanoseconds per lookup.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ssproxy::acl::Acl;

/// A small deterministic generator (xorshift64*), so every run measures the same files.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn label(&mut self) -> String {
        let len = 4 + self.below(9) as usize;
        (0..len).map(|_| (b'a' + self.below(26) as u8) as char).collect()
    }
}

const TLDS: [&str; 6] = ["com", "net", "org", "io", "jp", "tw"];

/// One generated file with what lookups should hit it.
struct Generated {
    text: String,
    hit_names: Vec<String>,
    hit_ips: Vec<IpAddr>,
}

fn generate(rules: usize, rng: &mut Rng) -> Generated {
    let mut text = String::from("[proxy_all]\n[bypass_list]\n");
    let mut hit_names = Vec::new();
    let mut hit_ips = Vec::new();
    for index in 0..rules {
        // Proportions: 75% libev suffix regexes, 5% `||`, 3% other regexes, 17% CIDRs.
        if index == rules / 2 {
            text.push_str("[proxy_list]\n");
        }
        let kind = rng.below(100);
        let domain = format!("{}.{}", rng.label(), TLDS[rng.below(6) as usize]);
        if kind < 75 {
            writeln!(text, "(^|\\.){}$", domain.replace('.', "\\.")).unwrap();
            hit_names.push(format!("www.{domain}"));
        } else if kind < 80 {
            writeln!(text, "||{domain}").unwrap();
            hit_names.push(format!("cdn.img.{domain}"));
        } else if kind < 83 {
            let label = rng.label();
            writeln!(text, "^(ad|track)[0-9]*\\.{label}\\.").unwrap();
            hit_names.push(format!("ad7.{label}.com"));
        } else {
            // IPv4 networks in 1.0.0.0-99.255.255.255, /16 to /24 (misses use 100/8 and up).
            let prefix = 16 + rng.below(9) as u32;
            let network = (1 + rng.below(99) as u32) << 24 | (rng.next() as u32 & 0x00ff_ffff);
            let network = network & (u32::MAX << (32 - prefix));
            writeln!(text, "{}/{prefix}", Ipv4Addr::from(network)).unwrap();
            hit_ips.push(IpAddr::V4(Ipv4Addr::from(network | 1)));
        }
    }
    Generated {
        text,
        hit_names,
        hit_ips,
    }
}

/// Median nanoseconds per call of `lookup` over `inputs`, timed in batches of 100.
fn per_lookup_ns<T>(inputs: &[T], mut lookup: impl FnMut(&T)) -> f64 {
    const BATCH: usize = 100;
    const LOOKUPS: usize = 20_000;
    let mut batches: Vec<Duration> = Vec::with_capacity(LOOKUPS / BATCH);
    let mut cursor = 0;
    for _ in 0..LOOKUPS / BATCH {
        let start = Instant::now();
        for _ in 0..BATCH {
            lookup(&inputs[cursor % inputs.len()]);
            cursor += 1;
        }
        batches.push(start.elapsed());
    }
    batches.sort_unstable();
    batches[batches.len() / 2].as_nanos() as f64 / BATCH as f64
}

fn main() {
    let dir = std::env::temp_dir().join(format!("acl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rng = Rng(0x5eed_ac10_u64 ^ 0x9e37_79b9_7f4a_7c15);
    println!("| rules | file size | load (ms) | name hit (ns) | name miss (ns) | IP hit (ns) | IP miss (ns) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for rules in [100, 10_000, 100_000] {
        let generated = generate(rules, &mut rng);
        let path = dir.join(format!("{rules}.acl"));
        std::fs::write(&path, &generated.text).expect("write the ACL file");
        let mut loads: Vec<(Duration, Acl)> = (0..3)
            .map(|_| {
                let start = Instant::now();
                let acl = Acl::from_file(&path).expect("generated file loads");
                (start.elapsed(), acl)
            })
            .collect();
        loads.sort_by_key(|(elapsed, _)| *elapsed);
        let (load, acl) = loads.swap_remove(1);
        // Misses: names under a TLD no rule uses, addresses above 100.0.0.0.
        let miss_names: Vec<String> = (0..1000)
            .map(|_| format!("www.{}.example-miss.zz", rng.label()))
            .collect();
        let miss_ips: Vec<IpAddr> = (0..1000)
            .map(|_| IpAddr::V4(Ipv4Addr::from(0x6400_0000 + (rng.next() as u32 % 0x8000_0000))))
            .collect();
        for name in generated.hit_names.iter().take(50) {
            assert!(acl.decide_name(name).is_some(), "{name} should hit");
        }
        for name in miss_names.iter().take(50) {
            assert!(acl.decide_name(name).is_none(), "{name} should miss");
        }
        let name_hit = per_lookup_ns(&generated.hit_names, |name| {
            black_box(acl.decide_name(black_box(name)));
        });
        let name_miss = per_lookup_ns(&miss_names, |name| {
            black_box(acl.decide_name(black_box(name)));
        });
        let ip_hit = per_lookup_ns(&generated.hit_ips, |ip| {
            black_box(acl.decide_ip(black_box(*ip)));
        });
        let ip_miss = per_lookup_ns(&miss_ips, |ip| {
            black_box(acl.decide_ip(black_box(*ip)));
        });
        println!(
            "| {rules} | {} KiB | {:.1} | {name_hit:.0} | {name_miss:.0} | {ip_hit:.0} | {ip_miss:.0} |",
            generated.text.len() / 1024,
            load.as_secs_f64() * 1e3,
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
