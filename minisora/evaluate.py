"""The world-physics evaluator: does a generated video obey its prompt and the laws of its world?

Judging generated video usually means squinting at it, or a distribution score such as FVD (Unterthiner
et al., arXiv:1812.01717) that says nothing about physics; benchmarks such as VBench (arXiv:2311.17982)
judge with learned models. The shapes world (minisora.world) changes that: its objects have colours from a
small palette, a few shapes, and move in straight lines that bounce off the walls (and bend under
gravity), so we can *measure* a generated video the way a physicist measures an experiment, and check it
against the prompt. minisora.perceive turns pixels into tracks of objects; this module compares them with
the prompt and with the world's laws, as metrics in [0, 1]:

    presence    the object of the asked colour is in each frame (or plausibly hidden behind something)
    shape       its outline is the asked shape
    direction   it moves the asked way: cosine of its velocity with the asked direction; "still" = no motion
    speed       it moves about as fast as world objects do (world.SPEED_RANGE), roughly
    permanence  each frame shows as many objects as asked for: nothing vanishes, nothing pops up
    rigidity    its area stays the same: nothing shrinks, grows or melts
    smoothness  no jerks, no teleports: velocity only changes by gravity and at bounces
    bounce      when it reaches a wall it comes back
    collision   "A hits B": the two touch without passing through each other and leave (minisora.causality)
    causality   "A hits B": B is still until the contact, then moves away from A
    overall     the harmonic mean of the metrics that apply

Only what the prompt says is scored: no shape word, no "shape"; no motion words, no "direction" or
"speed". A metric with nothing to measure is left out too: "bounce" when no wall is reached, "smoothness"
when the object is never seen whole in three frames in a row. (A metric that cannot be measured because
the object is mostly missing scores 0 instead.) So every key of the result applies, and "overall" is over
them. Objects are told apart by colour, as in the world; a prompt that repeats a colour is scored less
reliably. Real world videos score near 1 and noise near 0: tests/test_evaluate.py checks the evaluator so.

    score(video (T, H, W, 3) uint8, "a red circle moves to the left") -> {"presence": 1.0, ..., "overall": 0.97}
    launch_velocity(video, prompt) -> [array([vx, vy]) px/frame, or None] per asked object: what direction and speed judge
    evaluate_model(model, prompts, samples=4) -> results (JSON-ready);  format_table(results) -> str
"""

from __future__ import annotations

import itertools

import numpy as np
from tqdm.auto import tqdm

from . import causality, world
from .frames import to_uint8
from .perceive import (Blob, Track, classify_shape, find_objects, hidden_frames, track, velocities, wall_contacts,
                       whole_views)

METRICS = ("presence", "shape", "direction", "speed", "permanence", "rigidity", "smoothness", "bounce")
METRICS += causality.METRICS  # "collision", "causality": only for "A hits B" prompts (see minisora.causality)
# parse_caption reads "still" by default; these words say it, so only then is "still" scored.
STILL_WORDS = {"still", "not", "stationary", "static", "falls", "drops"}


# -------------------------------------------------------------------------------------------------- metrics
def direction_rate(steps: dict[int, np.ndarray], motion: str, width: int) -> float | None:
    """How well the mean velocity matches the asked motion, in [0, 1]; None without steps.

    Moving: the cosine with the asked direction (0 when opposite or sideways), dividing by at least half
    the world's slowest speed so that an object that hardly moves cannot score by luck. "still": 1 for
    no motion, falling to 0 at the world's slowest speed.
    """
    if not steps:
        return None
    velocity, slowest = np.mean(list(steps.values()), axis=0), world.SPEED_RANGE[0] * width
    if motion == "still":
        return float(max(0.0, 1 - np.linalg.norm(velocity) / slowest))
    along = max(0.0, float(np.dot(velocity, world.MOTIONS[motion])))
    return along / max(float(np.linalg.norm(velocity)), 0.5 * slowest)


def speed_rate(steps: dict[int, np.ndarray], width: int) -> float | None:
    """1 when the mean speed (widths/frame) is within world.SPEED_RANGE, falling to 0 at half or twice its ends."""
    if not steps:
        return None
    speed = max(float(np.linalg.norm(np.mean(list(steps.values()), axis=0))) / width, 1e-6)
    return max(0.0, 1 - abs(float(np.log2(speed / np.clip(speed, *world.SPEED_RANGE)))))


def smoothness_rate(steps: dict[int, np.ndarray], tolerance: float) -> float | None:
    """Share of consecutive steps whose velocity changes by at most `tolerance` pixels/frame.

    Steps are free of gravity and bounces, so a world object's velocity does not change at all: a larger
    change is a jerk or a teleport. None without two consecutive steps.
    """
    changes = [np.linalg.norm(steps[t + 1] - steps[t]) for t in steps if t + 1 in steps]
    return float(np.mean(np.array(changes) <= tolerance)) if changes else None


def bounce_rate(trk: Track, hidden: np.ndarray, contacts: list[tuple[int, int, int]]) -> float | None:
    """Share of wall contacts after which the object comes back: within 3 frames its centroid moves away
    from the wall (by a quarter pixel) from the closest point it reached.

    An object that sticks to the wall, or leaves the frame and is lost in the open, fails. (A centroid
    seen partly hidden still moves the right way, if slower.) None when no contact can be judged.
    """
    verdicts = []
    for t, axis, side in contacts:
        later = range(t, min(t + 4, len(trk)))
        if len(later) < 3:  # too close to the end to see the way back
            continue
        towards = [side * (trk[s].x, trk[s].y)[axis] for s in later if trk[s] is not None]
        lost = any(trk[s] is None and not hidden[s] for s in later)
        verdicts.append(not lost and any(p <= max(towards[:k]) - 0.25 for k, p in enumerate(towards) if k))
    return float(np.mean(verdicts)) if verdicts else None


def rigidity_rate(whole: list[Blob], tolerance: float = 1.3) -> float | None:
    """Share of whole views whose area is within a factor `tolerance` of the median area; None below 2 views.

    Pixels make a small moving shape's area wobble too: by up to 1.2x at 32x32 in 99% of world views.
    """
    if len(whole) < 2:
        return None
    area = np.array([b.area for b in whole], dtype=np.float64)
    return float(np.mean(np.abs(np.log(area / np.median(area))) <= np.log(tolerance)))


def shape_rate(whole: list[Blob], shape: str) -> float | None:
    """Share of whole views classified as the asked shape; None without whole views."""
    return float(np.mean([classify_shape(b) == shape for b in whole])) if whole else None


def permanence_rate(tracks: list[Track], hidden: list[np.ndarray], blobs: list[Blob], fastest: float) -> float:
    """Share of frames that show exactly the objects the prompt asked for, each where it just was.

    Counted: each asked object seen or hidden, plus every other blob (an object that popped up, a piece
    that split off), except that the pieces of one colour that touch something in front of them are one
    object peeking out on both sides of it. An object seen whole 2 * `fastest` pixels or more away from
    where it was seen whole the frame before is not the same object: one vanished, another appeared.
    """
    tracked = {id(b) for trk in tracks for b in trk if b is not None}
    whole, kept = [whole_views(trk) for trk in tracks], []
    for t in range(len(tracks[0])):
        count = sum(trk[t] is not None or hid[t] for trk, hid in zip(tracks, hidden))
        extra = [b for b in blobs if b.frame == t and id(b) not in tracked]
        peeking = {trk[t].color for trk in tracks if trk[t] is not None and trk[t].touching}
        count += sum(not b.touching for b in extra) + len({b.color for b in extra if b.touching} - peeking)
        jumped = any(t > 0 and w[t - 1] and w[t] and np.hypot(trk[t].x - trk[t - 1].x, trk[t].y - trk[t - 1].y)
                     >= 2 * fastest for trk, w in zip(tracks, whole))
        kept.append(count == len(tracks) and not jumped)
    return float(np.mean(kept))


# ---------------------------------------------------------------------------------------------------- score
def asked_tracks(scene: world.Scene, said: set[str], blobs: list[Blob], num_frames: int) -> list[Track]:
    """One track per object of the prompt, in the prompt's order.

    An object whose colour the prompt does not name (parse_caption made one up) takes the unnamed colour
    with the most blob pixels in the video. Objects that share a colour share its tracks in the order
    that best matches the shapes they asked for.
    """
    named = {o.color for o in scene.objects if o.color in said}
    pixels = {c: sum(b.area for b in blobs if b.color == c) for c in world.COLORS if c not in named}
    spare = iter(sorted(pixels, key=lambda c: -pixels[c]))
    color_of = [o.color if o.color in said else next(spare, "red") for o in scene.objects]
    tracks: list[Track] = [[] for _ in scene.objects]
    for color in dict.fromkeys(color_of):
        members = [k for k, c in enumerate(color_of) if c == color]
        found = track(blobs, color, len(members), num_frames)

        def agreement(order):  # clear views showing the shape asked of the object they would go to
            return sum(classify_shape(b) == scene.objects[k].shape
                       for k, n in zip(members, order) for b in found[n] if b is not None and not b.touching)

        for k, n in zip(members, max(itertools.permutations(range(len(members))), key=agreement)):
            tracks[k] = found[n]
    return tracks


def top_speed(gravity: bool, shape: tuple[int, ...]) -> float:
    """Pixels per frame that no world object exceeds in a (T, H, W, ...) video: the fastest launch speed,
    plus what gravity adds by the last frame."""
    T, H, W = shape[:3]
    return world.SPEED_RANGE[1] * W + (world.GRAVITY * H * T if gravity else 0.0)


def _motion(trk: Track, asked: tuple[float, float], gravity: bool, size: tuple[int, int], impacts: tuple[int, ...]):
    """What the motion metrics of one object stand on -> (whole views, wall contacts, contacts with the hits,
    gravity in pixels/frame per frame, launch steps {t: velocity (2,)}: the motion the prompt describes, with
    bounces unfolded, gravity taken out and the steps after a hit left out)."""
    height, width = size
    gravity_px = world.GRAVITY * height if gravity else 0.0
    whole = whole_views(trk)
    contacts = wall_contacts(trk, size, asked, slack=1.0 + gravity_px,
                             fastest=top_speed(gravity, (len(trk), height, width)))
    contacts_all = contacts + [(t, 2, 0) for t in impacts]  # a hit by/of another object changes velocity too
    launch = velocities(trk, whole, contacts_all, gravity_px, stop_at_floor=gravity)
    launch = {t: step for t, step in launch.items() if not impacts or t < min(impacts)}  # before a hit
    return whole, contacts, contacts_all, gravity_px, launch


def object_metrics(trk: Track, hidden: np.ndarray, spec: world.ObjectSpec, shape_said: bool, motion_said: bool,
                   gravity: bool, size: tuple[int, int], impacts: tuple[int, ...] = ()) -> dict[str, float]:
    """The per-object metrics that apply to one asked object, from its track (see the module docstring)."""
    height, width = size
    asked = world.MOTIONS[spec.motion] if motion_said else (0.0, 0.0)
    whole, contacts, contacts_all, gravity_px, launch = _motion(trk, asked, gravity, size, impacts)
    views = [b for b, w in zip(trk, whole) if w]
    metrics = {"presence": float(np.mean([b is not None or h for b, h in zip(trk, hidden)])),
               "rigidity": rigidity_rate(views),
               # Centroids of world shapes wobble by up to ~1.4 px/frame (99%); a teleport jumps far more.
               "smoothness": smoothness_rate(velocities(trk, whole, contacts_all, gravity_px, stop_at_floor=False),
                                             tolerance=0.05 * min(height, width)),
               "bounce": bounce_rate(trk, hidden, contacts)}
    if shape_said:
        metrics["shape"] = shape_rate(views, spec.shape)
    if motion_said:
        metrics["direction"] = direction_rate(launch, spec.motion, width)
        if spec.motion != "still":
            metrics["speed"] = speed_rate(launch, width)
    # None = nothing to measure. For an object that is mostly missing that is a failure, not an excuse
    # (bounce aside: not reaching a wall is no failure).
    missing = metrics["presence"] < 0.5
    return {name: 0.0 if value is None else value for name, value in metrics.items()
            if value is not None or (missing and name != "bounce")}


def overall(metrics: dict[str, float]) -> float:
    """The harmonic mean of the metrics: like the F1 score, high only if every metric is high.

    Shuffling the frames of a world video keeps presence, shape and rigidity perfect and breaks only time:
    the arithmetic mean of its metrics is still about 0.75, the harmonic mean about 0.15 (real videos
    score about 0.97 either way). Any metric at 0 makes it 0.
    """
    values = [metrics[name] for name in METRICS if name in metrics]
    return 0.0 if min(values) <= 0 else len(values) / sum(1 / v for v in values)


def score(video, prompt: str) -> dict[str, float]:
    """Score a video against its prompt: {metric: value in [0, 1]} for the metrics that apply, and "overall".

    video: (T, H, W, 3) uint8 as `MiniSora.generate` returns it, or a torch (3, T, H, W) in [-1, 1].
    prompt: English as `world.caption` writes it. Only what it names is scored (a shape word, a colour
    word, a motion); "gravity" changes the expected motion. Per-object metrics are averaged over objects.
    """
    video, scene, said, blobs, colors, tracks = _perceive(video, prompt)
    hidden = [hidden_frames(trk, colors, scene.occluder is not None) for trk in tracks]
    shape_said, still_said = bool(said & set(world.SHAPES)), bool(said & STILL_WORDS)
    hit, impacts = causality.hit_metrics(tracks, scene.hits)  # "A hits B": collision and causality
    per_object = [object_metrics(trk, hid, spec, shape_said, spec.motion != "still" or still_said, scene.gravity,
                                 colors.shape[1:], impacts) for trk, hid, spec in zip(tracks, hidden, scene.objects)]
    metrics = {"permanence": permanence_rate(tracks, hidden, blobs, top_speed(scene.gravity, video.shape)), **hit}
    for name in METRICS:
        if values := [m[name] for m in per_object if name in m]:
            metrics[name] = float(np.mean(values))
    metrics = {name: metrics[name] for name in METRICS if name in metrics}  # in the usual order
    return {**metrics, "overall": overall(metrics)}


def _perceive(video, prompt: str):
    """-> video as uint8, the prompt's scene and words, the blobs and colour map, one track per asked object."""
    video = to_uint8(video)
    scene, said = world.parse_caption(prompt), set(world.split_words(prompt))
    blobs, colors = find_objects(video)
    return video, scene, said, blobs, colors, asked_tracks(scene, said, blobs, len(video))


def launch_velocity(video, prompt: str) -> list[np.ndarray | None]:
    """Each asked object's mean velocity (vx, vy) in pixels/frame (x right, y down), measured as
    `direction` and `speed` measure it (bounces unfolded, gravity taken out); None for an object never
    seen whole in two frames in a row. Same inputs as `score`.

    The numbers behind a direction score: benchmarks/motion_words.py compares them across motion words.
    """
    video, scene, _, _, _, tracks = _perceive(video, prompt)
    _, impacts = causality.hit_metrics(tracks, scene.hits)
    motions = [_motion(trk, world.MOTIONS[spec.motion], scene.gravity, video.shape[1:3], impacts)[-1]
               for trk, spec in zip(tracks, scene.objects)]
    return [np.mean(list(steps.values()), axis=0) if steps else None for steps in motions]


# ------------------------------------------------------------------------------------------- scoring models
HELDOUT_SEED = 777  # the world seed of the held-out prompts: no training run of minisora draws scenes from it


def heldout_prompts(count: int = 48, max_objects: int = 2, gravity: bool = False, occluder: bool = False,
                    seed: int = HELDOUT_SEED) -> list[str]:
    """Captions of `count` scenes of a world seed that training never uses: what a model is scored on.

    Drawn exactly as `data.ShapesWorld(seed=seed)` draws its items, so `ShapesWorld(..., seed=HELDOUT_SEED)`
    renders the real videos of the same prompts (the world's own score, the VAE's round trip).
    """
    rngs = (np.random.default_rng((seed, i)) for i in range(count))
    return [world.caption(world.sample_scene(rng, max_objects, 0.5 * gravity, 0.5 * occluder), rng) for rng in rngs]


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric means of several `score` results, each over the videos where that metric applies."""
    names = (*METRICS, "overall")
    return {name: float(np.mean([s[name] for s in scores if name in s])) for name in names
            if any(name in s for s in scores)}


def evaluate_model(model, prompts: list[str], samples: int = 4, seed: int = 0, num_frames: int | None = None,
                   height: int | None = None, width: int | None = None, steps: int | None = None,
                   guidance: float | None = None, progress: bool = True) -> dict:
    """Generate `samples` videos per prompt (seeds seed, seed + 1, ...) and score each against its prompt.

    model: anything with `generate(prompt, num_frames, height, width, steps, guidance, seed, progress)`
    returning (T, H, W, 3) uint8, like MiniSora (None sizes/steps/guidance = the model's defaults).
    Returns a JSON-ready dict:
        {"prompts": [{"prompt": str, "mean": {metric: value}, "samples": [score(...) per video]}, ...],
         "mean": {metric: mean over all videos}, "videos": int, "settings": {...}}
    `python -m minisora eval --model DIR --prompts FILE --samples N --json OUT` runs this with the prompts
    of FILE (one per line) and prints `format_table(results)`.
    """
    if not prompts:
        raise ValueError("evaluate_model needs at least one prompt, e.g. ['a red circle moves to the right']")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    rows = []
    for prompt in tqdm(prompts, desc="evaluate", disable=not progress):
        scores = [score(model.generate(prompt, num_frames=num_frames, height=height, width=width, steps=steps,
                                       guidance=guidance, seed=seed + k, progress=False), prompt)
                  for k in range(samples)]
        rows.append({"prompt": prompt, "mean": mean_scores(scores), "samples": scores})
    settings = {"samples": samples, "seed": seed, "num_frames": num_frames, "height": height, "width": width,
                "steps": steps, "guidance": guidance}
    return {"prompts": rows, "mean": mean_scores([s for row in rows for s in row["samples"]]),
            "videos": len(prompts) * samples, "settings": settings}


def format_table(results: dict, width: int = 44) -> str:
    """The results of `evaluate_model` as a text table: one row per prompt and the mean; "-" = not scored."""
    names = (*METRICS, "overall")
    lines = [f"{'prompt':<{width}} " + " ".join(f"{name[:10]:>10}" for name in names)]
    rows = [(row["prompt"], row["mean"]) for row in results["prompts"]]
    for label, means in rows + [(f"mean over {results['videos']} videos", results["mean"])]:
        label = label if len(label) <= width else label[:width - 3] + "..."
        lines.append(f"{label:<{width}} " + " ".join(f"{means[n]:>10.2f}" if n in means else f"{'-':>10}"
                                                     for n in names))
    return "\n".join(lines)
