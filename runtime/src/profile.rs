//! Per-node profile of an optimized tract plan (`edgeseg bench --profile`).
//!
//! Runs a plan with [`SimpleState::run_plan_with_eval`], timing every node's
//! evaluation, over `runs` runs after `warmup` runs. Reports the median time
//! of every node (with its op, output shape and, where tract knows it, its
//! multiply-accumulate count and the throughput that gives) and the times
//! aggregated per op type. The per-node times of one run add up to a little
//! less than the run's wall time: the difference is tract's own bookkeeping
//! (inputs, flushes) and is reported as `overhead_ms`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::Cost;

/// One node of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct NodeTime {
    /// Node id in the optimized model.
    pub id: usize,
    /// Node name (from the ONNX graph, with tract's suffixes).
    pub name: String,
    /// Op type (tract's op name).
    pub op: String,
    /// tract's one-line description of the op (kernel, geometry), if any.
    pub info: String,
    /// Output shape(s).
    pub output: String,
    /// Median time over the profiled runs, ms.
    pub median_ms: f64,
    /// Share of the summed node medians.
    pub share: f64,
    /// Floating-point operations (2 × multiply-accumulates) per run, if the
    /// op declares its cost.
    pub gflop: Option<f64>,
    /// `gflop` / median time, GFLOP/s.
    pub gflops: Option<f64>,
}

/// Times aggregated over all nodes of one op type.
#[derive(Debug, Clone, Serialize)]
pub struct OpTime {
    /// Op type.
    pub op: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Sum of the nodes' medians, ms.
    pub ms: f64,
    /// Share of the summed node medians.
    pub share: f64,
    /// Declared floating-point operations of those nodes per run.
    pub gflop: f64,
}

/// Profile of one plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanProfile {
    /// Which graph.
    pub graph: String,
    /// Timed runs.
    pub runs: usize,
    /// Median wall time of a whole run, ms.
    pub wall_median_ms: f64,
    /// Sum of the node medians, ms.
    pub nodes_ms: f64,
    /// `wall_median_ms - nodes_ms`: time between nodes.
    pub overhead_ms: f64,
    /// Per op type, slowest first.
    pub by_op: Vec<OpTime>,
    /// Per node, slowest first.
    pub nodes: Vec<NodeTime>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn flop(node: &TypedNode, model: &TypedModel) -> Option<f64> {
    let facts = model.node_input_facts(node.id).ok()?;
    let cost = node.op.cost(&facts).ok()?;
    let mut f = 0.0;
    let mut any = false;
    for (c, n) in cost {
        if let Cost::FMA(_) = c {
            f += 2.0 * n.to_i64().ok()? as f64;
            any = true;
        }
    }
    any.then_some(f)
}

/// Profiles `plan` on `inputs` under `executor` (the thread pool the plan's
/// matmuls run on).
pub fn profile_plan(
    graph: &str,
    plan: &Arc<TypedSimplePlan>,
    executor: &Executor,
    inputs: TVec<TValue>,
    warmup: usize,
    runs: usize,
) -> TractResult<PlanProfile> {
    let model = plan.model();
    let n = model.nodes().len();
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); n];
    let mut walls = Vec::with_capacity(runs);
    let mut state = plan.spawn()?;
    for i in 0..warmup + runs {
        let timed = i >= warmup;
        let mut this_run = vec![0f64; n];
        let t0 = Instant::now();
        multithread_tract_scope(executor.clone(), || {
            state.run_plan_with_eval(inputs.clone(), |ctx, op_state, node, input| {
                let t = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
                this_run[node.id] += t.elapsed().as_secs_f64() * 1e3;
                r
            })
        })?;
        if timed {
            walls.push(t0.elapsed().as_secs_f64() * 1e3);
            for (acc, t) in times.iter_mut().zip(this_run) {
                acc.push(t);
            }
        }
    }
    let mut nodes = Vec::new();
    for node in model.nodes() {
        let m = median(&mut times[node.id]);
        if times[node.id].is_empty() {
            continue;
        }
        let output = node
            .outputs
            .iter()
            .map(|o| format!("{:?}", o.fact))
            .collect::<Vec<_>>()
            .join(", ");
        let gflop = flop(node, model).map(|f| f / 1e9);
        let info = node.op().info().map(|v| v.join("; ")).unwrap_or_default();
        nodes.push(NodeTime {
            id: node.id,
            name: node.name.clone(),
            op: node.op().name().to_string(),
            info,
            output,
            median_ms: m,
            share: 0.0,
            gflop,
            gflops: gflop.filter(|_| m > 0.0).map(|g| g / (m / 1e3)),
        });
    }
    let total: f64 = nodes.iter().map(|n| n.median_ms).sum();
    let mut ops: BTreeMap<String, OpTime> = BTreeMap::new();
    for nt in &mut nodes {
        nt.share = if total > 0.0 {
            nt.median_ms / total
        } else {
            0.0
        };
        let e = ops.entry(nt.op.clone()).or_insert_with(|| OpTime {
            op: nt.op.clone(),
            nodes: 0,
            ms: 0.0,
            share: 0.0,
            gflop: 0.0,
        });
        e.nodes += 1;
        e.ms += nt.median_ms;
        e.share += nt.share;
        e.gflop += nt.gflop.unwrap_or(0.0);
    }
    nodes.sort_by(|a, b| b.median_ms.total_cmp(&a.median_ms));
    let mut by_op: Vec<OpTime> = ops.into_values().collect();
    by_op.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let wall = median(&mut walls);
    Ok(PlanProfile {
        graph: graph.to_string(),
        runs,
        wall_median_ms: wall,
        nodes_ms: total,
        overhead_ms: wall - total,
        by_op,
        nodes,
    })
}

impl PlanProfile {
    /// Human-readable summary: the `top_ops` op types and `top_nodes` nodes.
    pub fn summary(&self, top_ops: usize, top_nodes: usize) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "profile {}: wall median {:.1} ms, nodes {:.1} ms, between nodes {:.1} ms (n={})",
            self.graph, self.wall_median_ms, self.nodes_ms, self.overhead_ms, self.runs
        );
        let _ = writeln!(
            s,
            "  {:<28} {:>5} {:>10} {:>7} {:>8} {:>8}",
            "op", "nodes", "ms", "share", "GFLOP", "GFLOP/s"
        );
        for o in self.by_op.iter().take(top_ops) {
            let rate = if o.gflop > 0.0 && o.ms > 0.0 {
                format!("{:.1}", o.gflop / (o.ms / 1e3))
            } else {
                "-".into()
            };
            let _ = writeln!(
                s,
                "  {:<28} {:>5} {:>10.2} {:>6.1}% {:>8.3} {:>8}",
                o.op,
                o.nodes,
                o.ms,
                100.0 * o.share,
                o.gflop,
                rate
            );
        }
        let _ = writeln!(s, "  slowest nodes:");
        for n in self.nodes.iter().take(top_nodes) {
            let rate = n
                .gflops
                .map(|r| format!("{r:.1} GFLOP/s"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:>9.2} ms {:>5.1}%  {:<22} {:<48} {} {}",
                n.median_ms,
                100.0 * n.share,
                n.op,
                n.name,
                n.output,
                rate
            );
        }
        s
    }
}
