#!/usr/bin/env python3
"""Run edgeseg's exported ONNX graphs on ONNX Runtime (CPU): latency and parity.

Used only by benchmark scripts, never by the product. Latency: encoder and
decoder (box prompt) medians/p90/p99 over --runs after --warmup, at
--threads intra-op threads (inter-op 1, sequential execution, all graph
optimizations). Parity (--golden DIR): ONNX Runtime's encoder and decoder
outputs on a golden case of shared/golden/litemedsam against the PyTorch
reference outputs stored there, as max |a-b| / max |ref|.
"""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort


def stats(ms):
    s = sorted(ms)
    rank = lambda q: s[max(1, min(len(s), int(np.ceil(q * len(s))))) - 1]
    return {
        "runs": len(s),
        "median_ms": float(np.median(s)),
        "p90_ms": rank(0.9),
        "p99_ms": rank(0.99),
        "min_ms": s[0],
        "max_ms": s[-1],
    }


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def profile(path, threads, feeds, warmup, runs, top):
    """Per-op-type and per-node times (medians over `runs` runs) from ORT's profiler."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "ort-prof-%d-%s" % (os.getpid(), os.path.basename(path))
    )
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    walls = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        s.run(None, feeds)
        if i >= warmup:
            walls.append((time.perf_counter() - t) * 1e3)
    prof = s.end_profiling()
    with open(prof) as f:
        events = json.load(f)
    os.remove(prof)
    # one "model_run" event per run; node kernel events in between
    runs_ev = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first_timed = runs_ev[warmup] if len(runs_ev) > warmup else 0
    per_node = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if e["ts"] < first_timed:
            continue
        key = (e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"))
        per_node.setdefault(key, []).append(e["dur"] / 1e3)
    nodes = [
        {"name": k[0], "op": k[1], "median_ms": float(np.median(v)) * len(v) / runs}
        for k, v in per_node.items()
    ]
    total = sum(n["median_ms"] for n in nodes)
    ops = {}
    for n in nodes:
        n["share"] = n["median_ms"] / total if total else 0.0
        o = ops.setdefault(n["op"], {"op": n["op"], "nodes": 0, "ms": 0.0, "share": 0.0})
        o["nodes"] += 1
        o["ms"] += n["median_ms"]
        o["share"] += n["share"]
    nodes.sort(key=lambda n: -n["median_ms"])
    by_op = sorted(ops.values(), key=lambda o: -o["ms"])
    name = os.path.basename(path)
    print("ORT profile %s: wall median %.1f ms (profiled), nodes %.1f ms" % (name, np.median(walls), total))
    for o in by_op[:top]:
        print("  %-28s %5d %10.2f %6.1f%%" % (o["op"], o["nodes"], o["ms"], 100 * o["share"]))
    print("  slowest nodes:")
    for n in nodes[:top]:
        print("  %9.2f ms %5.1f%%  %-22s %s" % (n["median_ms"], 100 * n["share"], n["op"], n["name"]))
    return {"graph": name, "runs": runs, "wall_median_ms": float(np.median(walls)),
            "nodes_ms": total, "by_op": by_op, "nodes": nodes}


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graphs", required=True, help="export folder (encoder.onnx, decoder.onnx)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--golden", help="a shared/golden/litemedsam/<case> folder for parity")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also profile the encoder and decoder with ONNX Runtime's profiler (--runs runs "
        "after --warmup, after the latency runs): time per op type and per node",
    )
    ap.add_argument("--profile-top", type=int, default=15, help="op types and nodes to print")
    a = ap.parse_args()

    enc = session(os.path.join(a.graphs, "encoder.onnx"), a.threads)
    dec = session(os.path.join(a.graphs, "decoder.onnx"), a.threads)
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 256, 256), dtype=np.float32)
    coords = np.array([[[64.0, 64.0], [192.0, 192.0]]], dtype=np.float32)
    labels = np.array([[2.0, 3.0]], dtype=np.float32)
    report = {"onnxruntime": ort.__version__, "threads": a.threads}

    emb = None
    enc_ms, dec_ms = [], []
    for i in range(a.warmup + a.runs):
        t = time.perf_counter()
        emb = enc.run(None, {"image": x})[0]
        e = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        dec.run(None, {"image_embeddings": emb, "point_coords": coords, "point_labels": labels})
        d = (time.perf_counter() - t) * 1e3
        if i >= a.warmup:
            enc_ms.append(e)
            dec_ms.append(d)
    report["encoder"] = stats(enc_ms)
    report["decoder"] = stats(dec_ms)

    if a.profile:
        report["profile"] = [
            profile(os.path.join(a.graphs, "encoder.onnx"), a.threads, {"image": x},
                    a.warmup, a.runs, a.profile_top),
            profile(os.path.join(a.graphs, "decoder.onnx"), a.threads,
                    {"image_embeddings": emb, "point_coords": coords, "point_labels": labels},
                    a.warmup, a.runs, a.profile_top),
        ]

    if a.golden:
        g = a.golden
        inp = np.load(os.path.join(g, "input_256.npy")).astype(np.float32).reshape(1, 3, 256, 256)
        ref_emb = np.load(os.path.join(g, "image_embedding.npy")).astype(np.float32)
        box = np.load(os.path.join(g, "box_256.npy")).astype(np.float32).reshape(1, 2, 2)
        ref_logits = np.load(os.path.join(g, "low_res_logits.npy")).astype(np.float32)
        ref_iou = np.load(os.path.join(g, "iou_pred.npy")).astype(np.float32)
        got_emb = enc.run(None, {"image": inp})[0]
        logits, iou = dec.run(None, {"image_embeddings": got_emb, "point_coords": box, "point_labels": labels})
        report["parity_vs_pytorch"] = {
            "case": os.path.basename(os.path.normpath(g)),
            "embedding_rel": rel(got_emb, ref_emb.reshape(got_emb.shape)),
            "low_res_logits_rel": rel(logits[:, :1], ref_logits.reshape(logits[:, :1].shape)),
            "iou_abs": float(np.abs(iou[0, 0] - ref_iou.reshape(-1)[0])),
        }
    print(json.dumps(report, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
