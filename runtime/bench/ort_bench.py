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
