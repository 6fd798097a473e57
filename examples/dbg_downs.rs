use std::time::Duration;
use tidings::sim::{NetConfig, Sim};
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let secs: u64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let loss: f64 = std::env::args().nth(3).map(|s| s.parse().unwrap()).unwrap_or(0.0);
    let mut cfg = tidings::Config::default();
    cfg.gossip_interval = Duration::from_millis(100);
    cfg.detector_min_std = Duration::from_millis(100);
    cfg.phi_threshold = 1000.0;
    let mut net = NetConfig::default();
    net.loss = loss;
    let mut sim = Sim::new(1, cfg, net);
    for _ in 0..n { sim.add_node(); }
    for i in 1..n { sim.join(i, &[0, (i*7)%n, (i*13)%n]); }
    sim.run_for(Duration::from_secs(5));
    let names: Vec<String> = (0..n).map(|i| sim.nodes[i].node.id().name.clone()).collect();
    let mut last: Vec<Vec<(u64, u64)>> = vec![vec![(0, 0); n]; n]; // (hb, time ms)
    let mut hist = vec![0u64; 200]; // gaps in units of 10ms
    let mut age_hist = vec![0u64; 100]; // lag in hb units at sample time
    let t0 = sim.now();
    let steps = secs * 100;
    for step in 0..steps {
        sim.run_for(Duration::from_millis(10));
        let t = step * 10;
        let truth: Vec<u64> = (0..n).map(|j| sim.nodes[j].node.local_state().heartbeat().0).collect();
        for o in 0..n { for p in 0..n { if o == p { continue; }
            let hb = sim.nodes[o].node.node_state(&names[p]).map(|s| s.heartbeat().0).unwrap_or(0);
            if step % 10 == 0 { age_hist[((truth[p].saturating_sub(hb)) as usize).min(99)] += 1; }
            if hb > last[o][p].0 {
                if last[o][p].0 > 0 { let g = ((t - last[o][p].1) / 10) as usize; hist[g.min(199)] += 1; }
                last[o][p] = (hb, t);
            }
        }}
    }
    let _ = t0;
    let total: u64 = hist.iter().sum();
    println!("arrivals per pair per round: {:.3}", total as f64 / (n*(n-1)) as f64 / (secs*10) as f64);
    let mut cum = 0;
    for (i, c) in hist.iter().enumerate() { cum += c; if *c > 0 && (i % 5 == 0 || cum as f64 / total as f64 > 0.999) { println!("gap<= {:>4}ms: {:>10} cum {:.6}", i*10+10, c, cum as f64/total as f64); } }
    let at: u64 = age_hist.iter().sum();
    let mut cum = 0;
    for (i, c) in age_hist.iter().enumerate() { cum += c; if *c > 0 { println!("lag {:>3} rounds: {:>10} cum {:.7}", i, c, cum as f64/at as f64); } }
}
