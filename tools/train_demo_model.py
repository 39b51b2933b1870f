#!/usr/bin/env python3
"""Train the demo Mask2Former that ships as m2f_edge/data/demo_mask2former.onnx, export it, evaluate it.

A small Mask2Former of the real architecture (Hugging Face's Mask2FormerForUniversalSegmentation: Swin
backbone, multi-scale deformable-attention pixel decoder, masked-attention decoder; one class "object",
no-object last), trained from scratch with the model's own loss on scenes from m2f_edge.demo.scenes.
Run once by a developer, never in CI. The shipped model is two learning-rate cycles, 20000 steps in all, about
2 h 45 min on 2 idle CPU cores (0.45-0.55 s/step at batch 8); docs/demo_model_eval.json lists every run:

    PYTHONPATH=$PWD python tools/train_demo_model.py --steps 8500
    PYTHONPATH=$PWD python tools/train_demo_model.py --steps 20000 --restart --lr 1.5e-4 --warmup 100

Other uses:

    PYTHONPATH=$PWD python tools/train_demo_model.py --steps N   # the same command resumes a stopped run
    PYTHONPATH=$PWD python tools/train_demo_model.py --evaluate-only      # export + evaluate the checkpoint

Seeded: the scenes of step s come from seed (SEED, s), so a resumed run sees the same data as an
uninterrupted one. It checkpoints every few minutes to --work-dir (resume is automatic), then exports the
deployable contract (TAO's in-graph post-processor, the deformable attention as TensorRT's
MultiscaleDeformableAttnPlugin_TRT node as in TAO's GPU export) and evaluates it with `m2f-edge eval`'s code on
held-out scenes, writing the result to docs/demo_model_eval.json. Needs the export extra (torch, transformers).
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORK_SIZE = 128
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
EVAL_SEED = 1_000_003     # held out: training scenes use seeds (SEED, step)
EVAL_SIZE = (256, 256)


def demo_config():
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(image_size=NETWORK_SIZE, embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                          window_size=4, drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=1, num_queries=30, hidden_dim=96,
                               feature_size=96, mask_feature_size=96, encoder_layers=3, decoder_layers=6,
                               encoder_feedforward_dim=256, dim_feedforward=256, num_attention_heads=4,
                               train_num_points=3136, no_object_weight=0.1, class_weight=2.0,
                               mask_weight=5.0, dice_weight=5.0)
    config.id2label = {0: "object"}
    config.label2id = {"object": 0}
    return config


def training_batch(seed, step, batch):
    """pixel values [B,3,128,128] and per-image mask / class labels. Scenes are drawn at random sizes and
    stretched to the network size, as the deployable preprocessing stretches camera frames."""
    import cv2
    import torch
    from m2f_edge import demo

    rng = np.random.default_rng([seed, step])
    pixels, masks, classes = [], [], []
    for _ in range(batch):
        height, width = (int(v) for v in rng.integers(96, 257, size=2))
        scene = demo.make_scene(rng, height, width)
        image = cv2.resize(scene.image, (NETWORK_SIZE, NETWORK_SIZE), interpolation=cv2.INTER_LINEAR)
        rgb = image[..., ::-1].astype(np.float32) / 255.0
        pixels.append(((rgb - MEAN) / STD).transpose(2, 0, 1))
        resized = [cv2.resize(m.astype(np.uint8), (NETWORK_SIZE, NETWORK_SIZE), interpolation=cv2.INTER_NEAREST)
                   for m in scene.masks]
        kept = [m for m in resized if m.sum() > 0]
        stack = np.stack(kept).astype(np.float32) if kept else np.zeros((0, NETWORK_SIZE, NETWORK_SIZE), np.float32)
        masks.append(torch.from_numpy(stack))
        classes.append(torch.zeros(len(stack), dtype=torch.long))
    return torch.from_numpy(np.ascontiguousarray(np.stack(pixels))), masks, classes


def learning_rate(step, schedule):
    """Linear warmup then cosine decay to 2 % of the peak, over the steps [start, total) of one cycle."""
    into = step - schedule["start"]
    if into < schedule["warmup"]:
        return schedule["peak"] * (into + 1) / schedule["warmup"]
    progress = (into - schedule["warmup"]) / max(1, schedule["total"] - schedule["start"] - schedule["warmup"])
    return schedule["peak"] * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def save_atomic(torch, state, path):
    temporary = path + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, path)


def train(args):
    import torch
    from transformers import Mask2FormerForUniversalSegmentation

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = Mask2FormerForUniversalSegmentation(demo_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    checkpoint = os.path.join(args.work_dir, "checkpoint.pt")
    step, history, runs, schedule = 0, [], [], None
    if os.path.isfile(checkpoint):
        state = torch.load(checkpoint, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, history, runs = state["step"], state["history"], state.get("runs", [])
        schedule = state.get("schedule")
        print(f"resumed at step {step}", flush=True)
    if args.restart:
        # a new cosine cycle from here: a warm restart of a finished run
        schedule = {"start": step, "total": args.steps, "peak": args.lr, "warmup": args.warmup}
    elif schedule is None:
        schedule = {"start": 0, "total": args.steps, "peak": args.lr, "warmup": args.warmup}
    else:
        schedule = dict(schedule, total=args.steps)
    # each invocation, so that a schedule extended by a later run (--steps raised) can be replayed exactly
    runs.append({"from_step": step, "steps": args.steps, "lr": args.lr, "warmup": args.warmup, "batch": args.batch,
                 "threads": args.threads, "seed": args.seed, "schedule": dict(schedule)})
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    model.train()
    last_save, started, window = time.time(), time.time(), []
    while step < args.steps:
        lr = learning_rate(step, schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        pixels, masks, classes = training_batch(args.seed, step, args.batch)
        loss = model(pixel_values=pixels, mask_labels=masks, class_labels=classes).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        window.append(loss.item())
        if step % 50 == 0 or step == args.steps:
            history.append({"step": step, "loss": float(np.mean(window)), "lr": lr, "time": time.time()})
            print(f"step {step}/{args.steps} loss {np.mean(window):.3f} lr {lr:.2e} "
                  f"{(time.time() - started) / 50:.2f} s/step", flush=True)
            window, started = [], time.time()
        if time.time() - last_save > args.checkpoint_seconds or step == args.steps:
            save_atomic(torch, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "step": step, "history": history, "runs": runs, "schedule": schedule,
                                "config": model.config.to_dict()},
                        checkpoint)
            last_save = time.time()
    return checkpoint


def export_and_evaluate(args, checkpoint):
    import torch
    from transformers import Mask2FormerForUniversalSegmentation
    from m2f_edge import demo
    from m2f_edge.models.evaluate import evaluate
    from m2f_edge.models.export import export

    state = torch.load(checkpoint, map_location="cpu")
    model = Mask2FormerForUniversalSegmentation(demo_config())
    model.load_state_dict(state["model"])
    model.eval()
    output = args.output
    summary = export(model, output, head="deployable", input_size=(NETWORK_SIZE, NETWORK_SIZE), batch=None,
                     class_names=["object"], tensorrt_plugin=True)
    print(f"exported {output}: {summary['bytes'] / 1e6:.2f} MB, {summary['nodes']} nodes", flush=True)
    folder = os.path.join(args.work_dir, "eval_scenes")
    annotations = demo.write_coco(folder, args.eval_scenes, seed=EVAL_SEED, size=EVAL_SIZE)
    report = {"steps": state["step"], "train_seed": args.seed, "eval_seed": EVAL_SEED,
              "eval_scenes": args.eval_scenes, "eval_size": list(EVAL_SIZE), "network_size": NETWORK_SIZE,
              "parameters": int(sum(p.numel() for p in model.parameters())), "onnx_bytes": summary["bytes"],
              "final_loss": state["history"][-1]["loss"] if state["history"] else None,
              "runs": state.get("runs") or [], "thresholds": {}}
    for threshold in (0.05, 0.5):
        result = evaluate(output, annotations, folder, binary=True, score_threshold=threshold, progress=False)
        report["thresholds"][str(threshold)] = {key: result[key] for key in ("mask", "box", "foreground_miou")
                                                if key in result}
        print(f"score threshold {threshold}: {json.dumps(report['thresholds'][str(threshold)])}", flush=True)
    report["command"] = (f"m2f-edge eval --model demo --coco ANNOTATIONS --images DIR --score-threshold T "
                         f"on m2f_edge.demo.write_coco(DIR, {args.eval_scenes}, seed={EVAL_SEED}, size={EVAL_SIZE})")
    with open(args.report, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    print(f"wrote {args.report}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=7500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint-seconds", type=float, default=300)
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "build", "demo_training"))
    parser.add_argument("--output", default=os.path.join(ROOT, "m2f_edge", "data", "demo_mask2former.onnx"))
    parser.add_argument("--report", default=os.path.join(ROOT, "docs", "demo_model_eval.json"))
    parser.add_argument("--eval-scenes", type=int, default=200)
    parser.add_argument("--restart", action="store_true",
                        help="start a new learning-rate cycle (warmup, cosine to --steps) at the checkpoint's step")
    parser.add_argument("--evaluate-only", action="store_true", help="export and evaluate the last checkpoint")
    args = parser.parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    checkpoint = os.path.join(args.work_dir, "checkpoint.pt")
    if not args.evaluate_only:
        checkpoint = train(args)
    export_and_evaluate(args, checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
