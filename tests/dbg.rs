use std::time::Duration;
use tidings::sim::{NetConfig, Sim};
#[test]
fn dbg() {
    let mut sim = Sim::new(1, tidings::Config::default(), NetConfig::default());
    sim.add_node(); sim.add_node();
    sim.join(1, &[0]);
    for _ in 0..20 { 
        let before = sim.net_stats();
        sim.step();
        let after = sim.net_stats();
        eprintln!("{:?} live0={} live1={} {:?}", sim.elapsed(), sim.nodes[0].node.num_live(), sim.nodes[1].node.num_live(), (after.datagrams-before.datagrams, after.frames-before.frames));
        eprintln!("  stats0 {:?}", sim.nodes[0].node.stats());
    }
    let _ = Duration::ZERO;
}
