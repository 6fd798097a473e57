use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tidings::sim::{NetConfig, Sim};
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let secs: u64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let loss: f64 = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(0.0);
    let mut cfg = tidings::Config::default();
    cfg.gossip_interval = Duration::from_millis(100);
    cfg.detector_min_std = Duration::from_millis(100);
    cfg.phi_threshold = std::env::args().nth(4).map(|s| s.parse().unwrap()).unwrap_or(8.0);
    let mut net = NetConfig::default();
    net.loss = loss;
    let mut sim = Sim::new(1, cfg, net);
    let downs = Rc::new(RefCell::new(Vec::new()));
    let d2 = downs.clone();
    sim.set_event_hook(Box::new(move |t, i, ev| {
        if let tidings::Event::Down(id) = ev {
            d2.borrow_mut().push((t, i, id.name.clone()));
        }
    }));
    for _ in 0..n {
        sim.add_node();
    }
    for i in 1..n {
        sim.join(i, &[0, (i * 7) % n, (i * 13) % n]);
    }
    let epoch = sim.now();
    for s in 0..secs {
        sim.run_for(Duration::from_secs(1));
        let d = downs.borrow();
        let c = d.iter().filter(|x| (x.0 - epoch).as_secs() == s).count();
        if c > 0 {
            let ex: Vec<_> = d
                .iter()
                .filter(|x| (x.0 - epoch).as_secs() == s)
                .take(3)
                .map(|(t, i, name)| (*i, name.clone(), (*t - epoch).as_millis()))
                .collect();
            let (o, name, _) = &ex[0];
            let phi = sim.nodes[*o].node.phi(name, sim.now());
            println!("t={s}s downs={c} e.g. {:?} phi-now {:?}", ex, phi);
        }
    }
    let st = sim.nodes[5].node.stats();
    println!(
        "hb learned per node per round: {}",
        st.heartbeats_learned as f64 / st.gossip_rounds as f64
    );
}
