"""Command line: `python -m minisora <command> --help` explains every flag.

    demo        train a tiny model on the CPU and write videos to outputs/demo/ (the README's first command)
    train-vae   stage 1: train the video VAE, save the pipeline folder
    train       stage 2: train the DiT + text encoder on the VAE's latents
    sample      generate a video from a prompt with a saved model
    eval        score a saved model with the world-physics evaluator
    build-ext   build the attention extension now instead of on first use
    provenance  show a file's provenance record (C2PA or metadata) and whether it verifies; exit 1 if not

Prompting modes, each with a saved model (--model) and GIF/MP4/PNG files in and out:
    image       text-to-image (a one-frame video)
    animate     image-to-video: the video starts with your image
    extend      add frames after (forward) or before (backward) a video
    loop        a video whose end flows back into its start (from a video or a prompt)
    edit        SDEdit: redo a video with a new prompt, keeping as much as --strength says
    connect     a transition from the end of one video into the start of another
    long        a long video (up to 60 s), window by window
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

DEMO_PROMPTS = [
    "a red circle moves to the right",
    "a large blue square moves up",
    "a small green triangle moves to the left",
    "a yellow diamond moves down",
]


def _add_training_flags(p: argparse.ArgumentParser, stage: str) -> None:
    p.add_argument("--preset", default="tiny", help="size preset: tiny (CPU), colab (T4), large (A100/H100)")
    p.add_argument("--out", default="runs/tiny", help="run folder: the model goes to OUT/model, checkpoints "
                                                     "to OUT/checkpoints")
    p.add_argument("--steps", type=int, default=None, help=f"{stage} training steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (split across processes)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="seed for data order, noise and initial weights")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT/checkpoints")
    p.add_argument("--dataset", default=None, choices=["shapes", "digits", "mnist", "folder"],
                   help="training data (default: the preset's, the procedural shapes world)")
    p.add_argument("--data-root", default=None, help="with --dataset folder: the folder of mp4/gif videos")
    p.add_argument("--captions", default=None, help="with --dataset folder: the captions file (see data.VideoFolder)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (for logs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minisora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train a tiny model on the CPU and write sample videos")
    p.add_argument("--out", default="outputs/demo", help="where the videos and the model go")
    p.add_argument("--preset", default="tiny", help="size preset (tiny trains in minutes on a CPU)")
    p.add_argument("--vae-steps", type=int, default=None, help="VAE training steps (default: the preset's)")
    p.add_argument("--dit-steps", type=int, default=None, help="DiT training steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed for everything")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    _add_training_flags(sub.add_parser("train-vae", help="stage 1: train the video VAE"), "VAE")
    p = sub.add_parser("train", help="stage 2: train the DiT on the VAE's latents")
    _add_training_flags(p, "DiT")
    p.add_argument("--model", default=None, help="pipeline folder with the trained VAE (default: OUT/model)")

    p = sub.add_parser("sample", help="generate a video from a prompt")
    p.add_argument("--model", required=True, help="a folder written by save_pretrained (e.g. outputs/demo/model)")
    p.add_argument("--prompt", required=True, help="what the video shows, e.g. 'a red circle moves to the right'")
    p.add_argument("--out", default="sample.gif", help="output file (.gif, or .mp4 with imageio-ffmpeg)")
    p.add_argument("--frames", type=int, default=None, help="number of frames (1 + 2k for the tiny VAE)")
    p.add_argument("--height", type=int, default=None, help="height in pixels (a multiple of VAE x patch size)")
    p.add_argument("--width", type=int, default=None, help="width in pixels (any aspect ratio the grid allows)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (more = slower, smoother)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (>= 0)")
    p.add_argument("--sampler", default=None, choices=["euler", "heun"], help="ODE sampler")
    p.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same video")

    p = sub.add_parser("eval", help="score a model with the world-physics evaluator")
    p.add_argument("--model", required=True, help="a folder written by save_pretrained")
    p.add_argument("--prompts", default=None, help="text file with one prompt per line (default: demo prompts)")
    p.add_argument("--heldout", type=int, default=None, metavar="N",
                   help="score N captions of the world seed that training never uses (evaluate.heldout_prompts)")
    p.add_argument("--samples", type=int, default=4, help="videos per prompt")
    p.add_argument("--seed", type=int, default=0, help="first noise seed")
    p.add_argument("--json", default=None, help="also write the results as JSON here")

    p = sub.add_parser("build-ext", help="build the custom attention extension now")
    p.add_argument("--verbose", action="store_true", help="show compiler output")
    _add_prompting_commands(sub)
    p = sub.add_parser("provenance", help="show a file's provenance record and whether it verifies")
    p.add_argument("file", help="a .gif, .png or .mp4 written by minisora")
    return parser


# ---------------------------------------------------------------------------- prompting modes
def _add_prompting_commands(sub) -> None:
    def mode(name: str, help: str, prompt: str = "required", frames: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--model", required=True, help="a folder written by save_pretrained (e.g. outputs/demo/model)")
        if prompt == "required":
            p.add_argument("--prompt", required=True,
                           help="what the video shows, e.g. 'a red circle moves to the right'")
        elif prompt == "optional":
            p.add_argument("--prompt", default=None, help="text for the new frames (default: none, the model's "
                                                          "unconditional guess)")
        p.add_argument("--out", default=f"{name}.{'png' if name == 'image' else 'gif'}",
                       help="output file: .gif, .mp4 (needs imageio-ffmpeg)" + (", or .png" if name == "image" else ""))
        if frames:
            p.add_argument("--frames", type=int, default=None, help=frames)
        p.add_argument("--height", type=int, default=None, help="height in pixels (default: the model's training "
                                                                "size; input files are resized to it)")
        p.add_argument("--width", type=int, default=None, help="width in pixels (any aspect ratio the grid allows)")
        p.add_argument("--steps", type=int, default=None, help="sampling steps (more = slower, smoother)")
        p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (>= 0)")
        p.add_argument("--sampler", default=None, choices=["euler", "heun"], help="ODE sampler")
        p.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same video")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        return p

    mode("image", "text-to-image: one frame")
    p = mode("animate", "image-to-video: a video that starts with your image",
             frames="length of the video, the image included (default: the training length)")
    p.add_argument("--image", required=True, help="the first frame: a .png/.jpg (or the first frame of a .gif)")
    p = mode("extend", "add frames after (forward) or before (backward) a video",
             frames="how many frames to add (default: the training length - 1)")
    p.add_argument("--video", required=True, help="the video to extend (.gif/.mp4)")
    p.add_argument("--direction", default="forward", choices=["forward", "backward"], help="where the new frames go")
    p.add_argument("--context-frames", type=int, default=None, help="frames of the video each window sees: "
                                                                    "1 + tf*k forward, tf*k backward (tf: the VAE's time "
                                                                    "factor); default about half a window")
    p = mode("loop", "a video whose last frame flows into its first", prompt="optional",
             frames="frames of the closing transition, a multiple of the VAE's time factor")
    p.add_argument("--video", default=None, help="the video to close into a loop (.gif/.mp4); without it, "
                                                 "a video is generated from --prompt first")
    p = mode("edit", "SDEdit: redo a video with a new prompt")
    p.add_argument("--video", required=True, help="the video to edit (.gif/.mp4), 1 + tf*k frames")
    p.add_argument("--strength", type=float, default=0.6, help="0 keeps the video, 1 ignores it (default 0.6)")
    p = mode("connect", "a transition from the end of one video into the start of another", prompt="optional",
             frames="frames of the transition, a multiple of 4")
    p.add_argument("--video-a", required=True, help="the video to start from (.gif/.mp4)")
    p.add_argument("--video-b", required=True, help="the video to end in (.gif/.mp4), at least 4 frames")
    p = mode("long", "a long video, window by window")
    p.add_argument("--seconds", type=float, default=10.0, help="length in seconds, up to 60 (default 10)")
    p.add_argument("--fps", type=int, default=None, help="frames per second (default: the model's, 8 in tiny)")


def _write(frames, out: str, fps: int, rec: dict | None = None) -> str:
    from .frames import save_image, save_video

    if rec is not None:  # every file written from a model says so (minisora.provenance)
        return str(_stamp(_write(frames, out, fps), rec))
    if Path(out).suffix.lower() in (".png", ".jpg", ".jpeg"):
        return str(save_image(frames, out))
    return str(save_video(frames if frames.ndim == 4 else frames[None], out, fps=fps))


def _stamp(path, rec: dict):
    from . import provenance

    if Path(path).suffix.lower() in provenance.MIME:
        provenance.stamp(path, rec)
    else:
        print(f"note: no provenance record in '{path}' (written into .gif, .png and .mp4 only)", file=sys.stderr)
    return path


def _record(model, args, mode: str) -> dict:
    from . import provenance

    return provenance.record(model, prompt=getattr(args, "prompt", None), seed=getattr(args, "seed", None),
                             steps=getattr(args, "steps", None), guidance=getattr(args, "guidance", None), mode=mode,
                             strength=getattr(args, "strength", None), direction=getattr(args, "direction", None))


def cmd_provenance(args) -> int:
    from . import provenance
    info = provenance.read(args.file)
    print(provenance.describe(info, args.file))
    return 0 if info is not None and info["valid"] else 1


def cmd_prompting(args) -> None:
    from . import prompting, sampling
    from .frames import read_video
    from .pipeline import MiniSora

    model = MiniSora.from_pretrained(args.model)
    data = model.config.data
    size = {"height": args.height or data.height, "width": args.width or data.width}
    options = {"steps": args.steps, "guidance": args.guidance, "seed": args.seed, "sampler": args.sampler,
               "progress": not args.no_progress}
    if args.command == "image":
        result = sampling.generate_image(model, args.prompt, **size, **options)
    elif args.command == "animate":
        result = prompting.animate(model, read_video(args.image)[0], args.prompt, num_frames=args.frames, **size,
                                   **options)
    elif args.command == "extend":
        result = prompting.extend(model, read_video(args.video), args.prompt, direction=args.direction,
                                  new_frames=args.frames, context_frames=args.context_frames, **size, **options)
    elif args.command == "loop":
        if args.video is None and args.prompt is None:
            raise ValueError("loop needs --video (a video to close) or --prompt (to generate one first)")
        source = args.prompt if args.video is None else read_video(args.video)
        result = prompting.loop(model, source, prompt=args.prompt, new_frames=args.frames, **size, **options)
        seam = prompting.loop_seam(result)
        print(f"loop seam: {seam['seam']:.1f} vs {seam['step']:.1f} per frame on average (ratio {seam['ratio']:.2f})")
    elif args.command == "edit":
        result = prompting.edit(model, read_video(args.video), args.prompt, strength=args.strength, **size, **options)
    elif args.command == "connect":
        result = prompting.connect(model, read_video(args.video_a), read_video(args.video_b), new_frames=args.frames,
                                   prompt=args.prompt, **size, **options)
    else:
        result = prompting.generate_long(model, args.prompt, seconds=args.seconds, fps=args.fps, **size, **options)
    print(f"wrote {_write(result, args.out, fps=getattr(args, 'fps', None) or data.fps, rec=_record(model, args, args.command))}")


def _dataset(config, args, seed: int, length: int = 20_000):
    from . import data

    if getattr(args, "dataset", None):
        config.data.dataset = args.dataset
    return data.make_dataset(config.data, seed=seed, length=length, root=getattr(args, "data_root", None),
                             captions_file=getattr(args, "captions", None))


def cmd_demo(args) -> None:
    import torch

    from .config import smoke_mode
    from .pipeline import MiniSora
    from .frames import save_video
    from .train import train_dit, train_vae
    from .viz import video_row

    started = time.time()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    model = MiniSora.from_preset(args.preset)
    cfg = model.config
    cfg.train.seed = args.seed
    if smoke_mode():  # CI: prove the path works, not the quality
        cfg.train.vae_steps, cfg.train.dit_steps, cfg.flow.steps, cfg.train.latent_cache = 4, 4, 2, 32
    vae_steps = cfg.train.vae_steps if args.vae_steps is None else args.vae_steps
    dit_steps = cfg.train.dit_steps if args.dit_steps is None else args.dit_steps
    # Ten minutes in all: 2048 cached latents encode in seconds and are plenty for ~1000 steps, and
    # the held-out prompts are scored once, at the end, not every eval_every steps.
    cfg.train.latent_cache = min(cfg.train.latent_cache, 2048)
    cfg.train.eval_every = dit_steps
    counts = model.num_params()
    print(f"minisora demo: preset '{cfg.name}', {cfg.data.num_frames} frames of {cfg.data.height}x"
          f"{cfg.data.width}; parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    dataset = _dataset(cfg, args, seed=args.seed)
    vae_result = train_vae(model, dataset, steps=vae_steps, out_dir=out, progress=not args.no_progress)
    dit_result = train_dit(model, dataset, steps=dit_steps, out_dir=out, progress=not args.no_progress)
    written, videos = [], []
    for i, prompt in enumerate(DEMO_PROMPTS):
        video = model.generate(prompt, seed=args.seed + i, progress=not args.no_progress)
        videos.append(video)
        stem = out / f"{i}_{re.sub(r'[^a-z0-9]+', '_', prompt.lower()).strip('_')}"
        rec = _record(model, argparse.Namespace(prompt=prompt, seed=args.seed + i), "generate")
        written.append(_stamp(save_video(video, stem.with_suffix(".gif"), fps=cfg.data.fps), rec))
        try:
            written.append(_stamp(save_video(video, stem.with_suffix(".mp4"), fps=cfg.data.fps), rec))
        except RuntimeError:
            pass  # no imageio-ffmpeg: GIFs only
    written.append(_stamp(save_video(video_row(videos), out / "all_prompts.gif", fps=cfg.data.fps),
                          _record(model, argparse.Namespace(prompt=" | ".join(DEMO_PROMPTS), seed=args.seed), "generate")))
    model_dir = model.save_pretrained(out / "model", card_notes=[
        f"- trained by `python -m minisora demo`: {vae_steps} VAE steps, {dit_steps} DiT steps",
        f"- final VAE loss {vae_result.final_loss:.4f}, final flow loss {dit_result.final_loss:.4f}"])
    print("\nSummary")
    print(f"  VAE  {vae_steps:5d} steps  {vae_result.seconds:6.1f} s  final loss {vae_result.final_loss:.4f}")
    print(f"  DiT  {dit_steps:5d} steps  {dit_result.seconds:6.1f} s  final loss {dit_result.final_loss:.4f}")
    if dit_result.evals:
        print(f"  held-out prompts: evaluator score {dit_result.evals[-1]['overall']:.2f} over "
              f"{cfg.train.eval_prompts} captions training never saw (1.0 = obeys prompt and physics)")
    for path in written:
        print(f"  wrote {path}")
    print(f"  model saved to {model_dir} (load with MiniSora.from_pretrained)")
    print(f"  total time {time.time() - started:.1f} s")


def _load_config(args):
    from .config import get_preset

    cfg = get_preset(args.preset)
    if args.seed is not None:
        cfg.train.seed = args.seed
    return cfg


def cmd_train_vae(args) -> None:
    from . import text
    from .pipeline import MiniSora
    from .train import distributed_context, train_vae

    import torch

    cfg = _load_config(args)
    torch.manual_seed(cfg.train.seed)  # same initial weights in every process
    dataset = _dataset(cfg, args, seed=cfg.train.seed)
    model = MiniSora.from_preset(args.preset, tokenizer=text.Tokenizer.from_words(dataset.vocabulary()))
    model.config = cfg
    result = train_vae(model, dataset, steps=args.steps, batch_size=args.batch_size, lr=args.lr, out_dir=args.out,
                       resume=args.resume, progress=not args.no_progress)
    if distributed_context()[0] == 0:
        path = model.save_pretrained(Path(args.out) / "model")
        print(f"VAE: {result.steps} steps, final loss {result.final_loss:.4f}; saved to {path}")


def cmd_train(args) -> None:
    from .pipeline import MiniSora
    from .train import distributed_context, train_dit

    model_dir = Path(args.model or Path(args.out) / "model")
    if not model_dir.exists():
        raise FileNotFoundError(f"no trained VAE at '{model_dir}': run `python -m minisora train-vae --out "
                                f"{args.out}` first, or pass --model")
    model = MiniSora.from_pretrained(model_dir)
    if args.seed is not None:
        model.config.train.seed = args.seed
    dataset = _dataset(model.config, args, seed=model.config.train.seed)
    result = train_dit(model, dataset, steps=args.steps, batch_size=args.batch_size, lr=args.lr, out_dir=args.out,
                       resume=args.resume, progress=not args.no_progress)
    if distributed_context()[0] == 0:
        path = model.save_pretrained(Path(args.out) / "model")
        print(f"DiT: {result.steps} steps, final loss {result.final_loss:.4f}; saved to {path}")


def cmd_sample(args) -> None:
    from .frames import save_video
    from .pipeline import MiniSora
    from .sampling import generate

    model = MiniSora.from_pretrained(args.model)
    video = generate(model, args.prompt, num_frames=args.frames, height=args.height, width=args.width,
                     steps=args.steps, guidance=args.guidance, seed=args.seed, sampler=args.sampler)
    print(f"wrote {_stamp(save_video(video, args.out, fps=model.config.data.fps), _record(model, args, 'generate'))}")


def cmd_eval(args) -> None:
    import json

    from .evaluate import evaluate_model, format_table, heldout_prompts
    from .pipeline import MiniSora

    model = MiniSora.from_pretrained(args.model)
    if args.prompts and args.heldout:
        raise ValueError("give --prompts FILE or --heldout N, not both")
    if args.heldout is not None:
        if args.heldout < 1:
            raise ValueError(f"--heldout takes a number of prompts >= 1, got {args.heldout}")
        data = model.config.data
        prompts = heldout_prompts(args.heldout, data.max_objects, data.gravity, data.occluder)
    elif args.prompts:
        lines = Path(args.prompts).read_text().splitlines()
        prompts = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not prompts:
            raise ValueError(f"'{args.prompts}' holds no prompts: write one prompt per line")
    else:
        prompts = DEMO_PROMPTS
    results = evaluate_model(model, prompts, samples=args.samples, seed=args.seed)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


def cmd_build_ext(args) -> None:
    from .attention.build import build_extension

    print(build_extension(verbose=args.verbose))


COMMANDS = {"demo": cmd_demo, "train-vae": cmd_train_vae, "train": cmd_train, "sample": cmd_sample,
            "eval": cmd_eval, "build-ext": cmd_build_ext, "provenance": cmd_provenance,
            **dict.fromkeys(["image", "animate", "extend", "loop", "edit", "connect", "long"], cmd_prompting)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
    except KeyboardInterrupt as stop:
        print(f"\ninterrupted: {stop}" if str(stop) else "\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        # Errors we raise on purpose carry a message that says what to change: show it, not a traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
